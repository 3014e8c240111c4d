//! A file the standby receives, on its way in: [`Staged`] (its temporary's name, chosen by the
//! applier) becomes a [`FileWriter`] that writes the content to the temporary (holes the
//! primary named left unwritten, writeback started as it goes), hashes it, and settles it
//! (hash checked, length, owner, attributes, mode, mtime) before the applier queues it for the
//! commit. Writing needs no applier, so files are written on any thread.
//!
//! Must never: leave its temporary behind when dropped unfinished, or settle a file whose
//! content does not match the entry's hash.

use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sync::entry::{Entry, MODE_BITS};
use crate::sync::meta::{self, Keep};
use crate::sync::names::RelName;
use crate::sync::sparse::{HoleMap, hash_zeros};
use crate::sync::tree_error::TreeError;

/// Finished files at least this large have their writeback started at once.
const WRITEBACK_BYTES: u64 = 1 << 20;

/// A file being written has its writeback started every this many bytes, so the disk works
/// while the rest arrives and the commit's sync finds little left to do.
const WRITEBACK_STEP: u64 = 8 << 20;

/// A file being received: write its content, then hand it to [`Applier::finish_file`].
/// Dropping it unfinished removes the temporary file.
#[derive(Debug)]
pub struct FileWriter {
    file: Option<File>,
    tmp: PathBuf,
    entry: Entry,
    /// `None` when the caller proves the content itself (a patch checks its own output).
    hasher: Option<blake3::Hasher>,
    written: u64,
    /// Where writeback was last started up to.
    written_back: u64,
    /// Hash checked, mode and mtime set.
    settled: bool,
    /// What the pass keeps of owner and attributes.
    keep: Keep,
    /// The primary's holes, for content that arrives whole (zeros in them are not written).
    holes: Option<Box<HoleMap>>,
    /// Some bytes were left unwritten: the length is set when the file is settled.
    skipped: bool,
}

/// A file about to be received (see [`Applier::stage`]).
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    entry: Entry,
    keep: Keep,
    holes: Option<Box<HoleMap>>,
}

impl Staged {
    /// A file to be received into `tmp` (a free name the applier chose beside its target).
    pub(crate) fn new(tmp: PathBuf, entry: Entry, keep: Keep) -> Staged {
        Staged { tmp, entry, keep, holes: None }
    }

    /// Creates the temporary file: a writer for content that arrives piece by piece, hashed as
    /// it is written and checked against the entry's hash when settled.
    pub fn open(self) -> Result<FileWriter, TreeError> {
        self.create(Some(blake3::Hasher::new()))
    }

    /// Like [`Staged::open`] for content whose caller checks it itself (a [`Patcher`]
    /// verifies its output's length and hash): the writer does not hash it a second time.
    ///
    /// [`Patcher`]: crate::sync::patch::Patcher
    pub fn open_verified_by_caller(self) -> Result<FileWriter, TreeError> {
        self.create(None)
    }

    /// Zeros of the content that fall in these holes of the primary's file are left
    /// unwritten (see [`crate::sync::sparse`]); a map that is not in order is ignored.
    pub fn with_holes(mut self, ranges: Vec<(u64, u64)>) -> Staged {
        self.holes = HoleMap::new(ranges).map(Box::new);
        self
    }

    fn create(self, hasher: Option<blake3::Hasher>) -> Result<FileWriter, TreeError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.tmp)
            .map_err(TreeError::io("create temporary", &self.tmp))?;
        Ok(FileWriter {
            file: Some(file),
            tmp: self.tmp,
            entry: self.entry,
            hasher,
            written: 0,
            written_back: 0,
            settled: false,
            keep: self.keep,
            holes: self.holes,
            skipped: false,
        })
    }

    /// Writes the whole content and settles the file (hash check, mode, mtime): ready for
    /// [`Applier::finish_file`]. Needs no `&mut Applier`, so files can be written in parallel.
    pub fn write_whole(self, data: &[u8]) -> Result<FileWriter, TreeError> {
        let mut w = self.open()?;
        w.write_all(data).map_err(TreeError::io("write", &w.tmp))?;
        w.settle()?;
        Ok(w)
    }
}

/// A settled file handed to the applier's queue.
pub(crate) struct Finished {
    pub name: RelName,
    pub tmp: PathBuf,
    pub file: File,
    pub bytes: u64,
}

impl FileWriter {
    /// Settles the file if need be and hands it over (None: already handed over).
    pub(crate) fn finished(mut self) -> Result<Option<Finished>, TreeError> {
        if !self.settled {
            self.settle()?;
        }
        let Some(file) = self.file.take() else { return Ok(None) };
        let tmp = std::mem::take(&mut self.tmp);
        if self.written >= WRITEBACK_BYTES {
            // Start writing it out now, so the commit's sync finds little left to do.
            // SAFETY: the descriptor is valid for the call; the flags only start writeback.
            unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
        Ok(Some(Finished { name: self.entry.path.clone(), tmp, file, bytes: self.written }))
    }

    /// Checks the hash and sets mode and mtime; on failure the temporary is removed.
    fn settle(&mut self) -> Result<(), TreeError> {
        let Some(file) = self.file.as_ref() else { return Ok(()) };
        if let Err(e) = settle_file(file, self, &self.tmp) {
            self.file = None;
            let _ = fs::remove_file(&self.tmp);
            return Err(e);
        }
        self.settled = true;
        Ok(())
    }

    /// The entry being received.
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The content hash the finished file must have (known only once its content was sent).
    pub fn expect_hash(&mut self, hash: [u8; 32]) {
        self.entry.hash = Some(hash);
    }

    /// The next `len` bytes are a hole in the primary's file: hashed as the zeros they read
    /// as, never written. Refused past the entry's size.
    pub fn hole(&mut self, len: u64) -> io::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("file writer already finished"))?;
        if self.written.checked_add(len).is_none_or(|end| end > self.entry.size) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a hole past the file's size"));
        }
        file.seek(SeekFrom::Current(len as i64))?;
        if let Some(h) = self.hasher.as_mut() {
            hash_zeros(h, len);
        }
        self.written += len;
        self.skipped = true;
        Ok(())
    }
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("file writer already finished"))?;
        let (take, skip) = match self.holes.as_mut() {
            Some(holes) => holes.next_piece(self.written, buf),
            None => (buf.len(), false),
        };
        let n = if skip {
            file.seek(SeekFrom::Current(take as i64))?;
            self.skipped = true;
            take
        } else {
            file.write(&buf[..take])?
        };
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.written += n as u64;
        if self.written - self.written_back >= WRITEBACK_STEP {
            let (from, len) = (self.written_back, self.written - self.written_back);
            // SAFETY: the descriptor is valid for the call; the flag only starts writeback.
            unsafe {
                libc::sync_file_range(file.as_raw_fd(), from as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE)
            };
            self.written_back = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Verifies a finished file's hash and gives it its length (when holes were left unwritten),
/// owner, attributes, mode and mtime, in that order: chown clears setuid bits and file
/// capabilities, so those come after it; mtime last, since writes move it.
fn settle_file(file: &File, w: &FileWriter, tmp: &Path) -> Result<(), TreeError> {
    if let (Some(expected), Some(hasher)) = (w.entry.hash, w.hasher.as_ref())
        && *hasher.finalize().as_bytes() != expected
    {
        return Err(TreeError::HashMismatch { name: w.entry.path.display() });
    }
    if w.skipped {
        file.set_len(w.written).map_err(TreeError::io("set length", tmp))?;
    }
    settle_meta(file, &w.entry, &w.keep, tmp)
}

/// Gives a file about to be put in place `entry`'s owner, attributes, mode and mtime, in that
/// order (chown clears setuid bits, writes move the mtime).
pub(crate) fn settle_meta(file: &File, entry: &Entry, keep: &Keep, tmp: &Path) -> Result<(), TreeError> {
    meta::chown_fd(file.as_fd(), entry, keep).map_err(TreeError::io("chown", tmp))?;
    meta::apply_xattrs_fd(file.as_fd(), entry.xattrs(), keep)
        .map_err(TreeError::io("set extended attributes", tmp))?;
    file.set_permissions(Permissions::from_mode(entry.mode & MODE_BITS))
        .map_err(TreeError::io("chmod", tmp))?;
    file.set_times(FileTimes::new().set_modified(entry.mtime())).map_err(TreeError::io("set mtime", tmp))
}
