//! `Entry`: what tandem knows about one path of a tree (kind, size, mtime, mode, owner, symlink
//! target and, for files, a content hash; out of line, the rare parts: hard-link group and
//! extended attributes), shared by the scanner, the index and the applier.
//!
//! Must never: hold anything read through a symlink: a symlink is described by its own
//! metadata and its raw target, never by what it points at.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sync::names::RelName;

/// Permission bits tandem replicates (rwx for all three classes plus setuid, setgid, sticky);
/// the file type lives in [`EntryKind`].
pub const MODE_BITS: u32 = 0o7777;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// The `uid`/`gid` of an entry whose owner is not kept: chown's "leave it as it is", never a
/// real id. Compares equal to any id (see [`crate::sync::diff::unchanged`]).
pub const NO_ID: u32 = u32::MAX;

/// One path of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: RelName,
    pub kind: EntryKind,
    /// Bytes of content for a file, length of the target for a symlink, 0 for a directory
    /// (a directory's own size depends on the filesystem and would make every pass a change).
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch (negative before it).
    pub mtime_ns: i128,
    /// Permission bits ([`MODE_BITS`]).
    pub mode: u32,
    /// A symlink's target as stored in the link, never resolved.
    pub link: Option<String>,
    /// BLAKE3 of a file's content, when known.
    pub hash: Option<[u8; 32]>,
    /// Owner id, [`NO_ID`] when the tree's owners are not kept.
    pub uid: u32,
    /// Group id, [`NO_ID`] when the tree's owners are not kept.
    pub gid: u32,
    /// What few entries have (a hard-link group, extended attributes), boxed so an ordinary
    /// entry pays one pointer for it. `None` when the entry has neither.
    pub extra: Option<Box<Extra>>,
}

/// The rare metadata of an entry (see [`Entry::extra`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extra {
    /// Set for a regular file with more than one link.
    pub hardlink: Option<HardLink>,
    /// Extended attributes the tree keeps, sorted by name; empty when it keeps none.
    pub xattrs: Vec<Xattr>,
}

/// A regular file with more than one name. The group's first path in tree order (its leader)
/// carries the content; every other member names the leader and arrives as a link to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HardLink {
    /// Link count on the host that scanned it (more than the tree's members when names lie
    /// outside the tree or outside the filter).
    pub nlink: u64,
    /// The group's leader; `None` for the leader itself.
    pub leader: Option<RelName>,
    /// The scanning host's device and inode: groups members while scanning, means nothing on
    /// another host, and is neither sent nor stored.
    #[serde(skip)]
    pub inode: (u64, u64),
}

impl PartialEq for HardLink {
    /// Equal when the same group shape: the inode is the host's own business.
    fn eq(&self, other: &HardLink) -> bool {
        self.nlink == other.nlink && self.leader == other.leader
    }
}

impl Eq for HardLink {}

/// One extended attribute (a POSIX ACL is one too: `system.posix_acl_access`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Xattr {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl Entry {
    /// An entry from `lstat` metadata; `link` is the target for a symlink. Hash unknown.
    pub fn from_metadata(path: RelName, kind: EntryKind, meta: &Metadata, link: Option<String>) -> Entry {
        let size = match kind {
            EntryKind::File => meta.len(),
            EntryKind::Dir => 0,
            EntryKind::Symlink => link.as_ref().map_or(0, |l| l.len() as u64),
        };
        let hardlink = (kind == EntryKind::File && meta.nlink() > 1).then(|| HardLink {
            nlink: meta.nlink(),
            leader: None,
            inode: (meta.dev(), meta.ino()),
        });
        let extra = hardlink.map(|h| Box::new(Extra { hardlink: Some(h), xattrs: Vec::new() }));
        Entry {
            path,
            kind,
            size,
            mtime_ns: mtime_ns(meta),
            mode: meta.mode() & MODE_BITS,
            link,
            hash: None,
            uid: meta.uid(),
            gid: meta.gid(),
            extra,
        }
    }

    /// A bare entry: no owner kept, no hash, nothing out of line.
    pub fn new(path: RelName, kind: EntryKind, size: u64, mtime_ns: i128, mode: u32) -> Entry {
        Entry {
            path,
            kind,
            size,
            mtime_ns,
            mode,
            link: None,
            hash: None,
            uid: NO_ID,
            gid: NO_ID,
            extra: None,
        }
    }

    /// The hard-link group this file belongs to, if it has more than one name.
    pub fn hardlink(&self) -> Option<&HardLink> {
        self.extra.as_ref()?.hardlink.as_ref()
    }

    /// The leader this file is a link to (`None` for a leader and for a file with one name).
    pub fn link_leader(&self) -> Option<&RelName> {
        self.hardlink()?.leader.as_ref()
    }

    /// The extended attributes kept for this entry, sorted by name.
    pub fn xattrs(&self) -> &[Xattr] {
        self.extra.as_ref().map_or(&[], |x| &x.xattrs)
    }

    /// Total bytes of the extended attributes' names and values.
    pub fn xattr_bytes(&self) -> usize {
        self.xattrs().iter().map(|x| x.name.len() + x.value.len()).sum()
    }

    /// Sets the extended attributes (sorted here), boxing only when there are some.
    pub fn set_xattrs(&mut self, mut xattrs: Vec<Xattr>) {
        xattrs.sort();
        match &mut self.extra {
            Some(x) => x.xattrs = xattrs,
            None if xattrs.is_empty() => {}
            None => self.extra = Some(Box::new(Extra { hardlink: None, xattrs })),
        }
        self.tidy_extra();
    }

    /// Names this file as a link to `leader` (or the leader itself with `None`).
    pub fn set_link_leader(&mut self, leader: Option<RelName>) {
        if let Some(h) = self.extra.as_mut().and_then(|x| x.hardlink.as_mut()) {
            h.leader = leader;
        }
    }

    /// Drops an empty out-of-line part, so "nothing rare" is always `None`.
    fn tidy_extra(&mut self) {
        if self.extra.as_ref().is_some_and(|x| x.hardlink.is_none() && x.xattrs.is_empty()) {
            self.extra = None;
        }
    }

    /// True when owner and group are not kept for this entry.
    pub fn owner_unknown(&self) -> bool {
        self.uid == NO_ID && self.gid == NO_ID
    }

    /// Forgets owner and group (the tree or the standby does not keep them).
    pub fn clear_owner(&mut self) {
        (self.uid, self.gid) = (NO_ID, NO_ID);
    }

    /// True when the metadata that decides "may the old hash be reused" is unchanged.
    pub fn same_stat(&self, other: &Entry) -> bool {
        self.kind == other.kind
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.mode == other.mode
    }

    /// The modification time as a `SystemTime`.
    pub fn mtime(&self) -> SystemTime {
        system_time(self.mtime_ns)
    }
}

/// Nanoseconds since the epoch of a file's modification time.
pub fn mtime_ns(meta: &Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

/// A `SystemTime` from nanoseconds since the epoch, saturating far outside the representable range.
pub fn system_time(ns: i128) -> SystemTime {
    let magnitude = ns.unsigned_abs();
    let secs = u64::try_from(magnitude / 1_000_000_000).unwrap_or(u64::MAX / 2);
    let span = Duration::new(secs, (magnitude % 1_000_000_000) as u32);
    let shifted = if ns >= 0 { UNIX_EPOCH.checked_add(span) } else { UNIX_EPOCH.checked_sub(span) };
    shifted.unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_system_time() {
        for ns in [0i128, 1, 1_700_000_000_123_456_789, -1_500_000_000] {
            let t = system_time(ns);
            let back = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            };
            assert_eq!(back, ns);
        }
    }

    #[test]
    fn directories_report_zero_size_and_mode_bits_only() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::symlink_metadata(dir.path()).unwrap();
        let e = Entry::from_metadata(RelName::new(b"d").unwrap(), EntryKind::Dir, &meta, None);
        assert_eq!(e.size, 0);
        assert_eq!(e.mode & !MODE_BITS, 0);
        assert_eq!(e.mtime_ns, mtime_ns(&meta));
        assert_eq!((e.uid, e.gid), (meta.uid(), meta.gid()));
        assert!(e.extra.is_none());
    }

    #[test]
    fn rare_metadata_is_out_of_line_and_empty_parts_are_dropped() {
        // Measured when owners, hard links and attributes came in: 112 bytes before (with the
        // 16-byte aligned i128 mtime), 128 after (+8 for the ids, +8 for the box pointer).
        assert!(std::mem::size_of::<Entry>() <= 128, "{}", std::mem::size_of::<Entry>());
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a"), b"x").unwrap();
        std::fs::hard_link(t.path().join("a"), t.path().join("b")).unwrap();
        let meta = std::fs::symlink_metadata(t.path().join("b")).unwrap();
        let mut e = Entry::from_metadata(RelName::new(b"b").unwrap(), EntryKind::File, &meta, None);
        let h = e.hardlink().unwrap();
        assert_eq!((h.nlink, h.inode), (2, (meta.dev(), meta.ino())));
        e.set_link_leader(Some(RelName::new(b"a").unwrap()));
        assert_eq!(e.link_leader().map(RelName::as_bytes), Some(&b"a"[..]));
        let attr = Xattr { name: b"user.k".to_vec(), value: b"v".to_vec() };
        e.set_xattrs(vec![attr.clone()]);
        assert_eq!(e.xattr_bytes(), 7);
        assert_eq!(e.xattrs(), std::slice::from_ref(&attr));
        e.set_xattrs(Vec::new());
        assert!(e.hardlink().is_some(), "the group stays");
        let mut lone = Entry::new(RelName::new(b"c").unwrap(), EntryKind::File, 0, 0, 0o644);
        lone.set_xattrs(vec![attr]);
        lone.set_xattrs(Vec::new());
        assert!(lone.extra.is_none(), "an empty extra part is not kept");
        // The inode is this host's own: not sent, not compared.
        let mut other = e.clone();
        other.extra = Some(Box::new(Extra {
            hardlink: Some(HardLink { nlink: 2, leader: None, inode: (1, 2) }),
            xattrs: Vec::new(),
        }));
        let mut mine = other.clone();
        mine.extra.as_mut().unwrap().hardlink.as_mut().unwrap().inode = (3, 4);
        assert_eq!(mine, other);
        let wire: Entry = postcard::from_bytes(&postcard::to_stdvec(&mine).unwrap()).unwrap();
        assert_eq!(wire.hardlink().unwrap().inode, (0, 0));
    }
}
