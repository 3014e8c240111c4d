//! The warm standby's status as text, in the seed's words: the frame, the version line and
//! each line of the seed's samples for a primary, a standby and a host not configured, in its
//! order and spelling ("Instance looks like Primary", "DB replication configured with Standby
//! set to:  10.0.0.2/32", "WAL segments in use: 2", "rsync configured"); tandem's own lines
//! (peer, lag, fence, link, trees, errors, health) follow them, before the closing frame.
//!
//! Must never: drop or reword a line of the seed's samples; the CLI prints this as it is.

use std::fmt::Write;

use super::config::FenceMode;
use super::pairing::Role;
use super::plan::split_host_port;
use super::status::StandbyStatus;
use crate::when::{ago_at, date};

const OPENING: &str = "  ========= Processed Params =========";
const CLOSING: &str = "  =========  Script Done =========";

/// The status as text, as seen at `now` (Unix ms).
pub fn render(s: &StandbyStatus, now: u64) -> String {
    let mut o = String::new();
    let ago = |ms: u64| ago_at(ms, now);
    let _ = writeln!(o, "{OPENING}");
    if !s.configured {
        let _ = writeln!(o, "   Warm Standby not yet configured");
        if s.looks_like == "Standby" {
            let _ = writeln!(o, "   (the local database is in recovery)");
        }
        trees(&mut o, s, now);
        let _ = writeln!(
            o,
            "    Health check: {}",
            if s.healthy { "healthy (200)" } else { "not serving (503)" }
        );
        let _ = writeln!(o, "{CLOSING}");
        return o;
    }
    let d = &s.database;
    let peer = s.peer.clone().unwrap_or_default();
    let names: Vec<&str> = s.trees.trees.iter().map(|t| t.tree.as_str()).collect();
    // The seed's lines, in its order.
    let _ = writeln!(o, "  Current tandem Version: {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(o, "   Instance looks like {}", s.looks_like);
    match s.role {
        Some(Role::Primary) => {
            if d.configured {
                let client = d
                    .standby_client
                    .clone()
                    .unwrap_or_else(|| split_host_port(&peer.addr).map(|(h, _)| h).unwrap_or_default());
                let _ = writeln!(o, "    DB replication configured with Standby set to:  {client}/32");
                if d.streaming {
                    let _ = writeln!(o, "    DB replication currently streaming");
                } else {
                    let _ = writeln!(o, "    DB replication NOT streaming (tandem's slot is not in use)");
                }
                let _ = writeln!(o, "    WAL segments configured: {}", d.wal_segments_configured);
            }
            if names.contains(&"vault") {
                let _ = writeln!(o, "    Vault sync configured");
            }
        }
        Some(Role::Standby) => {
            if d.configured {
                let _ = writeln!(o, "    DB replication configured");
                if let Some(t) = d.last_updated_ms {
                    let _ = writeln!(o, "    DB last updated {} ({})", date(t), ago(t));
                }
                if let Some(n) = d.wal_segments_in_use {
                    let _ = writeln!(o, "    WAL segments in use: {n}");
                }
                let _ = writeln!(o, "    WAL segments configured: {}", d.wal_segments_configured);
            }
            if s.trees.primary.is_some() {
                let _ = writeln!(o, "    rsync configured");
            }
        }
        None => {}
    }
    // tandem's own lines.
    if let Some(why) = &s.superseded {
        let _ = writeln!(o, "    SUPERSEDED: {why}");
    }
    if let Some(f) = &s.fenced {
        let end = f.wal_end.as_ref().map(|l| format!(", its WAL ends at {l}")).unwrap_or_default();
        let what = match f.how {
            FenceMode::Demote => "demoted: a read-only standby following nothing",
            FenceMode::Stop => "stopped",
            FenceMode::ReadOnly => "read-only by default only (a session may still ask for read-write)",
        };
        let _ = writeln!(o, "    FENCED ({}) {}: the database is {what}{end}", f.how, ago(f.at_ms));
    }
    database_state(&mut o, s, now);
    let peer_name = peer.node.clone().unwrap_or_else(|| "(not yet joined)".into());
    let seen = match (peer.reachable, peer.answered_ms) {
        (true, Some(t)) => format!("answered {}", ago(t)),
        (false, Some(t)) => {
            format!("NOT answering (last answer {}): {}", ago(t), peer.last_error.clone().unwrap_or_default())
        }
        (_, None) => {
            format!("NOT answering: {}", peer.last_error.clone().unwrap_or_else(|| "not yet asked".into()))
        }
    };
    match s.role {
        Some(Role::Primary) => {
            let _ = writeln!(o, "    Paired with standby `{peer_name}` at {} ({seen})", peer.addr);
            if d.configured {
                if let Some(b) = d.lag_bytes.filter(|_| d.streaming) {
                    let secs = d.lag_seconds.map(|s| format!(", {s:.3} s")).unwrap_or_default();
                    let _ = writeln!(o, "    Standby side {b} bytes{secs} behind, as last reported");
                }
                if let Some(w) = &d.slot_wal_status {
                    let _ = writeln!(
                        o,
                        "    Slot: restart {} ({w})",
                        d.slot_restart_lsn.clone().unwrap_or_default()
                    );
                }
            }
        }
        Some(Role::Standby) => {
            let _ = writeln!(o, "    Paired with primary `{peer_name}` at {} ({seen})", peer.addr);
            if d.configured {
                let _ = writeln!(
                    o,
                    "    DB replication from {} through tandem",
                    peer.pg.clone().unwrap_or_default()
                );
                if d.streaming {
                    let _ = writeln!(o, "    DB replication currently streaming");
                } else {
                    let why = s.wal.as_ref().map_or("not started".to_string(), |w| {
                        format!(
                            "tandem {}{}",
                            w.state,
                            match (d.running, w.standby.as_ref().is_some_and(|v| v.streaming)) {
                                (false, _) => ", database not running",
                                (true, true) => "",
                                (true, false) => ", database not connected to tandem",
                            }
                        )
                    });
                    let _ = writeln!(o, "    DB replication NOT streaming ({why})");
                }
                if s.wal.as_ref().is_some_and(|w| w.archive_disk_full) {
                    let _ = writeln!(
                        o,
                        "    WAL archive DISK FULL: tandem takes no WAL until it has room (the primary's slot holds it)"
                    );
                }
                let bytes = d.lag_bytes.map_or("unknown".into(), |b| format!("{b} bytes"));
                let secs = d.lag_seconds.map_or("unknown".into(), |s| format!("{s:.3} s"));
                let _ = writeln!(o, "    Replay lag: {bytes}, {secs}");
                if d.replay_paused == Some(true) {
                    let _ = writeln!(o, "    WAL replay is PAUSED");
                }
            }
        }
        None => {}
    }
    if !d.configured
        && let Some(why) = &d.not_configured_because
    {
        let _ = writeln!(o, "    DB replication not configured: {why}");
    }
    if let Some(e) = &d.last_error {
        let _ = writeln!(o, "    DB last error: {e}");
    }
    if d.configured {
        let _ = writeln!(
            o,
            "    DB traffic between the hosts: inside tandem's encrypted link ({} tunnel(s) open)",
            s.link.open
        );
        for b in &s.link.streams {
            let (raw, link) =
                (b.sent_raw_bytes + b.received_raw_bytes, b.sent_link_bytes + b.received_link_bytes);
            let ratio = if link > 0 { format!("{:.1}x", raw as f64 / link as f64) } else { "-".into() };
            let _ = writeln!(
                o,
                "      {:<12} {raw} bytes, {link} on the link ({ratio})",
                b.kind.map_or("other", |k| k.name())
            );
        }
    }
    trees(&mut o, s, now);
    if let Some(f) = &s.last_failover {
        let _ = writeln!(
            o,
            "    Last failover {} ({:.2} s{})",
            date(f.at_ms),
            f.seconds,
            if f.forced { ", forced" } else { "" }
        );
        if let Some(old) = &f.old_primary {
            let _ = writeln!(o, "      the old primary: {old}");
        }
    }
    if let Some(e) = &s.last_error {
        let resolved = e.resolved_at_ms.map(|r| format!(", since resolved {}", ago(r))).unwrap_or_default();
        let _ = writeln!(o, "    Last error ({}, {}{resolved}): {}", e.what, ago(e.at_ms), e.error);
    }
    let _ =
        writeln!(o, "    Health check: {}", if s.healthy { "healthy (200)" } else { "not serving (503)" });
    let _ = writeln!(o, "{CLOSING}");
    o
}

/// Each tree's state: followed (a standby) or served (a primary).
fn trees(o: &mut String, s: &StandbyStatus, now: u64) {
    let ago = |ms: u64| ago_at(ms, now);
    let t = &s.trees;
    let names: Vec<&str> = t.trees.iter().map(|t| t.tree.as_str()).collect();
    match &t.primary {
        Some(p) if s.configured || !t.trees.is_empty() => {
            let _ = writeln!(o, "    Tree sync following {p}:");
            for tree in &t.trees {
                let state = match (tree.in_sync_ms, &tree.last_error) {
                    (_, Some(e)) if tree.last_error_ms >= tree.in_sync_ms => {
                        format!("ERROR {}: {e}", tree.last_error_ms.map(ago).unwrap_or_default())
                    }
                    (Some(at), _) => format!("in sync {}", ago(at)),
                    (None, _) => "not yet synced".into(),
                };
                let last = tree.last_pass_ms.map(|m| format!(", last pass {}", ago(m))).unwrap_or_default();
                let _ = writeln!(
                    o,
                    "      {:<14} {state}{last}, {} files / {} bytes sent ({} on the wire)",
                    tree.tree, tree.files_total, tree.bytes_total, tree.wire_total
                );
                if let Some(line) = tree.unreadable_line() {
                    let _ = writeln!(o, "        {line}");
                }
            }
        }
        _ if s.configured => {
            let _ = writeln!(
                o,
                "    Tree sync: serving {} trees to the standby ({})",
                names.len(),
                names.join(", ")
            );
        }
        _ => {}
    }
}

/// Whether the paired PostgreSQL runs, and what tandem does about it when it does not.
fn database_state(o: &mut String, s: &StandbyStatus, now: u64) {
    let (d, k) = (&s.database, &s.database.keeper);
    let ago = |ms: u64| ago_at(ms, now);
    if d.configured && !d.running {
        let why = match (k.down_since_ms, s.role) {
            (Some(since), _) => {
                let failure = k
                    .last_failure
                    .as_ref()
                    .map(|e| format!("; the last start failed: {e}"))
                    .unwrap_or_default();
                let next = k
                    .next_attempt_ms
                    .map(|t| format!("; next attempt in {:.0} s", t.saturating_sub(now) as f64 / 1000.0))
                    .unwrap_or_default();
                format!("it stopped unexpectedly {}: tandem restarts it{failure}{next}", ago(since))
            }
            (None, Some(Role::Standby)) => {
                "stopped cleanly: tandem restarts it only after a crash; start it with pg_ctl".into()
            }
            (None, _) => "stopped".into(),
        };
        let _ = writeln!(o, "    PostgreSQL NOT running ({why})");
    }
    if let (n @ 1.., Some(at)) = (k.restarts, k.last_restart_ms) {
        let _ = writeln!(
            o,
            "    PostgreSQL restarted by tandem {n} time(s), last {} (its postmaster had died)",
            ago(at)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standby::keeper::KeeperView;
    use crate::standby::status::{DatabaseStatus, PeerStatus, TreesStatus};
    use crate::sync::status::TreeStatus;

    #[test]
    fn the_seeds_wording_for_each_state() {
        let none = StandbyStatus {
            node: "a".into(),
            looks_like: "Not configured".into(),
            healthy: true,
            ..Default::default()
        };
        assert!(render(&none, 0).contains("Warm Standby not yet configured"));
        let mut primary = StandbyStatus {
            configured: true,
            role: Some(Role::Primary),
            looks_like: "Primary".into(),
            healthy: true,
            peer: Some(PeerStatus {
                node: Some("b".into()),
                addr: "127.0.0.1:7520".into(),
                reachable: true,
                answered_ms: Some(0),
                ..Default::default()
            }),
            database: DatabaseStatus {
                configured: true,
                running: true,
                streaming: true,
                standby_client: Some("127.0.0.1".into()),
                wal_segments_configured: 32,
                ..Default::default()
            },
            ..Default::default()
        };
        let text = render(&primary, 1000);
        for line in [
            "Instance looks like Primary",
            "DB replication configured with Standby set to:  127.0.0.1/32",
            "DB replication currently streaming",
            "WAL segments configured: 32",
            "healthy (200)",
        ] {
            assert!(text.contains(line), "`{line}` missing in\n{text}");
        }
        primary.database.streaming = false;
        assert!(render(&primary, 1000).contains("DB replication NOT streaming"));
        let standby = StandbyStatus {
            role: Some(Role::Standby),
            looks_like: "Standby".into(),
            healthy: false,
            database: DatabaseStatus {
                last_updated_ms: Some(0),
                wal_segments_in_use: Some(2),
                lag_bytes: Some(0),
                lag_seconds: Some(0.0),
                ..primary.database.clone()
            },
            ..primary.clone()
        };
        let text = render(&standby, 1000);
        for line in [
            "Instance looks like Standby",
            "DB last updated Thursday",
            "WAL segments in use: 2",
            "Replay lag: 0 bytes, 0.000 s",
            "not serving (503)",
        ] {
            assert!(text.contains(line), "`{line}` missing in\n{text}");
        }
        assert!(!text.contains("NOT running") && !text.contains("restarted by tandem"), "{text}");

        // Regression: the text never said the database was down (only the JSON's running).
        let mut down = standby.clone();
        down.database.running = false;
        down.database.streaming = false;
        down.wal = Some(crate::wal::status::WalStatus {
            state: "archive-disk-full".into(),
            archive_full: true,
            archive_disk_full: true,
            ..Default::default()
        });
        down.database.keeper = KeeperView {
            restarts: 1,
            last_restart_ms: Some(0),
            down_since_ms: Some(500),
            last_failure: Some("pg_ctl start failed".into()),
            next_attempt_ms: Some(3000),
        };
        let text = render(&down, 1000);
        for line in [
            "PostgreSQL NOT running (it stopped unexpectedly 0.5 s ago: tandem restarts it; the last start failed: \
             pg_ctl start failed; next attempt in 2 s)",
            "PostgreSQL restarted by tandem 1 time(s), last 1.0 s ago",
            "database not running",
            "WAL archive DISK FULL: tandem takes no WAL until it has room",
        ] {
            assert!(text.contains(line), "`{line}` missing in\n{text}");
        }
        down.database.keeper = KeeperView::default();
        // Regression: errors stayed in status, unqualified, long after they stopped applying.
        down.last_error = Some(crate::standby::service::LastError {
            at_ms: 0,
            what: "rejoin".into(),
            error: "the peer did not answer".into(),
            resolved_at_ms: Some(400),
        });
        assert!(
            render(&down, 1000).contains(
                "Last error (rejoin, 1.0 s ago, since resolved 0.6 s ago): the peer did not answer"
            ),
            "{}",
            render(&down, 1000)
        );
        assert!(
            render(&down, 1000).contains("PostgreSQL NOT running (stopped cleanly"),
            "{}",
            render(&down, 1000)
        );
    }

    /// The seed's three samples, line by line (its placeholders left out of the comparison), but
    /// for the closing frame every sample ends with.
    const SEED_NONE: &[&str] = &["========= Processed Params =========", "Warm Standby not yet configured"];
    const SEED_PRIMARY: &[&str] = &[
        "========= Processed Params =========",
        "Current tandem Version: ",
        "Instance looks like Primary",
        "DB replication configured with Standby set to:  10.0.0.2/32",
        "DB replication currently streaming",
        "WAL segments configured: 32",
        "Vault sync configured",
    ];
    const SEED_STANDBY: &[&str] = &[
        "========= Processed Params =========",
        "Current tandem Version: ",
        "Instance looks like Standby",
        "DB replication configured",
        "DB last updated Wednesday ",
        "WAL segments in use: 2",
        "WAL segments configured: 32",
        "rsync configured",
    ];

    /// The text's lines match the seed's sample in order: each seed line (trimmed; one ending
    /// in a space stands for the seed's placeholder) is the next line of the text, from the
    /// top, and the text ends with the seed's closing frame.
    fn assert_seed_lines(text: &str, seed: &[&str]) {
        let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
        for (i, want) in seed.iter().enumerate() {
            let got = lines.get(i).copied().unwrap_or_default();
            let same = if want.ends_with(' ') { got.starts_with(want) } else { got == *want };
            assert!(same, "line {i}: `{want}` expected, `{got}` found in\n{text}");
        }
        assert_eq!(lines.last().copied(), Some("=========  Script Done ========="), "{text}");
    }

    #[test]
    fn the_text_carries_every_line_of_the_seeds_samples_in_order() {
        let none = StandbyStatus { looks_like: "Not configured".into(), healthy: true, ..Default::default() };
        assert_seed_lines(&render(&none, 0), SEED_NONE);
        let vault = |primary: Option<&str>| TreesStatus {
            mode: if primary.is_some() { "following" } else { "serving" }.into(),
            primary: primary.map(str::to_string),
            trees: vec![TreeStatus { tree: "vault".into(), ..Default::default() }],
        };
        let primary = StandbyStatus {
            configured: true,
            role: Some(Role::Primary),
            looks_like: "Primary".into(),
            healthy: true,
            peer: Some(PeerStatus { addr: "10.0.0.2:7420".into(), reachable: true, ..Default::default() }),
            database: DatabaseStatus {
                configured: true,
                running: true,
                streaming: true,
                standby_client: Some("10.0.0.2".into()),
                wal_segments_configured: 32,
                ..Default::default()
            },
            trees: vault(None),
            ..Default::default()
        };
        assert_seed_lines(&render(&primary, 0), SEED_PRIMARY);
        // 2026-11-25 was a Wednesday.
        let standby = StandbyStatus {
            role: Some(Role::Standby),
            looks_like: "Standby".into(),
            healthy: false,
            database: DatabaseStatus {
                last_updated_ms: Some(1_795_572_123_000),
                wal_segments_in_use: Some(2),
                ..primary.database.clone()
            },
            trees: vault(Some("10.0.0.1:7420")),
            ..primary.clone()
        };
        let text = render(&standby, 1_795_572_124_000);
        assert_seed_lines(&text, SEED_STANDBY);
        assert!(!text.contains("Vault sync configured"), "the seed shows it on the primary only:\n{text}");
    }
}
