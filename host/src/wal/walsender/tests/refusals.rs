//! What the walsender refuses, and that refusing never costs more than the one command or
//! connection: a start ahead of the flush, removed WAL, unsupported commands, clients before
//! the upstream identity is known, non-replication and garbage clients.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::WalSenderConfig;
use super::{Harness, SEG, append, identity};
use crate::wal::client::{ReplicationConn, WalClientError};
use crate::wal::lsn::Lsn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_ahead_of_the_flush_or_on_removed_wal_is_an_error() {
    let mut h = Harness::start(WalSenderConfig::for_test()).await;
    append(&mut h.writer, 1, 0, SEG, 6 * SEG + 100);
    // Retention removes what lies more than two segments before the replayed position.
    h.writer.set_replayed_lsn(Lsn(5 * SEG)).unwrap();

    // As PostgreSQL: CopyBothResponse first, then the error.
    let mut conn = h.connect().await;
    let mut stream = conn.start_replication(None, Lsn(7 * SEG), 1).await.unwrap();
    let err = stream.next().await.unwrap_err();
    assert!(
        err.to_string().contains(
            "requested starting point 0/700000 is ahead of the WAL flush position of this server 0/600064"
        ),
        "{err}"
    );
    drop(stream);

    let mut conn = h.connect().await;
    let mut stream = conn.start_replication(None, Lsn(SEG), 1).await.unwrap();
    let err = stream.next().await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("58P01"), "{err}");
    assert!(
        err.to_string().contains("requested WAL segment 000000010000000000000001 has already been removed"),
        "{err}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_commands_are_errors_and_the_session_goes_on() {
    let mut h = Harness::start(WalSenderConfig::for_test()).await;
    append(&mut h.writer, 1, 0, SEG, SEG + 10);
    let mut conn = h.connect().await;
    for sql in [
        "BASE_BACKUP",
        "CREATE_REPLICATION_SLOT s PHYSICAL",
        "SELECT 1",
        "START_REPLICATION SLOT s LOGICAL 0/0",
    ] {
        let err = conn.simple_query("test", sql).await.unwrap_err();
        assert_eq!(err.sqlstate(), Some("0A000"), "{sql}: {err}");
        assert!(err.to_string().contains("tandem's walsender does not support"), "{err}");
    }
    let err = conn.simple_query("test", "TIMELINE_HISTORY x").await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("42601"), "{err}");
    let err = conn.simple_query("test", "SHOW shared_buffers").await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("42704"), "{err}");
    let empty = conn.simple_query("test", " ; ").await.unwrap();
    assert!(empty.rows.is_empty());
    // READ_REPLICATION_SLOT: physical, not reserved until a standby reported a flush.
    assert_eq!(conn.read_slot("s").await.unwrap().unwrap().restart_lsn, None);
    assert_eq!(conn.identify_system().await.unwrap().xlogpos, Lsn(SEG + 10));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_wait_for_the_upstream_identity() {
    let dir = tempfile::tempdir().unwrap();
    let writer =
        crate::wal::archive::ArchiveWriter::open(dir.path(), crate::wal::archive::ArchiveConfig::for_test())
            .unwrap();
    let h = Harness::serve(dir, writer, None, WalSenderConfig::for_test()).await;
    let err = ReplicationConn::connect(&h.conn_config("standby", None)).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("57P03"), "{err}");
    assert!(err.to_string().contains("has not reached the primary yet"), "{err}");
    h.identity.send_replace(Some(identity(SEG)));
    let mut conn = h.connect().await;
    // Known cluster, empty archive: IDENTIFY_SYSTEM says so instead of inventing a position.
    let err = conn.identify_system().await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("55000"), "{err}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_never_stop_the_accept_loop() {
    let mut h = Harness::start(WalSenderConfig::for_test()).await;
    append(&mut h.writer, 1, 0, SEG, SEG + 10);
    // Garbage, an oversized startup length, a truncated packet then a close.
    for bytes in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0x7F, 0, 0, 0, 1, 2, 3, 4], &[0, 0, 0, 40, 0, 3]] {
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    }
    // A normal (non-replication) connection and a logical one are refused with FATAL.
    for replication in [None, Some("database")] {
        let mut startup = bytes::BytesMut::new();
        let mut params = vec![("user", "u")];
        params.extend(replication.map(|r| ("replication", r)));
        postgres_protocol::message::frontend::startup_message(params, &mut startup).unwrap();
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(&startup).await.unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
        assert!(String::from_utf8_lossy(&answer).contains("only serves physical replication"));
    }
    let mut conn = h.connect().await;
    assert_eq!(conn.identify_system().await.unwrap().xlogpos, Lsn(SEG + 10));
    let err = conn.simple_query("x", "IDENTIFY_SYSTEM").await;
    assert!(!matches!(err, Err(WalClientError::Desynchronized)));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_standby_is_asked_for_a_reply_then_dropped() {
    let config = WalSenderConfig {
        standby_timeout: std::time::Duration::from_millis(1200),
        keepalive_interval: std::time::Duration::from_millis(200),
        ..WalSenderConfig::for_test()
    };
    let mut h = Harness::start(config).await;
    append(&mut h.writer, 1, 0, SEG, SEG + 10);
    let mut conn = h.connect().await;
    let mut stream = conn.start_replication(None, Lsn(SEG), 1).await.unwrap();
    let started = std::time::Instant::now();
    let (mut keepalives, mut asked) = (0, None);
    // Never answer: keepalives, one asking for a reply at half the timeout, then the drop.
    let err = loop {
        match tokio::time::timeout(super::EVENT_TIMEOUT, stream.next()).await.expect("dropped in time") {
            Ok(crate::wal::client::Event::Keepalive { reply_requested, end, .. }) => {
                assert_eq!(end, Lsn(SEG + 10));
                keepalives += 1;
                if reply_requested && asked.is_none() {
                    asked = Some(started.elapsed());
                }
            }
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    let dropped = started.elapsed();
    assert!(matches!(err, WalClientError::Closed(_)), "{err}");
    assert!(keepalives >= 3, "keepalives every 200 ms: {keepalives}");
    let asked = asked.expect("a reply was requested");
    assert!(asked >= std::time::Duration::from_millis(550) && asked < dropped, "asked at {asked:?}");
    assert!(dropped >= std::time::Duration::from_millis(1150), "dropped after {dropped:?}");
    h.stop().await;
}
