//! Settings of the plugin runtime (`[plugins]` in tandem.toml).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::loaded::{Limits, Source};
use super::world::World;

/// Default memory cap of one plugin instance.
pub const DEFAULT_MEMORY_LIMIT_MIB: u64 = 64;
/// Default time cap of one call, in CPU time of the calling thread.
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 50;
/// How often the plugin folder is checked for new, changed or removed files.
pub const DEFAULT_RELOAD_INTERVAL_MS: u64 = 250;

/// A setting's value as written in TOML; plugins receive it as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl SettingValue {
    fn as_text(&self) -> String {
        match self {
            SettingValue::Text(s) => s.clone(),
            SettingValue::Integer(i) => i.to_string(),
            SettingValue::Float(f) => f.to_string(),
            SettingValue::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Folder of site plugins (`*.wasm`), watched for changes. None: built-ins only.
    pub dir: Option<PathBuf>,
    /// Folder of compiled plugins, so a restart does not recompile. None: no cache.
    pub cache_dir: Option<PathBuf>,
    pub memory_limit_mib: u64,
    pub call_timeout_ms: u64,
    pub reload_interval_ms: u64,
    /// Settings per plugin: `[plugins.settings.<world>]` for a built-in default
    /// (`whitelist`, `path-filter`, `purge-policy`), `[plugins.settings.<file stem>]` for the
    /// site plugin `<file stem>.wasm`. Each plugin sees only its own table, so a site plugin's
    /// keys never reach the built-in kept as its fallback.
    pub settings: BTreeMap<String, BTreeMap<String, SettingValue>>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            dir: None,
            cache_dir: None,
            memory_limit_mib: DEFAULT_MEMORY_LIMIT_MIB,
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
            reload_interval_ms: DEFAULT_RELOAD_INTERVAL_MS,
            settings: BTreeMap::new(),
        }
    }
}

impl PluginConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=4096).contains(&self.memory_limit_mib) {
            return Err(format!("plugins.memory_limit_mib = {}: expected 1 to 4096", self.memory_limit_mib));
        }
        if !(1..=60_000).contains(&self.call_timeout_ms) {
            return Err(format!("plugins.call_timeout_ms = {}: expected 1 to 60000", self.call_timeout_ms));
        }
        if !(10..=60_000).contains(&self.reload_interval_ms) {
            return Err(format!(
                "plugins.reload_interval_ms = {}: expected 10 to 60000",
                self.reload_interval_ms
            ));
        }
        for name in self.settings.keys() {
            if name.is_empty() || name.contains('/') || name.ends_with(".wasm") {
                return Err(format!(
                    "[plugins.settings.\"{name}\"]: name a world or a plugin file's stem (`skip-bak` for skip-bak.wasm)"
                ));
            }
        }
        Ok(())
    }

    /// A config for tests: plugins from `dir`, fast reloads.
    pub fn for_test(dir: Option<PathBuf>) -> Self {
        Self { dir, reload_interval_ms: 50, ..Self::default() }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: (self.memory_limit_mib << 20) as usize,
            call_timeout: Duration::from_millis(self.call_timeout_ms),
        }
    }

    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.reload_interval_ms)
    }

    /// The settings table a plugin reads: its world's name for a built-in, its file stem
    /// for a site plugin.
    pub fn settings_key(source: &Source, world: World) -> String {
        match source {
            Source::BuiltIn => world.name().to_string(),
            Source::File(path) => {
                path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
            }
        }
    }

    /// The settings the plugin under `key` receives.
    pub fn settings_for(&self, key: &str) -> Vec<(String, String)> {
        self.settings
            .get(key)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_text())).collect())
            .unwrap_or_default()
    }

    /// Sets one setting of the plugin under `plugin` (used by `tandem plugins eval --set`).
    pub fn set(&mut self, plugin: &str, key: &str, value: &str) {
        self.settings
            .entry(plugin.to_string())
            .or_default()
            .insert(key.to_string(), SettingValue::Text(value.to_string()));
    }
}
