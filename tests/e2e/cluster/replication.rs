//! Changes reach every member; local-only types and `history` stay; layered reads; `conf
//! push` of a hand-edited file; whole lookup files; API tokens and roles.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{MACROS, Node, SECRET, converge, free_port, has, put_lookup_args, three};
use crate::support::wait_for;

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
fn the_api_refuses_requests_without_a_valid_token_and_read_only_tokens_cannot_write() {
    let extra = "[api]\n"; // placeholder: tokens are set below through a fresh config
    let _ = extra;
    let dir = tempfile::tempdir().unwrap();
    crate::common::write_secret(&dir.path().join("secret"), SECRET);
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
    nodes[0].ok(&put_lookup_args("users.csv", &csv));
    converge(&refs, "apps/search/lookups/users.csv", "ann,ops");
    let listed = nodes[1].ok(&["conf", "list"]);
    assert!(listed.contains("apps/search/lookups/users.csv") && listed.contains(MACROS), "{listed}");
}

/// `tandem cluster check` in the Nagios convention: one line, exit 0 with every member up, 1
/// once a member is down (naming it), 2 when the daemon asked does not answer.
#[test]
fn cluster_check_speaks_the_nagios_convention() {
    let check = |n: &Node| {
        let out = n.cli(&["cluster", "check"]);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let alone = Node::new("alone", "");
    assert_eq!(check(&alone), (Some(0), "OK: not in a cluster".to_string()));
    let mut nodes = three("");
    let (code, line) = check(&nodes[0]);
    assert_eq!(code, Some(0), "{line}");
    assert!(line.starts_with("OK: captain ") && line.ends_with("3 of 3 members up"), "{line}");
    // The status says captain and member, as the header does (its rows said leader, follower).
    let text = nodes[0].ok(&["cluster", "status"]);
    let roles: Vec<&str> =
        text.lines().filter_map(|l| l.trim().strip_prefix("role:")).map(str::trim).collect();
    assert_eq!(roles.iter().filter(|r| **r == "captain").count(), 1, "{text}");
    assert_eq!(roles.iter().filter(|r| **r == "member").count(), 2, "{text}");
    nodes[2].kill9();
    let (warned, _) =
        wait_for(Duration::from_secs(30), || Some(check(&nodes[0])).filter(|(c, _)| *c == Some(1)))
            .expect("never warned about the member down");
    assert!(warned.1.starts_with("WARNING: ") && warned.1.contains("c is down"), "{}", warned.1);
    assert_eq!(warned.1.lines().count(), 1, "{}", warned.1);
    nodes[0].kill9();
    let (code, line) = check(&nodes[0]);
    assert_eq!(code, Some(2), "{line}");
    assert!(line.starts_with("CRITICAL: cannot ask the tandem daemon"), "{line}");
}
