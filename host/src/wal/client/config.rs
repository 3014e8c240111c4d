//! How to reach the primary: [`ConnConfig`], its defaults and its validation.
//!
//! Must never: print the password (its `Debug` hides it).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::error::WalClientError;

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 5432;
pub const DEFAULT_USER: &str = "postgres";
/// What the primary shows in `pg_stat_replication.application_name`.
pub const DEFAULT_APPLICATION_NAME: &str = "tandem";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Far above what PostgreSQL sends (an `XLogData` carries at most 128 KiB of WAL), low enough
/// that a corrupt length cannot make us buffer gigabytes.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 << 20;
/// Below this a legitimate `XLogData` from a stock server could be refused.
pub const MIN_MAX_MESSAGE_LEN: usize = 1 << 20;
/// PostgreSQL truncates names (roles, databases, application names) at 63 bytes.
const MAX_NAME_LEN: usize = 63;

/// Where and as whom to connect to the primary for physical replication.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// Host name or address for TCP; ignored when `socket_dir` is set.
    pub host: String,
    /// TCP port, and the number in the Unix socket's name (`.s.PGSQL.<port>`).
    pub port: u16,
    /// Connect through the Unix socket in this directory instead of TCP.
    pub socket_dir: Option<PathBuf>,
    /// A role with the REPLICATION attribute.
    pub user: String,
    /// Used for cleartext, MD5 and SCRAM-SHA-256; `None` works only with `trust`.
    pub password: Option<String>,
    /// Only matched against pg_hba.conf's database column (`replication`) for physical
    /// replication; sent if set.
    pub dbname: Option<String>,
    pub application_name: String,
    /// Limit for the TCP connect, the startup exchange and authentication together.
    pub connect_timeout: Duration,
    /// Largest server message accepted, in bytes (type byte and length included).
    pub max_message_len: usize,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            socket_dir: None,
            user: DEFAULT_USER.to_owned(),
            password: None,
            dbname: None,
            application_name: DEFAULT_APPLICATION_NAME.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
        }
    }
}

impl ConnConfig {
    /// Defaults with a short connect timeout, for tests against a local server.
    pub fn for_test() -> Self {
        Self { connect_timeout: Duration::from_secs(5), ..Self::default() }
    }

    /// Where this config points, for logs and errors.
    pub fn address(&self) -> String {
        match &self.socket_dir {
            Some(dir) => format!("{}/.s.PGSQL.{}", dir.display(), self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    pub fn validate(&self) -> Result<(), WalClientError> {
        let bad = |why: String| Err(WalClientError::Config(why));
        if self.socket_dir.is_none() && self.host.is_empty() {
            return bad("no host and no socket directory".into());
        }
        if self.port == 0 {
            return bad("port 0".into());
        }
        for (what, value) in [("user", Some(&self.user)), ("dbname", self.dbname.as_ref())] {
            if let Some(v) = value
                && (v.is_empty() || v.len() > MAX_NAME_LEN || v.contains('\0'))
            {
                return bad(format!("{what} must be 1 to {MAX_NAME_LEN} bytes without NUL"));
            }
        }
        if self.application_name.len() > MAX_NAME_LEN || self.application_name.contains('\0') {
            return bad(format!("application_name must be at most {MAX_NAME_LEN} bytes without NUL"));
        }
        if self.password.as_deref().is_some_and(|p| p.contains('\0')) {
            return bad("the password contains NUL".into());
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout is zero".into());
        }
        if self.max_message_len < MIN_MAX_MESSAGE_LEN {
            return bad(format!("max_message_len is below {MIN_MAX_MESSAGE_LEN} bytes"));
        }
        Ok(())
    }
}

impl fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnConfig")
            .field("address", &self.address())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_message_len", &self.max_message_len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_debug_hides_the_password() {
        let mut c = ConnConfig::for_test();
        c.validate().unwrap();
        c.password = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.address(), "127.0.0.1:5432");
        c.socket_dir = Some("/run/pg".into());
        assert_eq!(c.address(), "/run/pg/.s.PGSQL.5432");
    }

    #[test]
    fn bad_configs_are_refused() {
        let broken: [fn(&mut ConnConfig); 6] = [
            |c| c.user.clear(),
            |c| c.user = "x".repeat(64),
            |c| c.port = 0,
            |c| c.password = Some("a\0b".into()),
            |c| c.max_message_len = 1000,
            |c| c.connect_timeout = Duration::ZERO,
        ];
        for f in broken {
            let mut c = ConnConfig::default();
            f(&mut c);
            assert!(matches!(c.validate(), Err(WalClientError::Config(_))), "{c:?}");
        }
    }
}
