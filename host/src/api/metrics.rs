//! `GET /metrics`: Prometheus text exposition of the warm standby (no token, like a node
//! exporter: numbers only, no secrets): role and health, WAL lag in bytes and seconds, the last
//! WAL, archive segments, and per tree the bytes and files moved, the last success and the last
//! error; and the conf commit log's applied index and apply stall. Rendering is a pure function
//! of [`StandbyStatus`] (and the apply state).

use std::fmt::Write;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::AppState;
use crate::standby::config::FenceMode;
use crate::standby::{Role, StandbyStatus};
use crate::sync::status::TreeStatus;

pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let now = crate::plugin::now_ms();
    let mut text = render(&s.standby.status().await, now);
    let shared = s.node.shared();
    render_cluster(&mut text, shared.applied_index(), shared.apply_stall().as_ref(), now);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The commit log's apply state: the applied index, and whether (and for how long) committed
/// changes cannot be applied here.
pub fn render_cluster(
    out: &mut String,
    applied: u64,
    stall: Option<&crate::cluster::ApplyStall>,
    now_ms: u64,
) {
    let mut f = Family { out };
    f.gauge(
        "tandem_cluster_applied_index",
        "Index of the last commit-log entry applied here.",
        Some(applied as f64),
    );
    f.gauge(
        "tandem_cluster_cannot_apply",
        "1 while committed conf changes fail to apply on this member (disk full, out of descriptors).",
        Some(if stall.is_some() { 1.0 } else { 0.0 }),
    );
    f.gauge(
        "tandem_cluster_cannot_apply_seconds",
        "How long committed conf changes have failed to apply here (0 when they apply).",
        Some(stall.map_or(0.0, |s| secs(now_ms.saturating_sub(s.since_ms)))),
    );
}

/// One metric family: help, type, and its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
        let _ = writeln!(self.out, "{name}{labels} {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.head(name, "gauge", help);
            self.sample(name, &[], v);
        }
    }
}

/// Milliseconds as the seconds Prometheus wants.
fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The exposition text.
pub fn render(s: &StandbyStatus, now_ms: u64) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    f.head(
        "tandem_standby_role",
        "gauge",
        "This host's role in the warm-standby pair (1 for the current one).",
    );
    for role in ["primary", "standby", "unpaired"] {
        let current = match s.role {
            Some(Role::Primary) => "primary",
            Some(Role::Standby) => "standby",
            None => "unpaired",
        };
        f.sample("tandem_standby_role", &[("role", role)], f64::from(u8::from(role == current)));
    }
    f.head(
        "tandem_standby_fenced",
        "gauge",
        "1 for how this old primary's database is fenced (its peer took over), 0 for the others.",
    );
    for how in [FenceMode::Demote, FenceMode::Stop, FenceMode::ReadOnly] {
        let on = s.fenced.as_ref().is_some_and(|f| f.how == how);
        f.sample("tandem_standby_fenced", &[("how", &how.to_string())], f64::from(u8::from(on)));
    }
    f.gauge(
        "tandem_standby_healthy",
        "1 when the health check answers 200 (primary or unpaired).",
        Some(f64::from(u8::from(s.healthy))),
    );
    f.gauge(
        "tandem_standby_peer_reachable",
        "1 when the peer answered within the last 15 seconds.",
        s.peer.as_ref().map(|p| f64::from(u8::from(p.reachable))),
    );
    f.gauge(
        "tandem_standby_last_error_timestamp_seconds",
        "When a warm-standby command or set-up step last failed (Unix time).",
        s.last_error.as_ref().map(|e| secs(e.at_ms)),
    );
    let d = &s.database;
    f.gauge(
        "tandem_db_replication_streaming",
        "1 when database replication streams.",
        d.configured.then_some(f64::from(u8::from(d.streaming))),
    );
    // The same field means two things by role: name them apart.
    let standby = s.role == Some(Role::Standby);
    f.gauge(
        "tandem_db_replay_lag_bytes",
        "WAL the standby database has not replayed, bytes.",
        d.lag_bytes.filter(|_| standby).map(|b| b as f64),
    );
    f.gauge(
        "tandem_db_standby_side_lag_bytes",
        "On the primary: WAL the standby side (tandem) has not reported durable, bytes.",
        d.lag_bytes.filter(|_| !standby).map(|b| b as f64),
    );
    f.gauge(
        "tandem_db_replay_lag_seconds",
        "Age of the oldest WAL the standby database has not replayed.",
        d.lag_seconds.filter(|_| standby),
    );
    f.gauge(
        "tandem_db_standby_side_lag_seconds",
        "On the primary: PostgreSQL's flush_lag of the standby side (tandem), seconds.",
        d.lag_seconds.filter(|_| !standby),
    );
    f.gauge(
        "tandem_db_last_wal_timestamp_seconds",
        "When WAL last arrived from the primary (Unix time).",
        d.last_updated_ms.map(secs),
    );
    f.gauge(
        "tandem_wal_segments_in_use",
        "WAL segments in tandem's archive.",
        d.wal_segments_in_use.map(|n| n as f64),
    );
    f.gauge(
        "tandem_wal_segments_configured",
        "WAL segments kept before the standby's replay position.",
        Some(d.wal_segments_configured as f64),
    );
    if let Some(w) = &s.wal {
        f.gauge(
            "tandem_wal_receive_lag_bytes",
            "Primary WAL not yet durable in tandem's archive, bytes.",
            w.receive_lag_bytes.map(|b| b as f64),
        );
        f.gauge(
            "tandem_wal_connections_total",
            "Connections tandem made to the primary since start.",
            Some(w.connections as f64),
        );
        f.gauge(
            "tandem_wal_archive_full",
            "1 when tandem takes no WAL: its archive is at its disk cap or its disk is full.",
            Some(f64::from(u8::from(w.archive_full))),
        );
        f.gauge(
            "tandem_wal_archive_disk_full",
            "1 when the WAL archive's filesystem is full (retried until it has room).",
            Some(f64::from(u8::from(w.archive_disk_full))),
        );
        f.gauge(
            "tandem_wal_last_error_timestamp_seconds",
            "When WAL streaming last failed (Unix time).",
            w.last_error_at_ms.map(secs),
        );
    }
    if !s.link.streams.is_empty() {
        let name = "tandem_link_bytes_total";
        f.head(
            name,
            "counter",
            "Bytes the database tunnel carried, per stream and direction: raw (before compression) and link (on the wire, inside the encrypted peer link).",
        );
        for b in &s.link.streams {
            let stream = b.kind.map_or("other", |k| k.name());
            for (direction, stage, v) in [
                ("sent", "raw", b.sent_raw_bytes),
                ("sent", "link", b.sent_link_bytes),
                ("received", "raw", b.received_raw_bytes),
                ("received", "link", b.received_link_bytes),
            ] {
                f.sample(name, &[("stream", stream), ("direction", direction), ("stage", stage)], v as f64);
            }
        }
    }
    f.gauge("tandem_link_tunnels_open", "Database tunnels open now.", Some(s.link.open as f64));
    if !s.trees.trees.is_empty() {
        type Value = fn(&TreeStatus, u64) -> Option<f64>;
        let families: [(&str, &str, &str, Value); 8] = [
            ("tandem_sync_bytes_total", "counter", "File bytes brought up to date per tree.", |t, _| {
                Some(t.bytes_total as f64)
            }),
            (
                "tandem_sync_wire_bytes_total",
                "counter",
                "Bytes sent on the wire per tree (deltas, compressed).",
                |t, _| Some(t.wire_total as f64),
            ),
            ("tandem_sync_files_total", "counter", "Files brought up to date per tree.", |t, _| {
                Some(t.files_total as f64)
            }),
            (
                "tandem_sync_last_success_timestamp_seconds",
                "gauge",
                "When the tree was last known equal to the primary's.",
                |t, _| t.in_sync_ms.map(secs),
            ),
            (
                "tandem_sync_lag_seconds",
                "gauge",
                "Seconds since the tree was last known equal to the primary's.",
                |t, now| t.in_sync_ms.map(|m| secs(now.saturating_sub(m))),
            ),
            (
                "tandem_sync_special_skipped",
                "gauge",
                "Sockets, FIFOs and devices in the primary's tree, never replicated (last full pass).",
                |t, _| Some(t.special_skipped as f64),
            ),
            (
                "tandem_sync_unreadable",
                "gauge",
                "Paths of the primary's tree its last pass could not read (the standby keeps its copies).",
                |t, _| Some(t.unreadable as f64),
            ),
            (
                "tandem_sync_last_error_timestamp_seconds",
                "gauge",
                "When a pass of the tree last failed.",
                |t, _| t.last_error_ms.map(secs),
            ),
        ];
        for (name, kind, help, value) in families {
            f.head(name, kind, help);
            for t in &s.trees.trees {
                if let Some(v) = value(t, now_ms) {
                    f.sample(name, &[("tree", &t.tree)], v);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standby::status::DatabaseStatus;

    #[test]
    fn a_standby_exposes_its_lag_and_trees() {
        let mut s = StandbyStatus { role: Some(Role::Standby), ..StandbyStatus::default() };
        s.database = DatabaseStatus {
            configured: true,
            streaming: true,
            lag_bytes: Some(8192),
            lag_seconds: Some(0.25),
            wal_segments_configured: 32,
            ..DatabaseStatus::default()
        };
        s.trees.trees.push(TreeStatus {
            tree: "vault".into(),
            bytes_total: 10,
            in_sync_ms: Some(9_000),
            ..TreeStatus::default()
        });
        let text = render(&s, 10_000);
        for line in [
            "tandem_standby_role{role=\"standby\"} 1",
            "tandem_standby_role{role=\"primary\"} 0",
            "tandem_standby_healthy 0",
            "tandem_standby_fenced{how=\"demote\"} 0",
            "tandem_db_replication_streaming 1",
            "tandem_db_replay_lag_bytes 8192",
            "tandem_db_replay_lag_seconds 0.25",
            "tandem_sync_bytes_total{tree=\"vault\"} 10",
            "tandem_sync_lag_seconds{tree=\"vault\"} 1",
            "# TYPE tandem_sync_bytes_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
        assert!(!text.contains("tandem_sync_last_error_timestamp_seconds{"), "no error, no sample");
    }
}
