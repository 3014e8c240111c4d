//! Crash recovery on open: reconciles the directory with what is durable. The state file
//! holds the timelines; an older timeline ends where the state says, the newest one where its
//! files prove: its complete segments, then a `.partial` of exactly the segment size (a
//! completion cut between truncate and rename), then the head `.partial`'s newest proven flush
//! record (`flush_record.rs`), or where that segment's durable WAL began.
//!
//! `probe` reads the newest timeline's `.partial` files (sizes, trailers, checksummed WAL).
//! `plan` is pure: from the state, the listing and the probes it decides which `.partial`
//! segments are in fact complete, which bytes past the flushed LSN to zero (and which
//! untrusted record slot with them), which files hold nothing durable and go (a head segment
//! with no durable WAL among them: removing it needs no disk space, so an archive whose disk
//! filled up reopens before space returns), and where each
//! timeline's WAL now starts and ends. `apply` carries the plan out. Must never trust a byte
//! past a proven end, nor call a `.partial` complete unless it is proven flushed to its end;
//! and never delete a complete segment: one that does not fit means the state is not this
//! directory's, and opening fails instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;

use super::dir::{Dir, zero_range};
use super::error::{ArchiveError, Result};
use super::flush_record::{self, TRAILER_LEN};
use super::listing::{Listing, SegState};
use super::state::{ArchiveState, TimelineExtent};
use crate::wal::lsn::{Lsn, SegNo, TimeLineId, WalSegmentSize};

/// What a `.partial` of the newest timeline says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Exactly the segment size: only a completion's truncate makes that, after the segment
    /// was flushed to its end.
    Truncated,
    /// Full length with a trailer: the flush record recovery trusts, if any (its end, its slot).
    Trailer(Option<(Lsn, usize)>),
    /// Any other length: its creation was cut short; nothing in it is durable.
    Short,
}

/// One repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fix {
    /// A `.partial` segment durable to its end: drop any trailer, fsync, give it its final name.
    Complete { timeline: TimeLineId, segno: SegNo },
    /// The segment being written: zero everything from `from` (the flushed offset) to the
    /// segment's end, and every record slot but `keep`; full length again.
    ZeroTail { timeline: TimeLineId, segno: SegNo, from: u64, keep: Option<usize> },
    /// A segment holding nothing durable.
    RemoveSegment { timeline: TimeLineId, segno: SegNo },
    /// A left-over temp file.
    RemoveTemp(String),
}

/// What `plan` decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) fixes: Vec<Fix>,
    /// The state's timelines with `start` moved up to the oldest segment still there and the
    /// newest one's `end` at its proven durable end.
    pub(crate) timelines: Vec<TimelineExtent>,
    /// Segments of timelines the state does not know but that are older than its newest
    /// (not ours to judge): left alone and not tracked.
    pub(crate) foreign: Vec<(TimeLineId, SegNo)>,
}

/// Probes every `.partial` of the state's newest timeline.
pub(crate) fn probe(
    dir: &Dir,
    state: &ArchiveState,
    listing: &Listing,
    seg: WalSegmentSize,
) -> Result<BTreeMap<SegNo, Probe>> {
    let mut probes = BTreeMap::new();
    let Some(timeline) = state.current().map(|c| c.timeline) else { return Ok(probes) };
    for (segno, st) in listing.of_timeline(timeline) {
        if st != SegState::Partial {
            continue;
        }
        let path = dir.join(&seg.partial_name(timeline, segno));
        let file = OpenOptions::new().read(true).open(&path).map_err(ArchiveError::io("open", &path))?;
        let len = file.metadata().map_err(ArchiveError::io("stat", &path))?.len();
        let probe = if len == seg.bytes() {
            Probe::Truncated
        } else if len == seg.bytes() + TRAILER_LEN {
            let proven =
                flush_record::prove(&file, seg, timeline, segno).map_err(ArchiveError::io("read", &path))?;
            Probe::Trailer(proven.map(|p| (p.record.lsn, p.slot)))
        } else {
            Probe::Short
        };
        probes.insert(segno, probe);
    }
    Ok(probes)
}

/// Decides the repairs; `Err` carries why the directory cannot be this state's.
pub(crate) fn plan(
    state: &ArchiveState,
    listing: &Listing,
    probes: &BTreeMap<SegNo, Probe>,
    seg: WalSegmentSize,
) -> Result<Plan, String> {
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
        let current = (i + 1 == state.timelines.len()).then_some(probes);
        plan.timelines.push(plan_timeline(extent, current, listing, seg, &mut plan.fixes)?);
    }
    plan.fixes.extend(listing.temp.iter().cloned().map(Fix::RemoveTemp));
    Ok(plan)
}

/// Where the newest timeline's durable WAL ends: past its complete segments and the state's
/// end, through `.partial` segments proven flushed to their end, to the head's proven record.
/// Returns the end, the `.partial` segments proven complete, and the head's trusted slot.
fn proven_end(
    timeline: TimeLineId,
    state_end: Lsn,
    listing: &Listing,
    probes: &BTreeMap<SegNo, Probe>,
    seg: WalSegmentSize,
) -> (Lsn, BTreeSet<SegNo>, Option<usize>) {
    let complete_end = listing
        .of_timeline(timeline)
        .filter(|&(_, st)| st == SegState::Complete)
        .last()
        .map(|(segno, _)| seg.end(segno));
    let mut end = complete_end.map_or(state_end, |c| c.max(state_end));
    let mut proven = BTreeSet::new();
    loop {
        let segno = seg.segno(end);
        if listing.segments.get(&(timeline, segno)) != Some(&SegState::Partial) {
            return (end, proven, None);
        }
        match probes.get(&segno) {
            Some(Probe::Truncated) => {}
            Some(&Probe::Trailer(Some((lsn, _)))) if lsn == seg.end(segno) => {}
            Some(&Probe::Trailer(Some((lsn, slot)))) => return (end.max(lsn), proven, Some(slot)),
            _ => return (end, proven, None),
        }
        proven.insert(segno);
        end = seg.end(segno);
    }
}

fn plan_timeline(
    extent: &TimelineExtent,
    current: Option<&BTreeMap<SegNo, Probe>>,
    listing: &Listing,
    seg: WalSegmentSize,
    fixes: &mut Vec<Fix>,
) -> Result<TimelineExtent, String> {
    let TimelineExtent { timeline, start, end: state_end } = *extent;
    let (end, proven, keep) = match current {
        Some(probes) => proven_end(timeline, state_end, listing, probes, seg),
        None => (state_end, BTreeSet::new(), None),
    };
    let head = seg.segno(end);
    // Durable bytes in the segment holding `end` (none if the timeline has not reached it).
    let head_has_data = seg.offset(end) > 0 && start < end;
    let mut oldest = None;
    for (segno, state) in listing.of_timeline(timeline) {
        let name = seg.file_name(timeline, segno);
        match (segno.cmp(&head), state) {
            // A `.partial` below the end is complete if the state's end or its own file says so.
            (std::cmp::Ordering::Less, SegState::Partial)
                if seg.end(segno) <= state_end || proven.contains(&segno) =>
            {
                fixes.push(Fix::Complete { timeline, segno })
            }
            (std::cmp::Ordering::Less, SegState::Partial) => {
                return Err(format!(
                    "partial segment {name} lies before the durable end {end} but is not proven complete"
                ));
            }
            (std::cmp::Ordering::Less, SegState::Complete) => {}
            (_, SegState::Complete) => {
                return Err(format!("complete segment {name} reaches past the durable end {end}"));
            }
            (std::cmp::Ordering::Equal, SegState::Partial) if current.is_some() && head_has_data => {
                fixes.push(Fix::ZeroTail { timeline, segno, from: seg.offset(end), keep });
            }
            (std::cmp::Ordering::Equal, SegState::Partial) if head_has_data => {}
            // A head holding nothing durable (its creation or first write cut short, by a crash
            // or a full disk) goes rather than being zero-filled again: that needs no space, and
            // the next append creates it afresh.
            (_, SegState::Partial) => {
                fixes.push(Fix::RemoveSegment { timeline, segno });
                continue;
            }
        }
        oldest.get_or_insert(segno);
    }
    let Some(oldest) = oldest else {
        if current.is_some() && head_has_data {
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
                let name = seg.partial_name(timeline, segno);
                let path = dir.join(&name);
                let file =
                    OpenOptions::new().write(true).open(&path).map_err(ArchiveError::io("open", &path))?;
                // Exactly the segment size before the name says complete, and durably so: a
                // truncate cut off by the crash may not have reached the disk.
                file.set_len(seg.bytes()).map_err(ArchiveError::io("truncate", &path))?;
                dir.durability().sync_all(&file).map_err(ArchiveError::io("fsync", &path))?;
                drop(file);
                dir.rename(&name, &seg.file_name(timeline, segno))?;
                listing.segments.insert((timeline, segno), SegState::Complete);
            }
            Fix::ZeroTail { timeline, segno, from, keep } => {
                let path = dir.join(&seg.partial_name(timeline, segno));
                let file =
                    OpenOptions::new().write(true).open(&path).map_err(ArchiveError::io("open", &path))?;
                let len = file.metadata().map_err(ArchiveError::io("stat", &path))?.len();
                zero_range(&file, &path, from, len.min(seg.bytes()))?;
                // A crash during preallocation leaves a short file; extending it adds zeros.
                file.set_len(seg.bytes() + TRAILER_LEN).map_err(ArchiveError::io("resize", &path))?;
                for slot in (0..2).filter(|&s| Some(s) != keep) {
                    let at = flush_record::slot_offset(seg, slot);
                    zero_range(&file, &path, at, at + TRAILER_LEN / 2)?;
                }
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

    fn probes(p: &[(SegNo, Probe)]) -> BTreeMap<SegNo, Probe> {
        p.iter().copied().collect()
    }

    fn plan_without_probes(st: &ArchiveState, l: &Listing) -> Result<Plan, String> {
        plan(st, l, &BTreeMap::new(), seg())
    }

    use SegState::{Complete as C, Partial as P};

    #[test]
    fn head_tail_is_zeroed_and_later_partials_removed() {
        let st = state(&[(1, 0, 0)]);
        let l = listing(&[(1, 0, C), (1, 1, C), (1, 2, P), (1, 3, P)]);
        let pr = probes(&[(2, Probe::Trailer(Some((Lsn(2 * MIB + 100), 1)))), (3, Probe::Trailer(None))]);
        let plan = plan(&st, &l, &pr, seg()).unwrap();
        assert_eq!(
            plan.fixes,
            vec![
                Fix::ZeroTail { timeline: 1, segno: 2, from: 100, keep: Some(1) },
                Fix::RemoveSegment { timeline: 1, segno: 3 }
            ]
        );
        assert_eq!(plan.timelines, state(&[(1, 0, 2 * MIB + 100)]).timelines);
    }

    #[test]
    fn head_without_a_proven_record_is_durable_to_where_it_began() {
        // Complete segments end at 2 MiB; the head's record (if any) proved nothing.
        let st = state(&[(1, 0, 0)]);
        let l = listing(&[(1, 0, C), (1, 1, C), (1, 2, P)]);
        // Nothing durable in it: removed (no zero-fill, which a full disk could not take).
        for p in [Probe::Trailer(None), Probe::Short] {
            let plan = plan(&st, &l, &probes(&[(2, p)]), seg()).unwrap();
            assert_eq!(plan.fixes, vec![Fix::RemoveSegment { timeline: 1, segno: 2 }]);
            assert_eq!(plan.timelines[0], TimelineExtent { timeline: 1, start: Lsn(0), end: Lsn(2 * MIB) });
        }
        // A timeline begun mid-segment: its start, from the state.
        let st = state(&[(1, MIB + 77, MIB + 77)]);
        let plan = plan(&st, &listing(&[(1, 1, P)]), &probes(&[(1, Probe::Trailer(None))]), seg()).unwrap();
        assert_eq!(plan.fixes, vec![Fix::RemoveSegment { timeline: 1, segno: 1 }]);
        assert_eq!(plan.timelines[0].end, Lsn(MIB + 77));
        // With durable WAL before the unproven record: zeroed from there.
        let st = state(&[(1, MIB + 77, MIB + 99)]);
        let zeroed = super::plan(&st, &listing(&[(1, 1, P)]), &probes(&[(1, Probe::Trailer(None))]), seg());
        assert_eq!(
            zeroed.unwrap().fixes,
            vec![Fix::ZeroTail { timeline: 1, segno: 1, from: 99, keep: None }]
        );
    }

    #[test]
    fn full_partial_behind_the_durable_end_is_completed() {
        // The state's end covers it (as the old flush record file did).
        let st = state(&[(1, 0, 2 * MIB)]);
        let plan = plan_without_probes(&st, &listing(&[(1, 0, C), (1, 1, P)])).unwrap();
        assert_eq!(plan.fixes, vec![Fix::Complete { timeline: 1, segno: 1 }]);
    }

    #[test]
    fn partial_proven_flushed_to_its_end_is_completed() {
        // Crash after the flush recorded the segment's end, before the truncate (trailer still
        // there) or after it (exactly the segment size), before the rename.
        let st = state(&[(1, 0, 0)]);
        let l = listing(&[(1, 0, C), (1, 1, P)]);
        for p in [Probe::Trailer(Some((Lsn(2 * MIB), 0))), Probe::Truncated] {
            let plan = plan(&st, &l, &probes(&[(1, p)]), seg()).unwrap();
            assert_eq!(plan.fixes, vec![Fix::Complete { timeline: 1, segno: 1 }], "{p:?}");
            assert_eq!(plan.timelines[0].end, Lsn(2 * MIB));
        }
        // Proven full, and the next segment already begun.
        let l = listing(&[(1, 0, C), (1, 1, P), (1, 2, P)]);
        let pr = probes(&[(1, Probe::Truncated), (2, Probe::Trailer(Some((Lsn(2 * MIB + 5), 1))))]);
        let plan = plan(&st, &l, &pr, seg()).unwrap();
        assert_eq!(
            plan.fixes,
            vec![
                Fix::Complete { timeline: 1, segno: 1 },
                Fix::ZeroTail { timeline: 1, segno: 2, from: 5, keep: Some(1) }
            ]
        );
    }

    #[test]
    fn partial_not_proven_full_before_a_complete_segment_is_refused() {
        let st = state(&[(1, 0, 0)]);
        let l = listing(&[(1, 0, P), (1, 1, C)]);
        let pr = probes(&[(0, Probe::Trailer(Some((Lsn(MIB / 2), 0))))]);
        assert!(plan(&st, &l, &pr, seg()).is_err());
    }

    #[test]
    fn complete_segment_past_the_end_of_an_old_timeline_is_refused() {
        // An old timeline's end is the state's: nothing of it may lie past that.
        let st = state(&[(1, 0, MIB + 5), (2, MIB + 5, MIB + 5)]);
        assert!(plan_without_probes(&st, &listing(&[(1, 0, C), (1, 1, C)])).is_err());
    }

    #[test]
    fn complete_segments_extend_the_newest_timeline_past_the_state() {
        // The state holds the newest timeline's start; its complete segments are durable.
        let st = state(&[(1, MIB + 5, MIB + 5)]);
        let plan = plan_without_probes(&st, &listing(&[(1, 1, C), (1, 2, C)])).unwrap();
        assert_eq!(plan.timelines[0].end, Lsn(3 * MIB));
        assert!(plan.fixes.is_empty());
    }

    #[test]
    fn missing_segments_are_refused() {
        let st = state(&[(1, 0, 3 * MIB + 1)]);
        assert!(plan_without_probes(&st, &listing(&[(1, 0, C), (1, 2, C), (1, 3, P)])).is_err());
        assert!(plan_without_probes(&st, &listing(&[(1, 0, C), (1, 1, C), (1, 2, C)])).is_err());
    }

    #[test]
    fn retention_moves_start_up() {
        let st = state(&[(1, 100, 3 * MIB + 1)]);
        let plan = plan_without_probes(&st, &listing(&[(1, 2, C), (1, 3, P)])).unwrap();
        assert_eq!(plan.timelines[0].start, Lsn(2 * MIB));
    }

    #[test]
    fn unrecorded_newer_timeline_is_removed_older_unknown_left_alone() {
        let st = state(&[(2, MIB, MIB + 10)]);
        let l = listing(&[(1, 0, C), (2, 1, P), (3, 1, P)]);
        let plan = plan_without_probes(&st, &l).unwrap();
        assert_eq!(plan.foreign, vec![(1, 0)]);
        assert!(plan.fixes.contains(&Fix::RemoveSegment { timeline: 3, segno: 1 }));
    }

    #[test]
    fn old_timeline_keeps_its_partial() {
        let st = state(&[(1, 0, MIB + 10), (2, MIB, MIB + 5)]);
        let l = listing(&[(1, 0, C), (1, 1, P), (2, 1, P)]);
        let plan = plan_without_probes(&st, &l).unwrap();
        assert_eq!(plan.fixes, vec![Fix::ZeroTail { timeline: 2, segno: 1, from: 5, keep: None }]);
    }

    #[test]
    fn timeline_begun_mid_segment_without_wal_needs_no_file() {
        // Regression: the first (empty) append at an unaligned LSN made the archive unopenable.
        let st = state(&[(1, 1, 1)]);
        let plan = plan_without_probes(&st, &listing(&[])).unwrap();
        assert_eq!(plan.timelines, st.timelines);
    }

    #[test]
    fn fresh_state_with_stray_files_removes_them() {
        let plan = plan_without_probes(&state(&[]), &listing(&[(1, 0, P)])).unwrap();
        assert_eq!(plan.fixes, vec![Fix::RemoveSegment { timeline: 1, segno: 0 }]);
    }
}
