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

/// When the API speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiTls {
    /// When it listens beyond loopback (bearer tokens must not cross a network in clear).
    #[default]
    Auto,
    On,
    /// Plain HTTP; beyond loopback only with `allow_plain_http = true`.
    Off,
}

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
    pub tls: ApiTls,
    /// The site's own certificate chain and key (PEM). Unset: a certificate tandem makes on
    /// first start (`<data_dir>/api.crt`, `api.key`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Serve plain HTTP beyond loopback anyway (`tls = "off"`): tokens then cross the network
    /// in clear. Never assumed.
    pub allow_plain_http: bool,
    /// For the CLI: the fingerprint the API's certificate must have (`sha256:...`, as the
    /// daemon logs it). Unset: the one this host's daemon wrote, remembered at first use;
    /// a certificate whose fingerprint changed is refused either way.
    pub pin: Option<String>,
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
            tls: ApiTls::Auto,
            cert_file: None,
            key_file: None,
            allow_plain_http: false,
            pin: None,
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
        if self.tls == ApiTls::Off && !self.listen.ip().is_loopback() && !self.allow_plain_http {
            return Err(format!(
                "api.listen = {} is beyond loopback with api.tls = \"off\": bearer tokens would cross the network in clear; \
                 use api.tls = \"auto\" (a certificate tandem makes) or your own cert_file/key_file, \
                 or set api.allow_plain_http = true to accept that",
                self.listen
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("api.cert_file and api.key_file go together".into());
        }
        if self.pin.as_ref().is_some_and(|p| !p.starts_with("sha256:")) {
            return Err("api.pin: expected sha256:AB:CD:... as the daemon prints it".into());
        }
        Ok(())
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// Whether the API speaks TLS.
    pub fn uses_tls(&self) -> bool {
        match self.tls {
            ApiTls::On => true,
            ApiTls::Off => false,
            ApiTls::Auto => !self.listen.ip().is_loopback() || self.cert_file.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_beyond_loopback_only_when_asked_for() {
        let local = ApiConfig::default();
        local.validate().unwrap();
        assert!(!local.uses_tls(), "loopback: plain by default");
        let open = ApiConfig { listen: "0.0.0.0:7421".parse().unwrap(), ..ApiConfig::default() };
        open.validate().unwrap();
        assert!(open.uses_tls(), "beyond loopback: TLS by default");
        let plain = ApiConfig { tls: ApiTls::Off, ..open.clone() };
        let e = plain.validate().unwrap_err();
        assert!(e.contains("beyond loopback") && e.contains("allow_plain_http"), "{e}");
        ApiConfig { allow_plain_http: true, ..plain }.validate().unwrap();
        let half = ApiConfig { cert_file: Some("/x.pem".into()), ..ApiConfig::default() };
        assert!(half.validate().is_err());
    }
}
