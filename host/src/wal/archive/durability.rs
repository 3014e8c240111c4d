//! The sync calls the archive's durability rests on, behind a trait so tests can count them or
//! make them fail.
//!
//! Owns: `fdatasync` of the head segment (one per flush: WAL and flush record together), `fsync`
//! of new files and of completed segments after their truncate, `fsync` of the directory. Must never
//! be skipped or reordered by an implementation used in production: `FsDurability` is the only
//! one that is not a test aid.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The three sync calls the archive makes.
pub trait Durability: Send + Sync + std::fmt::Debug {
    /// Make a file's data durable (`fdatasync`); used on head segments, preallocated (WAL and
    /// flush-record trailer), whose size does not change while they are written: one call per
    /// flush.
    fn sync_data(&self, file: &File) -> io::Result<()>;
    /// Make a file's data and metadata durable (`fsync`); used on newly created files and on a
    /// completed segment after its trailer is truncated off.
    fn sync_all(&self, file: &File) -> io::Result<()>;
    /// Make a directory's entries durable (creates, renames, removes).
    fn sync_dir(&self, dir: &File) -> io::Result<()>;
}

/// The real system calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsDurability;

impl Durability for FsDurability {
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn sync_dir(&self, dir: &File) -> io::Result<()> {
        dir.sync_all()
    }
}

/// Test aid: does the real calls, counts them, and can be told to fail the next data sync.
#[derive(Debug, Default)]
pub struct CountingDurability {
    data: AtomicU64,
    all: AtomicU64,
    dir: AtomicU64,
    fail_next_data: AtomicBool,
}

/// Counts of sync calls made so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// `fdatasync` of segment data (one per flush).
    pub data: u64,
    /// `fsync` of new files (segments at creation, state and history files) and of segments
    /// truncated to their final size at completion.
    pub all: u64,
    /// `fsync` of the directory.
    pub dir: u64,
}

impl CountingDurability {
    /// Counts so far.
    pub fn counts(&self) -> SyncCounts {
        SyncCounts {
            data: self.data.load(Ordering::SeqCst),
            all: self.all.load(Ordering::SeqCst),
            dir: self.dir.load(Ordering::SeqCst),
        }
    }

    /// Make the next `sync_data` fail with EIO, as a failing disk would.
    pub fn fail_next_data_sync(&self) {
        self.fail_next_data.store(true, Ordering::SeqCst);
    }
}

impl Durability for CountingDurability {
    fn sync_data(&self, file: &File) -> io::Result<()> {
        if self.fail_next_data.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected fdatasync failure"));
        }
        file.sync_data()?;
        self.data.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()?;
        self.all.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn sync_dir(&self, dir: &File) -> io::Result<()> {
        dir.sync_all()?;
        self.dir.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}
