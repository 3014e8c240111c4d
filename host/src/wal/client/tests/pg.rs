//! `PgServer`: a throwaway PostgreSQL 15 cluster for tests: initdb into a temporary folder,
//! start on a free port (TCP on 127.0.0.1 and a Unix socket in the folder), stop with
//! `pg_ctl stop -m immediate` on drop. PostgreSQL refuses to run as root, so as root every
//! PostgreSQL program runs as the `postgres` user.
//!
//! A machine without PostgreSQL skips the tests that need it, loudly; with `CI=true` it fails
//! them instead: CI must never pass by skipping.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

// The including module provides `ConnConfig` and `default_bin_dir` (this file is shared with
// the e2e tests and the WAL benchmark).
use super::{ConnConfig, default_bin_dir};

/// The roles every test cluster has, one per authentication method (password = role name).
pub const ROLE_TRUST: &str = "rep_trust";
pub const ROLE_PASSWORD: &str = "rep_password";
pub const ROLE_MD5: &str = "rep_md5";
pub const ROLE_SCRAM: &str = "rep_scram";
/// Logs in but lacks the REPLICATION attribute.
pub const ROLE_NO_REPLICATION: &str = "norep";
const OS_USER: &str = "postgres";
const START_ATTEMPTS: usize = 3;

const HBA: &str = "\
local all all trust
local replication all trust
host replication rep_trust 127.0.0.1/32 trust
host replication rep_password 127.0.0.1/32 password
host replication rep_md5 127.0.0.1/32 md5
host replication rep_scram 127.0.0.1/32 scram-sha-256
host replication norep 127.0.0.1/32 trust
host replication postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 trust
";

const ROLES_SQL: &str = "\
CREATE ROLE rep_trust LOGIN REPLICATION;
SET password_encryption = 'scram-sha-256';
CREATE ROLE rep_password LOGIN REPLICATION PASSWORD 'rep_password';
CREATE ROLE rep_scram LOGIN REPLICATION PASSWORD 'rep_scram';
SET password_encryption = 'md5';
CREATE ROLE rep_md5 LOGIN REPLICATION PASSWORD 'rep_md5';
CREATE ROLE norep LOGIN;
";

/// A running test cluster.
pub struct PgServer {
    /// Keeps the folder (data, socket, log) alive; removed after the server stops.
    _dir: tempfile::TempDir,
    root: PathBuf,
    pub data: PathBuf,
    pub sock: PathBuf,
    pub port: u16,
    bin: PathBuf,
    running: bool,
    /// The server options of the last start, for `restart`.
    opts: String,
    /// The network namespace its programs run in (a network-lab host), if any.
    netns: Option<String>,
}

impl PgServer {
    /// A fresh primary with `extra` server settings (`name=value`), or `None` (after saying
    /// why) where PostgreSQL is not installed and this is not CI.
    pub fn start(extra: &[&str]) -> Option<PgServer> {
        Self::start_in(None, extra)
    }

    /// [`PgServer::start`] with every program run inside network namespace `netns` (`ip netns
    /// exec`): the server listens on that namespace's loopback. Its Unix socket, a file, is
    /// reachable from anywhere.
    pub fn start_in(netns: Option<&str>, extra: &[&str]) -> Option<PgServer> {
        let bin = match bin_dir() {
            Some(bin) => bin,
            None => {
                unavailable("no PostgreSQL binaries (set TANDEM_PG_BIN or install postgresql-15)");
                return None;
            }
        };
        let dir = tempfile::Builder::new().prefix("tandem-pg-").tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let mut server = PgServer {
            data: root.join("data"),
            sock: root.join("sock"),
            root,
            _dir: dir,
            port: 0,
            bin,
            running: false,
            opts: String::new(),
            netns: netns.map(str::to_owned),
        };
        std::fs::create_dir(&server.sock).expect("socket dir");
        give_to_postgres(&server.root);
        if let Err(e) =
            server.run("initdb", &["-D", path(&server.data), "-U", "postgres", "-A", "trust", "--no-sync"])
        {
            unavailable(&format!("initdb failed: {e}"));
            return None;
        }
        std::fs::write(server.data.join("pg_hba.conf"), HBA).expect("pg_hba.conf");
        let mut conf = vec!["fsync=off", "wal_level=replica", "max_wal_senders=5", "max_replication_slots=5"];
        conf.extend_from_slice(extra);
        if let Err(e) = server.boot(&conf) {
            unavailable(&e);
            return None;
        }
        server.psql(ROLES_SQL);
        Some(server)
    }

    /// Starts the cluster in `data` on a free port, retrying if another process took the port.
    fn boot(&mut self, conf: &[&str]) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            self.port = free_port();
            let mut opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, path(&self.sock));
            for c in conf {
                opts.push_str(&format!(" -c {c}"));
            }
            let log = self.root.join(format!("log-{}", self.port));
            match self.run(
                "pg_ctl",
                &["-D", path(&self.data), "-l", path(&log), "-o", &opts, "-w", "-t", "60", "start"],
            ) {
                Ok(_) => {
                    self.running = true;
                    self.opts = opts;
                    return Ok(());
                }
                Err(e) => last = format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()),
            }
        }
        Err(format!("PostgreSQL did not start: {last}"))
    }

    /// A standby of this server made with `pg_basebackup -R`, started and streaming.
    pub fn standby(&self) -> PgServer {
        self.standby_with(|_| {})
    }

    /// A standby made with `pg_basebackup -R`, its data folder handed to `configure` (e.g. to
    /// point `primary_conninfo` elsewhere) before it starts.
    /// A folder for another server (owned by the PostgreSQL user, `data` not created yet),
    /// not started: fill `data` (a base backup), then `boot_existing`.
    pub fn unstarted(&self) -> PgServer {
        let dir = tempfile::Builder::new().prefix("tandem-pg-standby-").tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let server = PgServer {
            data: root.join("data"),
            sock: root.join("sock"),
            root,
            _dir: dir,
            port: 0,
            bin: self.bin.clone(),
            running: false,
            opts: String::new(),
            netns: self.netns.clone(),
        };
        std::fs::create_dir(&server.sock).expect("socket dir");
        give_to_postgres(&server.root);
        server
    }

    /// Starts the server whose `data` is filled already, on a free port.
    #[allow(dead_code)] // the e2e tests' (they share this file)
    pub fn boot_existing(&mut self, conf: &[&str]) -> Result<(), String> {
        self.boot(conf)
    }

    pub fn standby_with(&self, configure: impl FnOnce(&Path)) -> PgServer {
        let mut standby = self.unstarted();
        let port = self.port.to_string();
        standby
            .run(
                "pg_basebackup",
                &[
                    "-D",
                    path(&standby.data),
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "-h",
                    path(&self.sock),
                    "-p",
                    &port,
                ],
            )
            .expect("pg_basebackup");
        configure(&standby.data);
        standby.boot(&["fsync=off"]).expect("standby start");
        standby
    }

    /// Promotes a standby and waits until it accepts writes.
    pub fn promote(&self) {
        self.run("pg_ctl", &["-D", path(&self.data), "-w", "-t", "60", "promote"]).expect("promote");
        wait_until("promotion", || self.psql("SELECT pg_is_in_recovery()") == "f");
    }

    /// The running postmaster's pid (first line of `postmaster.pid`), for tests that kill it.
    pub fn postmaster_pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).expect("postmaster.pid");
        text.lines().next().and_then(|l| l.trim().parse().ok()).expect("a pid on the first line")
    }

    /// `pg_ctl stop -m fast`, waiting for it: a fast shutdown waits for walsenders to see
    /// their WAL reported flushed.
    pub fn stop_fast(&mut self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", path(&self.data), "-m", "fast", "-w", "-t", "60", "stop"])?;
        self.running = false;
        Ok(())
    }

    /// Starts a stopped server again on the same port with the same settings.
    pub fn restart(&mut self) -> Result<(), String> {
        let log = self.root.join(format!("log-{}-restart", self.port));
        let opts = self.opts.clone();
        self.run(
            "pg_ctl",
            &["-D", path(&self.data), "-l", path(&log), "-o", &opts, "-w", "-t", "60", "start"],
        )?;
        self.running = true;
        Ok(())
    }

    /// A fast stop, then a plain `pg_ctl start` with no server options: the server comes up
    /// where its configuration files say (tests of what tandem wrote there).
    #[allow(dead_code)] // the e2e tests' (they share this file)
    pub fn restart_plain(&mut self) -> Result<(), String> {
        self.stop_fast()?;
        let log = self.root.join(format!("log-{}-plain", self.port));
        self.run("pg_ctl", &["-D", path(&self.data), "-l", path(&log), "-w", "-t", "60", "start"])?;
        self.running = true;
        Ok(())
    }

    /// Runs SQL as the superuser over the Unix socket; panics on failure. Output is unaligned,
    /// tuples only, trimmed.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql).unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// `psql` that reports a failure instead of panicking (for polling a standby that may not
    /// have replayed a table yet).
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        psql_in(&self.bin, &self.root, &self.sock, self.port, sql)
    }

    /// `psql` as a closure that outlives `self`'s borrow (for a writer thread).
    #[allow(dead_code)] // the e2e tests' (they share this file)
    pub fn psql_runner(&self) -> impl Fn(&str) -> String + Send + 'static {
        let (bin, root, sock, port) = (self.bin.clone(), self.root.clone(), self.sock.clone(), self.port);
        move |sql| psql_in(&bin, &root, &sock, port, sql).unwrap_or_else(|e| panic!("psql {sql:?}: {e}"))
    }

    /// A replication connection config for `user` over TCP (password = user name for the
    /// password roles).
    pub fn config(&self, user: &str) -> ConnConfig {
        let password = [ROLE_PASSWORD, ROLE_MD5, ROLE_SCRAM].contains(&user).then(|| user.to_owned());
        ConnConfig { port: self.port, user: user.to_owned(), password, ..ConnConfig::for_test() }
    }

    /// The superuser over the Unix socket.
    pub fn unix_config(&self) -> ConnConfig {
        ConnConfig { port: self.port, socket_dir: Some(self.sock.clone()), ..ConnConfig::for_test() }
    }

    /// A file under `pg_wal/`, read as whoever runs the tests (root can read it).
    pub fn wal_file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.data.join("pg_wal").join(name)).unwrap_or_else(|e| panic!("pg_wal/{name}: {e}"))
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        run_in(&self.bin, &self.root, self.netns.as_deref(), program, args)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // Whoever started it last (this helper, or tandem managing the cluster), it stops.
        let _ = self.run("pg_ctl", &["-D", path(&self.data), "-m", "immediate", "-w", "stop"]);
    }
}

/// Runs SQL as the superuser over the Unix socket in `sock`; output unaligned, tuples only,
/// trimmed.
fn psql_in(bin: &Path, root: &Path, sock: &Path, port: u16, sql: &str) -> Result<String, String> {
    let port = port.to_string();
    let args = [
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-At",
        "-h",
        path(sock),
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-c",
        sql,
    ];
    run_in(bin, root, None, "psql", &args).map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs a PostgreSQL program from `bin` (as the PostgreSQL user when we are root) in `root`,
/// inside network namespace `netns` when given.
fn run_in(
    bin: &Path,
    root: &Path,
    netns: Option<&str>,
    program: &str,
    args: &[&str],
) -> Result<Output, String> {
    let exe = bin.join(program);
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c
        }
        None => Command::new(if is_root() { "runuser" } else { "env" }),
    };
    if netns.is_some() {
        cmd.arg(if is_root() { "runuser" } else { "env" });
    }
    if is_root() {
        cmd.args(["-u", OS_USER, "--"]);
    }
    cmd.arg(&exe);
    // The test's own folder as working directory: postgres may not enter the caller's.
    let out = cmd.args(args).current_dir(root).output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!("{program} {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// A superuser session over TCP to the test server on 127.0.0.1:`port`, its connection task
/// spawned on the current runtime (benches that poll or write from async code).
#[allow(dead_code)] // the benches' helper: the library's own tests do not call it
pub async fn tcp_client(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Polls `check` for up to 30 s.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn unavailable(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("PostgreSQL is required on CI and could not be started: {why}");
    }
    eprintln!("SKIPPING a PostgreSQL test: {why}");
}

/// Where initdb, pg_ctl, psql and pg_basebackup are.
pub fn bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| ["initdb", "pg_ctl", "psql", "pg_basebackup"].iter().all(|p| d.join(p).exists());
    default_bin_dir().filter(|d| has_all(d))
}

fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0"))
}

fn give_to_postgres(dir: &Path) {
    if is_root() {
        let ok = Command::new("chown").args(["-R", OS_USER]).arg(dir).status().is_ok_and(|s| s.success());
        assert!(ok, "chown {} to {OS_USER}", dir.display());
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
