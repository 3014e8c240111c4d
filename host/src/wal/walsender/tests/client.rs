//! Our own replication client against the walsender: the identity, streaming durable WAL and
//! then new WAL as it is flushed, status updates reaching `feedback`, SCRAM, and shutdown.

use std::time::{Duration, Instant};

use super::super::{SenderAuth, WalSenderConfig};
use super::{EVENT_TIMEOUT, Harness, SEG, SYSTEM_ID, append, next_event, receive_until, wal};
use crate::wal::client::{Event, ReplicationConn, StandbyStatus, WalClientError};
use crate::wal::lsn::Lsn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_durable_wal_then_new_wal_as_soon_as_it_is_flushed() {
    let mut h = Harness::start(WalSenderConfig::for_test()).await;
    append(&mut h.writer, 1, 0, SEG, SEG * 5 / 2);
    let mut conn = h.connect().await;
    assert_eq!(conn.parameter("server_version"), Some("15.99"));
    assert_eq!(conn.parameter("integer_datetimes"), Some("on"));
    let id = conn.identify_system().await.unwrap();
    assert_eq!((id.systemid, id.timeline, id.xlogpos, id.dbname), (SYSTEM_ID, 1, Lsn(SEG * 5 / 2), None));
    assert_eq!(conn.wal_segment_size().await.unwrap().bytes(), SEG);

    let mut stream = conn.start_replication(Some("any_slot"), Lsn(SEG), 1).await.unwrap();
    let got = receive_until(&mut stream, SEG, SEG * 5 / 2).await;
    assert!(got == wal(0, SEG, SEG * 3 / 2), "streamed WAL differs from the archive");

    // New WAL, flushed while the standby waits, arrives within milliseconds.
    for round in 0..5u64 {
        let from = SEG * 5 / 2 + round * 10_000;
        let appended = Instant::now();
        append(&mut h.writer, 1, 0, from, from + 10_000);
        let got = receive_until(&mut stream, from, from + 10_000).await;
        let lag = appended.elapsed();
        assert!(got == wal(0, from, 10_000));
        assert!(lag < Duration::from_millis(500), "new WAL took {lag:?} to arrive");
    }

    // Status updates are published as feedback.
    let end = stream.received_upto();
    let status = StandbyStatus { write: end, flush: end, apply: Lsn(SEG * 2), reply_requested: true };
    stream.send_status(status).await.unwrap();
    assert!(matches!(next_event(&mut stream).await, Event::Keepalive { .. }), "a reply was requested");
    let fb = h.feedback().expect("feedback published");
    assert_eq!((fb.write, fb.flush, fb.apply, fb.streaming), (end, end, Lsn(SEG * 2), true));

    // Ending the copy ourselves: no timeline switch, and the session takes commands again.
    assert_eq!(stream.finish().await.unwrap(), None);
    assert_eq!(conn.identify_system().await.unwrap().xlogpos, end);
    assert!(!h.feedback().unwrap().streaming, "the standby stopped streaming");
    conn.close().await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_accepts_the_password_and_refuses_anything_else() {
    let auth = SenderAuth::ScramSha256 { user: "standby".into(), password: "s3cret pass".into() };
    let mut h = Harness::start(WalSenderConfig { auth, ..WalSenderConfig::for_test() }).await;
    append(&mut h.writer, 1, 0, SEG, SEG + 1000);
    let mut conn = ReplicationConn::connect(&h.conn_config("standby", Some("s3cret pass"))).await.unwrap();
    assert_eq!(conn.identify_system().await.unwrap().xlogpos, Lsn(SEG + 1000));
    for (user, password) in [("standby", Some("wrong")), ("intruder", Some("s3cret pass"))] {
        let err = ReplicationConn::connect(&h.conn_config(user, password)).await.unwrap_err();
        assert_eq!(err.sqlstate(), Some("28P01"), "{user}: {err}");
        assert!(
            err.to_string().contains(&format!("password authentication failed for user \"{user}\"")),
            "{err}"
        );
    }
    let err = ReplicationConn::connect(&h.conn_config("standby", None)).await.unwrap_err();
    assert!(matches!(err, WalClientError::PasswordRequired), "{err}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_the_rest_and_ends_the_copy_like_a_primary() {
    let mut h = Harness::start(WalSenderConfig::for_test()).await;
    append(&mut h.writer, 1, 0, SEG, SEG + 300_000);
    let mut conn = h.connect().await;
    let mut stream = conn.start_replication(None, Lsn(SEG), 1).await.unwrap();
    let first = next_event(&mut stream).await;
    assert!(matches!(first, Event::XLogData { .. }), "{first:?}");
    h.shutdown.cancel();
    let mut end = match first {
        Event::XLogData { start, data, .. } => start.0 + data.len() as u64,
        _ => unreachable!(),
    };
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline);
        match next_event(&mut stream).await {
            Event::XLogData { start, data, .. } => {
                assert_eq!(start.0, end);
                end += data.len() as u64;
            }
            Event::Keepalive { .. } => {}
            Event::EndOfStream => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(end, SEG + 300_000, "everything durable was sent before the end");
    drop(stream);
    h.stop().await;
}
