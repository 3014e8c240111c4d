//! An on-disk cache of compiled components, keyed by the component's content hash and the
//! engine's compatibility hash, so a restart does not recompile.
//!
//! Loading a cached artifact runs native code from it, so the cache is used only when nobody
//! else can write there: the folder is ours, not a symlink, and has no group or other write
//! bits (tandem creates it with mode 0700). Entries are written with [`durable::write_private`];
//! one that fails to load is recompiled.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use tracing::{debug, warn};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::durable;

/// Where a component came from on this load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Compiled,
    Cache,
}

#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    /// A cache in `dir` (created if missing), or none (always compile) when `dir` is `None` or
    /// others could write to it.
    pub fn new(dir: Option<PathBuf>) -> Self {
        let dir = dir.filter(|dir| match make_private_dir(dir) {
            Ok(()) => true,
            Err(why) => {
                warn!(dir = %dir.display(), %why, "plugin compile cache disabled: plugins will compile at every start");
                false
            }
        });
        Self { dir }
    }

    #[cfg(test)]
    fn enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// The compiled component for `bytes`, from the cache when present.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<(Component, Origin)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes)?, Origin::Compiled));
        };
        let path = dir.join(key(engine, bytes));
        if path.exists() {
            // SAFETY: the artifact was written by `store` below into tandem's private cache
            // folder, for this engine configuration (the key includes its compatibility hash).
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, Origin::Cache)),
                Err(e) => warn!(path = %path.display(), error = %e, "bad cache entry; recompiling"),
            }
        }
        let artifact = engine.precompile_component(bytes)?;
        if let Err(e) = durable::write_private(&path, &artifact) {
            warn!(dir = %dir.display(), error = %e, "cannot write the plugin compile cache");
        } else {
            debug!(path = %path.display(), "cached compiled plugin");
        }
        // SAFETY: `artifact` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &artifact)? };
        Ok((component, Origin::Compiled))
    }
}

fn key(engine: &Engine, bytes: &[u8]) -> String {
    let mut engine_hash = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    format!("{}-{:016x}.cwasm", blake3::hash(bytes).to_hex(), engine_hash.finish())
}

/// Creates `dir` (mode 0700) if missing and checks that only this user can write to it.
fn make_private_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| e.to_string())?;
    let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory (a symlink is not accepted)".into());
    }
    // The owner of /proc/self is this process's effective user.
    let me = fs::metadata("/proc/self").map_err(|e| e.to_string())?.uid();
    if meta.uid() != me {
        return Err(format!("owned by uid {}, not by this user (uid {me})", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("mode {:o} lets others write there; `chmod 700` it", meta.mode() & 0o777));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_cache_folder_others_can_write_is_not_used() {
        let root = tempfile::tempdir().unwrap();
        let private = root.path().join("private");
        assert!(CompileCache::new(Some(private.clone())).enabled());
        assert_eq!(fs::metadata(&private).unwrap().mode() & 0o777, 0o700);

        let readable = root.path().join("readable");
        fs::create_dir(&readable).unwrap();
        fs::set_permissions(&readable, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(CompileCache::new(Some(readable)).enabled(), "others may read, not write");

        for mode in [0o777, 0o775, 0o757] {
            let shared = root.path().join(format!("shared{mode:o}"));
            fs::create_dir(&shared).unwrap();
            fs::set_permissions(&shared, fs::Permissions::from_mode(mode)).unwrap();
            assert!(!CompileCache::new(Some(shared)).enabled(), "{mode:o}");
        }

        let link = root.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert!(!CompileCache::new(Some(link)).enabled());
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;
    use crate::plugin::builtin;
    use crate::plugin::engine::engine;
    use crate::plugin::world::World;

    #[test]
    fn a_second_load_comes_from_the_cache() {
        let root = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(Some(root.path().join("c")));
        let bytes = builtin::component(World::Whitelist);
        assert_eq!(cache.load(engine(), bytes).unwrap().1, Origin::Compiled);
        let files: Vec<_> =
            fs::read_dir(root.path().join("c")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(cache.load(engine(), bytes).unwrap().1, Origin::Cache);
    }
}
