//! Where a historic timeline ends, from the newest timeline's history file, pure: what
//! PostgreSQL's `tliSwitchPoint` answers for START_REPLICATION on an older timeline. The file
//! is parsed by [`crate::wal::timeline_history`]; this adds only the walsender's own check
//! that every listed ancestor is older than the newest timeline.
//!
//! Must never: panic on a damaged history file (it is an error instead).

use crate::wal::lsn::{Lsn, TimeLineId};
use crate::wal::timeline_history::{parse, successor};

/// The end of a historic timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineEnd {
    /// The requested timeline's WAL ends here (the switch point).
    pub switch_point: Lsn,
    /// The timeline that follows it.
    pub next_tli: TimeLineId,
}

/// Finds where `requested` ends in the history of `newest` (`history`: its file's content).
/// `Ok(None)` if `requested` is not an ancestor of `newest`; `Err` if the file is damaged.
pub fn timeline_end(
    history: &[u8],
    newest: TimeLineId,
    requested: TimeLineId,
) -> Result<Option<TimelineEnd>, String> {
    let entries = parse(history).map_err(|e| e.to_string())?;
    if entries.last().is_some_and(|e| e.timeline >= newest) {
        return Err("timeline ids in the history file must increase".into());
    }
    Ok(successor(&entries, requested, newest)
        .map(|(next_tli, switch_point)| TimelineEnd { switch_point, next_tli }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HISTORY_3: &[u8] =
        b"1\t0/3000148\tno recovery target specified\n\n# c\n2\t0/5000000\tbefore 2000-01-01\n";

    #[test]
    fn ancestors_end_at_their_switch_point() {
        assert_eq!(
            timeline_end(HISTORY_3, 3, 1).unwrap(),
            Some(TimelineEnd { switch_point: Lsn(0x300_0148), next_tli: 2 })
        );
        assert_eq!(
            timeline_end(HISTORY_3, 3, 2).unwrap(),
            Some(TimelineEnd { switch_point: Lsn(0x500_0000), next_tli: 3 })
        );
        assert_eq!(timeline_end(HISTORY_3, 3, 4).unwrap(), None);
        assert_eq!(timeline_end(b"", 1, 1).unwrap(), None);
    }

    #[test]
    fn damaged_files_are_errors() {
        for bad in [&b"x\t0/1\n"[..], b"1\tzz\n", b"2\t0/1\n1\t0/2\n", b"\xff", b"3\t0/1\n"] {
            assert!(timeline_end(bad, 3, 1).is_err(), "{bad:?}");
        }
    }
}
