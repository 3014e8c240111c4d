//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where build.rs left the guest components (defaults, example, fixtures).
pub fn guest(name: &str) -> PathBuf {
    Path::new(env!("TANDEM_GUEST_DIR")).join(name)
}

pub fn guest_bytes(name: &str) -> Vec<u8> {
    std::fs::read(guest(name)).unwrap_or_else(|e| panic!("guest {name}: {e}"))
}

/// Polls `check` until it returns Some or `limit` passes; the value and how long it took.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some((v, start.elapsed()));
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Copies a file into place the way an operator's deploy would: write aside, then rename.
pub fn install_file(bytes: &[u8], dest: &Path) {
    let tmp = dest.with_extension("incoming");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}
