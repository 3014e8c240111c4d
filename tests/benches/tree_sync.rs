//! Tree sync beside rsync on the same generated tree, with real processes (release build): a
//! primary `tandem daemon` serves the tree and `tandem sync once --json` pulls it on the
//! standby; the rsync rows are a local `rsync -a --no-whole-file --delete --stats src/ dst/`,
//! plain and with `--fsync` (tandem's copy is durable, plain rsync's is not). Each tool syncs
//! into its own destination.
//!
//! Steps: (a) initial copy into an empty destination, (b) a pass with no change, (c) a pass
//! after rewriting 1 % of the small files and 1 MiB inside 5 large files (a fresh change each
//! round, applied once to the source, then synced by every tool). Each step runs N rounds with
//! the tools interleaved (order rotated per round); before every timed run: `sync` and
//! `echo 1 > /proc/sys/vm/drop_caches`. Measured per run: wall time; CPU time (user + sys) of
//! every process involved (rsync and the children it reaps, from wait4; tandem's CLI from
//! wait4 plus the primary daemon's /proc/<pid>/stat delta); peak memory (ru_maxrss; the
//! daemon's VmHWM, a high-water mark over its whole life); bytes sent (rsync's "Total bytes
//! sent", tandem's compressed `wire_bytes`). The report gives medians, tandem/rsync ratios and
//! the goals, on stdout and in target/tree_sync_report.md; every copy is compared with the
//! source after (a) and (c).
//!
//! Run: `cargo bench -p tandem --bench tree_sync` (as root, to drop caches). Knobs:
//! TREE_SYNC_ROUNDS (3), TREE_SYNC_SMALL (20000 small files), TREE_SYNC_LARGE (20 large
//! files), TREE_SYNC_DIR (where the work folder goes, default target/; not tmpfs).

#[path = "../common.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cpu_of, free_port, knob, quiesce};

const SECRET: &str = "tree sync benchmark cluster secret 0123456789";
const TREE: &str = "bench";
/// The small tree of the event-lag step, followed by a standby daemon.
const LAG_TREE: &str = "lag";
/// Writes timed in the event-lag step.
const LAG_WRITES: usize = 200;
/// Small files are spread over FOLDERS.0 x FOLDERS.1 nested folders.
const FOLDERS: (usize, usize) = (40, 25);
const SMALL_BYTES: (u64, u64) = (1 << 10, 16 << 10);
const LARGE_BYTES: (u64, u64) = (20 << 20, 50 << 20);
/// Per round of (c): this share of the small files rewritten, and LARGE_EDIT bytes overwritten
/// in LARGE_EDITED large files.
const SMALL_EDIT_PERCENT: usize = 1;
const LARGE_EDIT: usize = 1 << 20;
const LARGE_EDITED: usize = 5;
const CHUNK: usize = 1 << 20;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// splitmix64: deterministic content from a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Appends `len` bytes: random, or log-like text from a small vocabulary (compresses ~3x).
    fn fill(&mut self, out: &mut Vec<u8>, len: usize, text: bool) {
        const WORDS: [&str; 32] = [
            "request",
            "user",
            "session",
            "ok",
            "error",
            "retry",
            "vault",
            "playbook",
            "container",
            "status",
            "timeout",
            "queue",
            "the",
            "a",
            "of",
            "to",
            "and",
            "in",
            "event",
            "artifact",
            "action",
            "run",
            "asset",
            "owner",
            "closed",
            "open",
            "severity",
            "high",
            "low",
            "note",
            "ticket",
            "update",
        ];
        let end = out.len() + len;
        if !text {
            while out.len() < end {
                out.extend_from_slice(&self.next().to_le_bytes());
            }
        }
        while out.len() < end {
            let _ = write!(out, "{:06} ", self.below(1_000_000));
            let mut bits = self.next();
            for _ in 0..10 {
                out.extend_from_slice(WORDS[(bits & 31) as usize].as_bytes());
                out.push(b' ');
                bits >>= 5;
            }
            out.push(b'\n');
        }
        out.truncate(end);
    }

    /// `n` distinct indices below `of`.
    fn pick(&mut self, n: usize, of: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..of).collect();
        for i in 0..n.min(of) {
            let j = i + self.below((of - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(n.min(of));
        all
    }
}

/// The generated tree's shape; file contents follow from (file, version).
struct Shape {
    small: usize,
    large: usize,
}

impl Shape {
    fn small_path(&self, i: usize) -> PathBuf {
        let folder = i % (FOLDERS.0 * FOLDERS.1);
        let ext = if i.is_multiple_of(2) { "txt" } else { "bin" };
        PathBuf::from(format!("d{:02}/e{:02}/f{i:05}.{ext}", folder / FOLDERS.1, folder % FOLDERS.1))
    }

    fn large_path(&self, j: usize) -> PathBuf {
        PathBuf::from(format!("large/big{j:02}.{}", if j.is_multiple_of(2) { "txt" } else { "bin" }))
    }

    fn write_small(&self, root: &Path, i: usize, version: u64) -> u64 {
        let mut rng = Rng::new((1 << 60) ^ ((i as u64) << 20) ^ version);
        let len = rng.between(SMALL_BYTES);
        let mut buf = Vec::with_capacity(len as usize);
        rng.fill(&mut buf, len as usize, i.is_multiple_of(2));
        let path = root.join(self.small_path(i));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, buf).unwrap();
        len
    }

    fn write_large(&self, root: &Path, j: usize) -> u64 {
        let mut rng = Rng::new((2 << 60) ^ j as u64);
        let len = rng.between(LARGE_BYTES);
        let path = root.join(self.large_path(j));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file = File::create(path).unwrap();
        let mut buf = Vec::with_capacity(CHUNK);
        let mut left = len as usize;
        while left > 0 {
            buf.clear();
            rng.fill(&mut buf, left.min(CHUNK), j.is_multiple_of(2));
            file.write_all(&buf).unwrap();
            left -= buf.len();
        }
        len
    }

    /// The whole tree; returns its size in bytes.
    fn generate(&self, root: &Path) -> u64 {
        let small: u64 = (0..self.small).map(|i| self.write_small(root, i, 0)).sum();
        small + (0..self.large).map(|j| self.write_large(root, j)).sum::<u64>()
    }

    /// Round `round`'s change for (c): rewrites 1 % of the small files (new content and size,
    /// same name) and overwrites 1 MiB in place at a random offset in 5 large files.
    fn modify(&self, root: &Path, round: usize) -> (usize, usize) {
        let mut rng = Rng::new((3 << 60) ^ round as u64);
        let small = rng.pick((self.small * SMALL_EDIT_PERCENT / 100).max(1), self.small);
        for &i in &small {
            self.write_small(root, i, round as u64 + 1);
        }
        let large = rng.pick(LARGE_EDITED, self.large);
        for &j in &large {
            let file = OpenOptions::new().write(true).open(root.join(self.large_path(j))).unwrap();
            let len = file.metadata().unwrap().len();
            let mut buf = Vec::with_capacity(LARGE_EDIT);
            rng.fill(&mut buf, LARGE_EDIT, false);
            file.write_all_at(&buf, rng.below(len - LARGE_EDIT as u64)).unwrap();
        }
        (small.len(), large.len())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    Tandem,
    Rsync,
    RsyncFsync,
}

const TOOLS: [Tool; 3] = [Tool::Tandem, Tool::Rsync, Tool::RsyncFsync];

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Tandem => "tandem",
            Tool::Rsync => "rsync",
            Tool::RsyncFsync => "rsync --fsync",
        }
    }
}

/// A measured step. Each has its own round preparation (`Bench::prepare_round`) and per-tool
/// preparation (`Bench::prepare_tool`); a new kind of measurement is one more variant.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Initial,
    NoChange,
    Changed,
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Step::Initial => "(a) initial copy",
            Step::NoChange => "(b) no change",
            Step::Changed => "(c) 1 % small + 5 x 1 MiB large",
        }
    }

    /// The goal: tandem's median wall time at most this share of plain rsync's.
    fn goal(self) -> f64 {
        match self {
            Step::Initial => 0.5,
            Step::NoChange => 0.1,
            Step::Changed => 0.33,
        }
    }
}

/// One timed run of one tool.
#[derive(Clone, Default)]
struct Sample {
    wall: f64,
    /// User + system seconds of every process involved (for tandem: CLI + daemon).
    cpu: f64,
    daemon_cpu: f64,
    /// ru_maxrss: tandem's CLI, rsync's largest process.
    peak_mib: f64,
    /// The primary daemon's VmHWM after the run (its peak since it started).
    daemon_hwm_mib: f64,
    /// None: tandem moved files but neither its CLI nor the primary's log said how many bytes.
    bytes: Option<u64>,
    /// What the tool said it did.
    said: String,
}

/// A finished child process: wall time and its rusage (including the children it reaped).
struct Finished {
    ok: bool,
    wall: f64,
    cpu: f64,
    maxrss_mib: f64,
    stdout: String,
    stderr: String,
}

/// Spawns `cmd` with its output in files under `dir` and reaps it with wait4 for its rusage.
#[expect(clippy::zombie_processes, reason = "reaped by wait4, which std's wait cannot replace")]
fn run_measured(cmd: &mut Command, dir: &Path) -> Finished {
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

/// The primary `tandem daemon`, watched through /proc.
struct Daemon {
    child: Child,
    data: PathBuf,
}

impl Daemon {
    fn start(config: &Path, data: &Path, stderr: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
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
            assert!(start.elapsed() < Duration::from_secs(120), "the primary daemon never came up");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// utime + stime (+ reaped children's) so far, in seconds.
    fn cpu(&self) -> f64 {
        cpu_of(self.child.id(), true)
    }

    /// The wire bytes of the newest "sync pass served" line the daemon logged past `offset` of
    /// its log (the logger may lag the pass by a moment).
    fn served_wire_bytes(&self, offset: u64) -> Option<u64> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            let log = std::fs::read(self.log()).unwrap_or_default();
            let new = String::from_utf8_lossy(log.get(offset as usize..).unwrap_or_default());
            let line = new.lines().rev().find(|l| l.contains("sync pass served"));
            if let Some(rest) = line.and_then(|l| l.split("wire_bytes: ").nth(1)) {
                return rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn log(&self) -> PathBuf {
        self.data.join("logs/tandem.log")
    }

    fn hwm_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("---- primary daemon log (newest first) ----\n{}", tail.join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn remove_tree(path: &Path) {
    if path.exists() {
        std::fs::remove_dir_all(path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }
    // Deletes on this ext4 (mounted with `discard`) slow the next writes until flushed.
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}

/// The work folder, the primary daemon and where each tool's copy goes.
struct Bench {
    work: PathBuf,
    src: PathBuf,
    /// The primary's peer port, for the standby configurations.
    peer: u16,
    /// Which set of copies the steps use: each initial-copy round writes a fresh set, so no
    /// tool writes right after a big deletion (ext4 then searches long for free inodes,
    /// which made every initial copy several times slower, for all tools alike).
    set: std::cell::Cell<usize>,
    daemon: Daemon,
    drop_caches: bool,
}

impl Bench {
    fn start(work: &Path, drop_caches: bool) -> Self {
        common::write_secret(&work.join("secret"), SECRET);
        let w = work.display();
        let (peer, api) = (free_port(), free_port());
        let trees = format!("[sync.trees]\n{TREE} = \"src\"\nwarmup = \"warmup\"\n{LAG_TREE} = \"lag\"\n");
        std::fs::create_dir_all(work.join("lag")).unwrap();
        let primary_config = work.join("primary.toml");
        std::fs::write(
            &primary_config,
            format!(
                "node_name = \"primary\"\ndata_dir = \"{w}/p/data\"\n\
                 [peer]\nlisten = \"127.0.0.1:{peer}\"\nsecret_file = \"{w}/secret\"\n\
                 [api]\nlisten = \"127.0.0.1:{api}\"\n[sync]\napp_home = \"{w}\"\n{trees}"
            ),
        )
        .unwrap();
        let daemon = Daemon::start(&primary_config, &work.join("p/data"), &work.join("daemon.stderr"));
        let bench = Self {
            work: work.to_path_buf(),
            src: work.join("src"),
            peer,
            set: std::cell::Cell::new(0),
            daemon,
            drop_caches,
        };
        // One unmeasured pass of a one-file tree: the daemon's first pass pays one-off costs.
        std::fs::create_dir_all(work.join("warmup")).unwrap();
        std::fs::write(work.join("warmup/hello.txt"), "warm-up\n").unwrap();
        let warm = run_measured(&mut bench.tandem_cli("warmup"), work);
        assert!(warm.ok, "warm-up pass failed:\n{}{}", warm.stdout, warm.stderr);
        bench
    }

    fn dest(&self, tool: Tool) -> PathBuf {
        let set = self.set.get();
        match tool {
            Tool::Tandem => self.work.join(format!("sb{set}/src")),
            Tool::Rsync => self.work.join(format!("rsync{set}")),
            Tool::RsyncFsync => self.work.join(format!("rsync-fsync{set}")),
        }
    }

    /// The standby's configuration for the current set of copies (its own data folder, so its
    /// index starts empty with its tree).
    fn standby_config(&self) -> PathBuf {
        let (w, set) = (self.work.display(), self.set.get());
        let path = self.work.join(format!("standby{set}.toml"));
        let text = format!(
            "node_name = \"standby\"\ndata_dir = \"{w}/s{set}/data\"\n\
             [peer]\nlisten = \"127.0.0.1:{}\"\nsecret_file = \"{w}/secret\"\n\
             [api]\nlisten = \"127.0.0.1:{}\"\n\
             [sync]\napp_home = \"{w}/sb{set}\"\n\
             [sync.trees]\n{TREE} = \"src\"\nwarmup = \"warmup\"\n",
            free_port(),
            free_port()
        );
        if !path.exists() {
            std::fs::write(&path, text).unwrap();
        }
        path
    }

    fn tandem_cli(&self, tree: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        let primary = format!("127.0.0.1:{}", self.peer);
        cmd.arg("-c").arg(self.standby_config());
        cmd.args(["sync", "once", "--tree", tree, "--json", "--primary", &primary]);
        cmd
    }

    fn prepare_round(&self, step: Step, shape: &Shape, round: usize) {
        if step == Step::Initial {
            self.set.set(round);
        }
        if step == Step::Changed {
            let (small, large) = shape.modify(&self.src, round);
            eprintln!("  round {}: rewrote {small} small files, 1 MiB in {large} large ones", round + 1);
        }
    }

    fn prepare_tool(&self, step: Step, tool: Tool) {
        if step == Step::Initial {
            assert!(!self.dest(tool).exists(), "a fresh destination for every initial copy");
        }
    }

    /// Starts a standby daemon that follows the lag tree, then times single writes on the
    /// primary until each is on the standby; the lags in seconds, sorted.
    fn event_lag(&self) -> Vec<f64> {
        let w = self.work.display();
        let config = self.work.join("follower.toml");
        std::fs::write(
            &config,
            format!(
                "node_name = \"follower\"\ndata_dir = \"{w}/f/data\"\n\
                 [peer]\nlisten = \"127.0.0.1:{}\"\nsecret_file = \"{w}/secret\"\n\
                 [api]\nlisten = \"127.0.0.1:{}\"\n\
                 [sync]\napp_home = \"{w}/fsb\"\nprimary = \"127.0.0.1:{}\"\n\
                 [sync.trees]\n{LAG_TREE} = \"lag\"\n",
                free_port(),
                free_port(),
                self.peer
            ),
        )
        .unwrap();
        let (src, copy) = (self.work.join("lag"), self.work.join("fsb/lag"));
        let follower = Daemon::start(&config, &self.work.join("f/data"), &self.work.join("follower.stderr"));
        let mut lags = Vec::with_capacity(LAG_WRITES);
        for i in 0..LAG_WRITES {
            let name = format!("f{:02}.txt", i % 20);
            let content = format!("write {i:06} ").repeat(80).into_bytes();
            let written = Instant::now();
            std::fs::write(src.join(&name), &content).unwrap();
            loop {
                if std::fs::read(copy.join(&name)).is_ok_and(|c| c == content) {
                    break;
                }
                assert!(written.elapsed() < Duration::from_secs(30), "write {i} never reached the standby");
                std::thread::sleep(Duration::from_micros(500));
            }
            lags.push(written.elapsed().as_secs_f64());
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(follower);
        lags.sort_by(f64::total_cmp);
        lags
    }

    fn run(&self, tool: Tool) -> Sample {
        quiesce(self.drop_caches);
        match tool {
            Tool::Tandem => self.run_tandem(),
            Tool::Rsync | Tool::RsyncFsync => self.run_rsync(tool),
        }
    }

    fn run_tandem(&self) -> Sample {
        let log_offset = std::fs::metadata(self.daemon.log()).map_or(0, |m| m.len());
        let daemon_before = self.daemon.cpu();
        let done = run_measured(&mut self.tandem_cli(TREE), &self.work);
        let daemon_cpu = self.daemon.cpu() - daemon_before;
        assert!(done.ok, "tandem sync once failed:\n{}{}", done.stdout, done.stderr);
        let json: serde_json::Value = serde_json::from_str(done.stdout.trim())
            .unwrap_or_else(|e| panic!("sync once --json printed {:?}: {e}", done.stdout));
        let field = |k: &str| json[k].as_u64().unwrap_or_else(|| panic!("no `{k}` in {json}"));
        assert_eq!(field("failed"), 0, "{json}");
        let moved: u64 = ["files_whole", "files_delta", "deleted", "dirs_links"].into_iter().map(field).sum();
        // A CLI that counts the wire bytes on the primary's side only prints 0 for them; the
        // primary logs its own count of the same bytes.
        let (bytes, source) = match field("wire_bytes") {
            0 if moved > 0 => match self.daemon.served_wire_bytes(log_offset) {
                Some(b) => (Some(b), "; wire bytes from the primary's log (the CLI printed 0)"),
                None => (None, "; wire bytes unknown (the CLI printed 0, the primary logged none)"),
            },
            b => (Some(b), ""),
        };
        Sample {
            wall: done.wall,
            cpu: done.cpu + daemon_cpu,
            daemon_cpu,
            peak_mib: done.maxrss_mib,
            daemon_hwm_mib: self.daemon.hwm_mib(),
            bytes,
            said: format!(
                "{} whole, {} by delta, {} deleted, {} content bytes{source}",
                field("files_whole"),
                field("files_delta"),
                field("deleted"),
                field("content_bytes")
            ),
        }
    }

    fn run_rsync(&self, tool: Tool) -> Sample {
        let mut cmd = Command::new("rsync");
        cmd.args(["-a", "--no-whole-file", "--delete", "--stats"]);
        if tool == Tool::RsyncFsync {
            cmd.arg("--fsync");
        }
        cmd.arg(format!("{}/", self.src.display())).arg(format!("{}/", self.dest(tool).display()));
        let done = run_measured(&mut cmd, &self.work);
        assert!(done.ok, "{} failed:\n{}{}", tool.label(), done.stdout, done.stderr);
        let stat = |name: &str| -> u64 {
            let line = done.stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| {
                panic!("no `{name}` in rsync --stats:\n{}", done.stdout);
            });
            line[name.len()..].split_whitespace().next().unwrap().replace(',', "").parse().unwrap()
        };
        Sample {
            wall: done.wall,
            cpu: done.cpu,
            peak_mib: done.maxrss_mib,
            bytes: Some(stat("Total bytes sent:")),
            said: format!("{} files transferred", stat("Number of regular files transferred:")),
            ..Sample::default()
        }
    }
}

/// Entries under `root`: relative path -> size for files, None for folders.
fn listing(root: &Path) -> BTreeMap<PathBuf, Option<u64>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in std::fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let (path, meta) = (rel.join(entry.file_name()), entry.metadata().unwrap());
            if meta.is_dir() {
                todo.push(path.clone());
                out.insert(path, None);
            } else {
                out.insert(path, Some(meta.len()));
            }
        }
    }
    out
}

fn read_full(file: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0; CHUNK], vec![0; CHUNK]);
    loop {
        let (n, m) = (read_full(&mut fa, &mut ba), read_full(&mut fb, &mut bb));
        if ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

/// Panics unless `copy` holds exactly the source's folders and files, byte for byte.
fn assert_same_tree(src: &Path, copy: &Path, who: &str) {
    let (want, got) = (listing(src), listing(copy));
    for (path, kind) in &want {
        assert_eq!(got.get(path), Some(kind), "{who}: {} differs in kind or size", path.display());
        if kind.is_some() {
            assert!(same_content(&src.join(path), &copy.join(path)), "{who}: {} differs", path.display());
        }
    }
    assert_eq!(want.len(), got.len(), "{who}: the copy has entries the source has not");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The median, or None when a run's bytes are unknown.
fn median_bytes(samples: &[Sample]) -> Option<f64> {
    samples.iter().map(|s| s.bytes.map(|b| b as f64)).collect::<Option<Vec<_>>>().map(median)
}

fn bytes_text(b: Option<f64>) -> String {
    b.map_or("n/a".into(), |b| thousands(b as u64))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

type Results = BTreeMap<(Step, Tool), Vec<Sample>>;

fn med(results: &Results, step: Step, tool: Tool, f: impl Fn(&Sample) -> f64) -> f64 {
    median(results[&(step, tool)].iter().map(f).collect())
}

fn report(results: &Results, header: &str, warnings: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Tree sync: tandem vs rsync\n");
    for w in warnings {
        let _ = writeln!(out, "**WARNING: {w}**\n");
    }
    let _ = writeln!(out, "{header}\n");
    out.push_str(
        "| step | tool | wall s | CPU s | peak MiB | bytes sent | wall ratio vs rsync | vs rsync --fsync \
         | bytes vs rsync |\n|---|---|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let mut goals = Vec::new();
    for step in [Step::Initial, Step::NoChange, Step::Changed] {
        let wall = |t| med(results, step, t, |s| s.wall);
        let bytes = |t| median_bytes(&results[&(step, t)]);
        for tool in TOOLS {
            let cpu = med(results, step, tool, |s| s.cpu);
            let peak = med(results, step, tool, |s| s.peak_mib);
            let (cpu, peak, ratios) = if tool == Tool::Tandem {
                let daemon = med(results, step, tool, |s| s.daemon_cpu);
                let hwm = results[&(step, tool)].iter().map(|s| s.daemon_hwm_mib).fold(0.0, f64::max);
                let byte_ratio = match (bytes(tool), bytes(Tool::Rsync)) {
                    (Some(t), Some(r)) if r > 0.0 => format!("{:.3}", t / r),
                    _ => "-".into(),
                };
                (
                    format!("{cpu:.2} (CLI {:.2} + daemon {daemon:.2})", cpu - daemon),
                    format!("CLI {peak:.0}, daemon HWM {hwm:.0}"),
                    format!(
                        "{:.3} | {:.3} | {byte_ratio}",
                        wall(tool) / wall(Tool::Rsync),
                        wall(tool) / wall(Tool::RsyncFsync)
                    ),
                )
            } else {
                (format!("{cpu:.2}"), format!("{peak:.0}"), "| |".into())
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {cpu} | {peak} | {} | {ratios} |",
                step.label(),
                tool.label(),
                wall(tool),
                bytes_text(bytes(tool))
            );
        }
        let ratio = wall(Tool::Tandem) / wall(Tool::Rsync);
        let mut goal = format!(
            "{} wall {ratio:.3} <= {} {} (vs --fsync {:.3})",
            &step.label()[..3],
            step.goal(),
            if ratio <= step.goal() { "met" } else { "NOT met" },
            wall(Tool::Tandem) / wall(Tool::RsyncFsync)
        );
        if step == Step::Changed {
            let verdict = match (bytes(Tool::Tandem), bytes(Tool::Rsync)) {
                (Some(t), Some(r)) if t <= r => "met",
                (Some(_), Some(_)) => "NOT met",
                _ => "unknown",
            };
            let _ = write!(goal, ", bytes <= rsync {verdict}");
        }
        goals.push(goal);
    }
    let _ = writeln!(out, "\nGoals (tandem / plain rsync, medians): {}.\n", goals.join("; "));
    out.push_str(
        "CPU: user + sys of every process involved: rsync with the processes it forks and reaps; \
         tandem's `sync once` CLI plus the primary daemon during the run. Peak: ru_maxrss (rsync's \
         largest process, tandem's CLI); the daemon's VmHWM is its high-water mark since it started \
         (all steps so far), not per step. Bytes sent, source to copy only: rsync's `Total bytes \
         sent` (file list and data, uncompressed: no -z); tandem's `wire_bytes` (sync messages \
         after compression, before encryption, counted by the standby). (b) and (c): tandem's \
         passes start from where the standby's last pass left off, with the changed paths from \
         the primary's watcher journal; `sync once --full` would compare whole trees (stat only) \
         instead, as rsync does.\n\n\
         ## Rounds\n\n",
    );
    for ((step, tool), samples) in results {
        for (i, s) in samples.iter().enumerate() {
            let _ = writeln!(
                out,
                "- {} {} round {}: {:.3} s wall, {:.2} s CPU, {} bytes; {}",
                step.label(),
                tool.label(),
                i + 1,
                s.wall,
                s.cpu,
                bytes_text(s.bytes.map(|b| b as f64)),
                s.said
            );
        }
    }
    out
}

fn main() {
    let rounds = knob("TREE_SYNC_ROUNDS", 3).max(1) as usize;
    let shape = Shape {
        small: knob("TREE_SYNC_SMALL", 20_000).max(1) as usize,
        large: knob("TREE_SYNC_LARGE", 20) as usize,
    };
    if Command::new("rsync").arg("--version").output().is_err() {
        panic!("rsync is missing: install it with `apt-get install -y rsync`");
    }
    // CARGO_BIN_EXE_tandem is <target>/release/tandem.
    let target = Path::new(env!("CARGO_BIN_EXE_tandem")).parent().unwrap().parent().unwrap().to_path_buf();
    let parent = std::env::var_os("TREE_SYNC_DIR").map_or(target.clone(), PathBuf::from);
    std::fs::create_dir_all(&parent).unwrap();
    let work = parent.join("tree-sync-work");
    let c_path = std::ffi::CString::new(parent.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs with a valid C string and a zeroed out-struct.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c_path.as_ptr(), &mut fs) }, 0, "statfs {}", parent.display());
    let fs_type = fs.f_type as i64;
    assert!(
        fs_type != TMPFS_MAGIC && fs_type != RAMFS_MAGIC,
        "{} is in memory (tmpfs): set TREE_SYNC_DIR to a folder on disk",
        parent.display()
    );

    let mut warnings = Vec::new();
    // SAFETY: geteuid has no preconditions.
    let drop_caches = unsafe { libc::geteuid() } == 0;
    if !drop_caches {
        warnings.push(
            "not root: the page cache was NOT dropped before the timed runs, so reads may come from \
             memory and the figures flatter every tool"
                .to_string(),
        );
        eprintln!("WARNING: {}", warnings[0]);
    }

    remove_tree(&work);
    std::fs::create_dir_all(&work).unwrap();
    let start = Instant::now();
    let bytes = shape.generate(&work.join("src"));
    let header = format!(
        "Tree: {} small files ({}-{} KiB, half text, half random) in {} x {} folders and {} large files \
         ({}-{} MiB, half text, half random), {:.2} GiB in total, under {}. Medians of {rounds} round(s), \
         tools interleaved; before every timed run `sync` and `echo 1 > /proc/sys/vm/drop_caches`{}.",
        shape.small,
        SMALL_BYTES.0 >> 10,
        SMALL_BYTES.1 >> 10,
        FOLDERS.0,
        FOLDERS.1,
        shape.large,
        LARGE_BYTES.0 >> 20,
        LARGE_BYTES.1 >> 20,
        bytes as f64 / (1u64 << 30) as f64,
        work.display(),
        if drop_caches { "" } else { " (not done: not root)" }
    );
    eprintln!("generated the tree in {:.1} s; {header}", start.elapsed().as_secs_f64());

    let bench = Bench::start(&work, drop_caches);
    let mut results = Results::new();
    for step in [Step::Initial, Step::NoChange, Step::Changed] {
        eprintln!("{}", step.label());
        for round in 0..rounds {
            bench.prepare_round(step, &shape, round);
            for k in 0..TOOLS.len() {
                let tool = TOOLS[(round + k) % TOOLS.len()];
                bench.prepare_tool(step, tool);
                let sample = bench.run(tool);
                eprintln!(
                    "  round {} {:<14} {:>8.3} s wall {:>8.2} s CPU {:>14} bytes  {}",
                    round + 1,
                    tool.label(),
                    sample.wall,
                    sample.cpu,
                    bytes_text(sample.bytes.map(|b| b as f64)),
                    sample.said
                );
                results.entry((step, tool)).or_default().push(sample);
            }
        }
        if step != Step::NoChange {
            for tool in TOOLS {
                assert_same_tree(&bench.src, &bench.dest(tool), tool.label());
            }
            eprintln!("  checked: every copy equals the source");
        }
    }
    eprintln!("(d) event lag: a following standby daemon, {LAG_WRITES} single writes on the primary");
    let lags = bench.event_lag();
    drop(bench);

    let mut text = report(&results, &header, &warnings);
    let pct = |p: f64| lags[((lags.len() as f64 * p) as usize).min(lags.len() - 1)] * 1000.0;
    let _ = writeln!(
        text,
        "\n(d) event-driven lag, a 1 KiB write on the primary until the file is whole on a \
         following standby (page cache not dropped; {} writes 20 ms apart): p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms (goal: p99 under 1000 ms)",
        lags.len(),
        pct(0.50),
        pct(0.99),
        lags[lags.len() - 1] * 1000.0
    );
    println!("{text}");
    let path = target.join("tree_sync_report.md");
    std::fs::write(&path, &text).unwrap();
    eprintln!("report written to {}", path.display());
    remove_tree(&work);
}
