//! The archive's durable state file: which timelines it holds, in order, and where each one's
//! durable WAL starts and ends.
//!
//! Written whole (write-then-rename, fsync file and directory) when the set of timelines
//! changes: archive creation, first WAL, timeline switch. Between those, the newest timeline's
//! end moves on disk in its complete segments and its head segment's flush record
//! (`flush_record.rs`); on open, recovery takes the furthest end those prove, never less than
//! the state's. An older timeline's end is the state's. Must never be edited in place or
//! record an end before the WAL up to it is durable.

use std::fmt::Write as _;
use std::fs;
use std::io;

use super::dir::Dir;
use super::error::{ArchiveError, Result};
use crate::wal::lsn::{Lsn, TimeLineId};

/// The state file's name; not a WAL name, so `restore_command` never picks it up.
pub(crate) const STATE_FILE: &str = "tandem-wal-archive.state";
/// Format 2: the flushed LSN lives in the head segment's trailer (`flush_record.rs`).
const MAGIC: &str = "tandem-wal-archive 2";
/// Format 1 kept it in a separate file; its segments lack the trailer recovery reads.
const MAGIC_V1: &str = "tandem-wal-archive 1";

/// The WAL one timeline has in the archive: `start..end`, all of it durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineExtent {
    /// The timeline.
    pub timeline: TimeLineId,
    /// First LSN held (moves up as retention removes segments).
    pub start: Lsn,
    /// End of durable WAL; for the newest timeline, the flushed LSN.
    pub end: Lsn,
}

/// What the state file records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ArchiveState {
    pub(crate) segment_size: u64,
    /// Timelines in the order the archive followed them; the last is the one being written.
    pub(crate) timelines: Vec<TimelineExtent>,
}

impl ArchiveState {
    pub(crate) fn new(segment_size: u64) -> Self {
        ArchiveState { segment_size, timelines: Vec::new() }
    }

    pub(crate) fn current(&self) -> Option<&TimelineExtent> {
        self.timelines.last()
    }

    pub(crate) fn current_mut(&mut self) -> Option<&mut TimelineExtent> {
        self.timelines.last_mut()
    }

    fn encode(&self) -> String {
        let mut text = format!("{MAGIC}\nsegment-size {}\n", self.segment_size);
        for t in &self.timelines {
            let _ = writeln!(text, "timeline {} {} {}", t.timeline, t.start, t.end);
        }
        let sum = fnv1a(text.as_bytes());
        let _ = writeln!(text, "checksum {sum:016x}");
        text
    }

    fn decode(text: &str) -> Result<Self, String> {
        let body_end = text.rfind("checksum ").ok_or("no checksum line")?;
        let (body, tail) = text.split_at(body_end);
        let sum =
            tail.strip_prefix("checksum ").and_then(|s| s.strip_suffix('\n')).ok_or("bad checksum line")?;
        if u64::from_str_radix(sum, 16).ok() != Some(fnv1a(body.as_bytes())) {
            return Err("checksum mismatch".into());
        }
        let mut lines = body.lines();
        let first = lines.next();
        if first == Some(MAGIC_V1) {
            return Err("written by an older tandem (format 1, flush record in its own file); \
                        this version reads format 2 only"
                .into());
        }
        if first != Some(MAGIC) {
            return Err(format!("first line is not {MAGIC:?}"));
        }
        let segment_size = lines
            .next()
            .and_then(|l| l.strip_prefix("segment-size "))
            .and_then(|v| v.parse().ok())
            .ok_or("bad segment-size line")?;
        let mut state = ArchiveState::new(segment_size);
        for line in lines {
            let fields: Vec<&str> = line.split(' ').collect();
            let ["timeline", tli, start, end] = fields[..] else {
                return Err(format!("unexpected line {line:?}"));
            };
            let bad = || format!("bad timeline line {line:?}");
            let extent = TimelineExtent {
                timeline: tli.parse().map_err(|_| bad())?,
                start: start.parse().map_err(|_| bad())?,
                end: end.parse().map_err(|_| bad())?,
            };
            let after_previous = state.current().is_none_or(|p| p.timeline < extent.timeline);
            if extent.timeline == 0 || extent.start > extent.end || !after_previous {
                return Err(bad());
            }
            state.timelines.push(extent);
        }
        Ok(state)
    }
}

/// Reads the state file; `Ok(None)` if there is none.
pub(crate) fn load(dir: &Dir) -> Result<Option<ArchiveState>> {
    let path = dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ArchiveError::io("read", &path)(e)),
    };
    ArchiveState::decode(&text).map(Some).map_err(|reason| ArchiveError::Corrupt {
        dir: dir.path().to_owned(),
        reason: format!("{STATE_FILE}: {reason}"),
    })
}

/// Writes the state file durably (write-then-rename, fsync file and directory).
pub(crate) fn store(dir: &Dir, state: &ArchiveState) -> Result<()> {
    dir.write_atomic(STATE_FILE, state.encode().as_bytes())
}

/// FNV-1a, 64 bit: catches a damaged state file; not a defence against tampering.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ArchiveState {
        ArchiveState {
            segment_size: 16 << 20,
            timelines: vec![
                TimelineExtent { timeline: 1, start: Lsn(0x100_0000), end: Lsn(0x300_0100) },
                TimelineExtent { timeline: 2, start: Lsn(0x300_0000), end: Lsn(0x1_0000_0000) },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let state = sample();
        let text = state.encode();
        assert!(text.contains("timeline 2 0/3000000 1/0\n"), "{text}");
        assert_eq!(ArchiveState::decode(&text), Ok(state));
        let empty = ArchiveState::new(1 << 20);
        assert_eq!(ArchiveState::decode(&empty.encode()), Ok(empty));
    }

    #[test]
    fn damage_is_detected() {
        let text = sample().encode();
        let flipped = text.replacen("0/3000100", "0/3000200", 1);
        assert_eq!(ArchiveState::decode(&flipped), Err("checksum mismatch".into()));
        assert!(ArchiveState::decode(&text[..text.len() - 3]).is_err());
        assert!(ArchiveState::decode("").is_err());
    }

    #[test]
    fn format_1_is_refused_by_name() {
        let text = sample().encode().replacen(MAGIC, MAGIC_V1, 1);
        let body_end = text.rfind("checksum ").unwrap();
        let v1 = format!("{}checksum {:016x}\n", &text[..body_end], fnv1a(&text.as_bytes()[..body_end]));
        assert!(ArchiveState::decode(&v1).unwrap_err().contains("format 1"));
    }

    #[test]
    fn timelines_must_increase_and_be_ordered_ranges() {
        let mut state = sample();
        state.timelines.swap(0, 1);
        assert!(ArchiveState::decode(&state.encode()).is_err());
        let mut state = sample();
        state.timelines[0].start = Lsn(0x400_0000);
        assert!(ArchiveState::decode(&state.encode()).is_err());
    }
}
