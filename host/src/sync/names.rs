//! `RelName`: a validated path relative to a tree root, kept as raw bytes so names that are
//! not UTF-8 survive a round trip. Its order is component by component, so a directory sorts
//! before everything below it and every subtree is one contiguous run in a sorted list.
//!
//! Must never: admit an absolute path, an empty, `.` or `..` component, or a NUL byte: every
//! other module relies on a `RelName` staying inside its tree when joined to the root.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sync::tree_error::TreeError;

/// Longest accepted name, matching Linux's PATH_MAX.
pub const MAX_NAME_BYTES: usize = 4096;

/// Name prefix of the applier's temporary files; scans ignore such names so an interrupted
/// apply is never replicated onwards.
pub const TEMP_PREFIX: &[u8] = b".tandem-tmp.";

/// A validated relative path inside a tree: `/`-separated components, none empty, `.` or
/// `..`; no NUL; not absolute; at most [`MAX_NAME_BYTES`] bytes. Raw bytes, not necessarily UTF-8.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct RelName(Vec<u8>);

impl RelName {
    /// Validates `bytes` as a relative name.
    pub fn new(bytes: &[u8]) -> Result<Self, TreeError> {
        let reject = |reason| Err(TreeError::InvalidName { name: lossy(bytes), reason });
        if bytes.is_empty() {
            return reject("empty");
        }
        if bytes.len() > MAX_NAME_BYTES {
            return reject("longer than 4096 bytes");
        }
        if bytes.contains(&0) {
            return reject("contains NUL");
        }
        if bytes[0] == b'/' {
            return reject("absolute");
        }
        for component in bytes.split(|&b| b == b'/') {
            match component {
                b"" => return reject("empty component"),
                b"." => return reject("`.` component"),
                b".." => return reject("`..` component"),
                _ => {}
            }
        }
        Ok(RelName(bytes.to_vec()))
    }

    /// The raw bytes of the name.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as a relative path (bytes unchanged).
    pub fn to_path(&self) -> PathBuf {
        PathBuf::from(OsStr::from_bytes(&self.0))
    }

    /// The containing directory's name; `None` for a name directly under the root.
    pub fn parent(&self) -> Option<RelName> {
        let cut = self.0.iter().rposition(|&b| b == b'/')?;
        Some(RelName(self.0[..cut].to_vec()))
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(cut) => &self.0[cut + 1..],
            None => &self.0,
        }
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/')
    }

    /// Number of components (1 for a name directly under the root).
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// `self/child`, validating `child` as one component.
    pub fn join(&self, child: &[u8]) -> Result<RelName, TreeError> {
        let mut bytes = self.0.clone();
        bytes.push(b'/');
        bytes.extend_from_slice(child);
        if child.contains(&b'/') {
            return Err(TreeError::InvalidName { name: lossy(&bytes), reason: "component contains `/`" });
        }
        RelName::new(&bytes)
    }

    /// True when `self` is `ancestor` or lies below it.
    pub fn is_within(&self, ancestor: &RelName) -> bool {
        let (a, s) = (&ancestor.0, &self.0);
        s.starts_with(a) && (s.len() == a.len() || s[a.len()] == b'/')
    }

    /// From an in-order run of names starting at `self` (a sorted set's or map's
    /// `range(self.clone()..)`), the names at or below `self`. A subtree is one contiguous run
    /// in name order, so this costs a lookup plus the subtree's size, never a walk of the whole
    /// collection.
    pub fn run_within<'a>(&self, sorted_from_self: impl Iterator<Item = &'a RelName>) -> Vec<RelName> {
        sorted_from_self.take_while(|k| k.is_within(self)).cloned().collect()
    }

    /// The name and each of its ancestors, innermost first.
    pub fn self_and_ancestors(&self) -> impl Iterator<Item = &[u8]> {
        let cuts = self.0.iter().enumerate().filter(|(_, b)| **b == b'/').map(|(i, _)| i);
        std::iter::once(&self.0[..]).chain(cuts.rev().map(|i| &self.0[..i]).collect::<Vec<_>>())
    }

    /// The folders above the name, innermost first (the root is not one).
    pub fn ancestors(&self) -> impl Iterator<Item = RelName> + '_ {
        std::iter::successors(self.parent(), RelName::parent)
    }

    /// The name shown lossily, for logs and errors.
    pub fn display(&self) -> String {
        lossy(&self.0)
    }
}

/// Lossy text of raw name bytes, for messages only.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// True for the applier's temporary names.
pub fn is_temp_name(file_name: &[u8]) -> bool {
    file_name.starts_with(TEMP_PREFIX)
}

impl Ord for RelName {
    /// Component-wise: `/` ranks below every other byte (NUL cannot occur), so `a` < `a/b` < `a.b`.
    fn cmp(&self, other: &Self) -> Ordering {
        // The same as comparing the names with `/` mapped to 0 byte by byte, but only the first
        // differing byte is mapped (the map is one-to-one, so that is where they differ):
        // names share long prefixes, and this order sits under every sorted map of the sync.
        let (a, b) = (&self.0[..], &other.0[..]);
        let key = |b: u8| if b == b'/' { 0 } else { b };
        match a.iter().zip(b).position(|(x, y)| x != y) {
            Some(i) => key(a[i]).cmp(&key(b[i])),
            None => a.len().cmp(&b.len()),
        }
    }
}

impl PartialOrd for RelName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl TryFrom<Vec<u8>> for RelName {
    type Error = TreeError;
    fn try_from(bytes: Vec<u8>) -> Result<Self, TreeError> {
        RelName::new(&bytes)
    }
}

impl From<RelName> for Vec<u8> {
    fn from(name: RelName) -> Vec<u8> {
        name.0
    }
}

impl fmt::Debug for RelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", lossy(&self.0))
    }
}

impl fmt::Display for RelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> RelName {
        RelName::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn rejects_names_that_could_leave_the_tree() {
        for bad in ["", "/etc", "a//b", "a/", "./a", "a/./b", "..", "a/../b", "a/..", "a\0b"] {
            assert!(RelName::new(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert!(RelName::new(&vec![b'a'; MAX_NAME_BYTES + 1]).is_err());
        assert!(RelName::new(&vec![b'a'; MAX_NAME_BYTES]).is_ok());
        assert!(n("a").join(b"b/c").is_err());
        assert!(n("a").join(b"..").is_err());
    }

    #[test]
    fn accepts_raw_bytes_and_dotted_names() {
        let raw = RelName::new(b"dir/\xff\xfe.bin").unwrap();
        assert_eq!(raw.as_bytes(), b"dir/\xff\xfe.bin");
        assert_eq!(raw.to_path().as_os_str().as_bytes(), b"dir/\xff\xfe.bin");
        assert_eq!(raw.file_name(), b"\xff\xfe.bin");
        assert!(RelName::new(b"...").is_ok() && RelName::new(b".hidden/..x").is_ok());
    }

    #[test]
    fn parents_sort_before_children_and_subtrees_stay_together() {
        let mut names = [n("a.b"), n("a/b"), n("a"), n("a/b/c"), n("b"), n("a-b")];
        names.sort();
        let text: Vec<_> = names.iter().map(|x| x.display()).collect();
        assert_eq!(text, ["a", "a/b", "a/b/c", "a-b", "a.b", "b"]);
    }

    #[test]
    fn parent_ancestors_and_containment() {
        let x = n("a/b/c");
        assert_eq!(x.parent(), Some(n("a/b")));
        assert_eq!(n("a").parent(), None);
        assert_eq!(x.depth(), 3);
        let chain: Vec<&[u8]> = x.self_and_ancestors().collect();
        assert_eq!(chain, [&b"a/b/c"[..], b"a/b", b"a"]);
        assert!(x.is_within(&n("a")) && x.is_within(&x) && !n("ab").is_within(&n("a")));
    }

    proptest::proptest! {
        #[test]
        fn order_is_bytewise_with_the_separator_lowest(
            a in proptest::collection::vec(proptest::sample::select(b"ab/.-\xff".to_vec()), 1..12),
            b in proptest::collection::vec(proptest::sample::select(b"ab/.-\xff".to_vec()), 1..12),
        ) {
            let key = |b: &u8| if *b == b'/' { 0 } else { *b };
            let want = a.iter().map(key).cmp(b.iter().map(key));
            proptest::prop_assert_eq!(RelName(a.clone()).cmp(&RelName(b.clone())), want);
        }
    }

    #[test]
    fn run_within_takes_exactly_the_subtree() {
        let set: std::collections::BTreeSet<RelName> =
            ["a", "a/b", "a/b/c", "a-b", "a.b", "a/z", "ab", "b"].into_iter().map(n).collect();
        let root = n("a");
        let got: Vec<String> =
            root.run_within(set.range(root.clone()..)).iter().map(|x| x.display()).collect();
        assert_eq!(got, ["a", "a/b", "a/b/c", "a/z"]);
        let leaf = n("a/b/c");
        assert_eq!(leaf.run_within(set.range(leaf.clone()..)), std::slice::from_ref(&leaf));
        assert!(n("c").run_within(set.range(n("c")..)).is_empty());
    }

    #[test]
    fn serde_round_trip_validates() {
        let x = RelName::new(b"d/\x80").unwrap();
        let bytes = postcard::to_stdvec(&x).unwrap();
        assert_eq!(postcard::from_bytes::<RelName>(&bytes).unwrap(), x);
        let evil = postcard::to_stdvec(&b"../x".to_vec()).unwrap();
        assert!(postcard::from_bytes::<RelName>(&evil).is_err());
    }
}
