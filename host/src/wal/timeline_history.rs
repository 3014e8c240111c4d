//! Timeline history files as PostgreSQL writes them (`00000002.history`): one line per
//! ancestor timeline, `<parent tli>\t<switch point>\t<reason>`, oldest first; `#` comments and
//! blank lines allowed. Parsing only (pure): which timeline a server's history passes through
//! and where each one ended.

use super::lsn::{Lsn, TimeLineId};

/// One ancestor: timeline `timeline` ended at `switch_point` (the next entry's timeline, or the
/// file's own timeline, starts there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    pub timeline: TimeLineId,
    pub switch_point: Lsn,
}

/// A history file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timeline history, line {line}: {why}")]
pub struct HistoryError {
    pub line: usize,
    pub why: String,
}

/// The ancestors listed in `content`, oldest first. Timelines must increase and switch points
/// must not go backwards, as PostgreSQL guarantees.
pub fn parse(content: &[u8]) -> Result<Vec<HistoryEntry>, HistoryError> {
    let text = std::str::from_utf8(content).map_err(|_| HistoryError { line: 0, why: "not UTF-8".into() })?;
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why: String| HistoryError { line: i + 1, why };
        let mut fields = line.split_whitespace();
        let timeline: TimeLineId = fields
            .next()
            .and_then(|f| f.parse().ok())
            .filter(|&t| t > 0)
            .ok_or_else(|| err(format!("no timeline id in {line:?}")))?;
        let switch_point: Lsn = fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| err(format!("no switch point in {line:?}")))?;
        if let Some(prev) = entries.last()
            && (timeline <= prev.timeline || switch_point < prev.switch_point)
        {
            return Err(err("timelines must increase and switch points must not go back".into()));
        }
        entries.push(HistoryEntry { timeline, switch_point });
    }
    Ok(entries)
}

/// Where `timeline` ends in a server's history and which timeline follows it: `None` if the
/// history does not list it (it is the server's current timeline, or not an ancestor).
pub fn successor(
    entries: &[HistoryEntry],
    timeline: TimeLineId,
    current: TimeLineId,
) -> Option<(TimeLineId, Lsn)> {
    let i = entries.iter().position(|e| e.timeline == timeline)?;
    let next = entries.get(i + 1).map_or(current, |e| e.timeline);
    Some((next, entries[i].switch_point))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H3: &[u8] = b"1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-11-24\n";

    #[test]
    fn parses_postgresql_history_and_finds_successors() {
        let e = parse(H3).unwrap();
        assert_eq!(
            e,
            [
                HistoryEntry { timeline: 1, switch_point: "0/3000158".parse().unwrap() },
                HistoryEntry { timeline: 2, switch_point: "0/5000000".parse().unwrap() },
            ]
        );
        assert_eq!(successor(&e, 1, 3), Some((2, "0/3000158".parse().unwrap())));
        assert_eq!(successor(&e, 2, 3), Some((3, "0/5000000".parse().unwrap())));
        assert_eq!(successor(&e, 3, 3), None);
    }

    #[test]
    fn damaged_histories_are_refused_with_the_line() {
        assert_eq!(parse(b"# c\nx\t0/1\n").unwrap_err().line, 2);
        assert!(parse(b"2\t0/5\n1\t0/9\n").is_err());
        assert!(parse(b"1\tnope\n").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
    }
}
