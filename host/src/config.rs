//! `tandem.toml`: the host's configuration, each section owned by its subsystem. Missing file
//! or missing keys mean the embedded defaults ([`DEFAULT_TOML`] documents every one); unknown
//! keys are errors, so a typo is caught rather than ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::ApiConfig;
use crate::cluster::ClusterConfig;
use crate::logging::LogConfig;
use crate::peer::PeerConfig;
use crate::plugin::PluginConfig;
use crate::standby::config::StandbyConfig;
use crate::sync::config::SyncConfig;
use crate::tunnel::TunnelConfig;
use crate::wal::config::WalConfig;

/// Where state lives unless configured.
pub const DEFAULT_DATA_DIR: &str = "tandem-data";

/// The documented default configuration, as `tandem config default` prints it.
pub const DEFAULT_TOML: &str = include_str!("../tandem.default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This host's name in logs and in its peers' status (default: the machine's host name).
    pub node_name: String,
    /// Folder for all state: secret, plugin cache, logs, later the archive and logs of changes.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub plugins: PluginConfig,
    pub peer: PeerConfig,
    pub api: ApiConfig,
    pub cluster: ClusterConfig,
    pub sync: SyncConfig,
    pub wal: WalConfig,
    pub standby: StandbyConfig,
    pub tunnel: TunnelConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            log: LogConfig::default(),
            plugins: PluginConfig::default(),
            peer: PeerConfig::default(),
            api: ApiConfig::default(),
            cluster: ClusterConfig::default(),
            sync: SyncConfig::default(),
            wal: WalConfig::default(),
            standby: StandbyConfig::default(),
            tunnel: TunnelConfig::default(),
        }
    }
}

impl Config {
    /// Reads `path` (or takes the embedded defaults when `None`), validates, and fills in the
    /// folders that default to places under `data_dir`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                Self::parse(&text)
                    .map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })?
            }
        };
        config.resolved()
    }

    /// Parses TOML text without validating it.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Validates and fills defaults that depend on other settings.
    pub fn resolved(mut self) -> Result<Self, ConfigError> {
        self.plugins.validate().map_err(ConfigError::Invalid)?;
        self.peer.validate().map_err(ConfigError::Invalid)?;
        self.log.validate().map_err(ConfigError::Invalid)?;
        self.api.validate().map_err(ConfigError::Invalid)?;
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        if self.cluster.snapshot_chunk_bytes.saturating_add(crate::cluster::CHUNK_FRAME_SLACK)
            > self.peer.max_frame_bytes
        {
            return Err(ConfigError::Invalid(format!(
                "cluster.snapshot_chunk_bytes = {}: a chunk travels in one peer frame, so it must stay {} bytes below peer.max_frame_bytes = {}",
                self.cluster.snapshot_chunk_bytes,
                crate::cluster::CHUNK_FRAME_SLACK,
                self.peer.max_frame_bytes
            )));
        }
        self.sync.validate().map_err(ConfigError::Invalid)?;
        self.wal.validate().map_err(ConfigError::Invalid)?;
        self.standby.validate().map_err(ConfigError::Invalid)?;
        self.tunnel.validate().map_err(ConfigError::Invalid)?;
        if self.tunnel.socket_port == self.standby.pg_port {
            return Err(ConfigError::Invalid(format!(
                "tunnel.socket_port = {}: the local PostgreSQL's own socket has that number (standby.pg_port)",
                self.tunnel.socket_port
            )));
        }
        if self.node_name.is_empty() {
            self.node_name = host_name();
        }
        let data = self.data_dir.clone();
        self.plugins.dir.get_or_insert_with(|| data.join("plugins"));
        self.plugins.cache_dir.get_or_insert_with(|| data.join("plugin-cache"));
        self.peer.secret_file.get_or_insert_with(|| data.join(crate::peer::DEFAULT_SECRET_FILE));
        self.log.dir.get_or_insert_with(|| data.join("logs"));
        self.api.token_file.get_or_insert_with(|| data.join("api.token"));
        self.cluster.conf_root.get_or_insert_with(|| data.join("etc"));
        self.sync.app_home.get_or_insert_with(|| data.join("app"));
        self.wal.dir.get_or_insert_with(|| data.join("wal"));
        Ok(self)
    }
}

impl Config {
    /// The configuration as `tandem config check` prints it: credentials replaced.
    pub fn redacted(&self) -> Self {
        Self { api: self.api.redacted(), ..self.clone() }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tandem".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_defaults_are_the_defaults() {
        assert_eq!(Config::parse(DEFAULT_TOML).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_clearly() {
        let e = Config::parse("[plugins]\nmemory_limit = 3\n").unwrap_err();
        assert!(e.contains("unknown field `memory_limit`"), "{e}");
        let c = Config::parse("[plugins]\ncall_timeout_ms = 0\n").unwrap();
        let e = c.resolved().unwrap_err().to_string();
        assert!(e.contains("call_timeout_ms"), "{e}");
        let c = Config::parse("[plugins.settings.\"x.wasm\"]\na = 1\n").unwrap();
        assert!(c.resolved().unwrap_err().to_string().contains("file's stem"));
        assert!(Config::parse("[peer]\nlisten = \"nowhere\"\n").is_err());
    }

    /// Regression (issue 14): `tandem config check` printed both API tokens.
    #[test]
    fn the_printed_configuration_hides_the_tokens() {
        let c = Config::parse(
            "[api]\nadmin_token = \"admin-secret-0123456789\"\nread_token = \"read-secret-0123456789\"\n",
        )
        .unwrap()
        .resolved()
        .unwrap();
        let text = toml::to_string_pretty(&c.redacted()).unwrap();
        assert!(!text.contains("admin-secret") && !text.contains("read-secret"), "{text}");
        assert_eq!(text.matches(crate::api::REDACTED).count(), 2, "{text}");
        let unset = toml::to_string_pretty(&Config::default().redacted()).unwrap();
        assert!(!unset.contains(crate::api::REDACTED), "an unset token stays unset");
    }

    #[test]
    fn folders_default_under_the_data_dir() {
        let c = Config::parse("data_dir = \"/srv/t\"\n").unwrap().resolved().unwrap();
        assert_eq!(c.plugins.dir.as_deref(), Some(Path::new("/srv/t/plugins")));
        assert_eq!(c.peer.secret_file.as_deref(), Some(Path::new("/srv/t/cluster.secret")));
        assert!(!c.node_name.is_empty());
    }
}
