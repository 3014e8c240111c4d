//! The standby side of tree sync: applies received entries to a tree root so each file lands
//! whole. A file is written to a `.tandem-tmp.` file in its target's folder by a
//! [`FileWriter`] (see `file_writer`), given its owner, attributes, mode and mtime, and queued; hard-link
//! members are queued as links to their leaders. [`Applier::commit`] makes the batch's data durable with one
//! `syncfs(2)` (or an fsync per file for a batch of at most [`SMALL_BATCH`]), renames every
//! file into place, links the members, then makes the renames durable: one more `syncfs` when more than
//! [`SMALL_BATCH`] folders were touched, else an fsync of each. Directories, symlinks and deletions
//! happen at once and are made durable by the same folder fsyncs.
//!
//! Must never: write, rename or delete through a symlinked directory component below the root
//! (see [`crate::sync::confine`]), follow a symlink it creates or removes, create a symlink
//! whose target is absolute or leaves the tree, or show a half-written file under its real name.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use crate::sync::confine::{Confined, check_link_target};
use crate::sync::entry::mtime_ns;
use crate::sync::entry::{Entry, EntryKind, MODE_BITS};
use crate::sync::hardlink::link_into_place;
use crate::sync::meta::{self, Keep};
use crate::sync::names::{RelName, TEMP_PREFIX};
use crate::sync::nofollow::{clear_dir, remove_leftovers, remove_tree, set_dir_meta, set_link_mtime};
use crate::sync::tree_error::TreeError;

use crate::sync::file_writer::settle_meta;
pub use crate::sync::file_writer::{FileWriter, Staged};

/// Batches of at most this many files are made durable with one fsync per file; larger ones
/// with a single `syncfs` of the tree's filesystem, which costs the same for 10 files or 10,000.
pub const SMALL_BATCH: usize = 8;

/// What a commit did, including how many durability calls it cost.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CommitStats {
    /// Files renamed into place.
    pub files: u64,
    /// Bytes in those files.
    pub bytes: u64,
    /// Hard-link members linked to their leaders.
    pub links: u64,
    /// Per-file fsyncs (small batches only).
    pub file_syncs: u64,
    /// `syncfs` calls (large batches: one).
    pub fs_syncs: u64,
    /// Folder fsyncs (one per touched folder).
    pub dir_syncs: u64,
    /// Files that could not be put in place, with the reason; the rest of the batch landed.
    pub failed: Vec<(RelName, String)>,
}

/// A finished file waiting for the commit (its name is its key in [`Applier::queued`]).
#[derive(Debug)]
struct Queued {
    tmp: PathBuf,
    /// A file of the standby's own taken aside (a rename): its target may already be another
    /// link of its inode.
    taken: bool,
    /// Kept open only while the batch is small enough to be synced file by file.
    file: Option<File>,
    bytes: u64,
}

/// A directory whose final mode and mtime are set at commit, after its content has landed
/// (adding a child changes a folder's mtime; a read-only mode would block adding children).
#[derive(Debug)]
struct DirFinal {
    mode: u32,
    mtime_ns: i128,
    /// The primary's entry, when its owner or attributes are to be set too (an ACL could
    /// otherwise shut the applier out of the folder before its content is in).
    own: Option<Box<Entry>>,
}

/// Applies entries under one tree root. See the module doc for the order of operations.
#[derive(Debug)]
pub struct Applier {
    confined: Confined,
    /// Held open for `syncfs`.
    root_dir: File,
    // The per-batch maps are sorted by name: replacing or deleting a folder drops its subtree
    // from each at the cost of that subtree, where a scan per entry made a tree of 100,000
    // folders quadratic.
    queued: BTreeMap<RelName, Queued>,
    dir_finals: BTreeMap<RelName, DirFinal>,
    /// Folders (`None` = root) whose entries changed in this batch: each is fsynced once.
    touched: HashSet<Option<RelName>>,
    /// Folders checked (and if need be opened up) by [`Applier::unlock`] in this batch.
    unlocked: BTreeSet<RelName>,
    /// Hard-link members to link to their leaders at commit, after the files landed.
    links: BTreeMap<RelName, Entry>,
    /// Files whose metadata alone changed in place in this batch, synced at commit.
    settled: Vec<(File, PathBuf)>,
    /// What this tree keeps of owners and attributes.
    keep: Keep,
    next_tmp: u64,
    cleaned: usize,
}

impl Applier {
    /// Opens the tree at `root` (an existing directory) and removes temporary files a crash
    /// left behind.
    pub fn open(root: &Path) -> Result<Applier, TreeError> {
        let root_dir = File::open(root).map_err(TreeError::io("open tree root", root))?;
        let meta = root_dir.metadata().map_err(TreeError::io("stat tree root", root))?;
        if !meta.is_dir() {
            return Err(TreeError::Root { path: root.to_path_buf(), reason: "not a directory".into() });
        }
        let cleaned = remove_leftovers(root);
        if cleaned > 0 {
            info!(root = %root.display(), cleaned, "removed temporary files left by an interrupted apply");
        }
        Ok(Applier {
            confined: Confined::new(root.to_path_buf()),
            root_dir,
            queued: BTreeMap::new(),
            dir_finals: BTreeMap::new(),
            touched: HashSet::new(),
            unlocked: BTreeSet::new(),
            links: BTreeMap::new(),
            settled: Vec::new(),
            keep: Keep::rsync_a(),
            next_tmp: 0,
            cleaned,
        })
    }

    /// Applies owners and attributes as `keep` says (the default is [`Keep::rsync_a`]).
    pub fn with_keep(mut self, keep: Keep) -> Applier {
        self.keep = keep;
        self
    }

    /// How many leftover temporary files [`Applier::open`] removed.
    pub fn cleaned_leftovers(&self) -> usize {
        self.cleaned
    }

    /// Starts receiving file `e`: content written to the returned writer lands in a temporary
    /// file beside the target. Missing parent folders are created.
    pub fn begin_file(&mut self, e: &Entry) -> Result<FileWriter, TreeError> {
        self.stage(e)?.open()
    }

    /// The part of [`Applier::begin_file`] that needs `&mut self` (the folder checks and the
    /// temporary's name); [`Staged::write_whole`] does the rest on any thread.
    pub fn stage(&mut self, e: &Entry) -> Result<Staged, TreeError> {
        expect_kind(e, EntryKind::File)?;
        self.check_meta(e)?;
        let parent = self.parent_dir(&e.path)?;
        let tmp = self.tmp_path(&parent);
        Ok(Staged::new(tmp, e.clone(), self.keep))
    }

    /// Finishes a received file: checks its hash (when the entry has one), sets mode and
    /// mtime, and queues it for [`Applier::commit`].
    pub fn finish_file(&mut self, w: FileWriter) -> Result<(), TreeError> {
        let Some(done) = w.finished()? else { return Ok(()) };
        self.enqueue(done.name, done.tmp, done.file, done.bytes, false);
        Ok(())
    }

    /// Creates directory `e` (replacing a file or symlink at its name); its mode and mtime are
    /// set at commit.
    pub fn dir(&mut self, e: &Entry) -> Result<(), TreeError> {
        expect_kind(e, EntryKind::Dir)?;
        self.check_meta(e)?;
        let parent = self.parent_dir(&e.path)?;
        let path = parent.join(std::ffi::OsStr::from_bytes(e.path.file_name()));
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                // Writable by us until commit, whatever mode an earlier pass gave it.
                if m.permissions().mode() & 0o700 != 0o700 {
                    let mode = m.permissions().mode() | 0o700;
                    fs::set_permissions(&path, Permissions::from_mode(mode))
                        .map_err(TreeError::io("chmod", &path))?;
                }
            }
            found => {
                // A file queued under this name earlier in the batch would land over the folder.
                self.drop_queued(vec![e.path.clone()]);
                if found.is_ok() {
                    self.forget(&e.path);
                    fs::remove_file(&path).map_err(TreeError::io("remove", &path))?;
                }
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(TreeError::io("create directory", &path))?;
            }
        }
        // The primary's times and mode win over any restore queued for this folder.
        self.unlocked.insert(e.path.clone());
        let own =
            (self.keep.any_xattrs() || (self.keep.owner && !e.owner_unknown())).then(|| Box::new(e.clone()));
        self.dir_finals
            .insert(e.path.clone(), DirFinal { mode: e.mode & MODE_BITS, mtime_ns: e.mtime_ns, own });
        self.touched.insert(e.path.parent());
        Ok(())
    }

    /// Creates symlink `e` as a link, never following it. A target that is absolute or leaves
    /// the tree is refused with [`TreeError::LinkTarget`]; nothing else is affected.
    pub fn symlink(&mut self, e: &Entry) -> Result<(), TreeError> {
        expect_kind(e, EntryKind::Symlink)?;
        self.check_meta(e)?;
        let target = e.link.as_deref().unwrap_or_default();
        check_link_target(&e.path, target)?;
        let parent = self.parent_dir(&e.path)?;
        let path = parent.join(std::ffi::OsStr::from_bytes(e.path.file_name()));
        let tmp = self.tmp_path(&parent);
        std::os::unix::fs::symlink(target, &tmp).map_err(TreeError::io("create symlink", &tmp))?;
        let owned = meta::chown_link(&tmp, e, &self.keep)
            .and_then(|()| meta::apply_xattrs_link(&tmp, e.xattrs(), &self.keep))
            .map_err(TreeError::io("set link owner and attributes", &tmp));
        let placed = owned.and_then(|()| set_link_mtime(&tmp, e.mtime_ns)).and_then(|()| {
            self.forget(&e.path);
            clear_dir(&path)?;
            fs::rename(&tmp, &path).map_err(TreeError::io("rename symlink into place", &path))
        });
        if placed.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        placed?;
        self.touched.insert(e.path.parent());
        Ok(())
    }

    /// Takes the tree's own file `from` as the content of file `entry` (the primary renamed
    /// it): `from` must still be the file the standby's index recorded as `held` (same size and
    /// mtime, the test a pass with no change trusts) with `entry`'s content hash. It moves at
    /// once to a temporary name at the root, so a deletion later in the batch cannot take it,
    /// gets `entry`'s owner, attributes, mode and mtime, and is put in place at commit like a
    /// received file. Onto its own name (only its metadata changed) it stays where it is and
    /// takes the metadata there: a reader never finds it missing.
    pub fn adopt(&mut self, from: &RelName, held: &Entry, entry: &Entry) -> Result<(), TreeError> {
        expect_kind(entry, EntryKind::File)?;
        let refuse = |reason| Err(TreeError::MoveSource { name: from.display(), reason });
        if held.kind != EntryKind::File || held.hash.is_none() || held.hash != entry.hash {
            return refuse("the index holds other content there");
        }
        let Some(dir) = self.confined.dir(from.parent().as_ref(), false)? else {
            return refuse("it is gone");
        };
        let path = dir.join(std::ffi::OsStr::from_bytes(from.file_name()));
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() && m.len() == held.size && mtime_ns(&m) == held.mtime_ns => {}
            Ok(_) => return refuse("it changed since it was indexed"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return refuse("it is gone"),
            Err(e) => return Err(TreeError::io("stat", &path)(e)),
        }
        if from == &entry.path {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(TreeError::io("open", &path))?;
            settle_meta(&file, entry, &self.keep, &path)?;
            // Made durable at commit with the batch's files.
            self.settled.push((file, path));
            return Ok(());
        }
        // The target's folder is made now (its own entry may come later, or not at all).
        self.parent_dir(&entry.path)?;
        self.unlock(from.parent(), &dir)?;
        let root = self.confined.root().to_path_buf();
        let tmp = self.tmp_path(&root);
        self.forget(from);
        fs::rename(&path, &tmp).map_err(TreeError::io("move aside", &path))?;
        self.touched.insert(from.parent());
        self.touched.insert(None);
        let settled = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(TreeError::io("open", &tmp))
            .and_then(|f| settle_meta(&f, entry, &self.keep, &tmp).map(|()| f));
        let file = match settled {
            Ok(f) => f,
            Err(e) => {
                // Back where it was: the rename is undone, nothing is lost.
                let _ = fs::rename(&tmp, &path);
                return Err(e);
            }
        };
        self.enqueue(entry.path.clone(), tmp, file, entry.size, true);
        Ok(())
    }

    /// Queues the settled temporary `tmp` to become `name` at commit.
    fn enqueue(&mut self, name: RelName, tmp: PathBuf, file: File, bytes: u64, taken: bool) {
        // Once the batch is past SMALL_BATCH it will use syncfs: no need to hold a descriptor
        // per file (dropped once when crossing, not looked at again per file).
        let small = self.queued.len() < SMALL_BATCH;
        let queued = Queued { tmp, taken, file: small.then_some(file), bytes };
        // A link queued under this name earlier in the batch is superseded.
        self.links.remove(&name);
        if let Some(earlier) = self.queued.insert(name, queued) {
            // The same name twice in a batch: the later content wins.
            let _ = fs::remove_file(&earlier.tmp);
        }
        if self.queued.len() == SMALL_BATCH + 1 {
            self.queued.values_mut().for_each(|q| q.file = None);
        }
    }

    /// Queues hard-link member `e` (a file naming its leader) to be linked to the leader at
    /// commit, once every file of the batch has landed: the leader may be in this batch or in
    /// an earlier one. A leader that is missing or not the member's file fails the member at
    /// commit (in [`CommitStats::failed`]).
    pub fn hard_link(&mut self, e: &Entry) -> Result<(), TreeError> {
        expect_kind(e, EntryKind::File)?;
        let Some(leader) = e.link_leader() else {
            return Err(TreeError::LinkGroup { name: e.path.display(), reason: "no leader named".into() });
        };
        if leader == &e.path {
            return Err(TreeError::LinkGroup { name: e.path.display(), reason: "linked to itself".into() });
        }
        self.parent_dir(&e.path)?;
        self.drop_queued(vec![e.path.clone()]);
        self.links.insert(e.path.clone(), e.clone());
        Ok(())
    }

    /// Deletes `p`: a file or link is unlinked, a directory removed with everything below it
    /// (links inside are removed, never followed). A missing path, or one below a
    /// non-directory, is already gone.
    pub fn delete(&mut self, p: &RelName) -> Result<(), TreeError> {
        let parent = match self.confined.dir(p.parent().as_ref(), false) {
            Ok(Some(parent)) => parent,
            Ok(None) => return Ok(()),
            Err(TreeError::UnsafeComponent { path, reason }) => {
                debug!(name = %p, through = %path.display(), reason, "nothing to delete below a non-directory");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.forget(p);
        self.unlock(p.parent(), &parent)?;
        let path = parent.join(std::ffi::OsStr::from_bytes(p.file_name()));
        let removed = match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() => remove_tree(&path),
            Ok(_) => fs::remove_file(&path),
        };
        removed.map_err(TreeError::io("delete", &path))?;
        self.touched.insert(p.parent());
        Ok(())
    }

    /// Makes the batch durable and visible: data synced, files renamed into place, folder
    /// modes and mtimes set, each touched folder fsynced once.
    pub fn commit(&mut self) -> Result<CommitStats, TreeError> {
        let mut stats = CommitStats::default();
        let queued: Vec<(RelName, Queued)> = std::mem::take(&mut self.queued).into_iter().collect();
        if let Err(e) = self.sync_data(&queued, &mut stats) {
            queued.iter().for_each(|(_, q)| drop(fs::remove_file(&q.tmp)));
            return Err(e);
        }
        self.sync_settled(&mut stats)?;
        for (name, q) in queued {
            match self.place(&name, &q) {
                Ok(()) => {
                    stats.files += 1;
                    stats.bytes += q.bytes;
                }
                Err(e) => {
                    warn!(name = %name, error = %e, "received file not put in place");
                    let _ = fs::remove_file(&q.tmp);
                    stats.failed.push((name, e.to_string()));
                }
            }
        }
        self.make_links(&mut stats);
        self.finish_dirs(&mut stats);
        // Folders opened up for this batch have their modes back: the next batch checks again.
        self.unlocked.clear();
        let touched = std::mem::take(&mut self.touched);
        if touched.len() > SMALL_BATCH {
            // Many folders: one more syncfs makes every rename and folder change durable at
            // once (ext4 commits them in one journal transaction) instead of a fsync each.
            self.syncfs()?;
            stats.fs_syncs += 1;
        } else {
            for dir in touched {
                if self.sync_dir(dir.as_ref())? {
                    stats.dir_syncs += 1;
                }
            }
        }
        debug!(files = stats.files, bytes = stats.bytes, dir_syncs = stats.dir_syncs, "committed batch");
        Ok(stats)
    }

    /// The current file at `p` to patch against: `None` when absent or not a regular file.
    /// A symlinked component on the way is an error, never followed.
    pub fn base_path(&self, p: &RelName) -> Result<Option<PathBuf>, TreeError> {
        // A fresh check rather than the cache: this takes &self and is cheap enough per file.
        let mut check = Confined::new(self.confined.root().to_path_buf());
        let Some(parent) = check.dir(p.parent().as_ref(), false)? else { return Ok(None) };
        let path = parent.join(std::ffi::OsStr::from_bytes(p.file_name()));
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(path)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TreeError::io("stat", path)(e)),
        }
    }

    /// Makes the queued files' content durable: one fsync each for a small batch, else one
    /// `syncfs` for the whole filesystem.
    fn sync_data(&self, queued: &[(RelName, Queued)], stats: &mut CommitStats) -> Result<(), TreeError> {
        if queued.is_empty() {
            return Ok(());
        }
        let open: Vec<(&File, &Path)> =
            queued.iter().filter_map(|(_, q)| Some((q.file.as_ref()?, q.tmp.as_path()))).collect();
        if queued.len() <= SMALL_BATCH && open.len() == queued.len() {
            for (file, tmp) in open {
                // sync_all, not sync_data: the mode set before the rename must survive a crash too.
                file.sync_all().map_err(TreeError::io("fsync", tmp))?;
                stats.file_syncs += 1;
            }
            return Ok(());
        }
        self.syncfs()?;
        stats.fs_syncs += 1;
        Ok(())
    }

    /// Makes the metadata set in place durable: one fsync each for a few files, else one
    /// `syncfs`.
    fn sync_settled(&mut self, stats: &mut CommitStats) -> Result<(), TreeError> {
        let settled = std::mem::take(&mut self.settled);
        if settled.len() > SMALL_BATCH {
            self.syncfs()?;
            stats.fs_syncs += 1;
            return Ok(());
        }
        for (file, path) in &settled {
            file.sync_all().map_err(TreeError::io("fsync", path))?;
            stats.file_syncs += 1;
        }
        Ok(())
    }

    /// One `syncfs(2)` of the tree's filesystem: every dirty page and metadata change on it.
    fn syncfs(&self) -> Result<(), TreeError> {
        // SAFETY: syncfs only reads the descriptor, which `root_dir` keeps open for this call.
        let rc = unsafe { libc::syncfs(self.root_dir.as_raw_fd()) };
        if rc != 0 {
            return Err(TreeError::io("syncfs", self.confined.root())(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Renames one queued file over its target (clearing a directory there first).
    fn place(&mut self, name: &RelName, q: &Queued) -> Result<(), TreeError> {
        let parent = self.confined.dir(name.parent().as_ref(), false)?.ok_or_else(|| {
            TreeError::io("rename into", self.confined.full(name))(io::ErrorKind::NotFound.into())
        })?;
        let path = parent.join(std::ffi::OsStr::from_bytes(name.file_name()));
        self.forget(name);
        clear_dir(&path)?;
        fs::rename(&q.tmp, &path).map_err(TreeError::io("rename into place", &path))?;
        // rename(2) does nothing when both names are links of one inode (a file taken aside,
        // at the root, whose new name was already another of its links): the content is in
        // place, the temporary name must go. A received file is a new inode: never so.
        if q.taken && fs::symlink_metadata(&q.tmp).is_ok() {
            fs::remove_file(&q.tmp).map_err(TreeError::io("remove", &q.tmp))?;
            self.touched.insert(None);
        }
        self.touched.insert(name.parent());
        Ok(())
    }

    /// Links the batch's hard-link members to their leaders, now that every file has landed.
    fn make_links(&mut self, stats: &mut CommitStats) {
        for (name, e) in std::mem::take(&mut self.links) {
            match self.link_one(&name, &e) {
                Ok(linked) => {
                    stats.links += u64::from(linked);
                    self.touched.insert(name.parent());
                }
                Err(err) => {
                    warn!(name = %name, error = %err, "hard link not made");
                    stats.failed.push((name, err.to_string()));
                }
            }
        }
    }

    fn link_one(&mut self, name: &RelName, e: &Entry) -> Result<bool, TreeError> {
        let leader = e.link_leader().expect("checked when queued");
        let root = self.confined.root().to_path_buf();
        let missing =
            |p: &RelName| TreeError::io("link in", root.join(p.to_path()))(io::ErrorKind::NotFound.into());
        let target_dir =
            self.confined.dir(leader.parent().as_ref(), false)?.ok_or_else(|| missing(leader))?;
        let target = target_dir.join(std::ffi::OsStr::from_bytes(leader.file_name()));
        let parent = self.confined.dir(name.parent().as_ref(), false)?.ok_or_else(|| missing(name))?;
        let path = parent.join(std::ffi::OsStr::from_bytes(name.file_name()));
        let tmp = self.tmp_path(&parent);
        self.forget(name);
        link_into_place(&target, &path, &tmp, e, &self.keep)
    }

    /// Refuses an entry whose attributes this tree does not keep or that are past the limit.
    fn check_meta(&self, e: &Entry) -> Result<(), TreeError> {
        meta::check_xattrs(e, &self.keep)
            .map_err(|reason| TreeError::Metadata { name: e.path.display(), reason })
    }

    /// Sets final modes and mtimes of the batch's directories, deepest first (a parent made
    /// read-only first could block reaching its children).
    fn finish_dirs(&mut self, stats: &mut CommitStats) {
        let mut finals: Vec<(RelName, DirFinal)> = std::mem::take(&mut self.dir_finals).into_iter().collect();
        finals.sort_by_key(|(name, _)| std::cmp::Reverse(name.depth()));
        for (name, d) in finals {
            let keep = self.keep;
            let done = self.confined.dir(Some(&name), false).and_then(|found| match found {
                Some(path) => {
                    if let Some(own) = &d.own {
                        meta::set_dir_owner_xattrs(&path, own, &keep)?;
                    }
                    set_dir_meta(&path, d.mode, d.mtime_ns).map(|()| true)
                }
                None => Ok(false),
            });
            match done {
                // Its own mode and mtime live in the folder's inode: its fsync makes them durable.
                Ok(true) => {
                    self.touched.insert(Some(name));
                }
                Ok(false) => {}
                Err(e) => stats.failed.push((name, e.to_string())),
            }
        }
    }

    /// Fsyncs one touched folder if it is still a real folder of the tree; a folder deleted or
    /// replaced later in the batch has nothing left to make durable (its parent is touched).
    fn sync_dir(&mut self, dir: Option<&RelName>) -> Result<bool, TreeError> {
        let path = match self.confined.dir(dir, false) {
            // The root may be reached through a configured symlink: use the handle opened at start.
            Ok(Some(_)) if dir.is_none() => {
                self.root_dir.sync_all().map_err(TreeError::io("fsync folder", self.confined.root()))?;
                return Ok(true);
            }
            Ok(Some(path)) => path,
            Ok(None) | Err(TreeError::UnsafeComponent { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let opened =
            OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY).open(&path);
        match opened.and_then(|d| d.sync_all()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(TreeError::io("fsync folder", path)(e)),
        }
    }

    /// The checked full path of `p`'s folder, creating missing folders.
    fn parent_dir(&mut self, p: &RelName) -> Result<PathBuf, TreeError> {
        let parent = self.confined.dir(p.parent().as_ref(), true);
        // Folders created on the way are new entries of their own parents: fsync those too.
        self.touched.extend(self.confined.take_created_in());
        let parent = parent?.ok_or_else(|| {
            TreeError::io("create folder for", self.confined.full(p))(io::ErrorKind::NotFound.into())
        })?;
        self.unlock(p.parent(), &parent)?;
        Ok(parent)
    }

    /// Before the batch first changes something in folder `dir`: queue its current mode and
    /// mtime to be restored at commit (a directory entry for it in the batch overrides that),
    /// and, without root, give the owner access for the batch if an earlier pass made it
    /// read-only.
    fn unlock(&mut self, dir: Option<RelName>, path: &Path) -> Result<(), TreeError> {
        let Some(dir) = dir else { return Ok(()) };
        if !self.unlocked.insert(dir.clone()) {
            return Ok(());
        }
        let meta = fs::symlink_metadata(path).map_err(TreeError::io("stat", path))?;
        if meta.mode() & 0o300 != 0o300 {
            let open = Permissions::from_mode(meta.mode() | 0o700);
            fs::set_permissions(path, open).map_err(TreeError::io("chmod", path))?;
        }
        // Adding, replacing or removing an entry moves the folder's mtime; the primary did not
        // change the folder (else its entry would come in this pass and override this).
        let restore = DirFinal { mode: meta.mode() & MODE_BITS, mtime_ns: mtime_ns(&meta), own: None };
        self.dir_finals.entry(dir).or_insert(restore);
        Ok(())
    }

    /// A fresh temporary name in `dir`.
    fn tmp_path(&mut self, dir: &Path) -> PathBuf {
        self.next_tmp += 1;
        let mut name = TEMP_PREFIX.to_vec();
        name.extend_from_slice(format!("{}-{}", std::process::id(), self.next_tmp).as_bytes());
        dir.join(std::ffi::OsStr::from_bytes(&name))
    }

    /// `p` is about to be replaced or deleted: drop cached checks and queued files at or
    /// below it (a later entry wins over an earlier one in the same batch).
    fn forget(&mut self, p: &RelName) {
        self.confined.forget(p);
        for d in p.run_within(self.dir_finals.range(p.clone()..).map(|(k, _)| k)) {
            self.dir_finals.remove(&d);
        }
        for d in p.run_within(self.unlocked.range(p.clone()..)) {
            self.unlocked.remove(&d);
        }
        for l in p.run_within(self.links.range(p.clone()..).map(|(k, _)| k)) {
            self.links.remove(&l);
        }
        self.drop_queued(p.run_within(self.queued.range(p.clone()..).map(|(k, _)| k)));
    }

    /// Drops the queued files and links `names`, with the files' temporaries.
    fn drop_queued(&mut self, names: Vec<RelName>) {
        for n in &names {
            self.links.remove(n);
        }
        for q in names.iter().filter_map(|n| self.queued.remove(n)) {
            let _ = fs::remove_file(&q.tmp);
        }
    }
}

impl Drop for Applier {
    /// An uncommitted batch never becomes visible: its temporaries go.
    fn drop(&mut self) {
        self.queued.values().for_each(|q| drop(fs::remove_file(&q.tmp)));
    }
}

fn expect_kind(e: &Entry, expected: EntryKind) -> Result<(), TreeError> {
    if e.kind == expected {
        return Ok(());
    }
    Err(TreeError::WrongKind { name: e.path.display(), expected, got: e.kind })
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "apply_adopt_tests.rs"]
mod adopt_tests;

#[cfg(test)]
#[path = "apply_meta_tests.rs"]
mod meta_tests;
