//! Disk cap accounting: how many bytes the archive holds, whether it may take a new segment, and
//! the loud log line when that answer changes; and whether the filesystem itself has room for
//! another segment (a full disk is treated like the cap: no WAL taken until there is room).
//!
//! Owns the `accepting` flag. Must never log on every call: only on a change of state.

use std::path::Path;

use super::flush_record::TRAILER_LEN;

/// Free space kept beyond a new segment before the archive takes WAL again after a full disk:
/// room for the state and history files, and so that one segment does not fill the disk to
/// the last byte again at once.
pub(crate) const DISK_ROOM_MARGIN: u64 = 1 << 20;

/// The archive's size against its cap.
#[derive(Debug)]
pub(crate) struct Capacity {
    cap: Option<u64>,
    segment: u64,
    bytes: u64,
    accepting: bool,
}

impl Capacity {
    pub(crate) fn new(cap: Option<u64>, segment: u64, bytes: u64) -> Self {
        let mut c = Capacity { cap, segment, bytes, accepting: true };
        c.refresh();
        c
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn cap(&self) -> Option<u64> {
        self.cap
    }

    /// True while one more segment fits under the cap: an append of up to a segment's worth of
    /// WAL then always succeeds.
    pub(crate) fn accepting(&self) -> bool {
        self.accepting
    }

    /// Whether `new_segments` more segments fit under the cap.
    pub(crate) fn fits(&self, new_segments: u64) -> bool {
        let need = self.bytes.saturating_add(new_segments.saturating_mul(self.segment));
        self.cap.is_none_or(|cap| need <= cap)
    }

    pub(crate) fn grow(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.refresh();
    }

    pub(crate) fn shrink(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_sub(bytes);
        self.refresh();
    }

    fn refresh(&mut self) {
        let now = self.fits(1);
        if now == self.accepting {
            return;
        }
        self.accepting = now;
        let cap = self.cap.unwrap_or(u64::MAX);
        if now {
            tracing::info!(bytes = self.bytes, cap, "WAL archive below its disk cap again; accepting WAL");
        } else {
            tracing::warn!(
                bytes = self.bytes,
                cap,
                "WAL ARCHIVE DISK CAP REACHED: not accepting WAL until the standby replays and \
                 retention frees segments; the primary's slot now holds WAL back"
            );
        }
    }
}

/// Whether the filesystem holding `dir` has room for a new segment of `segment_bytes` (its
/// flush-record trailer and [`DISK_ROOM_MARGIN`] included), counting only the space an
/// unprivileged writer may use (`f_bavail`: root's reserve is left to the system). An
/// unreadable filesystem counts as having no room.
pub(crate) fn disk_has_room(dir: &Path, segment_bytes: u64) -> bool {
    match free_bytes(dir) {
        Ok(free) => free >= segment_bytes + TRAILER_LEN + DISK_ROOM_MARGIN,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the WAL archive's free space");
            false
        }
    }
}

/// `statvfs(2)`: bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a valid NUL-terminated string and `stats` a writable statvfs that the
    // call fills in; nothing is read from it unless the call succeeded.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Both are 32 bits wide on some targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, block_size) = (u64::from(stats.f_bavail), u64::from(stats.f_frsize));
    Ok(blocks.saturating_mul(block_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepting_flips_at_one_segment_of_room() {
        let mut c = Capacity::new(Some(100), 10, 80);
        assert!(c.accepting());
        c.grow(10);
        assert!(c.accepting(), "90 + 10 fits in 100");
        c.grow(1);
        assert!(!c.accepting());
        assert!(!c.fits(1));
        c.shrink(20);
        assert!(c.accepting());
        assert!(Capacity::new(None, 10, u64::MAX).accepting());
    }

    /// Collects formatted log lines.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_cap_is_logged_once_per_change_of_state() {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber =
            tracing_subscriber::fmt().with_ansi(false).with_writer(move || sink.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut c = Capacity::new(Some(100), 10, 95); // over at open: logged
            c.grow(1);
            c.grow(1);
            let _ = c.accepting();
            c.shrink(50); // back under
            c.shrink(1);
            c.grow(50); // over again
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("WARN").count(), 2, "{text}");
        assert_eq!(text.matches("DISK CAP REACHED").count(), 2, "{text}");
        assert_eq!(text.matches("below its disk cap again").count(), 1, "{text}");
    }
}
