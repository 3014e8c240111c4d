//! The receiver against real PostgreSQL 15: WAL lands in the archive byte for byte, the slot
//! follows durable WAL only, a restart resumes from the archive, a stopped primary is waited
//! for, and a promoted standby's new timeline is followed through its history file.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Receiver;
use super::disk::Disk;
use super::state::{ArrivalTimes, Phase, ReceiverState};
use crate::wal::archive::{ArchiveConfig, ArchiveReader, ArchiveWriter, FlushPolicy};
use crate::wal::client::tests::pg::{PgServer, wait_until};
use crate::wal::lsn::{DEFAULT_WAL_SEGMENT_SIZE, Lsn, WalSegmentSize};

/// A receiver task over an archive in `dir`, streaming from `pg`.
struct Running {
    stop: CancellationToken,
    disk: Arc<Disk>,
    task: tokio::task::JoinHandle<()>,
    reader: ArchiveReader,
    state: watch::Receiver<ReceiverState>,
}

fn start(pg: &PgServer, dir: &Path) -> Running {
    start_capped(pg, dir, None)
}

fn start_capped(pg: &PgServer, dir: &Path, disk_cap_bytes: Option<u64>) -> Running {
    let config = ArchiveConfig {
        segment_size: DEFAULT_WAL_SEGMENT_SIZE,
        flush: FlushPolicy::group(),
        reserve_segments: 0,
        disk_cap_bytes,
        ..ArchiveConfig::default()
    };
    let writer = ArchiveWriter::open(dir.join("archive"), config).expect("archive");
    let reader = writer.reader();
    let (state_tx, state) = watch::channel(ReceiverState::default());
    let (_applied_tx, applied) = watch::channel(Lsn::INVALID);
    let disk = Arc::new(Disk::spawn(writer).expect("disk thread"));
    let receiver = Receiver {
        conn: pg.config("rep_scram"),
        slot: "tandem".into(),
        state_dir: dir.to_owned(),
        disk: disk.clone(),
        reader: reader.clone(),
        applied,
        state: state_tx,
        arrivals: Arc::new(Mutex::new(ArrivalTimes::default())),
        status_interval: Duration::from_millis(500),
        retry_max: Duration::from_millis(300),
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(receiver.run(stop.clone()));
    Running { stop, disk, task, reader, state }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.expect("receiver stops").unwrap();
        assert_eq!(self.state.borrow().phase, Phase::Stopped);
    }

    /// Waits until the archive has WAL of `timeline` durable up to `lsn`.
    async fn wait_flushed(&self, timeline: u32, lsn: Lsn) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let p = self.reader.flush_point();
            if p.timeline > timeline || (p.timeline == timeline && p.lsn >= lsn) {
                return;
            }
            let state = self.state.borrow().clone();
            assert!(
                tokio::time::Instant::now() < deadline,
                "archive at {p:?}, waiting for {lsn}; receiver {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A completed segment of the archive, waited for: the flushed LSN reaches a segment's end
/// before the segment is renamed to its final name.
async fn completed(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join("archive").join(name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read(&path) {
            Ok(bytes) => return bytes,
            Err(e) if tokio::time::Instant::now() < deadline && e.kind() == std::io::ErrorKind::NotFound => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("{name} never completed in the archive: {e}"),
        }
    }
}

fn lsn(pg: &PgServer, sql: &str) -> Lsn {
    pg.psql(sql).parse().expect("an LSN")
}

fn slot_restart(pg: &PgServer) -> Lsn {
    lsn(pg, "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'tandem'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_the_primarys_wal_and_moves_the_slot_only_past_durable_wal() {
    let Some(pg) = PgServer::start(&["wal_keep_size=0"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let rx = start(&pg, dir.path());
    pg.psql("CREATE TABLE t AS SELECT g AS x, md5(g::text) AS y FROM generate_series(1, 50000) g");
    let switch = lsn(&pg, "SELECT pg_switch_wal()");
    let seg = WalSegmentSize::DEFAULT;
    rx.wait_flushed(1, seg.end(seg.segno(switch))).await;

    // Complete segments hold exactly the primary's bytes (read before a checkpoint may recycle
    // the primary's copy: the slot no longer holds it).
    let name = seg.file_name(1, seg.segno(switch));
    let archived = completed(dir.path(), &name).await;
    assert!(archived == pg.wal_file(&name), "{name} differs from the primary's");

    // The slot follows what the archive made durable, never more.
    let flushed = rx.reader.flush_point().lsn;
    wait_until("the slot at the archive's flushed LSN", || slot_restart(&pg) >= seg.end(seg.segno(switch)));
    assert!(slot_restart(&pg) <= rx.reader.flush_point().lsn.max(flushed));
    let state = rx.state.borrow().clone();
    assert_eq!((state.phase, state.timeline, state.slot.as_str()), (Phase::Streaming, 1, "tandem"));
    assert!(state.primary_end >= switch && state.last_wal_at.is_some(), "{state:?}");
    rx.stop().await;

    // While tandem is away the slot holds the WAL; a restart resumes from the archive.
    pg.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g");
    let switch2 = lsn(&pg, "SELECT pg_switch_wal()");
    pg.psql("CHECKPOINT");
    assert!(slot_restart(&pg) < switch2, "the slot held WAL while tandem was stopped");
    // The primary's copy, read while the slot still holds it (the resumed receiver moves the
    // slot and a checkpoint may then recycle the file).
    let name = seg.file_name(1, seg.segno(switch2));
    let primary_copy = pg.wal_file(&name);
    let rx = start(&pg, dir.path());
    rx.wait_flushed(1, seg.end(seg.segno(switch2))).await;
    let archived = completed(dir.path(), &name).await;
    assert!(archived == primary_copy, "{name} differs after the resume");
    assert_eq!(rx.state.borrow().connections, 1);
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_stopped_primary_and_resumes() {
    let Some(mut pg) = PgServer::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let rx = start(&pg, dir.path());
    let at = lsn(&pg, "SELECT pg_current_wal_insert_lsn()");
    rx.wait_flushed(1, at).await;
    pg.stop_fast().unwrap();
    wait_until("the receiver notices", || rx.state.borrow().phase == Phase::Connecting);
    pg.restart().unwrap();
    pg.psql("CREATE TABLE after_restart(x int)");
    let at = lsn(&pg, "SELECT pg_current_wal_insert_lsn()");
    rx.wait_flushed(1, at).await;
    assert!(rx.state.borrow().connections >= 2);
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_promoted_standby_onto_its_new_timeline() {
    let Some(pg) = PgServer::start(&[]) else { return };
    let standby = pg.standby();
    let dir = tempfile::tempdir().unwrap();
    let rx = start(&pg, dir.path());
    pg.psql("CREATE TABLE t AS SELECT g AS x FROM generate_series(1, 10000) g");
    let end = lsn(&pg, "SELECT pg_current_wal_insert_lsn()");
    rx.wait_flushed(1, end).await;
    wait_until("the standby replays", || {
        standby.psql("SELECT pg_last_wal_replay_lsn()").parse::<Lsn>().unwrap() >= end
    });
    rx.stop().await;
    drop(pg);

    standby.promote();
    standby.psql("INSERT INTO t SELECT g FROM generate_series(1, 10000) g");
    let end2 = lsn(&standby, "SELECT pg_current_wal_insert_lsn()");
    let rx = start(&standby, dir.path());
    rx.wait_flushed(2, end2).await;
    assert_eq!(rx.reader.flush_point().timeline, 2);
    let history = rx.reader.read_history(2).unwrap().expect("history file of timeline 2 archived");
    assert!(String::from_utf8_lossy(&history).starts_with("1\t"), "{history:?}");
    let timelines: Vec<u32> = rx.reader.timelines().iter().map(|t| t.timeline).collect();
    assert_eq!(timelines, [1, 2]);
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_disk_cap_it_stops_taking_wal_the_slot_holds_it_and_it_resumes_once_retention_frees_room() {
    let Some(pg) = PgServer::start(&["wal_keep_size=0"]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let seg = WalSegmentSize::DEFAULT;
    let rx = start_capped(&pg, dir.path(), Some(4 * seg.bytes()));
    pg.psql("CREATE TABLE t(x int, y text)");
    for _ in 0..6 {
        pg.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
        pg.psql("SELECT pg_switch_wal()");
    }
    let end = lsn(&pg, "SELECT pg_current_wal_flush_lsn()");
    wait_until("the receiver reports the archive full", || rx.state.borrow().phase == Phase::CapReached);
    let held = rx.reader.flush_point().lsn;
    assert!(held < end, "the archive stopped short of the primary's WAL");
    pg.psql("CHECKPOINT");
    assert!(slot_restart(&pg) <= held, "the slot holds what the archive could not take");

    // The standby replays what the archive has: retention frees room and streaming resumes.
    let mut replayed = held;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while rx.reader.flush_point().lsn < end {
        assert!(tokio::time::Instant::now() < deadline, "never caught up: {:?}", rx.state.borrow());
        replayed = replayed.max(rx.reader.flush_point().lsn);
        rx.disk.send(super::disk::DiskCmd::Replayed(replayed)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rx.state.borrow().connections >= 2, "it reconnected after the cap");
    rx.stop().await;
}
