//! The real `tandem` binary: the daemon on a config, peers pinging it with the right and a
//! wrong secret, hot reload inside the running daemon, per-job log files, a clean stop on
//! SIGTERM, and the plugin commands a site uses from the shell.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support::{guest, install_file, output_within, wait_for};

fn tandem() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.env_remove("TANDEM_CONFIG").env_remove("RUST_LOG");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("running tandem")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A daemon on port 0 with its own data folder; killed when dropped.
struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(secret: &str) -> Self {
        Self::start_with(secret, "")
    }

    /// A daemon whose config ends with `extra` (whole TOML tables).
    fn start_with(secret: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        crate::common::write_secret(&dir.path().join("secret"), secret);
        let config = dir.path().join("tandem.toml");
        std::fs::write(
            &config,
            format!(
                "node_name = \"alpha\"\ndata_dir = \"{0}/data\"\n[plugins]\nreload_interval_ms = 100\n\
                 [peer]\nlisten = \"127.0.0.1:0\"\nsecret_file = \"{0}/secret\"\n\
                 [api]\nlisten = \"127.0.0.1:0\"\n{1}",
                dir.path().display(),
                extra
            ),
        )
        .unwrap();
        let child = tandem()
            .arg("--config")
            .arg(&config)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Self { child, dir };
        wait_for(Duration::from_secs(60), || daemon.addr()).expect("the daemon never came up");
        daemon
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn addr(&self) -> Option<String> {
        std::fs::read_to_string(self.data().join("peer.addr")).ok().map(|s| s.trim().to_string())
    }

    fn log(&self, file: &str) -> String {
        std::fs::read_to_string(self.data().join("logs").join(file)).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client configuration with its own secret file.
fn client_config(dir: &Path, secret: &str) -> PathBuf {
    crate::common::write_secret(&dir.join("client.secret"), secret);
    let config = dir.join("client.toml");
    std::fs::write(
        &config,
        format!(
            "node_name = \"beta\"\ndata_dir = \"{0}/client\"\n[peer]\nsecret_file = \"{0}/client.secret\"\n",
            dir.display()
        ),
    )
    .unwrap();
    config
}

const SECRET: &str = "correct horse battery staple, cluster one";

#[test]
fn daemon_answers_pings_from_peers_with_the_secret_and_refuses_others() {
    let daemon = Daemon::start(SECRET);
    let addr = daemon.addr().unwrap();
    let client = tempfile::tempdir().unwrap();

    let ok = run(tandem().arg("-c").arg(client_config(client.path(), SECRET)).args(["peer", "ping", &addr]));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("node `alpha` answered"), "{}", text(&ok.stdout));

    let bad = run(tandem()
        .arg("-c")
        .arg(client_config(client.path(), "some other cluster's secret"))
        .args(["peer", "ping", &addr]));
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("we do not share its cluster secret"), "{}", text(&bad.stderr));
    let refused =
        wait_for(Duration::from_secs(5), || daemon.log("peer.log").contains("peer refused").then_some(()));
    assert!(refused.is_some(), "peer.log: {}", daemon.log("peer.log"));
}

#[test]
fn daemon_hot_reloads_plugins_and_logs_per_job() {
    let daemon = Daemon::start(SECRET);
    let folder = daemon.data().join("plugins");
    install_file(&std::fs::read(guest("example-skip-bak.wasm")).unwrap(), &folder.join("skip-bak.wasm"));
    let loaded = wait_for(Duration::from_secs(5), || {
        daemon.log("plugins.log").contains("plugin loaded and active").then_some(())
    });
    assert!(loaded.is_some(), "plugins.log: {}", daemon.log("plugins.log"));
    let log = daemon.log("plugins.log");
    assert!(log.contains("plugin loaded and active"), "{log}");
    // the plugin's own log line, through the host `log` import, tagged with its name
    assert!(log.contains("skip-bak example ready"), "{log}");

    std::fs::write(folder.join("broken.wasm"), b"not wasm").unwrap();
    let refused = wait_for(Duration::from_secs(5), || {
        daemon.log("plugins.log").contains("not a WebAssembly file").then_some(())
    });
    assert!(refused.is_some(), "plugins.log: {}", daemon.log("plugins.log"));
    assert!(daemon.log("plugins.log").contains("`broken.wasm`"));
    assert!(daemon.log("tandem.log").contains("tandem is up"));
    assert!(!daemon.log("peer.log").contains("plugin"), "peer.log holds only the peer job");
}

#[test]
fn daemon_writes_json_logs_when_asked() {
    let daemon = Daemon::start_with(SECRET, "[log]\nformat = \"json\"\nlevel = \"debug\"\n");
    let up =
        wait_for(Duration::from_secs(5), || daemon.log("tandem.log").contains("tandem is up").then_some(()));
    assert!(up.is_some());
    let log = daemon.log("tandem.log");
    let mut seen_up = false;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["target"].is_string(), "{line}");
        if v["fields"]["message"] == "tandem is up" {
            assert_eq!(v["fields"]["node"], "alpha");
            seen_up = true;
        }
    }
    assert!(seen_up, "{log}");
}

#[test]
fn daemon_stops_cleanly_on_sigterm() {
    let mut daemon = Daemon::start(SECRET);
    let pid = daemon.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status =
        wait_for(Duration::from_secs(10), || daemon.child.try_wait().unwrap()).expect("still running");
    assert!(status.0.success(), "exit: {:?}", status.0);
    assert!(daemon.log("tandem.log").contains("tandem stopped"));
}

#[test]
fn plugins_check_accepts_a_good_plugin_and_names_what_is_wrong_with_a_bad_one() {
    let ok = run(tandem().args(["plugins", "check"]).arg(guest("example-skip-bak.wasm")));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("a path-filter plugin built for tandem:policy@0.1.0"));

    let bad = run(tandem().args(["plugins", "check"]).arg(guest("fixture-hostile-loop.wasm")));
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("`fixture-hostile-loop.wasm`: timed out"), "{}", text(&bad.stderr));
}

#[test]
fn plugins_eval_runs_a_decision_from_json() {
    let out = run(tandem().args(["plugins", "eval", "whitelist", "-i", r#"{"conf_type":"history"}"#]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["replicates"], false);

    let input =
        r#"{"tree":"vault","entries":[{"path":"a.bak","kind":"file"},{"path":"cache","kind":"dir"}]}"#;
    let out = run(tandem()
        .args(["plugins", "eval", "path-filter", "--plugin"])
        .arg(guest("example-skip-bak.wasm"))
        .args(["--set", "skip_dir=cache", "-i", input]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdicts"][0]["verdict"], "skip");
    assert_eq!(v["verdicts"][1]["verdict"], "prune");

    let out = run(tandem()
        .args(["plugins", "eval", "purge-policy", "--set", "eligible_count=1", "-i"])
        .arg(r#"{"count": 4, "oldest": [1, 2, 3], "now": 999999999999}"#));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["purgeable"], 3);

    let out = run(tandem().args(["plugins", "eval", "purge-policy", "-i", r#"{"count": "x"}"#]));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not a purge-policy request"), "{}", text(&out.stderr));
}

#[test]
fn a_malformed_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[plugins]\nmemory_limit = 3\n").unwrap();
    let out = run(tandem().arg("-c").arg(&config).args(["config", "check"]));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("unknown field `memory_limit`"), "{err}");
}

/// Regression (issue 14): `tandem config check` printed both API tokens.
#[test]
fn config_check_does_not_print_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tandem.toml");
    std::fs::write(
        &config,
        "[api]\nadmin_token = \"admin-token-do-not-print\"\nread_token = \"read-token-do-not-print\"\n",
    )
    .unwrap();
    let out = run(tandem().arg("-c").arg(&config).args(["config", "check"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(!printed.contains("do-not-print"), "{printed}");
    assert!(printed.contains("admin_token = \"(set; not shown)\""), "{printed}");
}

/// Regression (issue 14): `tandem ... | head -1` panicked with a backtrace when the reader
/// closed the pipe; a command now ends quietly, as Unix tools do.
#[test]
fn a_closed_output_pipe_ends_a_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = tandem().args(["config", "default"]).stdout(writer).stderr(Stdio::piped()).output().unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

/// Regression (issue 14): `plugins check` read `/dev/zero` until it ran out of memory and
/// waited forever on a FIFO.
#[test]
fn plugins_check_refuses_what_is_not_a_plugin_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("plugin.wasm");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let big = dir.path().join("big.wasm");
    std::fs::File::create(&big).unwrap().set_len(tandem::plugin::MAX_PLUGIN_BYTES + 1).unwrap();
    // /dev/zero last: a regressed build fails on the FIFO first, before it eats the memory.
    for (path, expect) in [
        (fifo.as_path(), "is not a regular file".to_string()),
        (big.as_path(), format!("over the {} byte limit", tandem::plugin::MAX_PLUGIN_BYTES)),
        (Path::new("/dev/zero"), "is not a regular file".to_string()),
    ] {
        let out = output_within(tandem().args(["plugins", "check"]).arg(path), Duration::from_secs(10))
            .unwrap_or_else(|| panic!("`plugins check {}` still running", path.display()));
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(&expect), "{}: {}", path.display(), text(&out.stderr));
    }
}
