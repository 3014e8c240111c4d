//! The plugin registry: for each world, a stack of good plugins (the built-in default at the
//! bottom, the newest good site plugin on top). Decisions go to the top; a plugin that fails
//! a call is taken off the stack and the call is answered by the one below it. The plugin
//! folder is rescanned on a timer: new or changed files are validated and pushed, bad ones are
//! refused (the stack stays as it was), removed files leave the stack.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use wasmtime::component::Linker;

use super::bindings::{ConfChange, EntryBatch, History, Verdict};
use super::builtin;
use super::cache::{CompileCache, Origin};
use super::config::PluginConfig;
use super::error::{FailureKind, PluginError};
use super::loaded::{LoadContext, LoadedPlugin, PluginInfo, Source};
use super::sandbox::{PluginState, linker};
use super::world::World;

/// Site plugin versions kept under the active one as fallbacks.
const MAX_FALLBACKS: usize = 4;
/// Failures remembered per world for status.
const MAX_FAILURES: usize = 8;
/// Largest plugin file read; policy components are tens to hundreds of KiB.
pub const MAX_PLUGIN_BYTES: u64 = 32 << 20;

/// The plugin runtime: cheap to clone, shared by every subsystem that asks for decisions.
///
/// Decisions block the calling thread (up to the call cap, and longer when a plugin must be
/// instantiated); async code calls them through `spawn_blocking`.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Inner>,
}

struct Inner {
    config: PluginConfig,
    linker: Linker<PluginState>,
    cache: CompileCache,
    slots: [Mutex<Slot>; 3],
    files: Mutex<BTreeMap<PathBuf, FileState>>,
}

#[derive(Default)]
struct Slot {
    /// Bottom: the built-in default. Top: the plugin that answers.
    stack: Vec<Arc<LoadedPlugin>>,
    /// Plugins taken off the stack after a failed call, with the reason.
    failed: Vec<(PluginInfo, String)>,
}

struct FileState {
    stamp: Stamp,
    /// The error when the file's current content was refused.
    refused: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

/// A plugin's place in the registry, for `tandem plugins list`.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// None for a refused file: its world could not be trusted.
    pub world: Option<World>,
    pub name: String,
    pub version: Option<String>,
    pub source: Source,
    /// `active`, `fallback`, `refused: ...` or `failed: ...`.
    pub state: String,
}

/// What one rescan of the folder did.
#[derive(Debug, Default)]
pub struct RescanReport {
    pub loaded: Vec<String>,
    pub refused: Vec<PluginError>,
    pub removed: Vec<String>,
}

impl Plugins {
    /// Loads the built-in defaults, then the site plugins in the configured folder.
    pub fn new(config: PluginConfig) -> Result<Self, PluginError> {
        config.validate().map_err(|e| PluginError::new("config", FailureKind::Configure(e)))?;
        let linker = linker().map_err(|e| {
            PluginError::new("host", FailureKind::Link { world: "host", detail: e.to_string() })
        })?;
        let cache = CompileCache::new(config.cache_dir.clone());
        let plugins = Self {
            inner: Arc::new(Inner {
                config,
                linker,
                cache,
                slots: Default::default(),
                files: Mutex::new(BTreeMap::new()),
            }),
        };
        for world in World::ALL {
            let plugin = plugins.load(&builtin::name(world), Source::BuiltIn, builtin::component(world))?;
            plugins.slot(world).stack.push(plugin);
        }
        plugins.rescan();
        Ok(plugins)
    }

    /// Whether a conf change replicates.
    pub fn replicates(&self, change: &ConfChange) -> Result<bool, PluginError> {
        self.decide(World::Whitelist, |p| p.replicates(change))
    }

    /// One verdict per entry of `batch`.
    pub fn filter(&self, batch: &EntryBatch) -> Result<Vec<Verdict>, PluginError> {
        self.decide(World::PathFilter, |p| p.filter(batch))
    }

    /// How many of the oldest history entries may be purged.
    pub fn purgeable(&self, history: &History) -> Result<u64, PluginError> {
        self.decide(World::PurgePolicy, |p| p.purgeable(history))
    }

    /// Validates a component without installing it (`tandem plugins check`).
    pub fn check(&self, name: &str, bytes: &[u8]) -> Result<PluginInfo, PluginError> {
        self.load(name, Source::File(PathBuf::from(name)), bytes).map(|p| p.info.clone())
    }

    /// Validates a component and makes it the active plugin of its world until the next
    /// change in the folder (`tandem plugins eval --plugin`).
    pub fn install(&self, path: &Path, bytes: &[u8]) -> Result<PluginInfo, PluginError> {
        let plugin = self.load(&display_name(path), Source::File(path.to_path_buf()), bytes)?;
        let info = plugin.info.clone();
        self.push(plugin);
        Ok(info)
    }

    /// Which compiled artifact the active plugin of `world` came from (compiled or cache).
    pub fn origin(&self, world: World) -> Origin {
        self.top(world).info.origin
    }

    /// Every plugin the registry knows, world by world, the active one first.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let mut out = Vec::new();
        for world in World::ALL {
            let slot = self.slot(world);
            for (i, p) in slot.stack.iter().rev().enumerate() {
                out.push(status(&p.info, if i == 0 { "active".into() } else { "fallback".into() }));
            }
            for (info, why) in &slot.failed {
                out.push(status(info, format!("failed: {why}")));
            }
        }
        for (path, file) in self.files().iter() {
            if let Some(why) = &file.refused {
                out.push(PluginStatus {
                    world: None,
                    name: display_name(path),
                    version: None,
                    source: Source::File(path.clone()),
                    state: format!("refused: {why}"),
                });
            }
        }
        out
    }

    /// Checks the plugin folder once: loads new and changed files, drops removed ones.
    pub fn rescan(&self) -> RescanReport {
        let mut report = RescanReport::default();
        let Some(dir) = self.inner.config.dir.clone() else {
            return report;
        };
        let present = scan_folder(&dir);
        let mut files = self.files();
        let gone: Vec<PathBuf> = files.keys().filter(|p| !present.contains_key(*p)).cloned().collect();
        for path in gone {
            files.remove(&path);
            self.remove_source(&path, None);
            info!(plugin = %display_name(&path), "plugin file removed; its plugin is unloaded");
            report.removed.push(display_name(&path));
        }
        for (path, stamp) in present {
            if files.get(&path).is_some_and(|f| f.stamp == stamp) {
                continue;
            }
            let name = display_name(&path);
            let loaded = if stamp.len > MAX_PLUGIN_BYTES {
                Err(PluginError::new(&name, FailureKind::TooLarge { len: stamp.len, max: MAX_PLUGIN_BYTES }))
            } else {
                // Bounded and regular-only: the file may have changed since the scan.
                crate::durable::read_regular(&path, MAX_PLUGIN_BYTES)
                    .map_err(|e| PluginError::new(&name, FailureKind::Io(e.to_string())))
                    .and_then(|bytes| self.load(&name, Source::File(path.clone()), &bytes))
            };
            let refused = match loaded {
                Ok(plugin) => {
                    info!(plugin = %name, world = %plugin.world(), "plugin loaded and active");
                    self.remove_source(&path, Some(plugin.world()));
                    self.push(plugin);
                    report.loaded.push(name);
                    None
                }
                Err(e) => {
                    error!(error = %e, "plugin refused; the previous plugin stays active");
                    let why = e.kind.to_string();
                    report.refused.push(e);
                    Some(why)
                }
            };
            files.insert(path, FileState { stamp, refused });
        }
        report
    }

    /// Rescans the folder every `reload_interval` until `shutdown`.
    pub fn spawn_watcher(&self, shutdown: CancellationToken) -> std::io::Result<JoinHandle<()>> {
        let this = self.clone();
        let interval = self.inner.config.reload_interval();
        std::thread::Builder::new().name("plugin-watch".into()).spawn(move || {
            while !shutdown.is_cancelled() {
                std::thread::sleep(interval);
                this.rescan();
            }
        })
    }

    fn decide<R>(
        &self,
        world: World,
        call: impl Fn(&LoadedPlugin) -> Result<R, PluginError>,
    ) -> Result<R, PluginError> {
        loop {
            let plugin = self.top(world);
            match call(&plugin) {
                Ok(answer) => return Ok(answer),
                Err(e) if plugin.info.source == Source::BuiltIn => return Err(e),
                Err(e) => {
                    error!(error = %e, world = %world, "plugin failed; falling back to the previous plugin");
                    let mut slot = self.slot(world);
                    slot.stack.retain(|p| !Arc::ptr_eq(p, &plugin));
                    slot.failed.push((plugin.info.clone(), e.kind.to_string()));
                    if slot.failed.len() > MAX_FAILURES {
                        slot.failed.remove(0);
                    }
                }
            }
        }
    }

    fn load(&self, name: &str, source: Source, bytes: &[u8]) -> Result<Arc<LoadedPlugin>, PluginError> {
        let cx =
            LoadContext { linker: &self.inner.linker, cache: &self.inner.cache, config: &self.inner.config };
        LoadedPlugin::load(name, source, bytes, &cx)
    }

    fn push(&self, plugin: Arc<LoadedPlugin>) {
        let mut slot = self.slot(plugin.world());
        slot.stack.push(plugin);
        if slot.stack.len() > MAX_FALLBACKS + 2 {
            slot.stack.remove(1); // index 0 is the built-in
        }
    }

    /// Takes every plugin loaded from `path` off the stacks (except `keep`'s world, whose
    /// older versions stay as fallbacks).
    fn remove_source(&self, path: &Path, keep: Option<World>) {
        let source = Source::File(path.to_path_buf());
        for world in World::ALL.into_iter().filter(|w| Some(*w) != keep) {
            self.slot(world).stack.retain(|p| p.info.source != source);
        }
    }

    fn top(&self, world: World) -> Arc<LoadedPlugin> {
        self.slot(world).stack.last().cloned().expect("the built-in plugin is never removed")
    }

    fn slot(&self, world: World) -> MutexGuard<'_, Slot> {
        self.inner.slots[world.index()].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn files(&self) -> MutexGuard<'_, BTreeMap<PathBuf, FileState>> {
        self.inner.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn status(info: &PluginInfo, state: String) -> PluginStatus {
    PluginStatus {
        world: Some(info.world),
        name: info.name.clone(),
        version: Some(info.version.clone()),
        source: info.source.clone(),
        state,
    }
}

fn display_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// The `*.wasm` files of the folder with what identifies their content cheaply.
fn scan_folder(dir: &Path) -> BTreeMap<PathBuf, Stamp> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // No folder: no site plugins (the daemon creates it; the CLI need not).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot read the plugin folder");
            return BTreeMap::new();
        }
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .filter_map(|p| {
            let m = fs::metadata(&p).ok().filter(|m| m.is_file())?;
            let mtime_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            Some((p, Stamp { len: m.len(), mtime_ns, ino: m.ino() }))
        })
        .collect()
}
