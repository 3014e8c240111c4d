//! Settings of the database tunnel (`[tunnel]` in tandem.toml).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The "port" of the entry socket (`.s.PGSQL.<port>` in the local PostgreSQL's socket folder).
pub const DEFAULT_SOCKET_PORT: u16 = 7432;
/// zstd level: 1 compresses WAL ~3x at several hundred MB/s per core.
pub const DEFAULT_LEVEL: i32 = 1;
/// A side that has sent nothing for this long sends a keepalive.
pub const DEFAULT_KEEPALIVE_MS: u64 = 2_000;
/// A side that has heard nothing for this long (keepalives included) closes the tunnel: the
/// link is gone (a cut cable never sends a reset).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 10_000;
/// Compression may use this share of one core (percent) when the link is not what limits the
/// stream; past it, and with a link that keeps up, chunks go uncompressed.
pub const DEFAULT_CPU_BUDGET_PERCENT: u32 = 25;
/// How long dialling the peer (connect and handshake) may take.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;

/// When chunks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// When it pays (see [`crate::tunnel::compress::Policy`]).
    #[default]
    Auto,
    Off,
    /// Every chunk (benchmarks).
    Always,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TunnelConfig {
    /// The entry socket's port number (its name; nothing listens on TCP).
    pub socket_port: u16,
    pub compression: Compression,
    pub level: i32,
    pub keepalive_ms: u64,
    pub idle_timeout_ms: u64,
    pub cpu_budget_percent: u32,
    pub connect_timeout_ms: u64,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            socket_port: DEFAULT_SOCKET_PORT,
            compression: Compression::Auto,
            level: DEFAULT_LEVEL,
            keepalive_ms: DEFAULT_KEEPALIVE_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            cpu_budget_percent: DEFAULT_CPU_BUDGET_PERCENT,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
        }
    }
}

impl TunnelConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=19).contains(&self.level) {
            return Err(format!("tunnel.level = {}: expected 1 to 19", self.level));
        }
        if self.keepalive_ms == 0 || self.idle_timeout_ms < 2 * self.keepalive_ms {
            return Err(format!(
                "tunnel.idle_timeout_ms = {} must be at least twice tunnel.keepalive_ms = {} (above 0)",
                self.idle_timeout_ms, self.keepalive_ms
            ));
        }
        if !(1..=100).contains(&self.cpu_budget_percent) {
            return Err(format!(
                "tunnel.cpu_budget_percent = {}: expected 1 to 100",
                self.cpu_budget_percent
            ));
        }
        if self.connect_timeout_ms == 0 {
            return Err("tunnel.connect_timeout_ms must be above 0".into());
        }
        Ok(())
    }

    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Short timers for tests.
    pub fn for_test() -> Self {
        Self { keepalive_ms: 200, idle_timeout_ms: 1_000, connect_timeout_ms: 1_000, ..Self::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        TunnelConfig::default().validate().unwrap();
        TunnelConfig::for_test().validate().unwrap();
        let bad = TunnelConfig { idle_timeout_ms: 100, ..TunnelConfig::default() };
        assert!(bad.validate().unwrap_err().contains("idle_timeout_ms"));
        let bad = TunnelConfig { level: 40, ..TunnelConfig::default() };
        assert!(bad.validate().unwrap_err().contains("tunnel.level"));
    }
}
