//! The bench's runs: the tools, the steps, the primary daemon and where each tool's copy goes.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{free_port, quiesce};
use crate::shapes::Shape;
use crate::tools::{BusyReader, Daemon, run_measured};

const SECRET: &str = "tree sync benchmark cluster secret 0123456789";
pub const TREE: &str = "bench";
/// Writes timed in the event-lag step.
const LAG_WRITES: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Tool {
    Tandem,
    Rsync,
    /// rsync followed by one `sync`: the cheapest way to make rsync's copy durable.
    RsyncSync,
    RsyncFsync,
}

pub const TOOLS: [Tool; 4] = [Tool::Tandem, Tool::Rsync, Tool::RsyncSync, Tool::RsyncFsync];

impl Tool {
    pub fn label(self) -> &'static str {
        match self {
            Tool::Tandem => "tandem",
            Tool::Rsync => "rsync",
            Tool::RsyncSync => "rsync && sync",
            Tool::RsyncFsync => "rsync --fsync",
        }
    }
}

/// A measured step.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Step {
    Initial,
    NoChange,
    Edit,
    Renames,
    BusyEdit,
}

impl Step {
    pub const ALL: [Step; 5] = [Step::Initial, Step::NoChange, Step::Edit, Step::Renames, Step::BusyEdit];

    pub fn label(self) -> &'static str {
        match self {
            Step::Initial => "(a) initial copy",
            Step::NoChange => "(b) no change",
            Step::Edit => "(c) the shape's edit",
            Step::Renames => "(r) 1,000 renames",
            Step::BusyEdit => "(e) edit, tree read in a loop",
        }
    }

    /// Whether the step changes the tree (copies are compared after it).
    pub fn changes(self) -> bool {
        self != Step::NoChange
    }

    /// With nothing to write, `sync` and `--fsync` are plain rsync. TREE_SYNC_FSYNC=0 leaves
    /// the slow `--fsync` runs out (for quick looks).
    pub fn runs(self, tool: Tool) -> bool {
        if tool == Tool::RsyncFsync && crate::common::knob("TREE_SYNC_FSYNC", 1) == 0 {
            return false;
        }
        self != Step::NoChange || matches!(tool, Tool::Tandem | Tool::Rsync)
    }
}

/// One timed run of one tool.
#[derive(Clone, Default)]
pub struct Sample {
    pub wall: f64,
    /// User + system seconds of every process involved (for tandem: CLI + daemon).
    pub cpu: f64,
    pub daemon_cpu: f64,
    /// ru_maxrss: tandem's CLI, rsync's largest process.
    pub peak_mib: f64,
    /// The primary daemon's VmHWM during the run, and its resident size before it.
    pub daemon_hwm_mib: f64,
    pub daemon_base_mib: f64,
    /// None: tandem moved files but neither its CLI nor the primary's log said how many bytes.
    pub bytes: Option<u64>,
    /// tandem: file content sent (before compression).
    pub content_bytes: Option<u64>,
    /// tandem: how often the primary's journal was reset during the run.
    pub journal_resets: usize,
    /// What the tool said it did.
    pub said: String,
}

/// The work folder, the primary daemon and where each tool's copy goes.
pub struct Bench {
    work: PathBuf,
    pub src: PathBuf,
    /// The primary's peer port, for the standby configurations.
    peer: u16,
    /// Which set of copies the steps use: each initial-copy round writes a fresh set, so no
    /// tool writes right after a big deletion (ext4 then searches long for free inodes,
    /// which made every initial copy several times slower, for all tools alike).
    set: Cell<usize>,
    daemon: Daemon,
    drop_caches: bool,
}

impl Bench {
    pub fn start(work: &Path, drop_caches: bool) -> Self {
        crate::common::write_secret(&work.join("secret"), SECRET);
        let w = work.display();
        let (peer, api) = (free_port(), free_port());
        let trees = format!("[sync.trees]\n{TREE} = \"src\"\nwarmup = \"warmup\"\n");
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
            set: Cell::new(0),
            daemon,
            drop_caches,
        };
        // One unmeasured pass of a one-file tree: the daemon's first pass pays one-off costs.
        std::fs::create_dir_all(work.join("warmup")).unwrap();
        std::fs::write(work.join("warmup/hello.txt"), "warm-up\n").unwrap();
        let warm = run_measured(&mut bench.tandem_cli("warmup"), work);
        assert!(warm.ok, "warm-up pass failed:\n{}{}", warm.stdout, warm.stderr);
        bench.wait_watched();
        bench
    }

    /// Waits until the primary watches every folder of the tree (it walks them in the
    /// background; passes before that compare whole trees, which is not what (b) measures).
    fn wait_watched(&self) {
        let start = Instant::now();
        while !self
            .daemon
            .log_since(0)
            .lines()
            .any(|l| l.contains("watching the tree for changes") && l.contains(TREE))
        {
            assert!(start.elapsed() < Duration::from_secs(600), "the primary never watched the tree");
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("  the primary watches every folder after {:.1} s", start.elapsed().as_secs_f64());
    }

    pub fn dest(&self, tool: Tool) -> PathBuf {
        let set = self.set.get();
        match tool {
            Tool::Tandem => self.work.join(format!("sb{set}/src")),
            Tool::Rsync => self.work.join(format!("rsync{set}")),
            Tool::RsyncSync => self.work.join(format!("rsync-sync{set}")),
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
        let mut cmd = Command::new(crate::tools::tandem_bin());
        let primary = format!("127.0.0.1:{}", self.peer);
        cmd.arg("-c").arg(self.standby_config());
        cmd.args(["sync", "once", "--tree", tree, "--json", "--primary", &primary]);
        cmd
    }

    /// Prepares round `round` of `step`; returns the busy reader that runs during it, if any.
    pub fn prepare_round(&self, step: Step, shape: &Shape, round: usize) -> Option<BusyReader> {
        match step {
            Step::Initial => self.set.set(round),
            Step::NoChange => {}
            Step::Edit => eprintln!("  round {}: {}", round + 1, shape.edit(&self.src, round)),
            Step::Renames => eprintln!("  round {}: {}", round + 1, shape.renames(&self.src, round)),
            Step::BusyEdit => {
                eprintln!("  round {}: {}", round + 1, shape.edit(&self.src, 1000 + round));
                return Some(BusyReader::start(&self.src));
            }
        }
        None
    }

    pub fn prepare_tool(&self, step: Step, tool: Tool) {
        if step == Step::Initial {
            assert!(!self.dest(tool).exists(), "a fresh destination for every initial copy");
        }
    }

    pub fn run(&self, tool: Tool, step: Step, shape: &str) -> Sample {
        quiesce(self.drop_caches);
        match tool {
            Tool::Tandem => self.run_tandem(&format!("{shape}-{step:?}")),
            Tool::Rsync | Tool::RsyncSync | Tool::RsyncFsync => self.run_rsync(tool),
        }
    }

    /// One `sync once` pass; with TREE_SYNC_PERF=1, the CLI and the daemon are each profiled
    /// (`perf record -g`) into target/perf-<shape>-<step>-{cli,daemon}.data.
    fn run_tandem(&self, name: &str) -> Sample {
        let log_offset = self.daemon.log_len();
        let daemon_before = self.daemon.cpu();
        self.daemon.reset_hwm();
        let daemon_base_mib = self.daemon.rss_mib();
        let profiled = crate::common::knob("TREE_SYNC_PERF", 0) == 1;
        let perf_out = |who: &str| self.work.parent().unwrap().join(format!("perf-{name}-{who}.data"));
        let daemon_perf = profiled.then(|| {
            let child = Command::new("perf")
                .args(["record", "-q", "-g", "-p", &self.daemon.pid().to_string(), "-o"])
                .arg(perf_out("daemon"))
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("perf");
            std::thread::sleep(Duration::from_millis(300));
            child
        });
        let mut cli = self.tandem_cli(TREE);
        if profiled {
            let mut wrapped = Command::new("perf");
            wrapped.args(["record", "-q", "-g", "-o"]).arg(perf_out("cli")).arg("--").arg(cli.get_program());
            wrapped.args(cli.get_args());
            cli = wrapped;
        }
        let done = run_measured(&mut cli, &self.work);
        if let Some(mut perf) = daemon_perf {
            // SAFETY: SIGINT to our own perf child, which then writes its file and exits.
            unsafe { libc::kill(perf.id() as libc::pid_t, libc::SIGINT) };
            let _ = perf.wait();
        }
        let daemon_cpu = self.daemon.cpu() - daemon_before;
        assert!(done.ok, "tandem sync once failed:\n{}{}", done.stdout, done.stderr);
        let json: serde_json::Value = serde_json::from_str(done.stdout.trim())
            .unwrap_or_else(|e| panic!("sync once --json printed {:?}: {e}", done.stdout));
        let field = |k: &str| json[k].as_u64().unwrap_or_else(|| panic!("no `{k}` in {json}"));
        assert_eq!(field("failed"), 0, "{json}");
        let moved: u64 = ["files_whole", "files_delta", "moved", "meta_only", "deleted", "dirs_links"]
            .into_iter()
            .map(field)
            .sum();
        // A CLI that counts the wire bytes on the primary's side only prints 0 for them; the
        // primary logs its own count of the same bytes.
        let (bytes, source) = match field("wire_bytes") {
            0 if moved > 0 => match self.daemon.served_wire_bytes(log_offset) {
                Some(b) => (Some(b), "; wire bytes from the primary's log (the CLI printed 0)"),
                None => (None, "; wire bytes unknown (the CLI printed 0, the primary logged none)"),
            },
            b => (Some(b), ""),
        };
        let journal_resets = self.daemon.log_since(log_offset).matches("tree journal reset").count();
        let renamed = json["moved"].as_u64().map(|r| format!(", {r} renamed")).unwrap_or_default()
            + &json["meta_only"].as_u64().map(|r| format!(", {r} metadata only")).unwrap_or_default();
        Sample {
            wall: done.wall,
            cpu: done.cpu + daemon_cpu,
            daemon_cpu,
            peak_mib: done.maxrss_mib,
            daemon_hwm_mib: self.daemon.hwm_mib(),
            daemon_base_mib,
            bytes,
            content_bytes: Some(field("content_bytes")),
            journal_resets,
            said: format!(
                "{} whole, {} by delta, {} deleted{renamed}, {} content bytes, {}{source}",
                field("files_whole"),
                field("files_delta"),
                field("deleted"),
                field("content_bytes"),
                if json["full"].as_bool() == Some(true) { "full comparison" } else { "from the journal" },
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
        let mut done = run_measured(&mut cmd, &self.work);
        assert!(done.ok, "{} failed:\n{}{}", tool.label(), done.stdout, done.stderr);
        if tool == Tool::RsyncSync {
            let synced = run_measured(&mut Command::new("sync"), &self.work);
            done.wall += synced.wall;
            done.cpu += synced.cpu;
        }
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

    /// Starts a standby daemon that follows the tree, waits for its first copy, then, with a
    /// reader going through the whole tree in a loop, times single writes on the primary until
    /// each is on the standby. Returns the lags in seconds (sorted) and how often the primary's
    /// journal was reset meanwhile.
    pub fn event_lag(&self) -> (Vec<f64>, usize) {
        let w = self.work.display();
        let config = self.work.join("follower.toml");
        std::fs::write(
            &config,
            format!(
                "node_name = \"follower\"\ndata_dir = \"{w}/f/data\"\n\
                 [peer]\nlisten = \"127.0.0.1:{}\"\nsecret_file = \"{w}/secret\"\n\
                 [api]\nlisten = \"127.0.0.1:{}\"\n\
                 [sync]\napp_home = \"{w}/fsb\"\nprimary = \"127.0.0.1:{}\"\n\
                 [sync.trees]\n{TREE} = \"src\"\n",
                free_port(),
                free_port(),
                self.peer
            ),
        )
        .unwrap();
        let (src, copy) = (self.work.join("src"), self.work.join("fsb/src"));
        let marker = "lag-first-copy.txt";
        std::fs::write(src.join(marker), b"first copy done").unwrap();
        let follower = Daemon::start(&config, &self.work.join("f/data"), &self.work.join("follower.stderr"));
        let start = Instant::now();
        while !copy.join(marker).exists() {
            assert!(start.elapsed() < Duration::from_secs(1800), "the follower never copied the tree");
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("  the follower's first copy took {:.1} s", start.elapsed().as_secs_f64());
        std::fs::create_dir_all(src.join("lag")).unwrap();
        let reader = BusyReader::start(&src);
        std::thread::sleep(Duration::from_secs(1));
        let log_offset = self.daemon.log_len();
        let mut lags = Vec::with_capacity(LAG_WRITES);
        for i in 0..LAG_WRITES {
            let name = format!("lag/f{:02}.txt", i % 20);
            let content = format!("write {i:06} ").repeat(80).into_bytes();
            let written = Instant::now();
            std::fs::write(src.join(&name), &content).unwrap();
            loop {
                if std::fs::read(copy.join(&name)).is_ok_and(|c| c == content) {
                    break;
                }
                assert!(written.elapsed() < Duration::from_secs(60), "write {i} never reached the standby");
                std::thread::sleep(Duration::from_micros(500));
            }
            lags.push(written.elapsed().as_secs_f64());
            std::thread::sleep(Duration::from_millis(20));
        }
        let resets = self.daemon.log_since(log_offset).matches("tree journal reset").count();
        drop(reader);
        drop(follower);
        lags.sort_by(f64::total_cmp);
        (lags, resets)
    }
}
