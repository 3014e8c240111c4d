//! WASM policy plugins: the wasmtime engine, the sandbox, typed bindings of `wit/policy.wit`,
//! the built-in defaults, the compile cache and the registry that answers decisions with
//! fallback and hot reload.
//!
//! Owns: every call into plugin code. Must never: grant a plugin a capability beyond the
//! `host` log, let a plugin failure take the host down, or lose the built-in default.

mod bindings;
mod builtin;
mod cache;
mod config;
mod cpu;
mod engine;
mod error;
mod loaded;
mod registry;
mod sandbox;
mod tail;
mod world;

pub use bindings::{ConfChange, EntryBatch, EntryKind, History, Scope, UserScope, Verdict};
pub use cache::Origin;
pub use config::{PluginConfig, SettingValue};
pub use error::{FailureKind, PluginError};
pub use loaded::{Limits, PluginInfo, Source, now_ms, unix_ms};
pub use registry::{MAX_PLUGIN_BYTES, PluginStatus, Plugins, RescanReport};
pub use world::{PACKAGE, VERSION, Version, World};

impl EntryBatch {
    /// An empty batch for `tree`.
    pub fn new(tree: impl Into<String>) -> Self {
        Self {
            tree: tree.into(),
            paths: Vec::new(),
            ends: Vec::new(),
            kinds: Vec::new(),
            sizes: Vec::new(),
            modes: Vec::new(),
        }
    }

    /// Adds one entry; `path` is relative to the tree root. A batch holds up to 4 GiB of paths.
    pub fn push(&mut self, path: &[u8], kind: EntryKind, size: u64, mode: u32) {
        self.paths.extend_from_slice(path);
        self.ends.push(u32::try_from(self.paths.len()).expect("a batch's paths fit in 4 GiB"));
        self.kinds.push(kind);
        self.sizes.push(size);
        self.modes.push(mode);
    }

    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}
