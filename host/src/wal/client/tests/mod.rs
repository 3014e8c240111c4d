//! Tests against real PostgreSQL 15 servers (see `pg`), one module per theme. Each test starts
//! its own cluster on a free port.

mod auth;
pub(crate) mod pg;
mod slots;
mod streaming;
mod timeline;

use std::time::Duration;

use super::{ConnConfig, Event, ReplicationConn, StandbyStatus, WalStream};
use crate::wal::Lsn;
#[allow(unused_imports)] // for pg.rs
use crate::wal::base_backup::default_bin_dir;
use pg::PgServer;

/// Upper bound for waiting on one event from a local server.
const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts a server or skips the test (failing it on CI).
macro_rules! pg_or_skip {
    ($extra:expr) => {
        match super::pg::PgServer::start($extra) {
            Some(pg) => pg,
            None => return,
        }
    };
}
use pg_or_skip;

async fn connect_superuser(pg: &PgServer) -> ReplicationConn {
    ReplicationConn::connect(&pg.config("postgres")).await.expect("replication connection as postgres")
}

/// The next event, or a panic after [`EVENT_TIMEOUT`].
async fn next_event(stream: &mut WalStream<'_>) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(event) => event.expect("stream event"),
        Err(_) => panic!("no event from the server within {EVENT_TIMEOUT:?}"),
    }
}

/// Receives WAL until `upto`, checking it arrives contiguously from `from`; answers reply
/// requests (reporting nothing flushed). Returns the WAL bytes. With `cancel_often`, most
/// calls to `next` are cut short by a timer, as a `select!` on shutdown would: nothing may be
/// lost or torn.
async fn receive_until(stream: &mut WalStream<'_>, from: Lsn, upto: Lsn, cancel_often: bool) -> Vec<u8> {
    let mut wal = Vec::new();
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while from.0 + (wal.len() as u64) < upto.0 {
        assert!(tokio::time::Instant::now() < deadline, "no WAL up to {upto} within {EVENT_TIMEOUT:?}");
        let event = if cancel_often {
            match tokio::time::timeout(Duration::from_micros(50), stream.next()).await {
                Ok(event) => event.expect("stream event"),
                Err(_) => continue,
            }
        } else {
            next_event(stream).await
        };
        match event {
            Event::XLogData { start, data, .. } => {
                assert_eq!(start.0, from.0 + wal.len() as u64, "WAL arrives contiguously");
                wal.extend_from_slice(&data);
            }
            Event::Keepalive { reply_requested: true, .. } => {
                let write = stream.received_upto();
                stream.send_status(StandbyStatus { write, ..StandbyStatus::default() }).await.unwrap();
            }
            Event::Keepalive { .. } => {}
            other => panic!("unexpected {other:?} while waiting for WAL up to {upto}"),
        }
    }
    wal
}
