//! The standby's cache of its large files' signatures, so that the signature a delta needs
//! costs no read of the file: the applier signs a large file while it writes it, and a
//! signature computed on request is kept too. One small file per path, under the tree's state
//! folder, behind a magic and a BLAKE3 checksum.
//!
//! An entry is used only while the file still has the size, mtime and inode it was signed
//! under. Must never: answer for a file that changed (the stat check; and a delta built on a
//! stale signature fails the patch's whole-file hash, after which the entry is forgotten), or
//! fail a pass: the cache is an optimisation, so every error is a miss or a skipped write.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sync::entry::mtime_ns;
use crate::sync::names::RelName;
use crate::sync::signature::Signature;

const MAGIC: &[u8; 8] = b"TNDMSIG\x01";
const CHECKSUM_LEN: usize = 32;

/// Signatures of one tree's files at the standby.
#[derive(Debug, Clone)]
pub struct SigCache {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Cached {
    path: Vec<u8>,
    size: u64,
    mtime_ns: i128,
    ino: u64,
    sig: Signature,
}

impl SigCache {
    pub fn new(dir: PathBuf) -> SigCache {
        SigCache { dir }
    }

    /// The signature of `path`, if one was kept for the file as `meta` describes it now.
    pub fn get(&self, path: &RelName, meta: &Metadata) -> Option<Signature> {
        let bytes = std::fs::read(self.file(path)).ok()?;
        let body = checked(&bytes)?;
        let c: Cached = postcard::from_bytes(body).ok()?;
        let same = c.path == path.as_bytes()
            && c.size == meta.len()
            && c.mtime_ns == mtime_ns(meta)
            && c.ino == meta.ino()
            && c.sig.file_len == meta.len()
            && c.sig.validate().is_ok();
        same.then_some(c.sig)
    }

    /// Keeps `sig` for `path` as `meta` describes the file. Not made durable: a torn entry
    /// fails its checksum and is a miss.
    pub fn put(&self, path: &RelName, meta: &Metadata, sig: Signature) {
        let c = Cached {
            path: path.as_bytes().to_vec(),
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ino: meta.ino(),
            sig,
        };
        let Ok(body) = postcard::to_allocvec(&c) else { return };
        let mut bytes = Vec::with_capacity(MAGIC.len() + body.len() + CHECKSUM_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&body);
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(sum.as_bytes());
        let (file, tmp) = (self.file(path), self.dir.join(format!(".tmp.{}", std::process::id())));
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, &file));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(path = %path, error = %e, "signature not cached");
        }
    }

    /// Drops what is kept for `path` (deleted, or its signature proved wrong).
    pub fn forget(&self, path: &RelName) {
        let _ = std::fs::remove_file(self.file(path));
    }

    fn file(&self, path: &RelName) -> PathBuf {
        let key = blake3::hash(path.as_bytes());
        self.dir.join(&key.to_hex()[..32])
    }

    /// The cache's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The body between the magic and a matching checksum.
fn checked(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < MAGIC.len() + CHECKSUM_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let (data, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    (blake3::hash(data).as_bytes() == sum).then(|| &data[MAGIC.len()..])
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::sync::signature::{block_len_for, signature};

    fn name(s: &str) -> RelName {
        RelName::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn an_entry_serves_only_the_file_as_it_was_signed() {
        let tree = tempfile::tempdir().unwrap();
        let cache = SigCache::new(tree.path().join("state/t.sigs"));
        let file = tree.path().join("big");
        fs::write(&file, vec![7u8; 100_000]).unwrap();
        let meta = fs::metadata(&file).unwrap();
        let sig = signature(fs::File::open(&file).unwrap(), meta.len(), block_len_for(meta.len())).unwrap();
        let p = name("dir/big");
        assert_eq!(cache.get(&p, &meta), None);
        cache.put(&p, &meta, sig.clone());
        assert_eq!(cache.get(&p, &meta), Some(sig.clone()));
        assert_eq!(cache.get(&name("dir/other"), &meta), None, "another path");

        // Rewritten in place with the same size: the mtime moves, the entry no longer serves.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&file, vec![8u8; 100_000]).unwrap();
        assert_eq!(cache.get(&p, &fs::metadata(&file).unwrap()), None);

        cache.put(&p, &meta, sig);
        cache.forget(&p);
        assert_eq!(cache.get(&p, &meta), None);
    }

    #[test]
    fn a_damaged_entry_is_a_miss() {
        let tree = tempfile::tempdir().unwrap();
        let cache = SigCache::new(tree.path().join("sigs"));
        let file = tree.path().join("f");
        fs::write(&file, vec![1u8; 70_000]).unwrap();
        let meta = fs::metadata(&file).unwrap();
        let sig = signature(fs::File::open(&file).unwrap(), meta.len(), 2048).unwrap();
        let p = name("f");
        cache.put(&p, &meta, sig);
        let stored = cache.file(&p);
        let mut bytes = fs::read(&stored).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&stored, &bytes).unwrap();
        assert_eq!(cache.get(&p, &meta), None);
        fs::write(&stored, b"junk").unwrap();
        assert_eq!(cache.get(&p, &meta), None);
    }
}
