//! Timelines: TIMELINE_HISTORY, streaming a historic timeline to its switch point with the
//! end-of-timeline handshake, starting exactly at the switch point, and the archive moving to
//! a new timeline while the old one streams.

use super::super::WalSenderConfig;
use super::{Harness, SEG, append, next_event, receive_until, wal};
use crate::wal::client::{Event, StandbyStatus, TimelineSwitch};
use crate::wal::lsn::Lsn;

/// Timeline 1 ends at `SWITCH`; timeline 2 goes on from there.
const SWITCH: u64 = 2 * SEG + 0x148;
const HISTORY_2: &[u8] = b"1\t0/200148\tno recovery target specified\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_historic_timeline_streams_to_its_switch_point_then_hands_over() {
    let mut h = Harness::start(WalSenderConfig::for_test()).await;
    // Timeline 1's tail past the switch diverged; a reader of timeline 1 must never see it.
    append(&mut h.writer, 1, 0, SEG, SWITCH + 50_000);
    h.writer.write_history(2, HISTORY_2).unwrap();
    append(&mut h.writer, 2, 2, SWITCH, 3 * SEG);

    let mut conn = h.connect().await;
    let id = conn.identify_system().await.unwrap();
    assert_eq!((id.timeline, id.xlogpos), (2, Lsn(3 * SEG)));
    let history = conn.timeline_history(2).await.unwrap();
    assert_eq!((history.filename.as_str(), &history.content[..]), ("00000002.history", HISTORY_2));
    let err = conn.timeline_history(1).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some("58P01"), "{err}");

    // From the switch segment's start on timeline 1: its WAL, then the handshake.
    let mut stream = conn.start_replication(None, Lsn(2 * SEG), 1).await.unwrap();
    let got = receive_until(&mut stream, 2 * SEG, SWITCH).await;
    assert!(got == wal(0, 2 * SEG, 0x148));
    assert_eq!(
        next_event(&mut stream).await,
        Event::EndOfTimeline { next_tli: 2, next_tli_start: Lsn(SWITCH) }
    );
    drop(stream);

    // Exactly at the switch point: no copy, only the answer.
    let mut stream = conn.start_replication(None, Lsn(SWITCH), 1).await.unwrap();
    assert_eq!(
        next_event(&mut stream).await,
        Event::EndOfTimeline { next_tli: 2, next_tli_start: Lsn(SWITCH) }
    );
    drop(stream);

    // Ending the copy ourselves still gets the switch announced.
    let mut stream = conn.start_replication(None, Lsn(SEG), 1).await.unwrap();
    let _ = next_event(&mut stream).await;
    let switch = stream.finish().await.unwrap();
    assert_eq!(switch, Some(TimelineSwitch { next_tli: 2, next_tli_start: Lsn(SWITCH) }));

    // Past the switch point on timeline 1: refused as PostgreSQL words it.
    let err = conn.start_replication(None, Lsn(SWITCH + 8), 1).await.unwrap_err();
    assert!(err.to_string().contains("on timeline 1 is not in this server's history"), "{err}");
    let err = conn.start_replication(None, Lsn(SEG), 3).await.unwrap_err();
    assert!(err.to_string().contains("requested timeline 3 is not in this server's history"), "{err}");

    // Timeline 2 from the switch segment's start: timeline 1's bytes up to the switch, then 2's.
    let mut stream = conn.start_replication(None, Lsn(2 * SEG), 2).await.unwrap();
    let got = receive_until(&mut stream, 2 * SEG, 3 * SEG).await;
    let mut expected = wal(0, 2 * SEG, 0x148);
    expected.extend(wal(2, SWITCH, 3 * SEG - SWITCH));
    assert!(got == expected, "timeline 2's WAL differs");
    assert_eq!(stream.finish().await.unwrap(), None);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_switch_while_streaming_ends_the_streamed_timeline() {
    let mut h = Harness::start(WalSenderConfig::for_test()).await;
    append(&mut h.writer, 1, 0, SEG, SWITCH);
    let mut conn = h.connect().await;
    let mut stream = conn.start_replication(None, Lsn(SEG), 1).await.unwrap();
    let got = receive_until(&mut stream, SEG, SWITCH).await;
    assert!(got == wal(0, SEG, SWITCH - SEG));
    stream
        .send_status(StandbyStatus { write: Lsn(SWITCH), flush: Lsn(SWITCH), ..Default::default() })
        .await
        .unwrap();

    // The primary was promoted: timeline 2 starts at the end of what timeline 1 had.
    h.writer.write_history(2, HISTORY_2).unwrap();
    append(&mut h.writer, 2, 2, SWITCH, SWITCH + 70_000);
    let event = loop {
        match next_event(&mut stream).await {
            Event::Keepalive { .. } => continue,
            other => break other,
        }
    };
    assert_eq!(event, Event::EndOfTimeline { next_tli: 2, next_tli_start: Lsn(SWITCH) });
    drop(stream);

    // The standby follows: history, then timeline 2.
    assert_eq!(&conn.timeline_history(2).await.unwrap().content[..], HISTORY_2);
    let mut stream = conn.start_replication(None, Lsn(SWITCH), 2).await.unwrap();
    let got = receive_until(&mut stream, SWITCH, SWITCH + 70_000).await;
    assert!(got == wal(2, SWITCH, 70_000));
    drop(stream);
    h.stop().await;
}
