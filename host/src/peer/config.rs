//! Settings of the peer transport (`[peer]` in tandem.toml).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The cluster secret's file in the data folder when `secret_file` is unset (the only place a
/// missing secret is generated).
pub const DEFAULT_SECRET_FILE: &str = "cluster.secret";
/// Where a host listens for peers unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";
/// Largest frame body accepted (WAL and file chunks are far smaller).
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 64 << 20;
/// A connection must finish its handshake within this time.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Handshakes in progress at once (a newcomer past it evicts the one that showed least).
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;
/// Authenticated peer connections served at once (a cluster has a handful of members).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// The largest either pool may be configured.
const MAX_POOL: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    pub listen: SocketAddr,
    /// The address other hosts dial to reach this one (`host:port`). Unset: the listen
    /// address (which then must not be 0.0.0.0 / ::).
    pub advertise: Option<String>,
    /// File holding the cluster secret; None: `<data_dir>/cluster.secret`, made if missing. A
    /// configured file must exist.
    pub secret_file: Option<PathBuf>,
    pub max_frame_bytes: u64,
    pub handshake_timeout_ms: u64,
    /// Handshakes in progress at once; see `peer::listener`.
    pub max_handshakes: usize,
    /// Authenticated connections at once.
    pub max_connections: usize,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            advertise: None,
            secret_file: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl PeerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1024..=1 << 32).contains(&self.max_frame_bytes) {
            return Err(format!("peer.max_frame_bytes = {}: expected 1024 to 4 GiB", self.max_frame_bytes));
        }
        if !(100..=600_000).contains(&self.handshake_timeout_ms) {
            return Err(format!(
                "peer.handshake_timeout_ms = {}: expected 100 to 600000",
                self.handshake_timeout_ms
            ));
        }
        for (name, value) in
            [("max_handshakes", self.max_handshakes), ("max_connections", self.max_connections)]
        {
            if !(1..=MAX_POOL).contains(&value) {
                return Err(format!("peer.{name} = {value}: expected 1 to {MAX_POOL}"));
            }
        }
        Ok(())
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// A config for tests: port 0 on loopback, short timeouts.
    pub fn for_test() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            handshake_timeout_ms: 1_000,
            ..Self::default()
        }
    }
}
