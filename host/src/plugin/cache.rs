//! An on-disk cache of compiled components, keyed by the component's content hash and the
//! engine's compatibility hash, so a restart does not recompile.
//!
//! Loading a cached artifact runs native code from it: the folder must be private to tandem
//! (it is created with mode 0700). A cache entry that fails to load is recompiled and replaced.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::{debug, warn};
use wasmtime::Engine;
use wasmtime::component::Component;

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
    /// A cache in `dir`, or none (always compile) when `dir` is `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
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
        if let Err(e) = store(dir, &path, &artifact) {
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

/// Write-then-rename, so a crash never leaves a torn artifact under the final name.
fn store(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(artifact)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}
