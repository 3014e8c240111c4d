//! The payloads inside CopyData during physical streaming, pure (no I/O):
//!
//! ```text
//! server -> client  'w' XLogData        start i64 | end_of_server_wal i64 | send_time i64 | WAL bytes
//! server -> client  'k' keepalive       end_of_server_wal i64 | send_time i64 | reply_requested u8
//! client -> server  'r' status update   write i64 | flush i64 | apply i64 | send_time i64 | reply_requested u8
//! ```
//! Integers are big-endian; times are [`PgTime`] (microseconds since 2000-01-01 UTC).
//!
//! Must never: panic on a payload of any length or content.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::WalClientError;
use crate::wal::lsn::Lsn;

pub(crate) const XLOG_DATA_TAG: u8 = b'w';
pub(crate) const KEEPALIVE_TAG: u8 = b'k';
pub(crate) const STATUS_UPDATE_TAG: u8 = b'r';
/// Type byte and three i64s.
const XLOG_DATA_HEADER_LEN: usize = 1 + 3 * 8;
/// Type byte, two i64s, one flag byte.
const KEEPALIVE_LEN: usize = 1 + 2 * 8 + 1;
/// Type byte, four i64s, one flag byte.
pub const STATUS_UPDATE_LEN: usize = 1 + 4 * 8 + 1;
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// A PostgreSQL `TimestampTz`: microseconds since 2000-01-01 00:00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PgTime(pub i64);

impl PgTime {
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// Saturates far outside PostgreSQL's range instead of failing.
    pub fn from_system_time(t: SystemTime) -> Self {
        let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        match t.duration_since(epoch) {
            Ok(after) => PgTime(i64::try_from(after.as_micros()).unwrap_or(i64::MAX)),
            Err(before) => PgTime(i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m)),
        }
    }

    /// `None` if the time is outside what `SystemTime` can hold.
    pub fn to_system_time(self) -> Option<SystemTime> {
        let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        let magnitude = Duration::from_micros(self.0.unsigned_abs());
        if self.0 >= 0 { epoch.checked_add(magnitude) } else { epoch.checked_sub(magnitude) }
    }
}

/// A CopyData payload the server sends while streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCopyData {
    /// WAL bytes starting at `start`.
    XLogData { start: Lsn, end_of_server_wal: Lsn, server_time: PgTime, data: Bytes },
    /// The server is alive; `end` is the end of its WAL. Answer at once if `reply_requested`.
    Keepalive { end: Lsn, time: PgTime, reply_requested: bool },
}

/// Reads one CopyData payload from the server.
pub fn parse_server_copy_data(mut payload: Bytes) -> Result<ServerCopyData, WalClientError> {
    match payload.first() {
        Some(&XLOG_DATA_TAG) => {
            if payload.len() < XLOG_DATA_HEADER_LEN {
                return Err(WalClientError::malformed(format!("XLogData of {} bytes", payload.len())));
            }
            payload.advance(1);
            let start = Lsn(payload.get_u64());
            let end_of_server_wal = Lsn(payload.get_u64());
            let server_time = PgTime(payload.get_i64());
            if start.checked_add(payload.len() as u64).is_none() {
                return Err(WalClientError::malformed(format!(
                    "XLogData at {start} runs past the end of the WAL"
                )));
            }
            Ok(ServerCopyData::XLogData { start, end_of_server_wal, server_time, data: payload })
        }
        Some(&KEEPALIVE_TAG) => {
            if payload.len() != KEEPALIVE_LEN {
                return Err(WalClientError::malformed(format!("keepalive of {} bytes", payload.len())));
            }
            payload.advance(1);
            let end = Lsn(payload.get_u64());
            let time = PgTime(payload.get_i64());
            // Read as C's bool, as walreceiver does: any non-zero byte asks for a reply.
            let reply_requested = payload.get_u8() != 0;
            Ok(ServerCopyData::Keepalive { end, time, reply_requested })
        }
        Some(&other) => Err(WalClientError::malformed(format!(
            "unknown replication message type {:?} ({} bytes)",
            char::from(other),
            payload.len()
        ))),
        None => Err(WalClientError::malformed("empty CopyData")),
    }
}

/// What the client reports about WAL it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StandbyStatus {
    /// WAL received and written (not necessarily durable) up to here.
    pub write: Lsn,
    /// WAL durable up to here: a physical slot's `restart_lsn` moves to this.
    pub flush: Lsn,
    /// WAL applied up to here (a standby's replay position; `INVALID` if not known).
    pub apply: Lsn,
    /// Ask the server to answer with a keepalive at once.
    pub reply_requested: bool,
}

/// Encodes a Standby Status Update ('r') payload, stamped with `now`.
pub fn encode_status_update(status: StandbyStatus, now: PgTime, out: &mut BytesMut) {
    out.reserve(STATUS_UPDATE_LEN);
    out.put_u8(STATUS_UPDATE_TAG);
    out.put_u64(status.write.0);
    out.put_u64(status.flush.0);
    out.put_u64(status.apply.0);
    out.put_i64(now.0);
    out.put_u8(u8::from(status.reply_requested));
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An 'w' payload as a walsender builds it.
    pub fn xlog_data(start: u64, end: u64, time: i64, wal: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'w');
        b.put_u64(start);
        b.put_u64(end);
        b.put_i64(time);
        b.put_slice(wal);
        b.freeze()
    }

    #[test]
    fn xlog_data_and_keepalives_parse() {
        let got = parse_server_copy_data(xlog_data(0x100, 0x200, 7, b"wal")).unwrap();
        assert_eq!(
            got,
            ServerCopyData::XLogData {
                start: Lsn(0x100),
                end_of_server_wal: Lsn(0x200),
                server_time: PgTime(7),
                data: Bytes::from_static(b"wal")
            }
        );
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(0x300);
        k.put_i64(-5);
        k.put_u8(1);
        assert_eq!(
            parse_server_copy_data(k.clone().freeze()).unwrap(),
            ServerCopyData::Keepalive { end: Lsn(0x300), time: PgTime(-5), reply_requested: true }
        );
        for cut in 0..k.len() {
            assert!(parse_server_copy_data(k.clone().freeze().slice(..cut)).is_err());
        }
        k.put_u8(0);
        assert!(parse_server_copy_data(k.freeze()).is_err(), "a keepalive with a trailing byte");
        assert!(parse_server_copy_data(xlog_data(u64::MAX, 0, 0, b"x")).is_err());
        assert!(parse_server_copy_data(Bytes::from_static(b"q")).is_err());
    }

    #[test]
    fn status_updates_have_the_layout_walsender_reads() {
        let mut out = BytesMut::new();
        let status = StandbyStatus { write: Lsn(1), flush: Lsn(2), apply: Lsn(3), reply_requested: true };
        encode_status_update(status, PgTime(4), &mut out);
        assert_eq!(out.len(), STATUS_UPDATE_LEN);
        assert_eq!(out[0], b'r');
        assert_eq!(&out[1..9], &1u64.to_be_bytes());
        assert_eq!(&out[9..17], &2u64.to_be_bytes());
        assert_eq!(&out[17..25], &3u64.to_be_bytes());
        assert_eq!(&out[25..33], &4i64.to_be_bytes());
        assert_eq!(out[33], 1);
    }

    #[test]
    fn pg_time_counts_from_2000() {
        let y2k = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        assert_eq!(PgTime::from_system_time(y2k), PgTime(0));
        assert_eq!(PgTime::from_system_time(y2k + Duration::from_micros(1_500_000)), PgTime(1_500_000));
        assert_eq!(PgTime::from_system_time(UNIX_EPOCH), PgTime(-(PG_EPOCH_UNIX_SECS as i64) * 1_000_000));
        assert_eq!(PgTime(1_500_000).to_system_time(), Some(y2k + Duration::from_micros(1_500_000)));
        assert!(PgTime::now().0 > 0);
    }
}
