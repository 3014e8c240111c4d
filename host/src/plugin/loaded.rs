//! One loaded plugin: its compiled component checked against its world (an `InstancePre`),
//! its settings and caps, and a live instance that is thrown away after any failure (a
//! wasmtime store that trapped cannot be entered again) and rebuilt on the next call.
//!
//! Loading validates everything a call relies on: it is a component, of a known world and
//! version, its imports are satisfied, it accepts its settings, and it answers a probe.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use wasmtime::component::Linker;
use wasmtime::{Store, Trap};

use super::bindings::{
    ConfChange, EntryBatch, EntryKind, History, Scope, Verdict, path_filter, purge_policy, whitelist,
};
use super::cache::{CompileCache, Origin};
use super::config::PluginConfig;
use super::engine::{Ticking, engine};
use super::error::{FailureKind, PluginError};
use super::sandbox::{PluginState, new_store};
use super::world::{Version, World, identify};

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "path")]
pub enum Source {
    BuiltIn,
    File(PathBuf),
}

/// The sandbox's caps for one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: usize,
    pub call_timeout: Duration,
}

/// What is known about a loaded plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub world: World,
    /// The contract version it was built against.
    pub version: String,
    pub source: Source,
    /// BLAKE3 of the component's bytes (hex).
    pub hash: String,
    /// Whether this load compiled the component or found it in the cache.
    #[serde(skip)]
    pub origin: Origin,
}

enum Pre {
    Whitelist(whitelist::WhitelistPre<PluginState>),
    PathFilter(path_filter::PathFilterPre<PluginState>),
    PurgePolicy(purge_policy::PurgePolicyPre<PluginState>),
}

enum Bound {
    Whitelist(whitelist::Whitelist),
    PathFilter(path_filter::PathFilter),
    PurgePolicy(purge_policy::PurgePolicy),
}

struct Live {
    store: Store<PluginState>,
    bound: Bound,
}

/// A validated plugin, ready to answer.
pub struct LoadedPlugin {
    pub info: PluginInfo,
    pre: Pre,
    settings: Vec<(String, String)>,
    limits: Limits,
    live: Mutex<Option<Live>>,
}

/// Everything a load needs besides the bytes.
pub struct LoadContext<'a> {
    pub linker: &'a Linker<PluginState>,
    pub cache: &'a CompileCache,
    /// Caps and each plugin's settings table.
    pub config: &'a PluginConfig,
}

impl LoadedPlugin {
    /// Compiles (or loads from cache), checks and probes a plugin.
    pub fn load(
        name: &str,
        source: Source,
        bytes: &[u8],
        cx: &LoadContext<'_>,
    ) -> Result<Arc<Self>, PluginError> {
        let fail = |kind| PluginError::new(name, kind);
        if !bytes.starts_with(b"\0asm") {
            return Err(fail(FailureKind::NotWasm));
        }
        // Preamble: magic, then a version/layer word; a core module's layer is 0.
        if bytes.get(6..8) == Some(&[0, 0]) {
            return Err(fail(FailureKind::CoreModule));
        }
        let (component, origin) =
            cx.cache.load(engine(), bytes).map_err(|e| fail(FailureKind::Compile(chain(&e))))?;
        let ty = component.component_type();
        let (world, version) = identify(ty.exports(engine()).map(|(name, _)| name)).map_err(fail)?;
        let link = |e: wasmtime::Error| fail(FailureKind::Link { world: world.name(), detail: chain(&e) });
        let instance_pre = cx.linker.instantiate_pre(&component).map_err(link)?;
        let pre = match world {
            World::Whitelist => Pre::Whitelist(whitelist::WhitelistPre::new(instance_pre).map_err(link)?),
            World::PathFilter => {
                Pre::PathFilter(path_filter::PathFilterPre::new(instance_pre).map_err(link)?)
            }
            World::PurgePolicy => {
                Pre::PurgePolicy(purge_policy::PurgePolicyPre::new(instance_pre).map_err(link)?)
            }
        };
        let settings = cx.config.settings_for(&PluginConfig::settings_key(&source, world));
        let plugin = Arc::new(Self {
            info: PluginInfo {
                name: name.to_string(),
                world,
                version: version_string(version),
                source,
                hash: blake3::hash(bytes).to_hex().to_string(),
                origin,
            },
            pre,
            settings,
            limits: cx.config.limits(),
            live: Mutex::new(None),
        });
        plugin.probe()?;
        Ok(plugin)
    }

    pub fn world(&self) -> World {
        self.info.world
    }

    /// Whether a conf change replicates.
    pub fn replicates(&self, change: &ConfChange) -> Result<bool, PluginError> {
        self.call(|store, bound| match bound {
            Bound::Whitelist(b) => {
                Ok(Ok(b.tandem_policy_replication_whitelist().call_replicates(store, change)?))
            }
            _ => Ok(Err(wrong_world())),
        })
    }

    /// One verdict per entry of the batch; an answer of the wrong length is refused.
    pub fn filter(&self, batch: &EntryBatch) -> Result<Vec<Verdict>, PluginError> {
        self.call(|store, bound| {
            let Bound::PathFilter(b) = bound else {
                return Ok(Err(wrong_world()));
            };
            Ok(match b.tandem_policy_tree_filter().call_filter(store, batch)? {
                Ok(v) if v.len() == batch.len() => Ok(v),
                Ok(v) => Err(FailureKind::Malformed(format!(
                    "{} verdicts for a batch of {} entries",
                    v.len(),
                    batch.len()
                ))),
                Err(msg) => Err(FailureKind::Refused(msg)),
            })
        })
    }

    /// How many of the oldest history entries may be purged; never more than the window sent.
    pub fn purgeable(&self, history: &History) -> Result<u64, PluginError> {
        self.call(|store, bound| {
            let Bound::PurgePolicy(b) = bound else {
                return Ok(Err(wrong_world()));
            };
            let n = b.tandem_policy_history_purge().call_purgeable(store, history)?;
            let window = history.oldest.len() as u64;
            Ok(if n <= window {
                Ok(n)
            } else {
                Err(FailureKind::Malformed(format!(
                    "{n} entries to purge, but only the oldest {window} were offered"
                )))
            })
        })
    }

    /// A harmless decision, run once at load: a plugin that cannot answer it is refused.
    fn probe(&self) -> Result<(), PluginError> {
        match self.world() {
            World::Whitelist => self
                .replicates(&ConfChange {
                    conf_type: "savedsearches".into(),
                    scope: Scope::App("search".into()),
                    meta: false,
                })
                .map(drop),
            World::PathFilter => self.filter(&probe_batch()).map(drop),
            World::PurgePolicy => {
                self.purgeable(&History { count: 1, oldest: vec![0], now: now_ms() }).map(drop)
            }
        }
    }

    /// Runs `f` against a live instance under the time cap, creating the instance (and
    /// configuring it) if needed. Any failure discards the instance.
    fn call<R>(
        &self,
        f: impl FnOnce(&mut Store<PluginState>, &Bound) -> wasmtime::Result<Result<R, FailureKind>>,
    ) -> Result<R, PluginError> {
        let _ticking = Ticking::start();
        // A panic while a store was entered leaves it unusable: start over.
        let mut live = self.live.lock().unwrap_or_else(|poisoned| {
            let mut live = poisoned.into_inner();
            *live = None;
            live
        });
        if live.is_none() {
            *live = Some(self.instantiate()?);
        }
        let Live { store, bound } = live.as_mut().expect("instance was just created");
        PluginState::start_call(store, self.limits.call_timeout);
        store.data().clear_stderr();
        let outcome = match f(store, bound) {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(kind)) => kind,
            Err(e) => self.classify(&e, store.data()),
        };
        *live = None;
        Err(PluginError::new(&self.info.name, outcome))
    }

    fn instantiate(&self) -> Result<Live, PluginError> {
        let name: Arc<str> = Arc::from(self.info.name.as_str());
        let mut store = new_store(name, self.limits.memory_bytes);
        PluginState::start_call(&mut store, self.limits.call_timeout);
        let fail = |kind| PluginError::new(&self.info.name, kind);
        let settings = &self.settings;
        let bound = match &self.pre {
            Pre::Whitelist(pre) => pre.instantiate(&mut store).map(Bound::Whitelist),
            Pre::PathFilter(pre) => pre.instantiate(&mut store).map(Bound::PathFilter),
            Pre::PurgePolicy(pre) => pre.instantiate(&mut store).map(Bound::PurgePolicy),
        }
        .map_err(|e| fail(self.classify(&e, store.data())))?;
        let configured = match &bound {
            Bound::Whitelist(b) => {
                b.tandem_policy_replication_whitelist().call_configure(&mut store, settings)
            }
            Bound::PathFilter(b) => b.tandem_policy_tree_filter().call_configure(&mut store, settings),
            Bound::PurgePolicy(b) => b.tandem_policy_history_purge().call_configure(&mut store, settings),
        };
        match configured {
            Ok(Ok(())) => Ok(Live { store, bound }),
            Ok(Err(msg)) => Err(fail(FailureKind::Configure(msg))),
            Err(e) => Err(fail(self.classify(&e, store.data()))),
        }
    }

    fn classify(&self, err: &wasmtime::Error, state: &PluginState) -> FailureKind {
        if let Some(wanted) = state.memory_refused {
            return FailureKind::MemoryLimit {
                wanted_mib: (wanted as u64).div_ceil(1 << 20),
                limit_mib: (self.limits.memory_bytes as u64) >> 20,
            };
        }
        if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return FailureKind::Timeout { limit_ms: self.limits.call_timeout.as_millis() as u64 };
        }
        // The root cause ("wasm `unreachable` instruction executed"), not the wasm backtrace.
        let mut reason = err.chain().last().map(|c| c.to_string()).unwrap_or_default();
        let stderr = state.stderr_text();
        let said: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with"))
            .collect();
        if !said.is_empty() {
            reason.push_str(&format!("; the plugin said: {}", said.join(" ")));
        }
        FailureKind::Trap(reason)
    }
}

fn wrong_world() -> FailureKind {
    FailureKind::Malformed("called with another world's decision".into())
}

fn version_string(v: Version) -> String {
    format!("{}@{v}", super::world::PACKAGE)
}

fn probe_batch() -> EntryBatch {
    EntryBatch {
        tree: "probe".into(),
        paths: b"probe.txtprobe-dir".to_vec(),
        ends: vec![9, 18],
        kinds: vec![EntryKind::File, EntryKind::Dir],
        sizes: vec![1, 0],
        modes: vec![0o644, 0o755],
    }
}

/// An error and its causes on one line.
fn chain(err: &wasmtime::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        out.push_str(": ");
        out.push_str(&cause.to_string());
    }
    out
}

/// The current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// `t` as Unix milliseconds (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
