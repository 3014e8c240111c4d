//! Configuration replication with real `tandem` processes on loopback: the harness (members
//! on fixed ports, the CLI, convergence read off the members' conf files) and a module per
//! theme.

mod faults;
mod limits;
mod recovery;
mod replication;
mod scale;
mod snapshots;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::wait_for;

pub(super) const SECRET: &str = "conf replication secret for the e2e cluster";
pub(super) const CONVERGE: Duration = Duration::from_secs(20);
/// The members' cluster timing: fast elections and commits for small changes.
pub(super) const TIMING: &str =
    "heartbeat_ms = 50\nelection_timeout_ms = 300\nretry_ms = 100\ncommit_timeout_ms = 1500\n";

/// A port below the kernel's ephemeral range (where port-0 listeners and outgoing
/// connections live), unique within this run, so a restarted member keeps its address and
/// no other socket takes it meanwhile.
pub(super) fn free_port() -> u16 {
    crate::common::low_port(20_000, 500)
}

/// One member: its folder, fixed ports (so a restart keeps its address), its process.
pub struct Node {
    pub name: String,
    dir: tempfile::TempDir,
    pub peer: String,
    child: Option<Child>,
    /// The open-file limit (soft and hard) the daemon runs with, if not the test's own.
    nofile: Option<u64>,
    /// The network-lab host (namespace) it runs in, if any.
    ns: Option<String>,
    /// Runs as root without the capabilities that override file permissions: a file root
    /// cannot read is then one tandem cannot read (an unreadable file, as root).
    no_dac_override: bool,
}

impl Node {
    pub fn new(name: &str, extra: &str) -> Self {
        Self::make(name, extra, "", None, None, "127.0.0.1")
    }

    /// A member whose config ends with `extra` (whole tables), whose `[api]` table ends with
    /// `api_extra` (keys), and which runs with at most `nofile` open files.
    pub fn build(name: &str, extra: &str, api_extra: &str, nofile: Option<u64>) -> Self {
        Self::make(name, extra, api_extra, nofile, None, "127.0.0.1")
    }

    /// A member inside network namespace `ns` (a network-lab host), its peer listener on that
    /// host's address `ip` (the REST API stays on the namespace's loopback). Its CLI runs there
    /// too.
    pub fn in_netns(name: &str, extra: &str, ns: Option<&str>, ip: &str) -> Self {
        Self::make(name, extra, "", None, ns, ip)
    }

    /// A member whose `[cluster]` settings in `cluster` replace the harness's (e.g.
    /// `&[("heartbeat_ms", "100")]`).
    pub fn tuned(name: &str, cluster: &[(&str, &str)], extra: &str) -> Self {
        let mut node = Self::make(name, extra, "", None, None, "127.0.0.1");
        node.kill9();
        let mut config = std::fs::read_to_string(node.config()).unwrap();
        for (key, value) in cluster {
            let line = config.lines().find(|l| l.starts_with(&format!("{key} = "))).map(str::to_owned);
            config = match line {
                Some(old) => config.replacen(&old, &format!("{key} = {value}"), 1),
                None => config.replacen("[cluster]\n", &format!("[cluster]\n{key} = {value}\n"), 1),
            };
        }
        std::fs::write(node.config(), config).unwrap();
        node.start();
        node
    }

    fn make(
        name: &str,
        extra: &str,
        api_extra: &str,
        nofile: Option<u64>,
        ns: Option<&str>,
        ip: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        crate::common::write_secret(&dir.path().join("secret"), SECRET);
        let (peer_port, api_port) = (free_port(), free_port());
        let config = format!(
            "node_name = \"{name}\"\ndata_dir = \"{0}/data\"\n\
             [peer]\nlisten = \"{ip}:{peer_port}\"\nsecret_file = \"{0}/secret\"\n\
             [api]\nlisten = \"127.0.0.1:{api_port}\"\n{api_extra}\
             [cluster]\n{TIMING}{extra}",
            dir.path().display()
        );
        std::fs::write(dir.path().join("tandem.toml"), config).unwrap();
        let mut node = Self {
            name: name.into(),
            dir,
            peer: format!("{ip}:{peer_port}"),
            child: None,
            nofile,
            ns: ns.map(str::to_owned),
            no_dac_override: false,
        };
        node.start();
        node
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(self.data().join("api.addr"));
        let log =
            std::fs::File::create(self.dir.path().join(format!("stderr-{}", std::process::id()))).unwrap();
        let mut cmd = self.tandem();
        cmd.env_remove("TANDEM_CONFIG")
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(self.config())
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        if self.no_dac_override {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    // Out of the bounding set, root's exec cannot gain them.
                    for cap in [1 /* CAP_DAC_OVERRIDE */, 2 /* CAP_DAC_READ_SEARCH */] {
                        if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        self.child = Some(child);
        let stderr = self.dir.path().join(format!("stderr-{}", std::process::id()));
        wait_for(Duration::from_secs(60), || {
            std::fs::read_to_string(self.data().join("api.addr")).ok().filter(|a| a.ends_with('\n'))
        })
        .unwrap_or_else(|| {
            panic!("{} never came up: {}", self.name, std::fs::read_to_string(&stderr).unwrap_or_default())
        });
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Stops the member and starts it again unable to read what its permissions deny to
    /// root (see `no_dac_override`).
    pub fn restart_without_dac_override(&mut self) {
        self.kill9();
        self.no_dac_override = true;
        self.start();
    }

    /// Stops the member, gives it a new peer port, starts it again: an address change.
    pub fn move_peer_port(&mut self) {
        self.kill9();
        let old = self.peer.clone();
        self.peer = format!("127.0.0.1:{}", free_port());
        let config = std::fs::read_to_string(self.config()).unwrap();
        let moved =
            config.replacen(&format!("listen = \"{old}\""), &format!("listen = \"{}\"", self.peer), 1);
        assert_ne!(config, moved, "the peer listen line");
        std::fs::write(self.config(), moved).unwrap();
        self.start();
    }

    /// `GET path` on the member's API without a token: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let addr = std::fs::read_to_string(self.data().join("api.addr")).unwrap();
        let path = path.to_owned();
        let get = move || {
            let mut s = std::net::TcpStream::connect(addr.trim()).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        };
        let text = match &self.ns {
            Some(ns) => crate::lab::in_netns(ns, get),
            None => get(),
        };
        let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (code, body)
    }

    /// The address the member's API is bound to.
    pub fn api_addr(&self) -> String {
        std::fs::read_to_string(self.data().join("api.addr")).unwrap().trim().to_string()
    }

    /// The admin token the member generated.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data().join("api.token")).unwrap().trim().to_string()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits up to `limit` for the member's process to end by itself: its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let (status, _) = wait_for(limit, || child.try_wait().unwrap())?;
        self.child = None;
        Some(status)
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("tandem.toml")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data().join("logs/tandem.log")).unwrap_or_default()
    }

    /// The `tandem` program, inside the member's namespace when it has one.
    fn tandem(&self) -> Command {
        let exe = env!("CARGO_BIN_EXE_tandem");
        match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, exe]);
                c
            }
            None => Command::new(exe),
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.tandem()
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

    /// This member's own row in its status (a member that is still joining may not list
    /// itself for a moment: waited for).
    pub fn me(&self) -> Value {
        let mine = || {
            let s = self.status();
            let reporter = s["reporter"].clone();
            s["members"].as_array()?.iter().find(|m| m["node_id"] == reporter).cloned()
        };
        wait_for(CONVERGE, mine).map(|(m, _)| m).unwrap_or_else(|| panic!("{} never lists itself", self.name))
    }

    /// The content of a file under the member's conf tree ("" if missing).
    pub fn conf_file(&self, rel: &str) -> String {
        std::fs::read_to_string(self.data().join("etc").join(rel)).unwrap_or_default()
    }

    /// The bytes of a file under the member's conf tree (empty if missing).
    pub fn conf_file_bytes(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.data().join("etc").join(rel)).unwrap_or_default()
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

pub(super) const MACROS: &str = "apps/search/local/macros.conf";

/// The CLI's arguments that put `file` as lookup `name` in app:search.
pub(super) fn put_lookup_args<'a>(name: &'a str, file: &'a std::path::Path) -> [&'a str; 9] {
    let file = file.to_str().expect("a UTF-8 temporary path");
    ["conf", "put-file", "--type", "lookups", "--scope", "app:search", "--name", name, file]
}

pub(super) fn has(node: &Node, rel: &str, line: &str) -> bool {
    node.conf_file(rel).lines().any(|l| l.trim() == line)
}

pub(super) fn converge(nodes: &[&Node], rel: &str, line: &str) {
    for n in nodes {
        wait_for(CONVERGE, || has(n, rel, line).then_some(()))
            .unwrap_or_else(|| panic!("`{line}` never reached {} ({rel}):\n{}", n.name, n.conf_file(rel)));
    }
}

/// Three members: a initialises, b and c are added through different members.
pub fn three(extra: &str) -> Vec<Node> {
    three_tuned(&[], extra)
}

/// [`three`] with `[cluster]` settings replaced (see [`Node::tuned`]).
pub fn three_tuned(cluster: &[(&str, &str)], extra: &str) -> Vec<Node> {
    let a = Node::tuned("a", cluster, extra);
    let b = Node::tuned("b", cluster, extra);
    let c = Node::tuned("c", cluster, extra);
    a.ok(&["cluster", "init"]);
    a.ok(&["cluster", "add-member", &b.peer]);
    b.ok(&["cluster", "add-member", &c.peer]);
    vec![a, b, c]
}

pub(super) fn captain(nodes: &[Node]) -> usize {
    let (idx, _) =
        wait_for(CONVERGE, || nodes.iter().position(|n| n.child.is_some() && n.me()["role"] == "captain"))
            .expect("no captain");
    idx
}
