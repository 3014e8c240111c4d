//! The failover drill: two hosts, each a real `tandem daemon` (release build) with a real
//! PostgreSQL 15, paired with `tandem standby configure`; under `pgbench` load plus a marker
//! writer, the primary host dies (its postmaster, every backend and its tandem frozen, then
//! `kill -9`, at one moment); the standby is converted; the dead host comes back and rejoins.
//! It measures:
//!
//! - data lost: marker ids the writer saw committed but missing on the new primary, split by
//!   whether tandem on the standby side had the commit durably (`hi <= flushed_lsn`; goal 0)
//!   or not yet (async replication's window: count and LSN gap). `hi` is the primary's flush
//!   LSN read right after the commit returned: an upper bound of the commit record's end;
//! - time to writable (goal < 5 s, tandem's own "writable after") and convert's wall time;
//! - rejoin (`tandem standby rejoin`, pg_rewind) until streaming, beside a fresh base backup
//!   (`configure --standby-mode --rebuild`) until streaming, page cache dropped before each.
//!
//! With DRILL_FENCE=1 the primary host stays up instead: `convert-to-primary --force` runs
//! under the load, has the old primary's tandem fence its database first and waits for its last
//! WAL, so every acknowledged marker row must be on the new primary (goal 0 lost); the old
//! primary then rejoins without a rewind.
//!
//! Run: `cargo bench -p tandem --bench failover_drill` (as root: drops caches, runs PostgreSQL
//! as `postgres`). Knobs: DRILL_SCALE (pgbench scale, 20), DRILL_LOAD_SECS (10),
//! DRILL_ROUNDS (1; each further round swaps the roles), DRILL_FENCE (0).

#[path = "../common.rs"]
mod common;
#[path = "../../host/src/wal/client/tests/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{knob, quiesce};

use serde_json::Value;
use tandem::wal::Lsn;
#[allow(unused_imports)] // for pg.rs
use tandem::wal::{base_backup::default_bin_dir, client::ConnConfig};

use pg::PgServer;

const SECRET: &str = "failover drill secret";
/// How long a step may take before the drill gives up on it.
const STEP_LIMIT: Duration = Duration::from_secs(600);
const LOG_TAIL: usize = 40;

/// A port below the ephemeral range, so a restarted daemon keeps its address and no
/// outgoing connection takes it meanwhile.
fn free_port() -> u16 {
    common::low_port(22_000, 400)
}

/// One host of the pair: its PostgreSQL and its tandem daemon.
struct Host {
    name: &'static str,
    dir: PathBuf,
    peer: String,
    pg: PgServer,
    daemon: Option<Child>,
}

impl Host {
    fn new(work: &Path, name: &'static str) -> Host {
        let dir = work.join(name);
        std::fs::create_dir_all(dir.join("app")).unwrap();
        common::write_secret(&dir.join("secret"), SECRET);
        let pg = PgServer::start(&[]).expect("PostgreSQL 15");
        let (peer, api, wal) = (free_port(), free_port(), free_port());
        let config = format!(
            "node_name = \"{name}\"\ndata_dir = \"{d}/data\"\n\
             [peer]\nlisten = \"127.0.0.1:{peer}\"\nsecret_file = \"{d}/secret\"\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\n[sync]\napp_home = \"{d}/app\"\n\
             [standby]\npg_data = \"{}\"\npg_port = {}\npg_socket_dir = \"{}\"\n\
             [wal]\nlisten = \"127.0.0.1:{wal}\"\n",
            pg.data.display(),
            pg.port,
            pg.sock.display(),
            d = dir.display(),
        );
        std::fs::write(dir.join("tandem.toml"), config).unwrap();
        let mut host = Host { name, dir, peer: format!("127.0.0.1:{peer}"), pg, daemon: None };
        host.start();
        host
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(self.data().join("api.addr"));
        let stderr = File::options().create(true).append(true).open(self.dir.join("stderr")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .env_remove("TANDEM_CONFIG")
            .env("RUST_LOG", "info")
            .arg("--config")
            .arg(self.dir.join("tandem.toml"))
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        self.wait("the daemon up", Duration::from_secs(60), || self.data().join("api.addr").exists());
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .env_remove("TANDEM_CONFIG")
            .env_remove("RUST_LOG")
            .arg("--config")
            .arg(self.dir.join("tandem.toml"))
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the CLI, insisting it succeeds; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        if !out.status.success() {
            self.fail(&format!(
                "`tandem {}` failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn streaming(&self) -> bool {
        self.json(&["standby", "status", "--json"])["database"]["streaming"] == true
    }

    /// Polls `check` every 50 ms; the time it took.
    fn wait(&self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
        let t0 = Instant::now();
        while !check() {
            if t0.elapsed() > limit {
                self.fail(&format!("never {what} within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        t0.elapsed()
    }

    /// Panics with `why` and the tails of the daemon's logs.
    fn fail(&self, why: &str) -> ! {
        let mut text = format!("{}: {why}\n", self.name);
        for log in [
            self.data().join("logs/tandem.log"),
            self.data().join("logs/warm_standby.log"),
            self.dir.join("stderr"),
        ] {
            let Ok(body) = std::fs::read_to_string(&log) else { continue };
            let lines: Vec<&str> = body.lines().collect();
            let _ = writeln!(text, "---- last lines of {} ----", log.display());
            for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
                let _ = writeln!(text, "{line}");
            }
        }
        panic!("{text}");
    }

    /// Host death: the postmaster, every process it forked and the tandem daemon frozen at
    /// one moment (nothing progresses after it), then killed.
    fn die(&mut self) {
        let pm = self.pg.postmaster_pid();
        let tandem = self.daemon.as_ref().expect("running").id() as i32;
        let signal = |pids: &[i32], sig| {
            for &pid in pids {
                // SAFETY: kill has no memory preconditions; the pids are this drill's
                // daemon and its PostgreSQL's postmaster and that postmaster's children.
                unsafe { libc::kill(pid, sig) };
            }
        };
        // The postmaster first, so it forks nothing after its children are listed.
        signal(&[pm, tandem], libc::SIGSTOP);
        let mut all = children_of(pm);
        signal(&all, libc::SIGSTOP);
        all.extend([pm, tandem]);
        signal(&all, libc::SIGKILL);
        let _ = self.daemon.take().unwrap().wait();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid =
            stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// One id the writer saw committed, and the primary's flush LSN read right after (none if
/// that read failed: the host died in between).
struct Ack {
    id: i64,
    hi: Option<Lsn>,
}

/// The marker writer: one connection, autocommit INSERTs of consecutive ids from `first`,
/// each followed by the flush LSN, until `stop` or the server goes away.
fn writer(port: u16, first: i64, stop: Arc<AtomicBool>) -> (Vec<Ack>, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let client = pg::tcp_client(port).await.expect("the writer connects");
        let insert = client
            .prepare("INSERT INTO drill(id, lo) VALUES ($1, pg_current_wal_insert_lsn())")
            .await
            .unwrap();
        let flush = client.prepare("SELECT pg_current_wal_flush_lsn()::text").await.unwrap();
        let mut acks = Vec::new();
        for id in first.. {
            if stop.load(Ordering::Relaxed) {
                return (acks, "stopped".into());
            }
            if let Err(e) = client.execute(&insert, &[&id]).await {
                return (acks, format!("insert: {e}"));
            }
            match client.query_one(&flush, &[]).await {
                Ok(row) => acks.push(Ack { id, hi: row.get::<_, String>(0).parse().ok() }),
                Err(e) => {
                    acks.push(Ack { id, hi: None });
                    return (acks, format!("flush LSN after a commit: {e}"));
                }
            }
        }
        unreachable!()
    })
}

fn pgbench(bin: &Path, pg: &PgServer, args: &[&str]) -> Command {
    let mut c = Command::new(bin.join("pgbench"));
    c.args(["-h", "127.0.0.1", "-U", "postgres", "-p", &pg.port.to_string()]).args(args).arg("postgres");
    c
}

/// The time a CLI command took plus the wait for `host` to stream after it.
fn until_streaming(host: &Host, args: &[&str]) -> (f64, f64, String) {
    let t0 = Instant::now();
    let out = host.ok(args);
    let command = t0.elapsed().as_secs_f64();
    host.wait("streaming", STEP_LIMIT, || host.streaming());
    (command, t0.elapsed().as_secs_f64(), out)
}

fn main() {
    let scale = knob("DRILL_SCALE", 20);
    let load_secs = knob("DRILL_LOAD_SECS", 10);
    let rounds = knob("DRILL_ROUNDS", 1) as usize;
    let fence = knob("DRILL_FENCE", 0) != 0;
    let bin = pg::bin_dir().expect("PostgreSQL 15 binaries");
    let target = Path::new(env!("CARGO_BIN_EXE_tandem")).parent().unwrap().parent().unwrap().to_path_buf();
    let work = target.join("failover-drill");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    // 1. The pair, with a database of a realistic size.
    let mut hosts = [Host::new(&work, "a"), Host::new(&work, "b")];
    let out = pgbench(&bin, &hosts[0].pg, &["-i", "-q", "-s", &scale.to_string()]).output().unwrap();
    assert!(out.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&out.stderr));
    hosts[0].pg.psql("CREATE TABLE drill (id bigint PRIMARY KEY, lo pg_lsn)");
    let db_bytes: u64 = hosts[0].pg.psql("SELECT pg_database_size('postgres')").parse().unwrap();
    eprintln!("database: {:.0} MB (pgbench scale {scale})", db_bytes as f64 / 1e6);
    let [a, b] = &mut hosts;
    a.ok(&["standby", "configure", "--primary-mode", "--peer", &b.peer]);
    let t0 = Instant::now();
    b.ok(&["standby", "configure", "--standby-mode", "--peer", &a.peer]);
    b.wait("streaming after pairing", STEP_LIMIT, || b.streaming());
    eprintln!("paired: b streaming {:.1} s after configure", t0.elapsed().as_secs_f64());

    let drill = Drill { bin, work, load_secs, db_bytes, fence };
    let mut results = Vec::new();
    let mut next_id = 1i64;
    for r in 0..rounds {
        let [a, b] = &mut hosts;
        let (p, s) = if r % 2 == 0 { (a, b) } else { (b, a) };
        results.push(round(&drill, p, s, &mut next_id, r));
    }

    let mb = db_bytes as f64 / 1e6;
    let mut rep = format!(
        "# Failover drill\n\nDatabase {mb:.0} MB (pgbench -i -s {scale}); {load_secs} s of pgbench -c 4 plus one \
         marker writer, then {}.\n\n\
         | | {} |\n|---|{}\n",
        if fence {
            "convert-to-primary --force with the primary up (its tandem fences it first)"
        } else {
            "the primary host killed (postmaster, backends, tandem: SIGSTOP, then SIGKILL)"
        },
        (1..=rounds).map(|i| format!("round {i}")).collect::<Vec<_>>().join(" | "),
        "---|".repeat(rounds)
    );
    for (i, (name, _)) in results[0].0.iter().enumerate() {
        let cells: Vec<&str> = results.iter().map(|(row, _)| row[i].1.as_str()).collect();
        let _ = writeln!(rep, "| {name} | {} |", cells.join(" | "));
    }
    rep += "\nOnly the marker writer's rows are checked one by one: pgbench's committed transactions are \
            not checkable per row (pgbench is the load only).\n";
    for (i, (_, notes)) in results.iter().enumerate() {
        let _ = write!(rep, "\nround {}: {notes}\n", i + 1);
    }
    print!("{rep}");
    std::fs::write(target.join("failover_drill_report.md"), &rep).unwrap();
}

/// What every round shares.
struct Drill {
    bin: PathBuf,
    work: PathBuf,
    load_secs: u64,
    db_bytes: u64,
    /// The primary stays up and is fenced by the convert (DRILL_FENCE).
    fence: bool,
}

/// Report rows (name, value) and notes of one round.
type Outcome = (Vec<(&'static str, String)>, String);

/// Steps 2-6 with `p` the primary and `s` the standby.
fn round(d: &Drill, p: &mut Host, s: &mut Host, next_id: &mut i64, r: usize) -> Outcome {
    // 2. Load: pgbench plus the marker writer.
    let log = File::create(d.work.join(format!("pgbench-{r}.log"))).unwrap();
    let mut bench = pgbench(&d.bin, &p.pg, &["-n", "-c", "4", "-j", "2", "-T", "600", "-P", "5"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (port, first, stop2) = (p.pg.port, *next_id, stop.clone());
    let writer = std::thread::spawn(move || writer(port, first, stop2));
    std::thread::sleep(Duration::from_secs(d.load_secs));

    // 3. Host death, or (DRILL_FENCE) a convert while the primary runs on under the load.
    let fenced = d.fence.then(|| {
        let t0 = Instant::now();
        let out = s.ok(&["standby", "convert-to-primary", "--force"]);
        (t0, t0.elapsed().as_secs_f64(), out)
    });
    if fenced.is_none() {
        p.die();
        eprintln!("round {r}: {} died", p.name);
    }
    let _ = bench.kill();
    let _ = bench.wait();
    stop.store(true, Ordering::Relaxed);
    let (acks, writer_end) = writer.join().unwrap();
    *next_id = acks.last().map_or(first, |a| a.id + 1) + 1;
    let pg_log = std::fs::read_to_string(d.work.join(format!("pgbench-{r}.log"))).unwrap_or_default();
    let pgbench_tail =
        pg_log.lines().rfind(|l| l.starts_with("progress")).unwrap_or("no progress line").to_owned();

    // 4. What tandem holds durably, once its receiver noticed the death and stopped moving
    // (fenced: what the convert waited for, the old primary's WAL to its end).
    let mut flushed = String::new();
    let (flushed, replayed, t0, convert_wall, out) = match fenced {
        Some((t0, wall, out)) => (Lsn(u64::MAX), Lsn(u64::MAX), t0, wall, out),
        None => {
            s.wait("a stable flushed_lsn", Duration::from_secs(60), || {
                let w = s.json(&["wal", "status", "--json"]);
                let now = w["flushed_lsn"].as_str().unwrap_or_default().to_owned();
                let settled = w["state"] != "streaming" && now == flushed && !now.is_empty();
                flushed = now;
                if !settled {
                    std::thread::sleep(Duration::from_millis(200));
                }
                settled
            });
            let flushed: Lsn = flushed.parse().unwrap();
            // Promotion replays what the standby database has received but not yet replayed first.
            let replayed: Lsn = s.pg.psql("SELECT pg_last_wal_replay_lsn()").parse().unwrap();
            let t0 = Instant::now();
            let out = s.ok(&["standby", "convert-to-primary"]);
            (flushed, replayed, t0, t0.elapsed().as_secs_f64(), out)
        }
    };
    s.pg.psql("INSERT INTO drill(id, lo) VALUES (-1 - (SELECT count(*) FROM drill WHERE id < 0), pg_current_wal_insert_lsn())");
    let first_insert = t0.elapsed().as_secs_f64();
    let writable: f64 = out
        .split("writable after ")
        .nth(1)
        .and_then(|t| t.split(" s").next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| s.fail(&format!("no `writable after` in:\n{out}")));
    eprintln!("round {r}: {} converted:\n{out}", s.name);

    // 5. What was lost.
    let present: HashSet<i64> =
        s.pg.psql(&format!("SELECT id FROM drill WHERE id >= {first}"))
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    let lost: Vec<&Ack> = acks.iter().filter(|a| !present.contains(&a.id)).collect();
    let lost_held: Vec<i64> =
        lost.iter().filter(|a| a.hi.is_some_and(|hi| hi <= flushed)).map(|a| a.id).collect();
    let max_hi = acks.iter().filter_map(|a| a.hi).max().unwrap_or(Lsn(0));

    // 6. The dead host comes back: rejoin (pg_rewind), then, for comparison, a base backup.
    if d.fence {
        p.wait("fenced", Duration::from_secs(60), || {
            p.json(&["standby", "status", "--json"])["fenced"].is_object()
        });
    } else {
        p.start();
    }
    p.wait("superseded", Duration::from_secs(60), || {
        p.json(&["standby", "status", "--json"])["superseded"].is_string()
    });
    quiesce(true);
    let (c, w, out) = until_streaming(p, &["standby", "rejoin"]);
    eprintln!("round {r}: {} rejoined in {w:.2} s:\n{out}", p.name);
    let (c0, w0) = (c, w);
    quiesce(true);
    let (c, w, out) =
        until_streaming(p, &["standby", "configure", "--standby-mode", "--peer", &s.peer, "--rebuild"]);
    eprintln!("round {r}: {} rebuilt in {w:.2} s:\n{out}", p.name);
    let (rejoin, rebuild) = ((c0, w0), (c, w));
    let bold = |x: String| format!("**{x}**");
    let rows = vec![
        ("failover", format!("{} -> {}", p.name, s.name)),
        ("DB size", format!("{:.0} MB", d.db_bytes as f64 / 1e6)),
        ("marker rows acknowledged", acks.len().to_string()),
        ("lost, total", lost.len().to_string()),
        ("lost though tandem held them durably (goal 0)", bold(lost_held.len().to_string())),
        ("lost in the async window (not yet durable in tandem)", (lost.len() - lost_held.len()).to_string()),
        (
            "tandem flushed_lsn / writer's last hi",
            match d.fence {
                true => format!("(fenced: the convert waits for all) / {max_hi}"),
                false => format!("{flushed} / {max_hi}"),
            },
        ),
        (
            "async window (last hi - flushed_lsn)",
            match d.fence {
                true => "none (fenced first)".into(),
                false => format!("{} bytes", max_hi.0.saturating_sub(flushed.0)),
            },
        ),
        (
            "standby database's replay backlog at convert",
            match d.fence {
                true => "(drained by the convert)".into(),
                false => format!("{} bytes", flushed.bytes_since(replayed)),
            },
        ),
        ("time to writable (goal < 5 s)", bold(format!("{writable:.2} s"))),
        ("convert-to-primary wall time", format!("{convert_wall:.2} s")),
        ("first INSERT accepted, since convert began", format!("{first_insert:.2} s")),
        (
            "rejoin (pg_rewind unless fenced): command / until streaming",
            format!("{:.2} s / **{:.2} s**", rejoin.0, rejoin.1),
        ),
        (
            "base backup (--rebuild): command / until streaming",
            format!("{:.2} s / **{:.2} s**", rebuild.0, rebuild.1),
        ),
        ("base backup / rejoin", format!("{:.1}x", rebuild.1 / rejoin.1)),
    ];
    let mut notes = format!("writer ended with `{writer_end}`; pgbench's last progress: {pgbench_tail}");
    if !lost_held.is_empty() {
        let _ = write!(notes, "\nLOST although tandem held them durably: ids {lost_held:?}");
    }
    (rows, notes)
}
