//! The answers to the short replication commands, written as PostgreSQL's walsender writes
//! them (same column names, type OIDs and completion tags): IDENTIFY_SYSTEM, `SHOW`,
//! TIMELINE_HISTORY and READ_REPLICATION_SLOT.
//!
//! Must never: report a position the archive has not made durable.

use bytes::BytesMut;

use super::SenderContext;
use super::backend::{self, SqlError, oid};
use crate::wal::lsn::{Lsn, TimeLineId, WalSegmentSize, history_file_name};
use crate::wal::upstream::UpstreamIdentity;

/// SQLSTATEs the answers use.
pub mod sqlstate {
    /// `undefined_file`: a history file or WAL segment the archive does not have.
    pub const UNDEFINED_FILE: &str = "58P01";
    /// `undefined_object`: an unknown `SHOW` parameter.
    pub const UNDEFINED_OBJECT: &str = "42704";
    /// `object_not_in_prerequisite_state`: the archive is still empty.
    pub const NOT_IN_PREREQUISITE_STATE: &str = "55000";
    /// `internal_error`.
    pub const INTERNAL_ERROR: &str = "XX000";
}

/// The archive's current timeline and flushed LSN; an error while it holds no WAL.
pub fn current_position(ctx: &SenderContext) -> Result<(TimeLineId, Lsn), SqlError> {
    let point = ctx.reader.flush_point();
    if point.timeline == 0 {
        return Err(SqlError::error(
            sqlstate::NOT_IN_PREREQUISITE_STATE,
            "tandem's WAL archive holds no WAL yet",
        ));
    }
    Ok((point.timeline, point.lsn))
}

/// IDENTIFY_SYSTEM: systemid (text), timeline (int4), xlogpos (text), dbname (text, NULL).
pub fn identify_system(
    out: &mut BytesMut,
    ctx: &SenderContext,
    upstream: &UpstreamIdentity,
) -> Result<(), SqlError> {
    let (timeline, flushed) = current_position(ctx)?;
    backend::row_description(
        out,
        &[("systemid", oid::TEXT), ("timeline", oid::INT4), ("xlogpos", oid::TEXT), ("dbname", oid::TEXT)],
    );
    let (sysid, tli, pos) = (upstream.system_id.to_string(), timeline.to_string(), flushed.to_string());
    backend::data_row(out, &[Some(sysid.as_bytes()), Some(tli.as_bytes()), Some(pos.as_bytes()), None]);
    backend::command_complete(out, "IDENTIFY_SYSTEM");
    Ok(())
}

/// `SHOW name`: the settings replication clients ask for.
pub fn show(out: &mut BytesMut, name: &str, upstream: &UpstreamIdentity) -> Result<(), SqlError> {
    let value = match name {
        "wal_segment_size" => format_size(upstream.segment_size),
        "server_version" => upstream.server_version.clone(),
        // pg_basebackup and pg_receivewal create files with the source's permissions.
        "data_directory_mode" => "0700".to_owned(),
        "integer_datetimes" => "on".to_owned(),
        _ => {
            return Err(SqlError::error(
                sqlstate::UNDEFINED_OBJECT,
                format!("unrecognized configuration parameter \"{name}\""),
            ));
        }
    };
    backend::row_description(out, &[(name, oid::TEXT)]);
    backend::data_row(out, &[Some(value.as_bytes())]);
    backend::command_complete(out, "SHOW");
    Ok(())
}

/// A byte count as PostgreSQL shows a size setting: the largest unit that divides it.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "kB")];
    for (scale, unit) in UNITS {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

/// TIMELINE_HISTORY: filename (text) and content (bytea, sent unescaped as PostgreSQL 15 does).
pub async fn timeline_history(
    out: &mut BytesMut,
    ctx: &SenderContext,
    timeline: TimeLineId,
) -> Result<(), SqlError> {
    let reader = ctx.reader.clone();
    let read = tokio::task::spawn_blocking(move || reader.read_history(timeline)).await;
    let name = history_file_name(timeline);
    let content = match read {
        Ok(Ok(Some(content))) => content,
        Ok(Ok(None)) => {
            return Err(SqlError::error(
                sqlstate::UNDEFINED_FILE,
                format!("could not open file \"pg_wal/{name}\": No such file or directory"),
            ));
        }
        Ok(Err(e)) => return Err(SqlError::error(sqlstate::UNDEFINED_FILE, e.to_string())),
        Err(e) => return Err(SqlError::error(sqlstate::INTERNAL_ERROR, e.to_string())),
    };
    backend::row_description(out, &[("filename", oid::TEXT), ("content", oid::BYTEA)]);
    backend::data_row(out, &[Some(name.as_bytes()), Some(&content)]);
    backend::command_complete(out, "TIMELINE_HISTORY");
    Ok(())
}

/// READ_REPLICATION_SLOT: slot_type (text), restart_lsn (text), restart_tli (int8). Every
/// name is a physical slot; it restarts where the standby last reported WAL flushed, if the
/// archive still holds that, and is otherwise unreserved (NULL: the client starts from
/// IDENTIFY_SYSTEM's position).
pub fn read_replication_slot(out: &mut BytesMut, ctx: &SenderContext) {
    let flushed = ctx.feedback.borrow().as_ref().map(|f| f.flush).filter(|l| l.is_valid());
    let held = flushed.and_then(|lsn| {
        ctx.reader
            .timelines()
            .iter()
            .rev()
            .find(|t| t.start <= lsn && lsn <= t.end)
            .map(|t| (lsn, t.timeline))
    });
    backend::row_description(
        out,
        &[("slot_type", oid::TEXT), ("restart_lsn", oid::TEXT), ("restart_tli", oid::INT8)],
    );
    let (lsn, tli) = held.map_or((None, None), |(l, t)| (Some(l.to_string()), Some(t.to_string())));
    backend::data_row(
        out,
        &[Some(b"physical"), lsn.as_deref().map(str::as_bytes), tli.as_deref().map(str::as_bytes)],
    );
    backend::command_complete(out, "READ_REPLICATION_SLOT");
}

/// The error for WAL the archive no longer (or never) held, worded as PostgreSQL's.
pub fn removed(seg: WalSegmentSize, timeline: TimeLineId, lsn: Lsn) -> SqlError {
    SqlError::error(
        sqlstate::UNDEFINED_FILE,
        format!("requested WAL segment {} has already been removed", seg.file_name(timeline, seg.segno(lsn))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_format_as_postgres_shows_them() {
        assert_eq!(format_size(16 << 20), "16MB");
        assert_eq!(format_size(1 << 30), "1GB");
        assert_eq!(format_size(1 << 20), "1MB");
        assert_eq!(format_size(3 << 10), "3kB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(WalSegmentSize::parse_setting(&format_size(64 << 20)).unwrap().bytes(), 64 << 20);
    }
}
