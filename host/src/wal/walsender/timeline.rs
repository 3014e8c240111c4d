//! Where a historic timeline ends, from the newest timeline's history file, pure: what
//! PostgreSQL's `tliSwitchPoint` answers for START_REPLICATION on an older timeline.
//!
//! A history file lists the newest timeline's ancestors, oldest first, one per line:
//! `parent_tli<TAB>switch_lsn<TAB>reason`; blank lines and `#` comments are skipped. The
//! timeline after an ancestor is the next line's, or the newest timeline for the last line.
//!
//! Must never: panic on a damaged history file (it is an error instead).

use crate::wal::lsn::{Lsn, TimeLineId};

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
    let text = std::str::from_utf8(history).map_err(|_| "the history file is not UTF-8".to_owned())?;
    let mut entries: Vec<(TimeLineId, Lsn)> = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let bad =
            || format!("invalid line in the history file: {:?}", line.chars().take(80).collect::<String>());
        let tli: TimeLineId = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        let switch: Lsn = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        if entries.last().is_some_and(|&(prev, _)| prev >= tli) || tli >= newest {
            return Err("timeline ids in the history file must increase".into());
        }
        entries.push((tli, switch));
    }
    let Some(i) = entries.iter().position(|&(tli, _)| tli == requested) else { return Ok(None) };
    let next_tli = entries.get(i + 1).map_or(newest, |&(tli, _)| tli);
    Ok(Some(TimelineEnd { switch_point: entries[i].1, next_tli }))
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
