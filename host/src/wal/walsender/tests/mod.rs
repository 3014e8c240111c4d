//! The walsender over real sockets, one module per theme: our own replication client against
//! it (`client`, `timelines`, `refusals`), PostgreSQL's `pg_receivewal` (`receivewal`), and a
//! real standby PostgreSQL streaming from it (`standby`). Every server binds port 0.

mod client;
mod receivewal;
mod refusals;
mod standby;
mod timelines;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{SenderContext, StandbyFeedback, WalSenderConfig, serve};
use crate::wal::archive::{ArchiveConfig, ArchiveWriter};
use crate::wal::client::{ConnConfig, Event, ReplicationConn, StandbyStatus, WalStream};
use crate::wal::lsn::{Lsn, TimeLineId};
use crate::wal::upstream::UpstreamIdentity;

/// Upper bound for one event from the walsender.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);
/// The test archive's segment size (`ArchiveConfig::for_test`).
pub const SEG: u64 = 1 << 20;
pub const SYSTEM_ID: u64 = 7_300_000_000_000_000_042;

/// The WAL byte at `lsn` of a timeline seeded `seed`: position-dependent, so a byte sent from
/// the wrong place shows.
pub fn wal_byte(seed: u64, lsn: u64) -> u8 {
    let z = (lsn ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (z >> 29) as u8
}

pub fn wal(seed: u64, start: u64, len: u64) -> Vec<u8> {
    (start..start + len).map(|l| wal_byte(seed, l)).collect()
}

/// Appends `seed`'s stream on `timeline` from `from` to `to`.
pub fn append(w: &mut ArchiveWriter, timeline: TimeLineId, seed: u64, from: u64, to: u64) {
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(200_000);
        w.append(timeline, Lsn(pos), &wal(seed, pos, n)).expect("append");
        pos += n;
    }
}

/// A walsender serving a temporary archive.
pub struct Harness {
    _dir: tempfile::TempDir,
    pub writer: ArchiveWriter,
    pub addr: SocketAddr,
    pub ctx: Arc<SenderContext>,
    pub identity: watch::Sender<Option<UpstreamIdentity>>,
    pub shutdown: CancellationToken,
    task: JoinHandle<()>,
}

pub fn identity(segment_size: u64) -> UpstreamIdentity {
    UpstreamIdentity { system_id: SYSTEM_ID, server_version: "15.99".into(), segment_size }
}

impl Harness {
    /// An archive with 1 MiB segments and a walsender on it; the identity is known.
    pub async fn start(config: WalSenderConfig) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let writer = ArchiveWriter::open(dir.path(), ArchiveConfig::for_test()).expect("archive");
        Self::serve(dir, writer, Some(identity(SEG)), config).await
    }

    pub async fn serve(
        dir: tempfile::TempDir,
        writer: ArchiveWriter,
        id: Option<UpstreamIdentity>,
        config: WalSenderConfig,
    ) -> Harness {
        let (identity, identity_rx) = watch::channel(id);
        let (feedback, _) = watch::channel(None);
        let ctx = Arc::new(SenderContext { reader: writer.reader(), identity: identity_rx, feedback });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
            async move { serve(listener, config, ctx, shutdown).await.expect("serve") }
        });
        Harness { _dir: dir, writer, addr, ctx, identity, shutdown, task }
    }

    pub fn conn_config(&self, user: &str, password: Option<&str>) -> ConnConfig {
        ConnConfig {
            port: self.addr.port(),
            user: user.into(),
            password: password.map(Into::into),
            ..ConnConfig::for_test()
        }
    }

    pub async fn connect(&self) -> ReplicationConn {
        ReplicationConn::connect(&self.conn_config("standby", None)).await.expect("connect to the walsender")
    }

    pub fn feedback(&self) -> Option<StandbyFeedback> {
        self.ctx.feedback.borrow().clone()
    }

    /// Cancels and waits for `serve` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(EVENT_TIMEOUT, self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
    }
}

pub async fn next_event(stream: &mut WalStream<'_>) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(event) => event.expect("stream event"),
        Err(_) => panic!("no event from the walsender within {EVENT_TIMEOUT:?}"),
    }
}

/// Receives WAL from `from` until `upto`, answering reply requests; returns the bytes.
pub async fn receive_until(stream: &mut WalStream<'_>, from: u64, upto: u64) -> Vec<u8> {
    let mut wal = Vec::new();
    while from + (wal.len() as u64) < upto {
        match next_event(stream).await {
            Event::XLogData { start, data, .. } => {
                assert_eq!(start.0, from + wal.len() as u64, "WAL arrives contiguously");
                wal.extend_from_slice(&data);
            }
            Event::Keepalive { reply_requested: true, .. } => {
                let write = stream.received_upto();
                stream
                    .send_status(StandbyStatus { write, ..StandbyStatus::default() })
                    .await
                    .expect("status");
            }
            Event::Keepalive { .. } => {}
            other => panic!("unexpected {other:?} while waiting for WAL up to {upto:X}"),
        }
    }
    assert_eq!(from + wal.len() as u64, upto, "no WAL past {upto:X}");
    wal
}
