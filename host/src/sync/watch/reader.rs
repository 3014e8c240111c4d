//! The watcher's reader thread: owns the inotify instance, walks the tree adding one watch per
//! folder (in the background, so a tree of 100,000 folders does not hold up the first pass),
//! and turns events into changed paths.
//!
//! The kernel mask asks for changes only (content, attributes, creation, deletion, renames,
//! close after writing), never for opens, reads or closes without a write: a process reading
//! the tree (a backup, rsync, tandem's own pass) queues nothing, so it can neither wake a pass
//! nor overflow the queue.
//!
//! Must never: report a path outside the root, follow a symlink into another tree, keep a
//! watch on a folder that left the tree, or claim a complete walk that missed a folder. A lost
//! event (queue overflow) costs one rescan and a fresh walk (which re-adds only the watches
//! that are missing), not a new inotify instance.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use inotify::{EventMask, EventOwned, Inotify, WatchDescriptor, WatchMask};
use tracing::{debug, info, warn};

use super::dirs::WatchedDirs;
use super::pending::{Shared, Walk};
use crate::sync::names::TEMP_PREFIX;

/// What every folder's watch asks for: changes, never reads.
pub(super) fn folder_mask() -> WatchMask {
    WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR
        | WatchMask::EXCL_UNLINK
}

/// Folders walked between two looks at the event queue, so a long walk cannot let the queue
/// overflow.
const WALK_SLICE: usize = 256;
/// Bytes read from the inotify descriptor at once (many events per read).
const READ_BUFFER: usize = 64 << 10;

/// The thread's state.
pub(super) struct Reader {
    inotify: Inotify,
    dirs: WatchedDirs,
    root_wd: WatchDescriptor,
    /// The barrier folder's watch (outside the tree), once added.
    barrier_wd: Option<WatchDescriptor>,
    barrier_rx: std::sync::mpsc::Receiver<WatchDescriptor>,
    shared: Arc<Shared>,
    /// Readable once the watcher is dropped.
    stop: OwnedFd,
    /// Folders whose entries still need watches.
    to_walk: Vec<WatchDescriptor>,
    /// Watches of the walk before a rescan: those not found again are removed at its end.
    previous: Option<WatchedDirs>,
    /// A folder moved away whose arrival (same cookie) has not been read yet.
    moved_away: Option<(u32, WatchDescriptor)>,
    /// Why the walk could not watch every folder.
    walk_error: Option<String>,
}

/// What one event amounts to for the thread.
enum Outcome {
    Go,
    /// The root itself went: nothing more can be watched.
    RootGone,
}

impl Reader {
    pub(super) fn new(
        inotify: Inotify,
        root_wd: WatchDescriptor,
        shared: Arc<Shared>,
        stop: OwnedFd,
        barrier_rx: std::sync::mpsc::Receiver<WatchDescriptor>,
    ) -> Reader {
        let mut dirs = WatchedDirs::default();
        dirs.set_root(root_wd.clone());
        Reader {
            inotify,
            dirs,
            to_walk: vec![root_wd.clone()],
            root_wd,
            barrier_wd: None,
            barrier_rx,
            shared,
            stop,
            previous: None,
            moved_away: None,
            walk_error: None,
        }
    }

    /// Runs until the watcher is dropped or the root goes.
    pub(super) fn run(mut self) {
        let mut buffer = vec![0u8; READ_BUFFER];
        let started = std::time::Instant::now();
        loop {
            let walking = !self.to_walk.is_empty();
            if walking {
                self.walk_some();
                if self.to_walk.is_empty() {
                    self.walk_finished(started.elapsed());
                }
            }
            match self.wait(!walking && self.to_walk.is_empty()) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    warn!(root = %self.shared.root.display(), error = %e, "tree watcher cannot wait for events");
                    self.shared.record(Vec::new(), Some(format!("watcher error: {e}")));
                    break;
                }
            }
            #[cfg(test)]
            while self.shared.reader_held() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            match self.read_all(&mut buffer) {
                Ok(Outcome::Go) => {}
                Ok(Outcome::RootGone) => break,
                Err(e) => {
                    warn!(root = %self.shared.root.display(), error = %e, "tree watcher cannot read events");
                    self.shared.record(Vec::new(), Some(format!("watcher error: {e}")));
                    break;
                }
            }
        }
        self.shared.close();
    }

    /// Waits (only when `block`) until events or the stop signal arrive. False on stop.
    fn wait(&self, block: bool) -> io::Result<bool> {
        let mut fds = [
            libc::pollfd { fd: self.inotify.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        loop {
            // SAFETY: two valid pollfd entries that live across the call.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, if block { -1 } else { 0 }) };
            if rc >= 0 {
                return Ok(fds[1].revents == 0);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Reads and handles every queued event.
    fn read_all(&mut self, buffer: &mut [u8]) -> io::Result<Outcome> {
        let mut paths = Vec::new();
        let mut rescan = None;
        loop {
            let events = match self.inotify.read_events(buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // Copied out: handling an event needs `&mut self` while `events` borrows the buffer.
            let batch: Vec<EventOwned> = events.map(|ev| ev.to_owned()).collect();
            for ev in batch {
                let name = ev.name.as_deref().map(OsStr::as_bytes);
                match self.event(&ev.wd, ev.mask, ev.cookie, name, &mut paths, &mut rescan) {
                    Outcome::Go => {}
                    Outcome::RootGone => {
                        self.shared.record(paths, rescan);
                        return Ok(Outcome::RootGone);
                    }
                }
            }
        }
        // The queue is empty: a folder moved away with no arrival left the tree.
        self.settle_move();
        if rescan.is_some() {
            self.rewalk();
        }
        self.shared.record(paths, rescan);
        Ok(Outcome::Go)
    }

    fn event(
        &mut self,
        wd: &WatchDescriptor,
        mask: EventMask,
        cookie: u32,
        name: Option<&[u8]>,
        paths: &mut Vec<Vec<u8>>,
        rescan: &mut Option<String>,
    ) -> Outcome {
        if mask.contains(EventMask::Q_OVERFLOW) {
            rescan.get_or_insert_with(|| "inotify event queue overflowed".into());
            return Outcome::Go;
        }
        if self.barrier_wd.is_none() {
            self.barrier_wd = self.barrier_rx.try_recv().ok();
        }
        if self.barrier_wd.as_ref() == Some(wd) {
            let n = name.and_then(|n| std::str::from_utf8(n).ok()?.strip_prefix("b-")?.parse::<u64>().ok());
            if let (Some(n), true) = (n, mask.contains(EventMask::CREATE)) {
                self.shared.barrier_marker(n);
            }
            return Outcome::Go;
        }
        if *wd == self.root_wd
            && mask.intersects(
                EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::UNMOUNT | EventMask::IGNORED,
            )
        {
            *rescan = Some("the watched root was moved or removed".into());
            return Outcome::RootGone;
        }
        if mask.contains(EventMask::IGNORED) {
            // The folder was deleted (its parent reported it) or its watch removed by us.
            self.dirs.remove_subtree(wd);
            return Outcome::Go;
        }
        // A folder's events about itself: its parent's watch reports the same change by name
        // (and the root's own mode and times are not an entry of the tree).
        let Some(name) = name else { return Outcome::Go };
        if self.moved_away.as_ref().is_some_and(|(c, _)| *c != cookie || !mask.contains(EventMask::MOVED_TO))
        {
            self.settle_move();
        }
        let Some(path) = self.dirs.path(wd, name) else { return Outcome::Go };
        if name.starts_with(TEMP_PREFIX) {
            return Outcome::Go;
        }
        if mask.contains(EventMask::ISDIR) {
            if mask.contains(EventMask::MOVED_FROM) {
                if let Some(child) = self.dirs.child(wd, name).cloned() {
                    self.moved_away = Some((cookie, child));
                }
            } else if mask.contains(EventMask::MOVED_TO) {
                match self.moved_away.take() {
                    Some((c, child)) if c == cookie => self.dirs.rename(&child, wd, name),
                    _ => self.watch_new(wd, name, rescan),
                }
            } else if mask.contains(EventMask::CREATE) {
                self.watch_new(wd, name, rescan);
            } else if mask.contains(EventMask::ATTRIB) && self.dirs.child(wd, name).is_none() {
                // A folder that could not be watched (unreadable) may be readable now.
                self.watch_new(wd, name, rescan);
            }
        }
        paths.push(path);
        Outcome::Go
    }

    /// A folder moved away and not (yet) seen arriving inside the tree has left it: its
    /// watches go.
    fn settle_move(&mut self) {
        if let Some((_, wd)) = self.moved_away.take() {
            for gone in self.dirs.remove_subtree(&wd) {
                let _ = self.inotify.watches().remove(gone);
            }
        }
    }

    /// A folder appeared (created or moved in from outside): watch it and walk what it holds.
    ///
    /// Events are read after the fact, and this watches whatever folder holds the name *now*.
    /// When the kernel answers with a descriptor the map files under another name, events
    /// read late were filed by names that have since moved on (a folder renamed, replaced and
    /// made again while the events queued, as when the process was stopped): the map is stale,
    /// and only a fresh walk puts every folder back under its name.
    fn watch_new(&mut self, parent: &WatchDescriptor, name: &[u8], rescan: &mut Option<String>) {
        match self.add_watch(parent, name) {
            Ok(wd) => self.to_walk.push(wd),
            Err(Some(known)) if !self.dirs.is_at(&known, parent, name) => {
                rescan.get_or_insert_with(|| {
                    "folders were renamed and made again faster than events were read".into()
                });
            }
            Err(_) => {}
        }
    }

    /// Adds the watch of folder `name` in `parent`; `Err(Some(wd))` when the kernel's answer
    /// is a descriptor already known, `Err(None)` when the folder is gone, is not a folder (the
    /// mask refuses symlinks), or could not be watched (noted).
    fn add_watch(
        &mut self,
        parent: &WatchDescriptor,
        name: &[u8],
    ) -> Result<WatchDescriptor, Option<WatchDescriptor>> {
        let rel = self.dirs.path(parent, name).ok_or(None)?;
        let full = self.shared.root.join(OsStr::from_bytes(&rel));
        match self.inotify.watches().add(&full, folder_mask()) {
            Ok(wd) if self.dirs.add(parent, name, wd.clone()) => Ok(wd),
            Ok(wd) => Err(Some(wd)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => {
                Err(None)
            }
            // The pass cannot read it either, and says so; its parent's watch sees its mode
            // change, and it is watched then.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                debug!(folder = %full.display(), "unreadable folder not watched until its permissions change");
                Err(None)
            }
            Err(e) => {
                let why = if e.raw_os_error() == Some(libc::ENOSPC) {
                    "inotify watch limit reached (fs.inotify.max_user_watches)".to_string()
                } else {
                    format!("{}: {e}", full.display())
                };
                debug!(folder = %full.display(), error = %e, "folder not watched");
                self.walk_error.get_or_insert(why);
                Err(None)
            }
        }
    }

    /// Walks up to [`WALK_SLICE`] folders: each one's subfolders get their watches.
    fn walk_some(&mut self) {
        for _ in 0..WALK_SLICE {
            let Some(wd) = self.to_walk.pop() else { return };
            let Some(rel) = self.dirs.path(&wd, b"") else { continue };
            let full = self.shared.root.join(OsStr::from_bytes(&rel));
            let entries = match std::fs::read_dir(&full) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    // The pass cannot read it either, and says so; its changes are not seen.
                    debug!(folder = %full.display(), error = %e, "folder not listed for watching");
                    continue;
                }
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name();
                    if let Ok(child) = self.add_watch(&wd, name.as_bytes()) {
                        self.to_walk.push(child);
                    }
                }
            }
        }
    }

    /// The walk reached every folder: drop the watches of folders that left the tree while
    /// events were lost, and tell the watcher.
    fn walk_finished(&mut self, took: std::time::Duration) {
        if let Some(previous) = self.previous.take() {
            for wd in previous.descriptors().filter(|wd| !self.dirs.contains(wd)) {
                let _ = self.inotify.watches().remove(wd.clone());
            }
        }
        match self.walk_error.take() {
            None => {
                info!(root = %self.shared.root.display(), folders = self.dirs.count(), took_ms = took.as_millis() as u64, "every folder of the tree is watched");
                self.shared.set_walk(Walk::Done);
            }
            Some(why) => {
                warn!(root = %self.shared.root.display(), reason = %why, "not every folder of the tree could be watched");
                self.shared.set_walk(Walk::Failed(why));
            }
        }
    }

    /// Events were lost: folders created meanwhile may lack a watch and folders moved out may
    /// keep one. Walk again from the root: adding a watch that exists costs a system call and
    /// returns the same descriptor.
    fn rewalk(&mut self) {
        let mut fresh = WatchedDirs::default();
        fresh.set_root(self.root_wd.clone());
        let old = std::mem::replace(&mut self.dirs, fresh);
        // Two rescans in a row: the first walk's leftovers are still to be cleaned.
        self.previous = Some(match self.previous.take() {
            Some(mut earlier) => {
                earlier.absorb(old);
                earlier
            }
            None => old,
        });
        self.to_walk = vec![self.root_wd.clone()];
        self.moved_away = None;
        self.shared.set_walk(Walk::Running);
    }
}

/// An eventfd that wakes the reader thread when written.
pub(super) fn stop_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: eventfd returns a new descriptor or -1; ownership moves into OwnedFd at once.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((owned.try_clone()?, owned))
}

/// Wakes the reader thread for good.
pub(super) fn signal_stop(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}
