//! Timelines, on a standby promoted to timeline 2: TIMELINE_HISTORY returns the history file
//! verbatim, and streaming timeline 1 ends with the end-of-timeline handshake naming the
//! switch point, after which the same connection follows timeline 2.

use super::super::{Event, StandbyStatus, TimelineSwitch, WalClientError};
use super::pg::wait_until;
use super::{connect_superuser, next_event, pg_or_skip};
use crate::wal::Lsn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_serves_its_history_and_ends_the_old_timeline() {
    let primary = pg_or_skip!(&[]);
    primary.psql("CREATE TABLE before_promotion AS SELECT generate_series(1, 1000) AS x");
    let standby = primary.standby();
    // The base backup ended with a WAL switch: write more, so that timeline 1 ends mid-segment.
    primary.psql("CREATE TABLE after_backup AS SELECT generate_series(1, 1000) AS x");
    let target: Lsn = primary.psql("SELECT pg_current_wal_flush_lsn()").parse().unwrap();
    wait_until("the standby to replay the primary's WAL", || {
        standby.psql("SELECT pg_last_wal_replay_lsn()").parse::<Lsn>().is_ok_and(|l| l >= target)
    });
    drop(primary);
    standby.promote();

    let mut conn = connect_superuser(&standby).await;
    assert_eq!(conn.identify_system().await.unwrap().timeline, 2);
    let size = conn.wal_segment_size().await.unwrap();

    let history = conn.timeline_history(2).await.unwrap();
    assert_eq!(history.filename, "00000002.history");
    assert_eq!(&history.content[..], &standby.wal_file("00000002.history")[..]);
    // "1<TAB>0/3000148<TAB>no recovery target specified<LF>": timeline 1 ended at the switch.
    let text = std::str::from_utf8(&history.content).unwrap();
    let switch: Lsn = text.lines().next().and_then(|l| l.split('\t').nth(1)).unwrap().parse().unwrap();
    let err = conn.timeline_history(1).await.unwrap_err();
    assert!(matches!(err, WalClientError::Server(_)), "timeline 1 has no history file: {err}");

    // Timeline 1 from the start of the switch point's segment: its WAL, then the handshake.
    let from = size.start(size.segno(switch));
    assert!(from < switch);
    let mut stream = conn.start_replication(None, from, 1).await.unwrap();
    let mut wal = Vec::new();
    let next = loop {
        match next_event(&mut stream).await {
            Event::XLogData { start, data, .. } => {
                assert_eq!(start.0, from.0 + wal.len() as u64);
                wal.extend_from_slice(&data);
            }
            Event::Keepalive { reply_requested: true, .. } => {
                let at = stream.received_upto();
                stream.send_status(StandbyStatus { write: at, ..StandbyStatus::default() }).await.unwrap();
            }
            Event::Keepalive { .. } => {}
            Event::EndOfTimeline { next_tli, next_tli_start } => break (next_tli, next_tli_start),
            Event::EndOfStream => panic!("the stream ended without a timeline switch"),
        }
    };
    assert_eq!(next, (2, switch));
    assert_eq!(from.0 + wal.len() as u64, switch.0, "timeline 1's WAL ends exactly at the switch point");
    // The switch segment lives on in timeline 2's file, which starts with timeline 1's WAL.
    let disk = standby.wal_file(&size.file_name(2, size.segno(switch)));
    assert!(disk[..wal.len()] == wal[..], "streamed timeline 1 WAL differs from the file on disk");
    assert!(matches!(stream.next().await, Err(WalClientError::StreamEnded)));
    drop(stream);

    // The handshake left the connection ready for commands.
    assert_eq!(conn.identify_system().await.unwrap().timeline, 2);
    // Asking for timeline 1 exactly at its end: the server skips the copy and answers at once.
    let mut stream = conn.start_replication(None, switch, 1).await.unwrap();
    assert_eq!(next_event(&mut stream).await, Event::EndOfTimeline { next_tli: 2, next_tli_start: switch });
    drop(stream);

    // Ending a copy of timeline 1 ourselves still gets the switch announced.
    let mut stream = conn.start_replication(None, from, 1).await.unwrap();
    let _ = next_event(&mut stream).await;
    let announced = stream.finish().await.unwrap();
    assert_eq!(announced, Some(TimelineSwitch { next_tli: 2, next_tli_start: switch }));

    // Timeline 2 continues from the switch point.
    let mut stream = conn.start_replication(None, switch, 2).await.unwrap();
    standby.psql("CREATE TABLE after_promotion AS SELECT 1 AS x");
    let first = loop {
        if let Event::XLogData { start, .. } = next_event(&mut stream).await {
            break start;
        }
    };
    assert_eq!(first, switch);
    assert_eq!(stream.finish().await.unwrap(), None);
    assert_eq!(conn.identify_system().await.unwrap().timeline, 2);
}
