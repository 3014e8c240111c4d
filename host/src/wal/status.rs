//! The truth about WAL streaming in one value: every position (the primary's current LSN,
//! received, flushed, the standby's received and replayed), lag in bytes and seconds, the last
//! WAL time, archive use against its reserve and cap, the slot's state on the primary, and the
//! last error. Built from a running service's [`WalHandle`]; serialised as JSON for the REST
//! API and `tandem wal status`.
//!
//! Owns the arithmetic of lag. Must never block (it reads watches and one mutex).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::lsn::Lsn;
use super::receiver::state::Phase;
use super::service::WalHandle;
use crate::plugin::unix_ms as ms;

/// WAL streaming at one instant. LSNs are PostgreSQL's `X/X` text; times are Unix
/// milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WalStatus {
    /// receiver phase: starting, connecting, streaming, archive-full (at its disk cap),
    /// archive-disk-full (its filesystem is full), failed, stopped.
    pub state: String,
    pub primary: String,
    pub slot: String,
    pub system_id: String,
    pub timeline: u32,
    /// The primary's current WAL position (SQL, or its last keepalive if newer).
    pub primary_lsn: Option<String>,
    pub received_lsn: Option<String>,
    pub flushed_lsn: Option<String>,
    pub standby: Option<StandbyStatusView>,
    /// Primary's WAL not yet durable here.
    pub receive_lag_bytes: Option<u64>,
    /// Primary's WAL not yet replayed by the standby.
    pub replay_lag_bytes: Option<u64>,
    /// Age of the oldest WAL the standby has not replayed (0 when it has everything).
    pub replay_lag_seconds: Option<f64>,
    /// When WAL last arrived, and the primary's clock when it sent it.
    pub last_wal_at_ms: Option<u64>,
    pub last_wal_sent_at_ms: Option<u64>,
    pub last_message_at_ms: Option<u64>,
    /// Segments the archive holds, and how many it keeps before the replay point.
    pub segments_in_use: u64,
    pub segments_reserve: u64,
    pub archive_disk_cap_bytes: Option<u64>,
    /// tandem takes no WAL: the archive is at its cap or its disk is full (the slot holds it).
    pub archive_full: bool,
    /// The archive's filesystem is full (ENOSPC): retried with backoff until it has room.
    #[serde(default)]
    pub archive_disk_full: bool,
    /// The slot on the primary, as `pg_replication_slots` shows it.
    pub slot_wal_status: Option<String>,
    pub slot_restart_lsn: Option<String>,
    pub slot_safe_wal_size: Option<i64>,
    pub slot_active: Option<bool>,
    pub primary_sql_error: Option<String>,
    /// When the primary last answered the SQL above.
    pub primary_sql_at_ms: Option<u64>,
    pub connections: u64,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<u64>,
    /// When streaming worked again after the last error (then it is history, not the state).
    #[serde(default)]
    pub last_error_resolved_at_ms: Option<u64>,
}

/// The standby PostgreSQL as it last reported to tandem's walsender.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StandbyStatusView {
    pub streaming: bool,
    pub application_name: String,
    pub write_lsn: String,
    pub flush_lsn: String,
    pub replay_lsn: String,
    pub reported_at_ms: u64,
}

fn text(l: Lsn) -> Option<String> {
    l.is_valid().then(|| l.to_string())
}

impl WalStatus {
    /// The service's state now.
    pub fn of(h: &WalHandle) -> WalStatus {
        let r = h.receiver.borrow().clone();
        let sql = h.primary.borrow().clone();
        let flushed = h.reader.flush_point();
        let seg = h.reader.segment_size();
        let primary_lsn = sql.current_lsn.unwrap_or(Lsn::INVALID).max(r.primary_end);
        let standby = h.standby.borrow().clone();
        let replayed = standby.as_ref().map(|s| s.apply);
        let now = SystemTime::now();
        let replay_lag_seconds = replayed.and_then(|applied| {
            h.arrivals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .lag(applied, flushed.lsn, now)
                .map(|d| d.as_secs_f64())
        });
        let segments_in_use = h
            .reader
            .timelines()
            .iter()
            .filter(|t| t.end > t.start)
            .map(|t| seg.segno(Lsn(t.end.0 - 1)) - seg.segno(t.start) + 1)
            .sum();
        WalStatus {
            state: r.phase.as_str().to_owned(),
            primary: r.primary.clone(),
            slot: r.slot.clone(),
            system_id: h.identity.system_id.to_string(),
            timeline: flushed.timeline.max(r.timeline),
            primary_lsn: text(primary_lsn),
            received_lsn: text(r.received.max(flushed.lsn)),
            flushed_lsn: text(flushed.lsn),
            standby: standby.as_ref().map(|s| StandbyStatusView {
                streaming: s.streaming,
                application_name: s.application_name.clone(),
                write_lsn: s.write.to_string(),
                flush_lsn: s.flush.to_string(),
                replay_lsn: s.apply.to_string(),
                reported_at_ms: ms(s.received_at),
            }),
            receive_lag_bytes: primary_lsn.is_valid().then(|| primary_lsn.0.saturating_sub(flushed.lsn.0)),
            replay_lag_bytes: replayed
                .filter(|_| primary_lsn.is_valid())
                .map(|a| primary_lsn.0.saturating_sub(a.0)),
            replay_lag_seconds,
            last_wal_at_ms: r.last_wal_at.map(ms),
            last_wal_sent_at_ms: r.last_wal_sent_at.map(ms),
            last_message_at_ms: r.last_message_at.map(ms),
            segments_in_use,
            segments_reserve: h.config.reserve_segments,
            archive_disk_cap_bytes: (h.config.disk_cap_mib > 0).then_some(h.config.disk_cap_mib << 20),
            archive_full: matches!(r.phase, Phase::CapReached | Phase::DiskFull),
            archive_disk_full: r.phase == Phase::DiskFull,
            slot_wal_status: sql.slot.as_ref().and_then(|s| s.wal_status.clone()),
            slot_restart_lsn: sql.slot.as_ref().and_then(|s| s.restart_lsn).map(|l| l.to_string()),
            slot_safe_wal_size: sql.slot.as_ref().and_then(|s| s.safe_wal_size),
            slot_active: sql.slot.as_ref().map(|s| s.active),
            primary_sql_error: sql.error.clone(),
            primary_sql_at_ms: sql.at.map(ms),
            connections: r.connections,
            last_error: r.last_error.clone(),
            last_error_at_ms: r.last_error_at.map(ms),
            last_error_resolved_at_ms: r.last_error_resolved_at.map(ms),
        }
    }
}
