//! [`LocalPg`] against real PostgreSQL 15 clusters (`PgServer`, the WAL client's test helper):
//! preparing a primary, and a failover followed by a rewind of the old primary. Without
//! PostgreSQL the tests skip, loudly; with `CI=true` they fail.

use std::path::{Path, PathBuf};

use super::*;
use crate::wal::base_backup::{BaseBackup, BaseBackupError, Endpoint};
use crate::wal::client::tests::pg::{self, PgServer, wait_until};

const REPLICATION_USER: &str = "tandem_replicator";

/// A fresh cluster, stopped and started again by [`LocalPg`] (so no setting comes from the
/// command line), stopped when the guard drops; `None` when PostgreSQL is missing (not CI).
fn cluster() -> Option<(PgServer, Started)> {
    let mut server = PgServer::start(&[])?;
    server.stop_fast().expect("stop the fresh cluster");
    let local = local(&server);
    local.start().expect("LocalPg::start");
    Some((server, Started(local)))
}

/// Stops the server (immediate) on drop.
struct Started(LocalPg);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.stop(StopMode::Immediate);
    }
}

fn local(server: &PgServer) -> LocalPg {
    LocalPg {
        bin_dir: pg::bin_dir().expect("PostgreSQL programs"),
        data_dir: server.data.clone(),
        port: server.port,
        socket_dir: server.sock.clone(),
        os_user: is_root().then(|| "postgres".to_owned()),
        superuser: "postgres".into(),
        log_file: server.sock.join("server.log"),
    }
}

fn setup() -> PrimarySetup {
    PrimarySetup {
        user: REPLICATION_USER.into(),
        password: random_password(),
        max_slot_wal_keep_size_mib: 1024,
    }
}

/// The replication role over the server's Unix socket (what `pg_hba.conf`'s block lets in:
/// the peer's connections arrive there through tandem's tunnel).
fn endpoint(server: &PgServer, setup: &PrimarySetup) -> Endpoint {
    let (sock, port): (&Path, u16) = (&server.sock, server.port);
    Endpoint {
        host: sock.display().to_string(),
        port,
        user: setup.user.clone(),
        password: Some(setup.password.clone()),
    }
}

fn base_backup(bin: &LocalPg, from: &Endpoint, into: PathBuf) -> BaseBackup {
    BaseBackup {
        bin_dir: bin.bin_dir.clone(),
        primary: from.clone(),
        // Streams from the primary directly: no tandem in between in these tests.
        walsender: from.clone(),
        data_dir: into,
        os_user: bin.os_user.clone(),
        application_name: "standby_b".into(),
    }
}

#[tokio::test]
async fn prepare_primary_lets_the_role_replicate_with_its_password_and_is_idempotent() {
    let Some((a, started)) = cluster() else { return };
    let la = &started.0;
    let setup = setup();

    let report = la.prepare_primary(&setup).await.expect("prepare_primary");
    assert!(report.restarted, "wal_log_hints needs a restart: {report:?}");
    for change in [
        "role tandem_replicator created",
        "wal_log_hints = on",
        "max_slot_wal_keep_size = 1024MB",
        "pg_hba.conf",
        "EXECUTE on pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) granted",
    ] {
        assert!(report.changed.iter().any(|c| c == change), "{change} missing from {:?}", report.changed);
    }
    assert!(!report.changed.iter().any(|c| c.starts_with("listen_addresses")), "never opened: {report:?}");
    assert_eq!(a.psql("SHOW wal_log_hints"), "on");
    assert_eq!(a.psql("SHOW max_slot_wal_keep_size"), "1GB");
    assert_eq!(
        a.psql("SELECT rolreplication AND rolcanlogin FROM pg_roles WHERE rolname = 'tandem_replicator'"),
        "t"
    );
    assert!(
        a.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'tandem_replicator'")
            .starts_with("SCRAM-SHA-256$")
    );
    let hba = std::fs::read_to_string(a.data.join("pg_hba.conf")).unwrap();
    assert!(hba.starts_with(HBA_BEGIN), "{hba}");

    // The role replicates over the socket with its password, and only with it (the test
    // cluster's own `local replication all trust` line comes after tandem's block).
    let b = a.unstarted();
    let good = endpoint(&a, &setup);
    base_backup(la, &good, b.data.clone()).run().expect("pg_basebackup as the replication role");
    assert!(b.data.join("PG_VERSION").exists());
    let wrong = Endpoint { password: Some("wrong".into()), ..good };
    match base_backup(la, &wrong, b.data.with_file_name("other")).run() {
        Err(BaseBackupError::Failed { stderr, .. }) => {
            assert!(stderr.contains("password authentication failed"), "{stderr}")
        }
        other => panic!("a wrong password must fail: {other:?}"),
    }

    let again = la.prepare_primary(&setup).await.expect("prepare_primary again");
    assert_eq!(again, PrepareReport::default(), "the second run changes nothing");

    // Off undoes the role (grants and all), never a role of the site's own.
    a.psql("CREATE ROLE site_rep LOGIN REPLICATION");
    assert_eq!(la.drop_replication_role("site_rep", REPLICATION_USER).await.unwrap(), RoleDrop::Kept);
    let count = |role: &str| a.psql(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"));
    assert_eq!(count("site_rep"), "1");
    // Named otherwise, still known by its comment.
    let dropped = la.drop_replication_role(REPLICATION_USER, "another_default").await.unwrap();
    assert_eq!(dropped, RoleDrop::Dropped);
    assert_eq!(count(REPLICATION_USER), "0");
    assert_eq!(la.drop_replication_role(REPLICATION_USER, REPLICATION_USER).await.unwrap(), RoleDrop::Absent);
}

#[tokio::test]
async fn after_a_failover_the_old_primary_rewinds_and_follows_the_new_one() {
    let Some((a, started)) = cluster() else { return };
    let la = &started.0;
    let setup = setup();
    la.prepare_primary(&setup).await.expect("prepare_primary");
    a.psql("CREATE TABLE t (id int PRIMARY KEY, origin text); INSERT INTO t SELECT g, 'a' FROM generate_series(1, 3) g");

    // B: a base backup of A, streaming from A.
    let mut b = a.unstarted();
    base_backup(la, &endpoint(&a, &setup), b.data.clone()).run().expect("base backup of A");
    b.boot_existing(&[]).expect("start B");
    let lb = local(&b);
    wait_until("B replays A's rows", || b.try_psql("SELECT count(*) FROM t").as_deref() == Ok("3"));
    assert!(lb.in_recovery().await.unwrap());
    // The status's one-session reading, on each role.
    let ob = lb.overview("tandem").await.expect("overview of the standby");
    assert!(ob.in_recovery && ob.replay_paused == Some(false), "{ob:?}");
    assert!(ob.replay_lsn.is_some() && ob.current_lsn.is_none() && ob.replication.is_empty(), "{ob:?}");
    let oa = la.overview("no_such_slot").await.expect("overview of the primary");
    assert!(!oa.in_recovery && oa.replay_paused.is_none() && oa.slot.is_none(), "{oa:?}");
    assert!(oa.current_lsn.is_some_and(|l| l >= ob.replay_lsn.unwrap()), "{oa:?} {ob:?}");
    assert!(oa.replication.iter().any(|r| r.application_name == "standby_b"), "{oa:?}");
    let senders = la.replication().await.unwrap();
    assert!(
        senders.iter().any(|r| r.application_name == "standby_b" && r.client_addr.is_none()),
        "{senders:?}"
    );

    // Failover: B promoted; A, not told, takes writes that B never sees, then crashes.
    lb.promote(30).await.expect("promote B");
    lb.checkpoint().await.expect("checkpoint on B");
    assert!(!lb.in_recovery().await.unwrap());
    b.psql("INSERT INTO t VALUES (10, 'b')");
    a.psql("INSERT INTO t SELECT g, 'a-diverged' FROM generate_series(100, 200) g");
    let pid = a.postmaster_pid();
    // SAFETY: kill has no memory preconditions; the pid is A's postmaster, a child of ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_until("A's postmaster is gone", || !la.is_running());

    // Rewind A from B as the replication role (not a superuser), then follow B. pg_rewind first
    // runs A's crash recovery, whose end-of-recovery checkpoint recycled the segment holding
    // the last common checkpoint ("could not find previous WAL record") until prepare_primary
    // set wal_keep_size.
    // First, what only A wrote is kept aside: A crashed, so its crash recovery runs in
    // single-user mode, then pg_rewind's dry run says where the histories forked.
    let fork = la.divergence(&endpoint(&b, &setup)).expect("dry run").expect("A wrote past the fork");
    assert_eq!(fork.timeline, 1, "{fork:?}");
    assert!(!la.is_running(), "crash recovery left no server running");
    let aside = tempfile::tempdir().unwrap();
    let kept = la.keep_wal_after(fork, aside.path(), 1).expect("keep the diverged WAL");
    assert!(kept.files >= 1 && kept.bytes >= 16 << 20, "{kept:?}");
    let holds_rows = std::fs::read_dir(&kept.dir).unwrap().any(|f| {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        bytes.windows(10).any(|w| w == b"a-diverged")
    });
    assert!(holds_rows, "the kept WAL holds the rows only A had: {kept:?}");

    let took = la.rewind(&endpoint(&b, &setup)).expect("pg_rewind");
    tracing::info!(?took, "rewound");
    la.write_standby_config(&endpoint(&b, &setup), "old_primary_a").expect("standby config");
    let auto = std::fs::read_to_string(a.data.join("postgresql.auto.conf")).unwrap();
    assert_eq!(auto.matches("primary_conninfo").count(), 1, "{auto}");
    la.start().expect("start A as a standby");
    wait_until("A replays B's row", || {
        a.try_psql("SELECT origin FROM t WHERE id = 10").as_deref() == Ok("b")
    });
    assert_eq!(a.psql("SELECT count(*) FROM t WHERE origin = 'a-diverged'"), "0");
    assert_eq!(a.psql("SELECT count(*) FROM t"), "4");
    assert!(la.in_recovery().await.unwrap());
    assert!(!lb.in_recovery().await.unwrap());
    let following = la.overview("tandem").await.unwrap();
    assert!(following.receive_lsn.is_some());
    assert!(lb.current_lsn().await.unwrap() >= following.replay_lsn.unwrap());
}
