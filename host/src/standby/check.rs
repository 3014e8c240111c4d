//! `tandem standby check`: the pair's status judged in the Nagios convention (see
//! [`crate::nagios`]) for monitoring: CRITICAL when the database is down, a primary is in
//! recovery, the peer took over, or the WAL archive's disk is full; WARNING when the peer does
//! not answer, replication does not stream, the lag is past a limit, a tree cannot sync, or a
//! step failed and has not worked since.
//!
//! Must never: answer OK for a pair that cannot fail over as it should.

use crate::nagios::{Level, Verdict};

use super::pairing::Role;
use super::status::StandbyStatus;

/// Lag limits, in bytes of WAL not yet replayed on the standby (or not yet durable on the
/// standby side, seen from the primary).
#[derive(Debug, Clone, Copy)]
pub struct LagLimits {
    pub warning: u64,
    pub critical: u64,
}

impl Default for LagLimits {
    fn default() -> Self {
        // A segment behind warns; a gigabyte is a standby that could not take over in time.
        LagLimits { warning: 16 << 20, critical: 1 << 30 }
    }
}

/// Judges `st`.
pub fn check(st: &StandbyStatus, lag: LagLimits) -> Verdict {
    let Some(role) = st.role else {
        return Verdict::new("warm standby not configured on this host");
    };
    let db = &st.database;
    let mut v = Verdict::new(match (role, db.configured) {
        (Role::Primary, true) => {
            format!("primary, streaming to its standby, lag {} bytes", db.lag_bytes.unwrap_or(0))
        }
        (Role::Standby, true) => format!("standby, streaming, lag {} bytes", db.lag_bytes.unwrap_or(0)),
        (Role::Primary, false) => "primary of a files-only pair, peer answering".into(),
        (Role::Standby, false) => "standby of a files-only pair, following".into(),
    });
    if let Some(why) = &st.superseded {
        v.add(Level::Critical, why.clone());
    }
    if db.configured && !db.running {
        v.add(Level::Critical, "PostgreSQL is not running");
    }
    if role == Role::Primary && st.superseded.is_none() && db.in_recovery == Some(true) {
        v.add(Level::Critical, "the primary's database is in recovery: it takes no writes");
    }
    if st.wal.as_ref().is_some_and(|w| w.archive_disk_full) {
        v.add(Level::Critical, "the WAL archive's disk is full: tandem takes no WAL");
    }
    if !st.peer.as_ref().is_some_and(|p| p.reachable) {
        let addr = st.peer.as_ref().map_or("?", |p| p.addr.as_str());
        v.add(Level::Warning, format!("the peer at {addr} does not answer"));
    }
    if db.configured && db.running && !db.streaming && st.superseded.is_none() {
        v.add(Level::Warning, "database replication is not streaming");
    }
    match db.lag_bytes {
        Some(l) if l > lag.critical => {
            v.add(Level::Critical, format!("lag {l} bytes (critical over {})", lag.critical))
        }
        Some(l) if l > lag.warning => {
            v.add(Level::Warning, format!("lag {l} bytes (warning over {})", lag.warning))
        }
        _ => {}
    }
    for tree in &st.trees.trees {
        if let Some(e) = &tree.last_error {
            v.add(Level::Warning, format!("tree {}: {e}", tree.tree));
        }
        if tree.unreadable > 0 {
            v.add(
                Level::Warning,
                format!("tree {}: {} paths unreadable on the primary", tree.tree, tree.unreadable),
            );
        }
    }
    if let Some(e) = st.last_error.as_ref().filter(|e| e.resolved_at_ms.is_none()) {
        v.add(Level::Warning, format!("{} failed: {}", e.what, e.error));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standby::status::PeerStatus;

    fn streaming_primary() -> StandbyStatus {
        let mut st = StandbyStatus { role: Some(Role::Primary), ..Default::default() };
        st.peer = Some(PeerStatus { addr: "10.0.0.2:7420".into(), reachable: true, ..Default::default() });
        st.database.configured = true;
        st.database.running = true;
        st.database.in_recovery = Some(false);
        st.database.streaming = true;
        st.database.lag_bytes = Some(100);
        st
    }

    #[test]
    fn a_pair_that_could_not_fail_over_is_never_ok() {
        let v = check(&streaming_primary(), LagLimits::default());
        assert_eq!(v.line(), "OK: primary, streaming to its standby, lag 100 bytes");

        let mut down = streaming_primary();
        down.database.running = false;
        down.database.streaming = false;
        assert_eq!(check(&down, LagLimits::default()).line(), "CRITICAL: PostgreSQL is not running");

        let mut behind = streaming_primary();
        behind.database.lag_bytes = Some(2 << 20);
        let v = check(&behind, LagLimits { warning: 1 << 20, critical: 4 << 20 });
        assert_eq!(
            (v.level(), v.line()),
            (Level::Warning, "WARNING: lag 2097152 bytes (warning over 1048576)".into())
        );
        let v = check(&behind, LagLimits { warning: 1024, critical: 1 << 20 });
        assert_eq!(v.level(), Level::Critical);

        let mut old = streaming_primary();
        old.superseded = Some("b took over as primary (epoch 2)".into());
        old.database.in_recovery = Some(true);
        old.database.streaming = false;
        assert_eq!(check(&old, LagLimits::default()).line(), "CRITICAL: b took over as primary (epoch 2)");
    }
}
