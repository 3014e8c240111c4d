//! The CopyData payloads of physical streaming, server side, pure: encoders for what we send
//! ('w' XLogData, 'k' keepalive) and the decoder for what the standby sends ('r' status
//! update, 'h' hot-standby feedback). The layouts mirror the client's `wal::client` xlog
//! module (which decodes 'w'/'k' and encodes 'r'):
//!
//! ```text
//! 'w'  start i64 | end_of_server_wal i64 | send_time i64 | WAL bytes
//! 'k'  end_of_server_wal i64 | send_time i64 | reply_requested u8
//! 'r'  write i64 | flush i64 | apply i64 | send_time i64 | reply_requested u8
//! 'h'  send_time i64 | xmin u32 | xmin_epoch u32 | catalog_xmin u32 | catalog_xmin_epoch u32
//! ```
//!
//! Must never: panic on a payload of any length or content.

use bytes::{Buf, BufMut, BytesMut};

use crate::wal::client::PgTime;
// The payload formats are the client's, read from the other side.
use crate::wal::client::xlog::{KEEPALIVE_TAG, STATUS_UPDATE_LEN, STATUS_UPDATE_TAG, XLOG_DATA_TAG};
use crate::wal::lsn::Lsn;

/// Appends an XLogData payload (the WAL bytes are put after it by the caller's CopyData).
pub fn put_xlog_data(out: &mut BytesMut, start: Lsn, end_of_server_wal: Lsn, now: PgTime, wal: &[u8]) {
    out.put_u8(XLOG_DATA_TAG);
    out.put_u64(start.0);
    out.put_u64(end_of_server_wal.0);
    out.put_i64(now.0);
    out.put_slice(wal);
}

/// Appends a keepalive payload.
pub fn put_keepalive(out: &mut BytesMut, end_of_server_wal: Lsn, now: PgTime, reply_requested: bool) {
    out.put_u8(KEEPALIVE_TAG);
    out.put_u64(end_of_server_wal.0);
    out.put_i64(now.0);
    out.put_u8(u8::from(reply_requested));
}

/// What a standby sends inside the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyMessage {
    /// 'r': how far the standby wrote, flushed and applied.
    Status {
        /// Written up to here.
        write: Lsn,
        /// Durable up to here.
        flush: Lsn,
        /// Replayed up to here.
        apply: Lsn,
        /// The standby's clock when it sent this.
        sent_at: PgTime,
        /// Answer with a keepalive at once.
        reply_requested: bool,
    },
    /// 'h': hot-standby feedback (xmin): tandem keeps no snapshots, so it is read and dropped.
    HotStandbyFeedback,
}

/// Reads one CopyData payload from the standby; `Err` names what is wrong with it.
pub fn parse_standby_message(payload: &[u8]) -> Result<StandbyMessage, String> {
    match payload.first() {
        Some(&STATUS_UPDATE_TAG) if payload.len() == STATUS_UPDATE_LEN => {
            let mut p = &payload[1..];
            Ok(StandbyMessage::Status {
                write: Lsn(p.get_u64()),
                flush: Lsn(p.get_u64()),
                apply: Lsn(p.get_u64()),
                sent_at: PgTime(p.get_i64()),
                reply_requested: p.get_u8() != 0,
            })
        }
        Some(&STATUS_UPDATE_TAG) => Err(format!("standby status update of {} bytes", payload.len())),
        Some(b'h') => Ok(StandbyMessage::HotStandbyFeedback),
        Some(&other) => Err(format!("unexpected message type \"{}\"", char::from(other))),
        None => Err("empty CopyData".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_updates_from_our_client_parse() {
        let mut out = BytesMut::new();
        let status = crate::wal::client::StandbyStatus {
            write: Lsn(1),
            flush: Lsn(2),
            apply: Lsn(3),
            reply_requested: true,
        };
        crate::wal::client::xlog::encode_status_update(status, PgTime(4), &mut out);
        assert_eq!(
            parse_standby_message(&out).unwrap(),
            StandbyMessage::Status {
                write: Lsn(1),
                flush: Lsn(2),
                apply: Lsn(3),
                sent_at: PgTime(4),
                reply_requested: true
            }
        );
        for cut in 0..out.len() {
            assert!(parse_standby_message(&out[..cut]).is_err());
        }
        assert!(parse_standby_message(b"z").is_err());
        assert_eq!(parse_standby_message(b"h").unwrap(), StandbyMessage::HotStandbyFeedback);
    }

    #[test]
    fn our_client_reads_what_we_send() {
        let mut out = BytesMut::new();
        put_keepalive(&mut out, Lsn(9), PgTime(8), true);
        let parsed = crate::wal::client::xlog::parse_server_copy_data(out.split().freeze()).unwrap();
        assert!(format!("{parsed:?}").contains("reply_requested: true"), "{parsed:?}");
        put_xlog_data(&mut out, Lsn(1), Lsn(5), PgTime(2), b"wal");
        let parsed = crate::wal::client::xlog::parse_server_copy_data(out.split().freeze()).unwrap();
        assert!(format!("{parsed:?}").contains("start: Lsn(0/1)"), "{parsed:?}");
    }
}
