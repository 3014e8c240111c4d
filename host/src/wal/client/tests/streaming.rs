//! Streaming from a primary: the bytes are the primary's WAL files, the slot follows what we
//! report flushed (and nothing more), keepalives get answered, a shutting-down primary ends
//! the stream once our flush caught up, and mistakes are typed errors.

use std::time::Duration;

use super::super::{Event, StandbyStatus, WalClientError};
use super::pg::wait_until;
use super::{EVENT_TIMEOUT, connect_superuser, next_event, pg_or_skip, receive_until};
use crate::wal::Lsn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_wal_matches_the_disk_and_the_slot_follows_reported_flush() {
    let pg = pg_or_skip!(&[]);
    let mut conn = connect_superuser(&pg).await;
    let size = conn.wal_segment_size().await.unwrap();
    let restart = conn.create_physical_slot("tandem", true).await.unwrap().slot.restart_lsn.unwrap();
    // Stream whole segments, as a receiver writing segment files does.
    let from = size.start(size.segno(restart));

    pg.psql("CREATE TABLE t AS SELECT g AS x, md5(g::text) AS y FROM generate_series(1, 20000) g");
    // The end of the switch record; the rest of its segment is part of the stream too.
    let switch: Lsn = pg.psql("SELECT pg_switch_wal()").parse().unwrap();
    let segments_end = size.end(size.segno(switch));

    let mut stream = conn.start_replication(Some("tandem"), from, 1).await.unwrap();
    let wal = receive_until(&mut stream, from, segments_end, true).await;
    pg.psql("CHECKPOINT");
    for segno in size.segno(from)..size.segno(segments_end) {
        let name = size.file_name(1, segno);
        let disk = pg.wal_file(&name);
        let at = ((segno - size.segno(from)) * size.bytes()) as usize;
        let streamed = &wal[at..at + size.bytes() as usize];
        assert!(disk == streamed, "{name}: streamed bytes differ from the file on disk");
    }

    // Before where streaming started is refused: the server may no longer have that WAL.
    let before = StandbyStatus { flush: Lsn(from.0 - 1), ..StandbyStatus::default() };
    assert!(matches!(
        stream.send_status(before).await,
        Err(WalClientError::BadStatus { field: "flush", .. })
    ));

    // The slot moves to what we report flushed, even when we wrote more.
    let end = stream.received_upto();
    let mid = Lsn(restart.0 + (end.0 - restart.0) / 2);
    stream.send_status(StandbyStatus { write: end, flush: mid, ..StandbyStatus::default() }).await.unwrap();
    let slot_sql = "SELECT restart_lsn || ' ' || coalesce(confirmed_flush_lsn::text, 'null') \
                    FROM pg_replication_slots WHERE slot_name = 'tandem'";
    wait_until("restart_lsn at our flush", || pg.psql(slot_sql) == format!("{mid} null"));
    let replication = pg.psql("SELECT write_lsn || ' ' || flush_lsn FROM pg_stat_replication");
    assert_eq!(replication, format!("{end} {mid}"));

    // Past what was received, or backwards, is refused before it reaches the server.
    let too_far = StandbyStatus { write: end, flush: Lsn(end.0 + 1), ..StandbyStatus::default() };
    assert!(matches!(
        stream.send_status(too_far).await,
        Err(WalClientError::BadStatus { field: "flush", .. })
    ));
    let backwards = StandbyStatus { write: end, flush: restart, ..StandbyStatus::default() };
    assert!(matches!(
        stream.send_status(backwards).await,
        Err(WalClientError::BadStatus { field: "flush", .. })
    ));

    stream
        .send_status(StandbyStatus { write: end, flush: end, apply: end, reply_requested: false })
        .await
        .unwrap();
    wait_until("restart_lsn at the end", || pg.psql(slot_sql) == format!("{end} null"));

    // Ending the copy ourselves gives the connection back for commands.
    assert_eq!(stream.finish().await.unwrap(), None);
    assert_eq!(conn.read_slot("tandem").await.unwrap().unwrap().restart_lsn, Some(end));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_asking_for_a_reply_are_answered_and_unanswered_ones_end_the_stream() {
    // The walsender asks for a reply after half of this without one, and gives up after it.
    let pg = pg_or_skip!(&["wal_sender_timeout=2s"]);
    let mut conn = connect_superuser(&pg).await;
    let id = conn.identify_system().await.unwrap();
    let mut stream = conn.start_replication(None, id.xlogpos, id.timeline).await.unwrap();

    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut answered = 0;
    while tokio::time::Instant::now() < until {
        if let Event::Keepalive { reply_requested: true, .. } = next_event(&mut stream).await {
            let at = stream.received_upto();
            stream
                .send_status(StandbyStatus { write: at, flush: at, apply: at, reply_requested: false })
                .await
                .unwrap();
            answered += 1;
        }
    }
    assert!(answered >= 3, "only {answered} reply requests in 6 s with a 2 s timeout");
    assert_eq!(pg.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'tandem'"), "1");

    // Our own reply request is answered at once, with a keepalive that asks for nothing.
    let at = stream.received_upto();
    stream
        .send_status(StandbyStatus { write: at, flush: at, apply: at, reply_requested: true })
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_millis(900), async {
        loop {
            if let Event::Keepalive { reply_requested: false, .. } = stream.next().await.unwrap() {
                return;
            }
        }
    });
    answer.await.expect("a keepalive answering our request");

    // Silence: the server drops us after wal_sender_timeout.
    let err = tokio::time::timeout(EVENT_TIMEOUT, async {
        loop {
            if let Err(e) = stream.next().await {
                return e;
            }
        }
    })
    .await
    .expect("the server drops a silent client");
    assert!(matches!(err, WalClientError::Closed(_) | WalClientError::Io(_)), "{err}");
    assert!(matches!(stream.next().await, Err(WalClientError::StreamEnded)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_shutting_down_ends_the_stream_once_our_flush_caught_up() {
    let mut pg = pg_or_skip!(&[]);
    let mut conn = connect_superuser(&pg).await;
    let id = conn.identify_system().await.unwrap();
    let mut stream = conn.start_replication(None, id.xlogpos, id.timeline).await.unwrap();
    // Let the walsender settle into streaming before the shutdown.
    let _ = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;

    let stop = tokio::task::spawn_blocking(move || {
        let result = pg.stop_fast();
        (pg, result)
    });
    let mut wal_after_stop = 0;
    loop {
        match next_event(&mut stream).await {
            Event::XLogData { data, .. } => wal_after_stop += data.len(),
            Event::Keepalive { reply_requested: true, .. } => {
                let at = stream.received_upto();
                stream
                    .send_status(StandbyStatus { write: at, flush: at, apply: at, reply_requested: false })
                    .await
                    .unwrap();
            }
            Event::Keepalive { .. } => {}
            Event::EndOfStream => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(wal_after_stop > 0, "the shutdown checkpoint record is streamed before the end");
    assert!(matches!(stream.next().await, Err(WalClientError::StreamEnded)));
    let (_pg, stopped) = stop.await.unwrap();
    stopped.expect("fast shutdown completes once the standby confirmed everything");
}

#[tokio::test]
async fn starting_past_the_servers_wal_fails_at_the_first_event() {
    let pg = pg_or_skip!(&[]);
    let mut conn = connect_superuser(&pg).await;
    let id = conn.identify_system().await.unwrap();
    let future = Lsn(id.xlogpos.0 + (1 << 30));
    // PostgreSQL enters CopyBoth first and only then checks the start point.
    let mut stream = conn.start_replication(None, future, id.timeline).await.unwrap();
    match stream.next().await {
        Err(WalClientError::Server(e)) => {
            assert!(e.message.contains("ahead of the WAL flush position"), "{e}")
        }
        other => panic!("expected the server's refusal, got {other:?}"),
    }
    assert!(matches!(stream.next().await, Err(WalClientError::StreamEnded)));
    drop(stream);
    assert!(matches!(conn.identify_system().await, Err(WalClientError::Desynchronized)));
}
