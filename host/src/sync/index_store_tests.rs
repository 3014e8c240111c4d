//! Tests of the index's base and change log: round trips, torn tails, a log of another base,
//! compaction, and a property test that a crash anywhere in the log leaves a prefix of the
//! changes.

use proptest::prelude::*;

use super::*;
use crate::sync::entry::{Entry, EntryKind};
use crate::sync::names::RelName;

fn file(path: &str, n: u64) -> Entry {
    let hash = Some(*blake3::hash(&n.to_le_bytes()).as_bytes());
    Entry {
        hash,
        ..Entry::new(RelName::new(path.as_bytes()).unwrap(), EntryKind::File, n, i128::from(n) * 1_000, 0o644)
    }
}

fn dir(path: &str) -> Entry {
    Entry { kind: EntryKind::Dir, size: 0, hash: None, ..file(path, 0) }
}

fn name(p: &str) -> RelName {
    RelName::new(p.as_bytes()).unwrap()
}

fn entries(index: &Index) -> Vec<Entry> {
    index.iter().cloned().collect()
}

/// Applies `changes` to `index` the way a pass does: tracked, then appended.
fn pass(store: &mut IndexStore, index: &mut Index, changes: Vec<Change>) {
    index.track_changes();
    for c in changes {
        index.apply(c);
    }
    let done = index.take_changes().unwrap();
    store.append(&done, index).unwrap();
}

#[test]
fn a_pass_appends_its_changes_and_a_reopen_replays_them() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("tree.standby.index");
    let (mut store, mut index) = IndexStore::open(&base).unwrap();
    assert!(index.is_empty());
    // The first save of a store without a base writes one.
    pass(&mut store, &mut index, vec![Change::Insert(dir("d")), Change::Insert(file("d/a", 1))]);
    assert!(base.exists());
    let base_len = std::fs::metadata(&base).unwrap().len();
    pass(&mut store, &mut index, vec![Change::Insert(file("d/b", 2)), Change::Remove(name("d/a"))]);
    pass(&mut store, &mut index, vec![Change::Insert(file("d/b", 3))]);
    assert_eq!(std::fs::metadata(&base).unwrap().len(), base_len, "small passes leave the base alone");
    assert!(store.log_bytes() > 0);
    let (_, back) = IndexStore::open(&base).unwrap();
    assert_eq!(entries(&back), entries(&index));
    assert_eq!(entries(&back), vec![dir("d"), file("d/b", 3)]);
}

#[test]
fn a_removed_folder_takes_its_subtree_on_replay_too() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("i");
    let (mut store, mut index) = IndexStore::open(&base).unwrap();
    pass(
        &mut store,
        &mut index,
        vec![Change::Insert(dir("x")), Change::Insert(file("x/1", 1)), Change::Insert(file("x.y", 2))],
    );
    pass(&mut store, &mut index, vec![Change::Remove(name("x"))]);
    let (_, back) = IndexStore::open(&base).unwrap();
    assert_eq!(entries(&back), vec![file("x.y", 2)]);
}

#[test]
fn a_torn_tail_is_cut_and_the_records_before_it_stay() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("i");
    let (mut store, mut index) = IndexStore::open(&base).unwrap();
    pass(&mut store, &mut index, vec![Change::Insert(file("a", 1))]);
    pass(&mut store, &mut index, vec![Change::Insert(file("b", 2))]);
    let log = t.path().join("i.log");
    let whole = std::fs::metadata(&log).unwrap().len();
    pass(&mut store, &mut index, vec![Change::Insert(file("c", 3))]);
    let len = std::fs::metadata(&log).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(len - 3).unwrap();
    let (mut store, back) = IndexStore::open(&base).unwrap();
    assert_eq!(entries(&back), vec![file("a", 1), file("b", 2)]);
    assert_eq!(std::fs::metadata(&log).unwrap().len(), whole, "cut at the last whole record");
    // Appending goes on after the cut.
    let mut back = back;
    pass(&mut store, &mut back, vec![Change::Insert(file("d", 4))]);
    let (_, again) = IndexStore::open(&base).unwrap();
    assert_eq!(entries(&again), vec![file("a", 1), file("b", 2), file("d", 4)]);
}

#[test]
fn a_log_that_names_another_base_is_ignored() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("i");
    let (mut store, mut index) = IndexStore::open(&base).unwrap();
    pass(&mut store, &mut index, vec![Change::Insert(file("a", 1))]);
    pass(&mut store, &mut index, vec![Change::Insert(file("b", 2))]);
    let old_log = std::fs::read(t.path().join("i.log")).unwrap();
    // A crash right after a new base landed, before its log was reset: the old log is back.
    store.rewrite(&index).unwrap();
    let mut other: Index = [file("z", 9)].into_iter().collect();
    other.save(&base).unwrap();
    std::fs::write(t.path().join("i.log"), &old_log).unwrap();
    let (_, back) = IndexStore::open(&base).unwrap();
    assert_eq!(entries(&back), vec![file("z", 9)], "the old log's records are not applied");
    other.track_changes();
}

/// Regression (index format 2): a log of format 1 holds entries of the old layout, which
/// would decode as entries with made-up owners. An empty index's payload is the same in both
/// formats, so the base's checksum alone cannot tell them apart: the log's magic does.
#[test]
fn a_log_of_the_previous_format_is_never_replayed() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("i");
    let (mut store, mut index) = IndexStore::open(&base).unwrap();
    // An empty base (its log names the empty payload's checksum), then a record.
    store.rewrite(&index).unwrap();
    pass(&mut store, &mut index, vec![Change::Insert(file("a", 1))]);
    let log = t.path().join("i.log");
    let (_, back) = IndexStore::open(&base).unwrap();
    assert_eq!(entries(&back), vec![file("a", 1)], "this format's log is replayed");
    let mut old = std::fs::read(&log).unwrap();
    assert_eq!(&old[..8], LOG_MAGIC);
    old[7] = 1;
    std::fs::write(&log, &old).unwrap();
    let (_, back) = IndexStore::open(&base).unwrap();
    assert!(back.is_empty(), "a format 1 log is not replayed: {:?}", entries(&back));
}

#[test]
fn the_log_is_folded_into_a_new_base_once_it_outgrows_half_of_it() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("i");
    let (mut store, mut index) = IndexStore::open(&base).unwrap();
    let many: Vec<Change> = (0..20_000).map(|i| Change::Insert(file(&format!("f{i:05}"), i))).collect();
    pass(&mut store, &mut index, many);
    let first_base = std::fs::read(&base).unwrap();
    let mut rounds = 0;
    while std::fs::read(&base).unwrap() == first_base {
        rounds += 1;
        assert!(rounds < 200, "the log never became a base");
        let changed =
            (0..1_000).map(|i| Change::Insert(file(&format!("f{i:05}"), (rounds * 1_000 + i) as u64)));
        pass(&mut store, &mut index, changed.collect());
    }
    // Amortised: the log was written at most about as many bytes as half the base (or the
    // minimum) before it was folded, never once per pass.
    assert!(rounds > 3, "folded after {rounds} passes");
    assert_eq!(store.log_bytes(), 0, "a new base starts an empty log");
    assert!(!t.path().join("i.log").exists());
    let (_, back) = IndexStore::open(&base).unwrap();
    assert_eq!(entries(&back), entries(&index));
}

#[test]
fn a_damaged_base_loads_empty_and_the_next_save_writes_a_base() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("i");
    std::fs::write(&base, b"TNDMIDX\x01garbage that is not an index").unwrap();
    let (mut store, mut index) = IndexStore::open(&base).unwrap();
    assert!(index.damaged() && index.is_empty());
    pass(&mut store, &mut index, vec![Change::Insert(file("a", 1))]);
    let (_, back) = IndexStore::open(&base).unwrap();
    assert!(!back.damaged());
    assert_eq!(entries(&back), vec![file("a", 1)]);
}

fn change() -> impl Strategy<Value = Change> {
    let path = prop::sample::select(vec!["a", "a/b", "a/c", "b", "b/x", "c"]);
    prop_oneof![
        (path.clone(), 0u64..5).prop_map(|(p, n)| Change::Insert(if n == 0 { dir(p) } else { file(p, n) })),
        path.prop_map(|p| Change::Remove(name(p))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever byte the log is cut at (a crash mid-append), a reopen gives the index after
    /// some prefix of the changes, never anything else.
    #[test]
    fn a_crash_anywhere_leaves_a_prefix_of_the_changes(
        passes in prop::collection::vec(prop::collection::vec(change(), 1..6), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("i");
        let (mut store, mut index) = IndexStore::open(&base).unwrap();
        // A base first, so the passes go to the log.
        pass(&mut store, &mut index, vec![Change::Insert(dir("a"))]);
        let mut flat = vec![Change::Insert(dir("a"))];
        for p in passes {
            flat.extend(p.iter().cloned());
            pass(&mut store, &mut index, p);
        }
        let log = t.path().join("i.log");
        if let Ok(m) = std::fs::metadata(&log) {
            let at = cut.index(m.len() as usize + 1) as u64;
            std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(at).unwrap();
        }
        let (_, back) = IndexStore::open(&base).unwrap();
        let prefixes: Vec<Vec<Entry>> = (0..=flat.len()).map(|k| {
            let mut i = Index::new();
            flat[..k].iter().cloned().for_each(|c| i.apply(c));
            entries(&i)
        }).collect();
        prop_assert!(prefixes.contains(&entries(&back)), "not a prefix: {:?}", entries(&back));
    }
}
