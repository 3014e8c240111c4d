//! The real thing: a PostgreSQL primary's WAL fed into an archive (a minimal loop over our
//! replication client: test scaffolding, not the receiver), and a standby made with
//! `pg_basebackup -R` whose `primary_conninfo` points at the walsender. PostgreSQL's own
//! walreceiver streams from tandem: rows inserted on the primary show up on the standby.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::super::{SenderContext, WalSenderConfig, serve};
use crate::wal::archive::{ArchiveConfig, ArchiveWriter};
use crate::wal::client::tests::pg::{PgServer, wait_until};
use crate::wal::client::{Event, ReplicationConn, StandbyStatus};
use crate::wal::lsn::Lsn;
use crate::wal::upstream::UpstreamIdentity;

/// Streams the primary's WAL into `writer` until `stop`, publishing the identity first.
async fn feed(
    primary_config: crate::wal::client::ConnConfig,
    mut writer: ArchiveWriter,
    identity: watch::Sender<Option<UpstreamIdentity>>,
    stop: CancellationToken,
) {
    let mut conn = ReplicationConn::connect(&primary_config).await.expect("connect to the primary");
    let id = conn.identify_system().await.expect("identify");
    let seg = conn.wal_segment_size().await.expect("segment size");
    identity.send_replace(Some(UpstreamIdentity {
        system_id: id.systemid,
        server_version: conn.parameter("server_version").expect("server_version").to_owned(),
        segment_size: seg.bytes(),
    }));
    let slot = conn.create_physical_slot("tandem_feed", true).await.expect("slot");
    let restart = slot.slot.restart_lsn.expect("a reserved slot");
    let start = seg.start(seg.segno(restart));
    let mut stream = conn.start_replication(Some("tandem_feed"), start, id.timeline).await.expect("stream");
    loop {
        let event = tokio::select! {
            e = stream.next() => e.expect("primary stream"),
            _ = stop.cancelled() => return,
        };
        match event {
            Event::XLogData { start, data, .. } => writer.append(id.timeline, start, &data).expect("append"),
            Event::Keepalive { reply_requested: false, .. } => continue,
            Event::Keepalive { .. } => {}
            other => panic!("the test feeder does not handle {other:?}"),
        }
        let flushed = writer.flushed_lsn();
        let status = StandbyStatus { write: flushed, flush: flushed, ..StandbyStatus::default() };
        stream.send_status(status).await.expect("status");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_standby_streams_from_the_walsender() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("tandem=info").try_init();
    // Skips (loudly) without PostgreSQL; fails on CI.
    let Some(primary) = PgServer::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = ArchiveConfig { segment_size: 16 << 20, ..ArchiveConfig::for_test() };
    let writer = ArchiveWriter::open(dir.path(), config).unwrap();
    let (identity, identity_rx) = watch::channel(None);
    let (feedback, mut feedback_rx) = watch::channel(None);
    let ctx = Arc::new(SenderContext { reader: writer.reader(), identity: identity_rx, feedback });
    let stop = CancellationToken::new();
    let feeder = tokio::spawn(feed(primary.config("postgres"), writer, identity, stop.clone()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(serve(listener, WalSenderConfig::for_test(), ctx.clone(), stop.clone()));

    // Blocking PostgreSQL tools off the runtime's threads.
    let primary = Arc::new(primary);
    let standby = tokio::task::spawn_blocking({
        let primary = primary.clone();
        move || {
            primary.standby_with(|data| {
                let conf = data.join("postgresql.auto.conf");
                let mut text = std::fs::read_to_string(&conf).expect("postgresql.auto.conf");
                text.push_str(&format!(
                    "primary_conninfo = 'host=127.0.0.1 port={port} user=standby application_name=tandem_test_standby'\n\
                     primary_slot_name = ''\n"
                ));
                std::fs::write(&conf, text).expect("rewrite postgresql.auto.conf");
            })
        }
    })
    .await
    .unwrap();
    let standby = Arc::new(standby);

    let sql = |server: &Arc<PgServer>, q: &'static str| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || server.psql(q))
    };
    sql(&primary, "CREATE TABLE t (x int)").await.unwrap();
    // psql panics on an error: wait for the table before counting its rows.
    let s = standby.clone();
    tokio::task::spawn_blocking(move || {
        wait_until("the table on the standby", || s.psql("SELECT to_regclass('public.t') IS NOT NULL") == "t")
    })
    .await
    .unwrap();
    for round in 1..=3 {
        let inserted = Instant::now();
        sql(&primary, "INSERT INTO t SELECT generate_series(1, 1000)").await.unwrap();
        let standby = standby.clone();
        tokio::task::spawn_blocking(move || {
            wait_until("the standby to see the rows", || {
                standby.psql("SELECT count(*) FROM t").parse::<u32>().is_ok_and(|n| n == round * 1000)
            })
        })
        .await
        .unwrap();
        let lag = inserted.elapsed();
        tracing::info!(round, ?lag, "rows visible on the standby");
        assert!(lag < Duration::from_secs(10), "rows took {lag:?} to reach the standby");
    }
    let status =
        sql(&standby, "SELECT status || ' ' || sender_port FROM pg_stat_wal_receiver").await.unwrap();
    assert_eq!(status, format!("streaming {port}"));

    // The walreceiver reports back; its flush reaches what the primary wrote.
    let target: Lsn = sql(&primary, "SELECT pg_current_wal_flush_lsn()").await.unwrap().parse().unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        feedback_rx.wait_for(|f| f.as_ref().is_some_and(|f| f.flush >= target)),
    )
    .await
    .expect("the standby reports its flush position")
    .unwrap();
    let fb = ctx.feedback.borrow().clone().unwrap();
    assert_eq!(fb.application_name, "tandem_test_standby");
    assert!(fb.streaming);

    stop.cancel();
    feeder.await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), server).await.expect("serve stops").unwrap().unwrap();
    drop(standby);
}
