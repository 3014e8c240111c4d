//! Settings of the REST API (`[api]` in tandem.toml).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the REST API listens unless told otherwise (loopback only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7421";
/// Shortest accepted token, so a token cannot be guessed by trying.
pub const MIN_TOKEN_LEN: usize = 16;
/// Largest token file read, in bytes.
pub const MAX_TOKEN_FILE: u64 = 4096;
/// What a configuration shown to a person holds in place of a token.
pub const REDACTED: &str = "(set; not shown)";

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
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            advertise: None,
            admin_token: None,
            read_token: None,
            token_file: None,
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
        Ok(())
    }
}
