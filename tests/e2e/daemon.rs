//! The daemon's edges as an operator meets them: its data folder is private and claimed
//! before anything is written to it, credentials other users could read stop it with the fix
//! to run, and a configured secret file that is missing is an error, not a new secret.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::cluster::{Node, SECRET};
use crate::support::wait_for;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs `tandem daemon` on `config` and waits for it to give up (it must: each case here is
/// one the daemon refuses); its output.
fn refused_daemon(config: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env_remove("TANDEM_CONFIG")
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(config)
        .arg("daemon")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_for(Duration::from_secs(30), || child.try_wait().unwrap());
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited.is_some(), "the daemon kept running: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    out
}

/// Regression (issue 14): a second daemon on a running daemon's data folder rewrote its
/// `api.addr` and `peer.addr` (breaking the running daemon's CLI) before it met a lock.
#[test]
fn a_second_daemon_on_the_same_data_folder_stops_before_writing_anything() {
    let node = Node::new("first", "");
    let addr_files = ["api.addr", "peer.addr"].map(|f| node.data().join(f));
    let before = addr_files.clone().map(|p| std::fs::read_to_string(p).unwrap());
    // The same data folder, other ports: nothing else stops it early.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("second.toml");
    std::fs::write(
        &config,
        format!(
            "node_name = \"second\"\ndata_dir = \"{}\"\n[peer]\nlisten = \"127.0.0.1:0\"\n\
             secret_file = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n",
            node.data().display(),
            node.data().join("../secret").display()
        ),
    )
    .unwrap();
    let out = refused_daemon(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another tandem daemon runs on the data folder"), "{err}");
    assert_eq!(addr_files.map(|p| std::fs::read_to_string(p).unwrap()), before);
    // and the running daemon's CLI still reaches it
    node.ok(&["cluster", "status"]);
}

/// Regression (issue 14): the raft log segments (every replicated value) were 0644 in 0755
/// folders, the logs 0644.
#[test]
fn the_data_folder_logs_and_raft_log_are_private() {
    let node = Node::new("solo", "");
    node.ok(&["cluster", "init"]);
    node.set("macros", "app:search", "m", "definition", "index=secret_index");
    let data = node.data();
    assert_eq!(mode(&data), 0o700, "the data folder");
    assert_eq!(mode(&data.join("logs")), 0o700, "the log folder");
    assert_eq!(mode(&data.join("cluster/log")), 0o700, "the raft log folder");
    let mut checked = 0;
    for dir in [data.join("logs"), data.join("cluster/log")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log" || e == "seg") {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 7, "{checked} files checked");
    assert_eq!(mode(&data.join("api.token")), 0o600);
}

/// Regression (issue 14): a world-readable secret file was used silently (ssh refuses such a
/// key), and a configured secret file that did not exist was replaced by a new random secret.
#[test]
fn an_open_secret_file_or_a_missing_configured_one_stops_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.secret");
    let config = dir.path().join("tandem.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{0}/data\"\n[peer]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"{1}\"\n\
             [api]\nlisten = \"127.0.0.1:0\"\n",
            dir.path().display(),
            secret.display()
        ),
    )
    .unwrap();
    let out = refused_daemon(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{} does not exist", secret.display())), "{err}");
    assert!(!secret.exists(), "no secret was made up");

    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = refused_daemon(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mode 0644") && err.contains(&format!("chmod 600 {}", secret.display())), "{err}");
}
