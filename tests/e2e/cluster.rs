//! Configuration replication with real `tandem` processes on loopback: three (and four)
//! members, changes through the CLI, convergence read off the members' conf files, the
//! captain killed with `kill -9`, members cut off (the rest of the cluster frozen with
//! SIGSTOP so the member runs without a captain), history purged under tiny limits, and the
//! seed's destructive resync.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::wait_for;

const SECRET: &str = "conf replication secret for the e2e cluster";
const CONVERGE: Duration = Duration::from_secs(20);

/// A port below the kernel's ephemeral range (where port-0 listeners and outgoing
/// connections live), unique within this run, so a restarted member keeps its address and
/// no other socket takes it meanwhile.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::SeqCst) % 2_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One member: its folder, fixed ports (so a restart keeps its address), its process.
pub struct Node {
    pub name: String,
    dir: tempfile::TempDir,
    pub peer: String,
    child: Option<Child>,
}

impl Node {
    pub fn new(name: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        let (peer_port, api_port) = (free_port(), free_port());
        let config = format!(
            "node_name = \"{name}\"\ndata_dir = \"{0}/data\"\n\
             [peer]\nlisten = \"127.0.0.1:{peer_port}\"\nsecret_file = \"{0}/secret\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n\
             [cluster]\nheartbeat_ms = 50\nelection_timeout_ms = 300\nretry_ms = 100\ncommit_timeout_ms = 1500\n{extra}",
            dir.path().display()
        );
        std::fs::write(dir.path().join("tandem.toml"), config).unwrap();
        let mut node = Self { name: name.into(), dir, peer: format!("127.0.0.1:{peer_port}"), child: None };
        node.start();
        node
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(self.data().join("api.addr"));
        let log =
            std::fs::File::create(self.dir.path().join(format!("stderr-{}", std::process::id()))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .env_remove("TANDEM_CONFIG")
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(self.config())
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for(Duration::from_secs(60), || std::fs::read_to_string(self.data().join("api.addr")).ok())
            .unwrap_or_else(|| panic!("{} never came up", self.name));
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("tandem.toml")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data().join("logs/tandem.log")).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .env_remove("TANDEM_CONFIG")
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the CLI and insists it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{} `tandem {}` failed: {}{}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["cluster", "status", "--json"])).unwrap()
    }

    pub fn me(&self) -> Value {
        let s = self.status();
        let reporter = s["reporter"].clone();
        s["members"].as_array().unwrap().iter().find(|m| m["node_id"] == reporter).cloned().unwrap()
    }

    /// The content of a file under the member's conf tree ("" if missing).
    pub fn conf_file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.data().join("etc").join(rel)).unwrap_or_default()
    }

    pub fn set(&self, conf_type: &str, scope: &str, stanza: &str, key: &str, value: &str) -> String {
        self.ok(&["conf", "set", "--type", conf_type, "--scope", scope, stanza, key, value])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- last log lines of {} ----", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
        self.kill9();
    }
}

const MACROS: &str = "apps/search/local/macros.conf";

fn has(node: &Node, rel: &str, line: &str) -> bool {
    node.conf_file(rel).lines().any(|l| l.trim() == line)
}

fn converge(nodes: &[&Node], rel: &str, line: &str) {
    for n in nodes {
        wait_for(CONVERGE, || has(n, rel, line).then_some(()))
            .unwrap_or_else(|| panic!("`{line}` never reached {} ({rel}):\n{}", n.name, n.conf_file(rel)));
    }
}

/// Three members: a initialises, b and c are added through different members.
pub fn three(extra: &str) -> Vec<Node> {
    let a = Node::new("a", extra);
    let b = Node::new("b", extra);
    let c = Node::new("c", extra);
    a.ok(&["cluster", "init"]);
    a.ok(&["cluster", "add-member", &b.peer]);
    b.ok(&["cluster", "add-member", &c.peer]);
    vec![a, b, c]
}

fn captain(nodes: &[Node]) -> usize {
    let (idx, _) =
        wait_for(CONVERGE, || nodes.iter().position(|n| n.child.is_some() && n.me()["role"] == "leader"))
            .expect("no captain");
    idx
}

#[test]
fn a_change_on_any_member_reaches_all_and_local_types_stay_local() {
    let nodes = three("");
    let refs: Vec<&Node> = nodes.iter().collect();
    for (i, n) in nodes.iter().enumerate() {
        let out = n.set("macros", "app:search", &format!("m{i}"), "definition", &format!("index=main{i}"));
        assert!(out.starts_with("committed"), "{out}");
    }
    for i in 0..3 {
        converge(&refs, MACROS, &format!("definition = index=main{i}"));
    }
    // Not whitelisted (inputs): stays on the member that made it, and says so.
    let out = nodes[1].set("inputs", "app:search", "monitor:///var/log", "disabled", "0");
    assert!(out.starts_with("local") && out.contains("not a replicated type"), "{out}");
    // history never leaves the member, even as a meta change.
    let out = nodes[2].set("history", "user:search:admin", "h", "search", "index=_internal");
    assert!(out.starts_with("local"), "{out}");
    // A later replicated change has reached everyone, so the local ones had their chance.
    nodes[0].set("macros", "app:search", "after", "definition", "x");
    converge(&refs, MACROS, "definition = x");
    assert!(has(&nodes[1], "apps/search/local/inputs.conf", "disabled = 0"));
    for other in [&nodes[0], &nodes[2]] {
        assert_eq!(
            other.conf_file("apps/search/local/inputs.conf"),
            "",
            "{} got a local-only change",
            other.name
        );
    }
    assert!(has(&nodes[2], "users/admin/search/local/history.conf", "search = index=_internal"));
    assert_eq!(nodes[0].conf_file("users/admin/search/local/history.conf"), "");
    // Bad input is refused with a clear error and changes nothing.
    let out = nodes[0].cli(&["conf", "set", "--type", "macros", "--scope", "app:../../x", "s", "k", "v"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("app"), "{}", String::from_utf8_lossy(&out.stderr));
    // Status: everyone up, one captain.
    let status = nodes[1].status();
    assert!(status["captain"].is_u64(), "{status}");
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["state"] == "up"), "{status}");
}

#[test]
fn a_fourth_member_bootstraps_from_the_snapshot_and_a_killed_captain_loses_nothing() {
    let mut nodes = three("");
    let refs: Vec<&Node> = nodes.iter().collect();
    for i in 0..30 {
        nodes[i % 3].set("savedsearches", "app:search", &format!("s{i}"), "search", &format!("index=a{i}"));
    }
    converge(&refs, "apps/search/local/savedsearches.conf", "search = index=a29");
    // A new member: snapshot first, then the log after it.
    let d = Node::new("d", "");
    nodes[2].ok(&["cluster", "add-member", &d.peer]);
    converge(&[&d], "apps/search/local/savedsearches.conf", "search = index=a29");
    let me = d.me();
    assert!(
        me["log_first"].as_u64().unwrap_or(0) > 30 || me["log_first"].is_null(),
        "replayed the whole log: {me}"
    );
    assert!(d.log().contains("installed the captain's snapshot"), "{}", d.log());
    nodes.push(d);
    // Kill the captain with -9: a new one is elected and every acknowledged change survives.
    let old = captain(&nodes);
    nodes[old].kill9();
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.child.is_some()).collect();
    let out = survivors[0].set("savedsearches", "app:search", "after-failover", "search", "index=b");
    assert!(out.starts_with("committed"), "{out}");
    converge(&survivors, "apps/search/local/savedsearches.conf", "search = index=b");
    for n in &survivors {
        for i in 0..30 {
            assert!(
                has(n, "apps/search/local/savedsearches.conf", &format!("search = index=a{i}")),
                "{} lost a{i}",
                n.name
            );
        }
    }
    let new = captain(&nodes);
    assert_ne!(new, old);
    // The old captain comes back as a follower and catches up.
    nodes[old].start();
    converge(&[&nodes[old]], "apps/search/local/savedsearches.conf", "search = index=b");
}

#[test]
fn a_member_cut_off_accepts_changes_and_converges_both_ways_on_return() {
    let mut nodes = three("");
    nodes[0].set("macros", "app:search", "base", "definition", "0");
    converge(&nodes.iter().collect::<Vec<_>>(), MACROS, "definition = 0");
    // c is away while the others go on.
    nodes[2].kill9();
    nodes[0].set("macros", "app:search", "while-away", "definition", "cluster");
    // c comes back alone (the others frozen): no captain, so it keeps its change pending.
    nodes[0].signal("-STOP");
    nodes[1].signal("-STOP");
    nodes[2].start();
    let out = nodes[2].set("macros", "app:search", "from-c", "definition", "c-alone");
    assert!(out.starts_with("pending"), "{out}");
    assert!(has(&nodes[2], MACROS, "definition = c-alone"), "applied locally at once");
    let me = nodes[2].me();
    assert_eq!(me["outbox"], 1, "{me}");
    assert_eq!(me["state"], "out_of_sync", "{me}");
    nodes[0].signal("-CONT");
    nodes[1].signal("-CONT");
    let all: Vec<&Node> = nodes.iter().collect();
    converge(&all, MACROS, "definition = c-alone");
    converge(&all, MACROS, "definition = cluster");
    wait_for(CONVERGE, || (nodes[2].me()["outbox"] == 0).then_some(())).expect("the outbox never drained");
}

#[test]
fn purged_history_means_snapshot_install_or_the_seeds_destructive_resync() {
    let tiny = "[plugins.settings.purge-policy]\neligible_count = 3\neligible_age = \"0ms\"\n";
    let mut nodes = three(tiny);
    nodes[0].set("macros", "app:search", "base", "definition", "0");
    converge(&nodes.iter().collect::<Vec<_>>(), MACROS, "definition = 0");

    // b, without pending changes, is away while history is purged: it installs the snapshot.
    nodes[1].kill9();
    for i in 0..10 {
        nodes[0].set("macros", "app:search", &format!("p{i}"), "definition", &format!("v{i}"));
    }
    // Every member purges its own history (the captain may change when b returns).
    for i in [0, 2] {
        let purged = nodes[i].ok(&["cluster", "purge"]);
        assert!(!purged.contains("purged 0 "), "{purged}");
    }
    nodes[1].start();
    converge(&[&nodes[1]], MACROS, "definition = v9");
    assert!(nodes[1].log().contains("installed a snapshot"), "{}", nodes[1].log());
    assert_eq!(nodes[1].me()["state"], "up");

    // c is away with history purged AND makes a change of its own: the seed's error.
    nodes[2].kill9();
    for i in 10..20 {
        nodes[0].set("macros", "app:search", &format!("p{i}"), "definition", &format!("v{i}"));
    }
    for i in [0, 1] {
        let purged = nodes[i].ok(&["cluster", "purge"]);
        assert!(!purged.contains("purged 0 "), "{purged}");
    }
    let others: Vec<usize> = (0..3).filter(|i| *i != 2).collect();
    for i in &others {
        nodes[*i].signal("-STOP");
    }
    nodes[2].start();
    let out = nodes[2].set("macros", "app:search", "lost", "definition", "c-only");
    assert!(out.starts_with("pending"), "{out}");
    for i in &others {
        nodes[*i].signal("-CONT");
    }
    let (me, _) = wait_for(CONVERGE, || {
        let me = nodes[2].me();
        (me["state"] == "needs_resync").then_some(me)
    })
    .expect("c never asked for a resync");
    let error = me["last_error"].as_str().unwrap();
    assert!(error.contains("Error pulling configurations from the search head cluster captain"), "{error}");
    assert!(nodes[2].log().contains("consider performing a destructive configuration resync"));
    // Its pending change is still applied locally until the resync.
    assert!(has(&nodes[2], MACROS, "definition = c-only"));
    let out = nodes[2].cli(&["cluster", "resync"]);
    assert!(!out.status.success(), "resync without --destructive must be refused");
    nodes[2].ok(&["cluster", "resync", "--destructive"]);
    assert!(!has(&nodes[2], MACROS, "definition = c-only"), "the pending change was discarded");
    converge(&[&nodes[2]], MACROS, "definition = v19");
    assert_eq!(nodes[2].me()["state"], "up");
    // And it follows new changes again.
    nodes[0].set("macros", "app:search", "after", "definition", "resynced");
    converge(&nodes.iter().collect::<Vec<_>>(), MACROS, "definition = resynced");
    assert!(!nodes.iter().any(|n| has(n, MACROS, "definition = c-only")));
}

#[test]
fn a_member_killed_mid_write_comes_back_with_an_intact_log_and_removal_needs_a_clean() {
    let mut nodes = three("");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (config, stop, written) = (nodes[0].config(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
                    .env_remove("TANDEM_CONFIG")
                    .arg("--config")
                    .arg(&config)
                    .args([
                        "conf",
                        "set",
                        "--type",
                        "macros",
                        "--scope",
                        "app:search",
                        &format!("w{i}"),
                        "definition",
                        &format!("{i}"),
                    ])
                    .output()
                    .unwrap();
                assert!(String::from_utf8_lossy(&out.stdout).starts_with("committed"), "{out:?}");
                written.store(i + 1, std::sync::atomic::Ordering::SeqCst);
                i += 1;
            }
            i
        })
    };
    // Kill c while changes stream in, keep writing while it is down, then bring it back.
    wait_for(CONVERGE, || (written.load(std::sync::atomic::Ordering::SeqCst) >= 20).then_some(())).unwrap();
    nodes[2].kill9();
    let at_kill = written.load(std::sync::atomic::Ordering::SeqCst);
    wait_for(CONVERGE, || (written.load(std::sync::atomic::Ordering::SeqCst) >= at_kill + 20).then_some(()))
        .unwrap();
    nodes[2].start();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let last = writer.join().unwrap() - 1;
    let all: Vec<&Node> = nodes.iter().collect();
    converge(&all, MACROS, &format!("definition = {last}"));
    for i in 0..=last {
        assert!(has(&nodes[2], MACROS, &format!("definition = {i}")), "c lacks w{i}");
    }
    let me = nodes[2].me();
    assert_eq!(me["state"], "up", "{me}");

    // Removal: the id is never reused, and the removed host must be cleaned first.
    let c_id = me["node_id"].as_u64().unwrap();
    nodes[0].ok(&["cluster", "remove-member", &c_id.to_string()]);
    let out = nodes[0].cli(&["cluster", "add-member", &nodes[2].peer]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("clean"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    nodes[2].ok(&["cluster", "clean"]);
    let out = nodes[0].ok(&["cluster", "add-member", &nodes[2].peer]);
    let new_id: u64 = out.split_whitespace().last().unwrap().parse().unwrap();
    assert!(new_id > c_id, "node id reused: {out}");
    nodes[1].set("macros", "app:search", "readded", "definition", "yes");
    converge(&all, MACROS, "definition = yes");
}

#[test]
fn the_api_refuses_requests_without_a_valid_token_and_read_only_tokens_cannot_write() {
    let extra = "[api]\n"; // placeholder: tokens are set below through a fresh config
    let _ = extra;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let api_port = free_port();
    std::fs::write(
        dir.path().join("tandem.toml"),
        format!(
            "node_name = \"solo\"\ndata_dir = \"{0}/data\"\n[peer]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"{0}/secret\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\nadmin_token = \"admin-token-0123456789\"\nread_token = \"read-token-0123456789\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--config")
        .arg(dir.path().join("tandem.toml"))
        .arg("daemon")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(60), || std::fs::read_to_string(dir.path().join("data/api.addr")).ok())
        .unwrap();
    let curl = |token: Option<&str>, method: &str, path: &str, body: &str| -> String {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            method,
            "-H",
            "content-type: application/json",
        ]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("authorization: Bearer {t}")]);
        }
        if !body.is_empty() {
            cmd.args(["-d", body]);
        }
        cmd.arg(format!("http://127.0.0.1:{api_port}{path}"));
        String::from_utf8(cmd.output().unwrap().stdout).unwrap()
    };
    let change = r#"{"changes":[{"conf_type":"macros","scope":{"app":"search"},"target":"conf","op":{"set_key":{"stanza":"m","key":"definition","value":"x"}}}]}"#;
    assert_eq!(curl(None, "GET", "/v1/cluster/status", ""), "401");
    assert_eq!(curl(Some("wrong-token-0123456789"), "GET", "/v1/cluster/status", ""), "401");
    assert_eq!(curl(Some("read-token-0123456789"), "GET", "/v1/cluster/status", ""), "200");
    assert_eq!(curl(Some("read-token-0123456789"), "POST", "/v1/conf/changes", change), "403");
    assert_eq!(curl(Some("admin-token-0123456789"), "POST", "/v1/conf/changes", change), "200");
    assert_eq!(curl(None, "GET", "/v1/health", ""), "200");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn reads_show_layers_and_push_replicates_a_files_current_content() {
    let nodes = three("");
    let refs: Vec<&Node> = nodes.iter().collect();
    // A default layer shipped with the app, and a runtime change on top of it.
    let default = nodes[1].data().join("etc/apps/search/default");
    std::fs::create_dir_all(&default).unwrap();
    std::fs::write(default.join("macros.conf"), "[m]\ndefinition = shipped\nargs = x\n").unwrap();
    nodes[0].set("macros", "app:search", "m", "definition", "runtime");
    converge(&refs, MACROS, "definition = runtime");
    let view: Value = serde_json::from_str(&nodes[1].ok(&[
        "conf",
        "get",
        "--type",
        "macros",
        "--scope",
        "app:search",
        "--json",
    ]))
    .unwrap();
    let m = &view["stanzas"]["m"];
    assert_eq!(m["definition"]["value"], "runtime", "{view}");
    assert_eq!(m["definition"]["source"], "apps/search/local/macros.conf", "{view}");
    assert_eq!(m["args"]["value"], "x", "{view}");
    // A direct edit is not captured ...
    let local = nodes[2].data().join("etc/apps/search/local/macros.conf");
    let mut text = std::fs::read_to_string(&local).unwrap();
    text.push_str("\n[edited]\ndefinition = by hand\n");
    std::fs::write(&local, text).unwrap();
    nodes[0].set("macros", "app:search", "later", "definition", "later");
    converge(&refs, MACROS, "definition = later");
    assert!(!has(&nodes[0], MACROS, "definition = by hand"));
    // ... until it is pushed on purpose.
    let out = nodes[2].ok(&["conf", "push", MACROS]);
    assert!(out.contains("committed"), "{out}");
    converge(&refs, MACROS, "definition = by hand");
    // Whole files (a lookup table) replicate too.
    let csv = nodes[0].data().join("users.csv");
    std::fs::write(&csv, "user,team\nann,ops\n").unwrap();
    nodes[0].ok(&[
        "conf",
        "put-file",
        "--type",
        "lookups",
        "--scope",
        "app:search",
        "--name",
        "users.csv",
        csv.to_str().unwrap(),
    ]);
    converge(&refs, "apps/search/lookups/users.csv", "ann,ops");
    let listed = nodes[1].ok(&["conf", "list"]);
    assert!(listed.contains("apps/search/lookups/users.csv") && listed.contains(MACROS), "{listed}");
}
