//! Settings of the REST API (`[api]` in tandem.toml).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the REST API listens unless told otherwise (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7421";
/// Shortest accepted token, so a token cannot be guessed by trying.
pub const MIN_TOKEN_LEN: usize = 16;
/// Largest token file read, in bytes.
pub const MAX_TOKEN_FILE: u64 = 4096;
/// What a configuration shown to a person holds in place of a token.
pub const REDACTED: &str = "(set; not shown)";
/// Connections served at once (operators, scrapers, the CLI: a handful).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// A connection must deliver a request's headers within this time of opening, or of its
/// previous answer: idle and slow connections are closed.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// The largest connection cap accepted.
const MAX_CONNECTIONS: usize = 65_536;
/// The accepted range of the header timeout.
const HEADER_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=600_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// The API address shown to other members and operators. Unset: the listen address.
    pub advertise: Option<String>,
    /// Token of the admin role (may change configuration). Unset: read from `token_file`,
    /// generated there on first start.
    pub admin_token: Option<String>,
    /// Token of the read-only role (status and reads). Unset: no read-only token.
    pub read_token: Option<String>,
    /// Where the generated admin token lives. Unset: `<data_dir>/api.token`.
    pub token_file: Option<PathBuf>,
    /// Connections served at once (less if the descriptor limit leaves less). When all are
    /// taken, a newcomer closes the oldest idle one (see `crate::admission`).
    pub max_connections: usize,
    /// Milliseconds a connection has to deliver a request's headers after it opens or after
    /// its previous answer; idle and slow connections are closed after it.
    pub header_timeout_ms: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            advertise: None,
            admin_token: None,
            read_token: None,
            token_file: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
        }
    }
}

impl ApiConfig {
    /// The same settings with the tokens replaced by [`REDACTED`], for printing.
    pub fn redacted(&self) -> Self {
        let hide = |t: &Option<String>| t.as_ref().map(|_| REDACTED.to_string());
        Self { admin_token: hide(&self.admin_token), read_token: hide(&self.read_token), ..self.clone() }
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, token) in [("admin_token", &self.admin_token), ("read_token", &self.read_token)] {
            if let Some(t) = token
                && t.len() < MIN_TOKEN_LEN
            {
                return Err(format!("api.{name} must be at least {MIN_TOKEN_LEN} characters"));
            }
        }
        if self.admin_token.is_some() && self.admin_token == self.read_token {
            return Err("api.admin_token and api.read_token must differ".into());
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(format!(
                "api.max_connections = {}: expected 1 to {MAX_CONNECTIONS}",
                self.max_connections
            ));
        }
        if !HEADER_TIMEOUT_RANGE_MS.contains(&self.header_timeout_ms) {
            return Err(format!(
                "api.header_timeout_ms = {}: expected {} to {}",
                self.header_timeout_ms,
                HEADER_TIMEOUT_RANGE_MS.start(),
                HEADER_TIMEOUT_RANGE_MS.end()
            ));
        }
        Ok(())
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
}
