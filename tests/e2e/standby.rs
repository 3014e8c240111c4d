//! The warm standby end to end, as an operator drives it: two real `tandem` daemons, each with
//! its own real PostgreSQL 15 and application trees, paired with `tandem standby configure`;
//! rows and files written on the primary show on the standby; `tandem standby status` (text
//! and JSON) and the health check tell the truth at each step (not configured, primary,
//! standby, streaming, broken link); convert-to-primary is refused while the old primary's
//! database answers and its tandem (which would fence it) does not, and accepted once it is
//! killed; the new primary takes writes; the old one rejoins with
//! pg_rewind and follows again; off unpairs both; a changed address keeps the pair.

use std::time::Duration;

use serde_json::Value;

use crate::cluster::Node;
use crate::pg::{PgServer, wait_until};
use crate::support::wait_for;

const LONG: Duration = Duration::from_secs(60);

/// A host of the pair: its tandem, its PostgreSQL (if any), its app home.
pub(crate) struct Host {
    pub(crate) tandem: Node,
    pg: Option<PgServer>,
    app: tempfile::TempDir,
}

pub(crate) fn host(name: &str, with_pg: bool) -> Option<Host> {
    host_with(name, with_pg, "")
}

/// [`host`] with more `[standby]` settings (lines).
pub(crate) fn host_with(name: &str, with_pg: bool, standby: &str) -> Option<Host> {
    let app = tempfile::tempdir().unwrap();
    let pg = if with_pg { Some(PgServer::start(&[])?) } else { None };
    let pg_conf = pg.as_ref().map_or(String::new(), |pg| {
        format!(
            "[standby]\npg_data = \"{}\"\npg_port = {}\npg_socket_dir = \"{}\"\n{standby}\n[wal]\nlisten = \"127.0.0.1:{}\"\n\
             reserve_segments = 4\nstatus_interval_ms = 1000\nretry_max_ms = 500\n",
            pg.data.display(),
            pg.port,
            pg.sock.display(),
            crate::cluster::free_port()
        )
    });
    let extra = format!("[sync]\napp_home = \"{}\"\nverify_minutes = 1\n{pg_conf}", app.path().display());
    Some(Host { tandem: Node::new(name, &extra), pg, app })
}

impl Host {
    pub(crate) fn status(&self) -> Value {
        serde_json::from_str(&self.tandem.ok(&["standby", "status", "--json"])).unwrap()
    }

    pub(crate) fn text(&self) -> String {
        self.tandem.ok(&["standby", "status"])
    }

    pub(crate) fn wait_status(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        wait_for(LONG, || Some(self.status()).filter(&check)).map(|(v, _)| v).unwrap_or_else(|| {
            panic!("{}: never {what}: {:#}\n{}", self.tandem.name, self.status(), self.text())
        })
    }

    fn file(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.app.path().join(rel)).ok()
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.app.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn wait_file(&self, rel: &str, text: &str) {
        wait_for(LONG, || (self.file(rel).as_deref() == Some(text)).then_some(()))
            .unwrap_or_else(|| panic!("{}: {rel} never became {text:?}\n{}", self.tandem.name, self.text()));
    }

    pub(crate) fn pg(&self) -> &PgServer {
        self.pg.as_ref().unwrap()
    }

    pub(crate) fn health(&self) -> u16 {
        self.tandem.http_get("/health").0
    }
}

#[test]
fn a_pair_configured_from_scratch_fails_over_and_rejoins() {
    let Some(a) = host("a", true) else { return };
    let Some(b) = host("b", true) else { return };
    a.pg().psql("CREATE TABLE marks (tag text); INSERT INTO marks VALUES ('before')");
    b.pg().psql("CREATE TABLE previous_life (x int)");

    // Not configured: both say so, both are healthy for a load balancer.
    for h in [&a, &b] {
        let s = h.status();
        assert_eq!(s["configured"], false, "{s:#}");
        assert!(h.text().contains("Warm Standby not yet configured"), "{}", h.text());
        assert_eq!(h.health(), 200);
    }

    a.tandem.ok(&["standby", "configure", "--primary-mode", "--peer", &b.tandem.peer]);
    let s = a.status();
    assert_eq!((s["role"].as_str(), s["looks_like"].as_str()), (Some("primary"), Some("Primary")), "{s:#}");
    let settings =
        a.pg().psql("SELECT current_setting('wal_log_hints') || ' ' || current_setting('wal_level')");
    assert_eq!(settings, "on replica");

    let out = b.tandem.ok(&["standby", "configure", "--standby-mode", "--peer", &a.tandem.peer]);
    assert!(out.contains("base backup taken"), "{out}");
    assert!(out.contains("previous database moved to"), "{out}");
    let moved = std::fs::read_dir(b.pg().data.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains(".tandem-previous-"));
    assert!(moved, "the standby's previous database is kept in the recovery location");

    // Streaming, both ways of looking.
    let s = b.wait_status("streaming", |s| s["database"]["streaming"] == true);
    assert_eq!((s["role"].as_str(), s["looks_like"].as_str()), (Some("standby"), Some("Standby")), "{s:#}");
    assert_eq!(s["database"]["wal_segments_configured"], 4);
    let text = b.text();
    for line in [
        "Instance looks like Standby",
        "DB replication currently streaming",
        "WAL segments configured: 4",
        "DB last updated",
    ] {
        assert!(text.contains(line), "`{line}` missing:\n{text}");
    }
    assert_eq!(b.health(), 503, "a standby takes no traffic");
    let s = a.wait_status("streaming on the primary", |s| s["database"]["streaming"] == true);
    assert!(s["database"]["lag_bytes"].is_u64() && s["database"]["lag_seconds"].is_number(), "{s:#}");
    let text = a.text();
    for line in [
        "Instance looks like Primary",
        "DB replication configured with Standby set to:  127.0.0.1/32",
        "DB replication currently streaming",
    ] {
        assert!(text.contains(line), "`{line}` missing:\n{text}");
    }
    assert_eq!(a.health(), 200);
    // Patroni's checks with a real database: the standby is a replica within a generous lag,
    // and not the primary.
    assert_eq!(a.tandem.http_get("/primary").0, 200);
    assert_eq!(b.tandem.http_get("/primary").0, 503);
    assert_eq!(a.tandem.http_get("/replica").0, 503);
    let (code, body) = b.tandem.http_get("/replica?lag=64MB");
    assert_eq!(code, 200, "{body}");

    // Regression: tandem started the standby's PostgreSQL with its port and socket folder on
    // the command line only, so a plain `pg_ctl start` brought it up elsewhere (5432).
    let mut b = b;
    b.pg.as_mut().unwrap().restart_plain().unwrap();
    assert_eq!(b.pg().psql("SELECT pg_is_in_recovery()"), "t", "up on its own port and socket");
    b.wait_status("streaming after a plain restart", |s| s["database"]["streaming"] == true);

    // Rows and files reach the standby.
    a.pg().psql("INSERT INTO marks VALUES ('paired')");
    wait_until("the row on the standby", || {
        b.pg().try_psql("SELECT count(*) FROM marks WHERE tag = 'paired'").is_ok_and(|n| n == "1")
    });
    assert!(
        b.pg().try_psql("SELECT 1 FROM previous_life").is_err(),
        "the standby is a copy of the primary now"
    );
    a.write("vault/case-1/report.txt", "evidence");
    b.wait_file("vault/case-1/report.txt", "evidence");
    let s = b.wait_status("the vault tree in sync", |s| {
        s["trees"]["trees"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["tree"] == "vault" && t["files_total"].as_u64() >= Some(1))
    });
    assert_eq!(s["trees"]["mode"], "following");
    let metrics = b.tandem.http_get("/metrics").1;
    assert!(metrics.contains("tandem_db_replication_streaming 1"), "{metrics}");
    assert!(metrics.contains("tandem_sync_files_total{tree=\"vault\"}"), "{metrics}");

    // Regression: a killed standby postmaster stayed down (and the text never said so). tandem
    // restarts it, says so, and it follows again.
    let pid = b.pg().postmaster_pid().to_string();
    assert!(std::process::Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    let s = b.wait_status("the standby's PostgreSQL restarted", |s| {
        s["database"]["keeper"]["restarts"] == 1 && s["database"]["running"] == true
    });
    assert!(s["database"]["keeper"]["down_since_ms"].is_null(), "{s:#}");
    assert!(b.text().contains("PostgreSQL restarted by tandem 1 time(s)"), "{}", b.text());
    assert!(b.tandem.log().contains("the standby's PostgreSQL stopped unexpectedly"), "logged");
    a.pg().psql("INSERT INTO marks VALUES ('after the restart')");
    wait_until("the row after the restart on the standby", || {
        b.pg().try_psql("SELECT count(*) FROM marks WHERE tag = 'after the restart'").is_ok_and(|n| n == "1")
    });

    // A broken link: the primary's tandem is gone; the standby says so.
    let mut a = a;
    a.tandem.kill9();
    let s = b.wait_status("the peer unreachable", |s| s["peer"]["reachable"] == false);
    assert!(b.text().contains("NOT answering"), "{s:#}");

    // Convert is refused while the old primary answers as one and cannot be fenced (its
    // tandem, which would fence it first, is gone): its database alone answering at its address
    // is enough (asked without logging in: no credential crosses the network). An old primary
    // whose tandem answers is fenced instead (see standby_fence).
    let out = b.tandem.cli(&["standby", "convert-to-primary"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PostgreSQL at 127.0.0.1:") && err.contains("still answers"), "{err}");

    // The primary host dies (database and tandem) while the standby's database is down: its
    // last rows are only in tandem's archive, acknowledged to the primary. Convert is accepted,
    // starts the database and lets it take them all before it promotes. (The primary's tandem
    // carries its WAL through the tunnel: it is back for the last rows, then dies with it.)
    a.tandem.start();
    b.wait_status("streaming again", |s| s["wal"]["state"] == "streaming");
    b.pg.as_mut().unwrap().stop_fast().unwrap();
    a.pg().psql("INSERT INTO marks VALUES ('last words')");
    let acknowledged: tandem::wal::Lsn = a.pg().psql("SELECT pg_current_wal_flush_lsn()").parse().unwrap();
    wait_until("tandem has the last row durably", || {
        let wal: Value = serde_json::from_str(&b.tandem.ok(&["wal", "status", "--json"])).unwrap();
        wal["flushed_lsn"]
            .as_str()
            .and_then(|l| l.parse::<tandem::wal::Lsn>().ok())
            .is_some_and(|l| l >= acknowledged)
    });
    a.tandem.kill9();
    let pid = a.pg().postmaster_pid().to_string();
    assert!(std::process::Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    b.wait_status("database replication broken", |s| {
        s["database"]["streaming"] == false && s["wal"]["state"] != "streaming"
    });
    assert!(b.text().contains("DB replication NOT streaming"), "{}", b.text());
    assert!(b.status()["last_error"]["resolved_at_ms"].is_null(), "the refused convert is the last error");
    let out = b.tandem.ok(&["standby", "convert-to-primary"]);
    assert!(out.contains("writable after"), "{out}");
    let s = b.status();
    assert!(s["last_error"]["resolved_at_ms"].is_u64(), "a convert that worked resolves it: {s:#}");
    assert!(b.text().contains("since resolved"), "{}", b.text());
    assert!(out.contains("the database has all WAL tandem held"), "{out}");
    assert_eq!(
        b.pg().psql("SELECT count(*) FROM marks WHERE tag = 'last words'"),
        "1",
        "nothing acknowledged is lost"
    );
    let s = b.status();
    assert_eq!(s["trees"]["mode"], "serving", "no longer pulling trees: {s:#}");
    assert_eq!(
        (s["role"].as_str(), s["looks_like"].as_str(), s["healthy"].as_bool()),
        (Some("primary"), Some("Primary"), Some(true)),
        "{s:#}"
    );
    assert_eq!(b.health(), 200);
    b.pg().psql("INSERT INTO marks VALUES ('after failover')");
    b.write("vault/case-2/new.txt", "written on the new primary");

    // The old primary comes back: superseded until it rejoins; rejoin rewinds it.
    a.tandem.start();
    a.wait_status("superseded", |s| s["superseded"].is_string());
    assert_eq!(a.health(), 503, "an old primary whose peer took over takes no traffic");
    let out = a.tandem.ok(&["standby", "rejoin"]);
    assert!(out.contains("pg_rewind"), "{out}");
    a.wait_status("streaming from the new primary", |s| {
        s["database"]["streaming"] == true && s["role"] == "standby"
    });
    wait_until("the new primary's row on the old primary", || {
        a.pg().try_psql("SELECT count(*) FROM marks WHERE tag = 'after failover'").is_ok_and(|n| n == "1")
    });
    a.wait_file("vault/case-2/new.txt", "written on the new primary");
    b.pg().psql("INSERT INTO marks VALUES ('rejoined')");
    wait_until("rows keep flowing", || {
        a.pg().try_psql("SELECT count(*) FROM marks WHERE tag = 'rejoined'").is_ok_and(|n| n == "1")
    });

    // Off unpairs both sides; the primary no longer holds WAL for anyone.
    let out = a.tandem.ok(&["standby", "off"]);
    for step in
        ["unpairs too", "the primary's entries removed", "stays a read-only standby", "WAL archive removed"]
    {
        assert!(out.contains(step), "`{step}` missing:\n{out}");
    }
    for h in [&a, &b] {
        h.wait_status("unpaired", |s| s["configured"] == false);
    }
    wait_until("tandem's slot dropped on the primary", || {
        b.pg().psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'tandem'") == "0"
    });
    // Regression: off left the replication role (and its password in pairing.json.off on both
    // hosts), the old primary's pg_hba block, the standby's recovery config pointing at a
    // walsender that is gone, tandem's archives and stale errors.
    wait_until("the replication role dropped on the primary", || {
        b.pg().psql("SELECT count(*) FROM pg_roles WHERE rolname = 'tandem_replicator'") == "0"
    });
    for h in [&a, &b] {
        let hba = std::fs::read_to_string(h.pg().data.join("pg_hba.conf")).unwrap();
        assert!(
            !hba.contains("tandem warm standby"),
            "{}: tandem's pg_hba entries are gone:\n{hba}",
            h.tandem.name
        );
        let off = std::fs::read_to_string(h.tandem.data().join("standby/pairing.json.off")).unwrap();
        let off: Value = serde_json::from_str(&off).unwrap();
        assert!(off["replication_password"].is_null(), "{}: {off:#}", h.tandem.name);
        assert!(!h.tandem.data().join("standby/replication.password").exists());
        let wal = h.tandem.data().join("wal");
        for gone in ["archive", "walsender.password", "upstream.json"] {
            assert!(!wal.join(gone).exists(), "{}: {gone} left behind", h.tandem.name);
        }
        let s = h.status();
        assert!(s["last_error"].is_null() && s["database"]["keeper"]["restarts"] == 0, "{s:#}");
    }
    // The standby's database: a read-only copy of everything, following nothing.
    let auto = std::fs::read_to_string(a.pg().data.join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("primary_conninfo"), "{auto}");
    assert!(!a.pg().data.join("tandem.pgpass").exists() && a.pg().data.join("standby.signal").exists());
    assert_eq!(a.pg().psql("SELECT pg_is_in_recovery()"), "t");
    assert_eq!(a.pg().psql("SELECT count(*) FROM marks WHERE tag = 'rejoined'"), "1");
    assert!(a.text().contains("(the local database is in recovery)"), "{}", a.text());
}

/// `convert-to-primary --force` while the old primary's tandem is frozen (SIGSTOP): it cannot
/// be asked to fence, so its database still takes writes; once its tandem runs again it hears
/// of the higher epoch, calls itself superseded, answers 503 to load balancers and fences its
/// database hard (demoted: no session commits there, however it asks); rejoin brings it back
/// as the standby, keeping aside the WAL of what only it had.
#[test]
fn a_forced_convert_fences_the_old_primary_until_it_rejoins() {
    let Some(a) = host("a", true) else { return };
    let Some(b) = host("b", true) else { return };
    a.pg().psql("CREATE TABLE marks (tag text)");
    a.tandem.ok(&["standby", "configure", "--primary-mode", "--peer", &b.tandem.peer]);
    b.tandem.ok(&["standby", "configure", "--standby-mode", "--peer", &a.tandem.peer]);
    b.wait_status("streaming", |s| s["database"]["streaming"] == true);

    // A standby set up by an older tandem, whose walsender trusted it: no password, no
    // passfile. The upgraded walsender wants one; tandem hands it over at start.
    let mut b = b;
    b.tandem.kill9();
    std::fs::remove_file(b.tandem.data().join("wal/walsender.password")).unwrap();
    let passfile = b.pg().data.join("tandem.pgpass");
    std::fs::remove_file(&passfile).unwrap();
    let auto_path = b.pg().data.join("postgresql.auto.conf");
    let auto = std::fs::read_to_string(&auto_path).unwrap();
    let old = auto.replace(&format!(" passfile=''{}''", passfile.display()), "");
    assert_ne!(auto, old);
    std::fs::write(&auto_path, old).unwrap();
    b.tandem.start();
    b.wait_status("streaming with the upgraded walsender", |s| s["database"]["streaming"] == true);
    assert!(passfile.exists());

    a.tandem.signal("-STOP");
    let out = b.tandem.ok(&["standby", "convert-to-primary", "--force"]);
    assert!(out.contains("did not fence it") && out.contains("fencing check skipped"), "{out}");
    // Nobody fenced the old primary yet: a row only it has (the rewind removes it from the
    // database; rejoin keeps its WAL aside first).
    a.pg().psql("INSERT INTO marks VALUES ('written after the fork 7f3a')");
    b.pg().psql("INSERT INTO marks VALUES ('on the new primary')");
    a.tandem.signal("-CONT");

    let s = a.wait_status("fenced by a demotion", |s| s["fenced"]["how"] == "demote");
    assert!(s["superseded"].is_string(), "{s:#}");
    assert_eq!(a.health(), 503);
    wait_until("the old primary in recovery", || {
        a.pg().try_psql("SELECT pg_is_in_recovery()").is_ok_and(|r| r == "t")
    });
    let insisting = "BEGIN READ WRITE; INSERT INTO marks VALUES ('split brain'); COMMIT";
    let refused = a.pg().try_psql(insisting).expect_err("a session that asks for read-write still wrote");
    assert!(refused.contains("cannot set transaction read-write mode during recovery"), "{refused}");
    assert!(a.pg().try_psql("INSERT INTO marks VALUES ('split brain')").is_err());
    let s = b.wait_status("the old primary's fence", |s| s["peer"]["fenced"] == "demote");
    let old = s["last_failover"]["old_primary"].as_str().unwrap_or_default();
    assert!(old.contains("not fenced by this host"), "{s:#}");

    let out = a.tandem.ok(&["standby", "rejoin"]);
    assert!(out.contains("pg_rewind"), "{out}");
    assert!(out.contains("kept this host's WAL from the fork"), "{out}");
    let kept: Vec<_> = std::fs::read_dir(a.tandem.data().join("standby/diverged"))
        .expect("the diverged WAL folder")
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let holds_row = std::fs::read_dir(&kept[0]).unwrap().any(|f| {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        bytes.windows(27).any(|w| w == b"written after the fork 7f3a")
    });
    assert!(holds_row, "the kept WAL holds the row only the old primary had: {:?}", kept[0]);
    assert!(std::fs::read_to_string(kept[0].join("README.txt")).unwrap().contains("pg_waldump"));
    a.wait_status("following the new primary", |s| {
        s["role"] == "standby" && s["database"]["streaming"] == true && s["fenced"].is_null()
    });
    wait_until("the new primary's row on the old one", || {
        a.pg().try_psql("SELECT count(*) FROM marks WHERE tag = 'on the new primary'").is_ok_and(|n| n == "1")
    });
    assert_eq!(a.pg().psql("SELECT count(*) FROM marks WHERE tag = 'split brain'"), "0");
}

#[test]
fn a_changed_address_keeps_the_pair() {
    // Files only (no database): the pairing and the trees are what an address change tests.
    let mut a = host("a", false).unwrap();
    let mut b = host("b", false).unwrap();
    a.tandem.ok(&["standby", "configure", "--primary-mode", "--peer", &b.tandem.peer]);
    let out = b.tandem.ok(&["standby", "configure", "--standby-mode", "--peer", &a.tandem.peer]);
    assert!(out.contains("files only"), "{out}");
    a.write("etc/app.conf", "one");
    b.wait_file("etc/app.conf", "one");

    // The primary moves: the standby hears of it and follows it there.
    a.tandem.move_peer_port();
    let new_a = a.tandem.peer.clone();
    b.wait_status("the primary's new address", |s| s["peer"]["addr"] == new_a.as_str());
    a.write("etc/app.conf", "two");
    b.wait_file("etc/app.conf", "two");

    // The standby moves: the primary records it.
    b.tandem.move_peer_port();
    let new_b = b.tandem.peer.clone();
    a.wait_status("the standby's new address", |s| s["peer"]["addr"] == new_b.as_str());
    a.write("etc/app.conf", "three");
    b.wait_file("etc/app.conf", "three");
    let s = b.status();
    assert_eq!(s["role"], "standby", "still paired, never re-configured: {s:#}");

    // Configuring again with other options says what changed.
    let out = b.tandem.ok(&["standby", "configure", "--standby-mode", "--peer", &new_a, "--ignore-vault"]);
    assert!(out.contains("options changed: (defaults) -> ignore-vault"), "{out}");
    let s = b.status();
    assert!(!s["trees"]["trees"].as_array().unwrap().iter().any(|t| t["tree"] == "vault"), "{s:#}");
}

/// The README's main job: `tandem sandbox` sets up a pair and a cluster, shows them, and (with
/// `--once`) stops and cleans up by itself.
#[test]
fn the_sandbox_runs_the_whole_product_and_cleans_up() {
    let Some(_pg) = PgServer::start(&[]) else { return }; // PostgreSQL is here (else: loudly skipped)
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("sandbox");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .env_remove("TANDEM_CONFIG")
        .current_dir(dir.path())
        .args(["sandbox", "--once", "--dir"])
        .arg(&folder)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "PostgreSQL 15 found",
        "ok  the changes reached every member",
        "Instance looks like Primary",
        "Instance looks like Standby",
        "DB replication currently streaming",
        "configuration cluster: 3 members",
        "standby convert-to-primary",
    ] {
        assert!(text.contains(line), "`{line}` missing:\n{text}");
    }
    assert!(!folder.exists(), "the sandbox removes its folder");
    let left =
        std::process::Command::new("pgrep").args(["-f", &folder.display().to_string()]).output().unwrap();
    assert!(left.stdout.is_empty(), "processes left behind: {}", String::from_utf8_lossy(&left.stdout));
}

/// Regression: `tandem standby ...` waited up to 3600 s on a daemon that accepts connections
/// but does not answer (stopped with SIGSTOP). Now every standby command first checks that the
/// daemon answers (5 s), and one that is not running is named at once.
#[test]
fn the_cli_names_a_stopped_daemon_at_once_instead_of_waiting_an_hour() {
    let mut a = host("a", false).unwrap();
    let timed = |tandem: &Node, args: &[&str]| {
        let started = std::time::Instant::now();
        let out = tandem.cli(args);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), started.elapsed())
    };
    a.tandem.signal("-STOP");
    let stopped = [timed(&a.tandem, &["standby", "status"]), timed(&a.tandem, &["standby", "off"])];
    a.tandem.signal("-CONT");
    for (ok, err, took) in stopped {
        assert!(!ok && err.contains("did not answer within 5 s"), "{err}");
        assert!(took < Duration::from_secs(15), "took {took:?}");
    }
    assert!(a.text().contains("Warm Standby not yet configured"), "it answers again once continued");
    a.tandem.kill9();
    let (ok, err, took) = timed(&a.tandem, &["standby", "status"]);
    assert!(!ok && err.contains("cannot reach the tandem daemon"), "{err}");
    assert!(took < Duration::from_secs(3), "connection refused is immediate: {took:?}");
    assert_eq!(err.matches("Connection refused").count(), 1, "the cause is said once: {err}");
    // No daemon ever ran here: the token file is missing, said once.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .current_dir(empty.path())
        .env_remove("TANDEM_CONFIG")
        .args(["standby", "status"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "the cause is said once: {err}");
}

/// Patroni's role checks, so a load balancer configured for Patroni works unchanged: 200 where
/// the host is what the path asks, 503 where not, a JSON body either way, for GET, HEAD and
/// OPTIONS (HAProxy checks with OPTIONS), no token. Files only: the pair's roles decide.
#[test]
fn the_load_balancers_checks_answer_in_patronis_names() {
    let a = host("a", false).unwrap();
    let b = host("b", false).unwrap();
    let check = |h: &Host, method: &str, path: &str| {
        crate::support::http(&h.tandem.api_addr(), method, path, None, b"")
    };
    // Unpaired: it takes writes (as `/health` says), and is no replica.
    for (path, want) in [("/primary", 200), ("/read-write", 200), ("/replica", 503), ("/read-only", 200)] {
        assert_eq!(check(&a, "GET", path).0, want, "unpaired: {path}");
    }
    a.tandem.ok(&["standby", "configure", "--primary-mode", "--peer", &b.tandem.peer]);
    b.tandem.ok(&["standby", "configure", "--standby-mode", "--peer", &a.tandem.peer]);
    b.wait_status("following", |s| s["role"] == "standby");
    for method in ["GET", "HEAD", "OPTIONS"] {
        for (h, path, want) in [
            (&a, "/primary", 200),
            (&a, "/leader", 200),
            (&a, "/master", 200),
            (&a, "/replica", 503),
            (&a, "/read-only", 200),
            (&b, "/primary", 503),
            (&b, "/read-write", 503),
            (&b, "/replica", 200),
            (&b, "/read-only", 200),
            (&a, "/liveness", 200),
            (&b, "/liveness", 200),
            (&a, "/readiness", 200),
            (&b, "/readiness", 200),
        ] {
            let (code, body) = check(h, method, path);
            assert_eq!(code, want, "{method} {path} on {}: {body}", h.tandem.name);
            if method != "HEAD" && path != "/liveness" {
                let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {body}: {e}"));
                assert_eq!(v["role"], if h.tandem.name == "a" { "primary" } else { "replica" }, "{body}");
            }
        }
    }
    // A lag limit needs a known lag (no database here: none), and a unit it knows.
    assert_eq!(check(&b, "GET", "/replica?lag=16MB").0, 503);
    let (code, body) = check(&b, "GET", "/replica?lag=10parsecs");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unknown unit"), "{body}");
}

/// `tandem standby check` in the Nagios convention: one line, exit 0 unpaired or with the pair
/// well, 1 once the peer stops answering (naming it), 2 when the daemon asked does not answer.
#[test]
fn standby_check_speaks_the_nagios_convention() {
    let mut a = host("a", false).unwrap();
    let mut b = host("b", false).unwrap();
    let check = |h: &Host| {
        let out = h.tandem.cli(&["standby", "check"]);
        (out.status.code(), String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(check(&a), (Some(0), "OK: warm standby not configured on this host".to_string()));
    a.tandem.ok(&["standby", "configure", "--primary-mode", "--peer", &b.tandem.peer]);
    b.tandem.ok(&["standby", "configure", "--standby-mode", "--peer", &a.tandem.peer]);
    let (ok, _) =
        wait_for(LONG, || Some(check(&b)).filter(|(c, _)| *c == Some(0))).expect("the standby never OK");
    assert_eq!(ok.1, "OK: standby of a files-only pair, following");
    b.tandem.kill9();
    let (warned, _) = wait_for(LONG, || Some(check(&a)).filter(|(c, _)| *c == Some(1)))
        .expect("never warned about the peer");
    assert!(
        warned.1.starts_with("WARNING: the peer at ") && warned.1.ends_with("does not answer"),
        "{}",
        warned.1
    );
    a.tandem.kill9();
    let (code, line) = check(&a);
    assert_eq!(code, Some(2), "{line}");
    assert!(line.starts_with("CRITICAL: cannot ask the tandem daemon"), "{line}");
}
