//! The daemon's edges as an operator meets them: its data folder is private and claimed
//! before anything is written to it, credentials other users could read stop it with the fix
//! to run, a configured secret file that is missing is an error, not a new secret; and as an
//! attacker without the secret meets them: silent sockets do not cut a member off.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Node, SECRET};
use crate::support::{output_within, wait_for};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs `tandem daemon` on `config` and waits for it to give up (it must: each case here is
/// one the daemon refuses); its output.
fn refused_daemon(config: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.env_remove("TANDEM_CONFIG").env_remove("RUST_LOG").arg("--config").arg(config).arg("daemon");
    let out = output_within(&mut cmd, Duration::from_secs(30)).expect("the daemon kept running");
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

/// One attacker's socket to `target`, opened again as soon as the daemon closes it: silent,
/// or after a valid greeting (which needs no secret).
async fn hold_socket(target: SocketAddr, greet: bool, opened: Arc<AtomicU64>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let Ok(mut s) = tokio::net::TcpStream::connect(target).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        if greet {
            let _ = s.write_all(b"TNDM\x00\x01\x00\x00").await;
        }
        let mut sink = Vec::new();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = s.read_to_end(&mut sink) => {}
        }
    }
}

/// Regression (issue 14): one process holding ~300 silent sockets (more than the 256
/// connections the listener served, each allowed 5 s to finish its handshake) cut a member
/// off: 0 of 20 pings from another member answered. The attacker here is on the member's own
/// address (loopback), so no per-address limit can tell them apart; it reopens every socket
/// the daemon closes.
#[test]
fn silent_sockets_do_not_cut_a_member_off() {
    // More to measure what holds (20/20 up to 6000 here).
    let sockets = crate::common::knob("TANDEM_TEST_SILENT_SOCKETS", 320) as usize;
    let a = Node::new("a", "");
    let b = Node::new("b", "");
    let target: SocketAddr = a.peer.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (opened, stop) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
    for i in 0..sockets {
        runtime.spawn(hold_socket(target, i % 2 == 1, opened.clone(), stop.clone()));
    }
    wait_for(Duration::from_secs(20), || (opened.load(Ordering::Relaxed) >= sockets as u64).then_some(()))
        .expect("the attacker's sockets were opened");
    std::thread::sleep(Duration::from_millis(200));
    let before = opened.load(Ordering::Relaxed);
    let started = Instant::now();
    let answered = (0..20).filter(|_| b.cli(&["peer", "ping", &a.peer]).status.success()).count();
    let took = started.elapsed();
    let reopened = opened.load(Ordering::Relaxed) - before;
    stop.cancel();
    runtime.shutdown_timeout(Duration::from_secs(1));
    eprintln!(
        "{answered}/20 pings answered in {took:?} beside {sockets} attacker sockets ({reopened} reopened meanwhile)"
    );
    assert_eq!(answered, 20, "pings answered beside {sockets} silent sockets");
}
