//! Crash recovery on open: reconciles the directory with the durable state (the state file's
//! timelines, the newest one ending at the flush record's LSN), which alone says what is
//! durable.
//!
//! `plan` is pure: from the state and the listing it decides which `.partial` segments are in
//! fact complete (crash between the flush record write and the rename), which bytes past the flushed
//! LSN to zero, which files hold nothing durable and go, and where each timeline's WAL now
//! starts. `apply` carries the plan out. Must never trust a byte past the recorded end, and
//! never delete a complete segment: one past the durable end means the state is not this
//! directory's, and opening fails instead.

use std::fs::OpenOptions;

use super::dir::{Dir, zero_range};
use super::error::{ArchiveError, Result};
use super::listing::{Listing, SegState};
use super::state::{ArchiveState, TimelineExtent};
use crate::wal::lsn::{SegNo, TimeLineId, WalSegmentSize};

/// One repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fix {
    /// A full `.partial` segment whose end is durable: give it its final name.
    Complete { timeline: TimeLineId, segno: SegNo },
    /// The segment being written: zero everything from `from` (the flushed offset) on.
    ZeroTail { timeline: TimeLineId, segno: SegNo, from: u64 },
    /// A segment holding nothing durable.
    RemoveSegment { timeline: TimeLineId, segno: SegNo },
    /// A left-over temp file.
    RemoveTemp(String),
}

/// What `plan` decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) fixes: Vec<Fix>,
    /// The state's timelines with `start` moved up to the oldest segment still there.
    pub(crate) timelines: Vec<TimelineExtent>,
    /// Segments of timelines the state does not know but that are older than its newest
    /// (not ours to judge): left alone and not tracked.
    pub(crate) foreign: Vec<(TimeLineId, SegNo)>,
}

/// Decides the repairs; `Err` carries why the directory cannot be this state's.
pub(crate) fn plan(state: &ArchiveState, listing: &Listing, seg: WalSegmentSize) -> Result<Plan, String> {
    let mut plan = Plan { fixes: Vec::new(), timelines: Vec::new(), foreign: Vec::new() };
    let newest = state.current().map(|t| t.timeline);
    for &(timeline, segno) in listing.segments.keys() {
        if state.timelines.iter().any(|t| t.timeline == timeline) {
            continue;
        }
        if newest.is_none_or(|n| timeline > n) {
            // Created by a timeline switch (or the first append) that never reached the state.
            plan.fixes.push(Fix::RemoveSegment { timeline, segno });
        } else {
            plan.foreign.push((timeline, segno));
        }
    }
    for (i, extent) in state.timelines.iter().enumerate() {
        let current = i + 1 == state.timelines.len();
        plan.timelines.push(plan_timeline(extent, current, listing, seg, &mut plan.fixes)?);
    }
    plan.fixes.extend(listing.temp.iter().cloned().map(Fix::RemoveTemp));
    Ok(plan)
}

fn plan_timeline(
    extent: &TimelineExtent,
    current: bool,
    listing: &Listing,
    seg: WalSegmentSize,
    fixes: &mut Vec<Fix>,
) -> Result<TimelineExtent, String> {
    let TimelineExtent { timeline, start, end } = *extent;
    let head = seg.segno(end);
    // Durable bytes in the segment holding `end` (none if the timeline has not reached it).
    let head_has_data = seg.offset(end) > 0 && start < end;
    let mut oldest = None;
    for (segno, state) in listing.of_timeline(timeline) {
        let name = seg.file_name(timeline, segno);
        match (segno.cmp(&head), state) {
            (std::cmp::Ordering::Less, SegState::Partial) => fixes.push(Fix::Complete { timeline, segno }),
            (std::cmp::Ordering::Less, SegState::Complete) => {}
            (_, SegState::Complete) => {
                return Err(format!("complete segment {name} reaches past the durable end {end}"));
            }
            (std::cmp::Ordering::Equal, SegState::Partial) if current => {
                fixes.push(Fix::ZeroTail { timeline, segno, from: seg.offset(end) });
            }
            (std::cmp::Ordering::Equal, SegState::Partial) if head_has_data => {}
            (_, SegState::Partial) => {
                fixes.push(Fix::RemoveSegment { timeline, segno });
                continue;
            }
        }
        oldest.get_or_insert(segno);
    }
    let Some(oldest) = oldest else {
        if current && head_has_data {
            return Err(format!(
                "segment {} holding the flushed end {end} is missing",
                seg.file_name(timeline, head)
            ));
        }
        // Everything this timeline had was removed by retention.
        return Ok(TimelineExtent { timeline, start: end, end });
    };
    let start = start.max(seg.start(oldest));
    if start < end {
        let last = if head_has_data { head } else { head - 1 };
        if let Some(missing) =
            (seg.segno(start)..=last).find(|s| !listing.segments.contains_key(&(timeline, *s)))
        {
            return Err(format!("segment {} is missing", seg.file_name(timeline, missing)));
        }
    }
    Ok(TimelineExtent { timeline, start, end })
}

/// Carries out `plan`, keeping `listing` in step; syncs the directory if anything changed.
pub(crate) fn apply(dir: &Dir, plan: &Plan, listing: &mut Listing, seg: WalSegmentSize) -> Result<()> {
    for fix in &plan.fixes {
        tracing::info!(?fix, dir = %dir.path().display(), "WAL archive recovery");
        match *fix {
            Fix::Complete { timeline, segno } => {
                dir.rename(&seg.partial_name(timeline, segno), &seg.file_name(timeline, segno))?;
                listing.segments.insert((timeline, segno), SegState::Complete);
            }
            Fix::ZeroTail { timeline, segno, from } => {
                let path = dir.join(&seg.partial_name(timeline, segno));
                let file =
                    OpenOptions::new().write(true).open(&path).map_err(ArchiveError::io("open", &path))?;
                let len = file.metadata().map_err(ArchiveError::io("stat", &path))?.len();
                zero_range(&file, &path, from, len.min(seg.bytes()))?;
                // A crash during preallocation leaves a short file; extending it adds zeros.
                file.set_len(seg.bytes()).map_err(ArchiveError::io("resize", &path))?;
                dir.durability().sync_all(&file).map_err(ArchiveError::io("fsync", &path))?;
            }
            Fix::RemoveSegment { timeline, segno } => {
                let state = listing.segments.remove(&(timeline, segno));
                let name = match state {
                    Some(SegState::Complete) => seg.file_name(timeline, segno),
                    _ => seg.partial_name(timeline, segno),
                };
                dir.remove(&name)?;
            }
            Fix::RemoveTemp(ref name) => dir.remove(name)?,
        }
    }
    for key in &plan.foreign {
        tracing::warn!(
            file = seg.file_name(key.0, key.1),
            "segment of a timeline the archive did not follow; left alone"
        );
        listing.segments.remove(key);
    }
    listing.temp.clear();
    if !plan.fixes.is_empty() {
        dir.sync()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::lsn::Lsn;

    const MIB: u64 = 1 << 20;

    fn seg() -> WalSegmentSize {
        WalSegmentSize::new(MIB).unwrap()
    }

    fn listing(files: &[(TimeLineId, SegNo, SegState)]) -> Listing {
        let mut l = Listing::default();
        for &(t, s, st) in files {
            l.segments.insert((t, s), st);
        }
        l
    }

    fn state(extents: &[(TimeLineId, u64, u64)]) -> ArchiveState {
        let mut s = ArchiveState::new(MIB);
        for &(timeline, start, end) in extents {
            s.timelines.push(TimelineExtent { timeline, start: Lsn(start), end: Lsn(end) });
        }
        s
    }

    use SegState::{Complete as C, Partial as P};

    #[test]
    fn head_tail_is_zeroed_and_later_partials_removed() {
        let st = state(&[(1, 0, 2 * MIB + 100)]);
        let l = listing(&[(1, 0, C), (1, 1, C), (1, 2, P), (1, 3, P)]);
        let plan = plan(&st, &l, seg()).unwrap();
        assert_eq!(
            plan.fixes,
            vec![
                Fix::ZeroTail { timeline: 1, segno: 2, from: 100 },
                Fix::RemoveSegment { timeline: 1, segno: 3 }
            ]
        );
        assert_eq!(plan.timelines, st.timelines);
    }

    #[test]
    fn full_partial_behind_the_durable_end_is_completed() {
        // Crash after the flush record held the segment's end, before the rename.
        let st = state(&[(1, 0, 2 * MIB)]);
        let plan = plan(&st, &listing(&[(1, 0, C), (1, 1, P)]), seg()).unwrap();
        assert_eq!(plan.fixes, vec![Fix::Complete { timeline: 1, segno: 1 }]);
    }

    #[test]
    fn complete_segment_past_the_end_is_refused() {
        let st = state(&[(1, 0, MIB + 5)]);
        assert!(plan(&st, &listing(&[(1, 0, C), (1, 1, C)]), seg()).is_err());
    }

    #[test]
    fn missing_segments_are_refused() {
        let st = state(&[(1, 0, 3 * MIB + 1)]);
        assert!(plan(&st, &listing(&[(1, 0, C), (1, 2, C), (1, 3, P)]), seg()).is_err());
        assert!(plan(&st, &listing(&[(1, 0, C), (1, 1, C), (1, 2, C)]), seg()).is_err());
    }

    #[test]
    fn retention_moves_start_up() {
        let st = state(&[(1, 100, 3 * MIB + 1)]);
        let plan = plan(&st, &listing(&[(1, 2, C), (1, 3, P)]), seg()).unwrap();
        assert_eq!(plan.timelines[0].start, Lsn(2 * MIB));
    }

    #[test]
    fn unrecorded_newer_timeline_is_removed_older_unknown_left_alone() {
        let st = state(&[(2, MIB, MIB + 10)]);
        let l = listing(&[(1, 0, C), (2, 1, P), (3, 1, P)]);
        let plan = plan(&st, &l, seg()).unwrap();
        assert_eq!(plan.foreign, vec![(1, 0)]);
        assert!(plan.fixes.contains(&Fix::RemoveSegment { timeline: 3, segno: 1 }));
    }

    #[test]
    fn old_timeline_keeps_its_partial() {
        let st = state(&[(1, 0, MIB + 10), (2, MIB, MIB + 5)]);
        let l = listing(&[(1, 0, C), (1, 1, P), (2, 1, P)]);
        let plan = plan(&st, &l, seg()).unwrap();
        assert_eq!(plan.fixes, vec![Fix::ZeroTail { timeline: 2, segno: 1, from: 5 }]);
    }

    #[test]
    fn timeline_begun_mid_segment_without_wal_needs_no_file() {
        // Regression: the first (empty) append at an unaligned LSN made the archive unopenable.
        let st = state(&[(1, 1, 1)]);
        let plan = plan(&st, &listing(&[]), seg()).unwrap();
        assert_eq!(plan.timelines, st.timelines);
    }

    #[test]
    fn fresh_state_with_stray_files_removes_them() {
        let plan = plan(&state(&[]), &listing(&[(1, 0, P)]), seg()).unwrap();
        assert_eq!(plan.fixes, vec![Fix::RemoveSegment { timeline: 1, segno: 0 }]);
    }
}
