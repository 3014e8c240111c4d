//! Running the tools measured: a child process timed and reaped with wait4 (for its rusage),
//! the primary `tandem daemon` watched through /proc, and a reader that hammers a tree.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::cpu_of;

/// A finished child process: wall time and its rusage (including the children it reaped).
pub struct Finished {
    pub ok: bool,
    pub wall: f64,
    pub cpu: f64,
    pub maxrss_mib: f64,
    pub stdout: String,
    pub stderr: String,
}

/// Spawns `cmd` with its output in files under `dir` and reaps it with wait4 for its rusage.
#[expect(clippy::zombie_processes, reason = "reaped by wait4, which std's wait cannot replace")]
pub fn run_measured(cmd: &mut Command, dir: &Path) -> Finished {
    let (out, err) = (dir.join("run.stdout"), dir.join("run.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .env("LC_ALL", "C");
    let start = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child with valid out-pointers; rusage is plain old data. The
    // std Child is never waited on afterwards (dropping it does not wait).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Finished {
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        wall,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        maxrss_mib: usage.ru_maxrss as f64 / 1024.0,
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}

/// The tandem binary measured: this build's, or TREE_SYNC_TANDEM (another build, for a
/// before/after comparison on the same machine and trees).
pub fn tandem_bin() -> PathBuf {
    std::env::var_os("TREE_SYNC_TANDEM")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tandem")), PathBuf::from)
}

/// A `tandem daemon`, watched through /proc.
pub struct Daemon {
    child: Child,
    data: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, data: &Path, stderr: &Path) -> Self {
        let child = Command::new(tandem_bin())
            .arg("--config")
            .arg(config)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(File::create(stderr).unwrap())
            .spawn()
            .unwrap();
        let daemon = Self { child, data: data.to_path_buf() };
        let start = Instant::now();
        while !data.join("api.addr").exists() {
            assert!(start.elapsed() < Duration::from_secs(120), "the daemon never came up");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// utime + stime (+ reaped children's) so far, in seconds.
    pub fn cpu(&self) -> f64 {
        cpu_of(self.child.id(), true)
    }

    pub fn log(&self) -> PathBuf {
        self.data.join("logs/tandem.log")
    }

    /// The daemon's log past byte `offset`.
    pub fn log_since(&self, offset: u64) -> String {
        let log = std::fs::read(self.log()).unwrap_or_default();
        String::from_utf8_lossy(log.get(offset as usize..).unwrap_or_default()).into_owned()
    }

    pub fn log_len(&self) -> u64 {
        std::fs::metadata(self.log()).map_or(0, |m| m.len())
    }

    /// The wire bytes of the newest "sync pass served" line the daemon logged past `offset` of
    /// its log (the logger may lag the pass by a moment).
    pub fn served_wire_bytes(&self, offset: u64) -> Option<u64> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            let new = self.log_since(offset);
            let line = new.lines().rev().find(|l| l.contains("sync pass served"));
            if let Some(rest) = line.and_then(|l| l.split("wire_bytes: ").nth(1)) {
                return rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The resident high-water mark (VmHWM) since the last [`Daemon::reset_hwm`].
    pub fn hwm_mib(&self) -> f64 {
        proc_status_kib(self.child.id(), "VmHWM:") / 1024.0
    }

    /// Current resident size.
    pub fn rss_mib(&self) -> f64 {
        proc_status_kib(self.child.id(), "VmRSS:") / 1024.0
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resets the high-water mark, so the next reading is this step's peak.
    pub fn reset_hwm(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }
}

fn proc_status_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("---- daemon log (newest first) ----\n{}", tail.join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Another process reading every file of a tree in a loop (as a backup or an application
/// would) until dropped.
pub struct BusyReader {
    child: Child,
}

impl BusyReader {
    pub fn start(tree: &Path) -> BusyReader {
        let script =
            format!("while :; do find '{}' -type f -exec cat {{}} + > /dev/null 2>&1; done", tree.display());
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        BusyReader { child }
    }
}

impl Drop for BusyReader {
    fn drop(&mut self) {
        // The shell and the find and cat it runs: its whole process group.
        // SAFETY: kill(2) of our own child's process group.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Removes a tree and flushes, so later timed steps do not pay for its deletion.
pub fn remove_tree(path: &Path) {
    if path.exists() {
        std::fs::remove_dir_all(path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }
    // Deletes on this ext4 (mounted with `discard`) slow the next writes until flushed.
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}
