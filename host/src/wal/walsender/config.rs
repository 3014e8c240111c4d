//! The walsender's configuration: where it listens, how standbys authenticate, its timers and
//! limits, each with a named default. Owns validation; never does I/O.
//!
//! Must never: print the password (its `Debug` hides it).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::error::WalSenderError;

/// Beside a PostgreSQL on 5432.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5433));
/// Keepalive cadence while streaming (PostgreSQL sends one when idle and asks for a reply at
/// half of `wal_sender_timeout`).
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// PostgreSQL's `wal_sender_timeout` default: a standby silent this long is dropped.
pub const DEFAULT_STANDBY_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest client message accepted; a standby's messages are tens of bytes.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 20;
/// Concurrent standby connections (PostgreSQL's `max_wal_senders` default).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;
/// A client must finish startup and authentication within this (PostgreSQL's
/// `authentication_timeout` default).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// PostgreSQL's `MAX_SEND_SIZE`: WAL bytes per XLogData message.
pub const MAX_SEND_SIZE: usize = 128 * 1024;
/// Smallest `max_message_len` that fits a SASL message and a query.
const MIN_MAX_MESSAGE_LEN: usize = 1024;

/// How a standby must authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum SenderAuth {
    /// Any user name, no password (PostgreSQL's `trust`): for loopback and tests.
    Trust,
    /// SCRAM-SHA-256 for one user with this password.
    ScramSha256 {
        /// The only user accepted.
        user: String,
        /// Its password.
        password: String,
    },
}

impl fmt::Debug for SenderAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderAuth::Trust => f.write_str("Trust"),
            SenderAuth::ScramSha256 { user, .. } => {
                f.debug_struct("ScramSha256").field("user", user).field("password", &"<hidden>").finish()
            }
        }
    }
}

/// Configuration of the walsender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSenderConfig {
    /// Address to listen on (used by whoever binds the listener passed to `serve`).
    pub listen: SocketAddr,
    /// How standbys authenticate.
    pub auth: SenderAuth,
    /// A keepalive goes out after this long without sending anything.
    pub keepalive_interval: Duration,
    /// A standby silent this long is dropped; at half of it a reply is requested.
    pub standby_timeout: Duration,
    /// Largest client message accepted, in bytes.
    pub max_message_len: usize,
    /// Concurrent connections; more are refused (FATAL 53300).
    pub max_connections: usize,
    /// Startup and authentication must finish within this.
    pub startup_timeout: Duration,
}

impl Default for WalSenderConfig {
    fn default() -> Self {
        WalSenderConfig {
            listen: DEFAULT_LISTEN,
            auth: SenderAuth::Trust,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            standby_timeout: DEFAULT_STANDBY_TIMEOUT,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        }
    }
}

impl WalSenderConfig {
    /// Loopback on any port, trust, short timers: tests.
    pub fn for_test() -> Self {
        WalSenderConfig {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)),
            keepalive_interval: Duration::from_millis(500),
            standby_timeout: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(10),
            ..WalSenderConfig::default()
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), WalSenderError> {
        let bad = |why: String| Err(WalSenderError::Config(why));
        if let SenderAuth::ScramSha256 { user, password } = &self.auth {
            if user.is_empty() || user.contains('\0') {
                return bad("the SCRAM user must be non-empty without NUL".into());
            }
            if password.is_empty() || password.contains('\0') {
                return bad("the SCRAM password must be non-empty without NUL".into());
            }
        }
        if self.keepalive_interval.is_zero()
            || self.standby_timeout.is_zero()
            || self.startup_timeout.is_zero()
        {
            return bad("keepalive_interval, standby_timeout and startup_timeout must be above zero".into());
        }
        if self.max_message_len < MIN_MAX_MESSAGE_LEN {
            return bad(format!("max_message_len is below {MIN_MAX_MESSAGE_LEN} bytes"));
        }
        if self.max_connections == 0 {
            return bad("max_connections is zero".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_do_not() {
        WalSenderConfig::default().validate().unwrap();
        WalSenderConfig::for_test().validate().unwrap();
        let scram = SenderAuth::ScramSha256 { user: "u".into(), password: "hunter2".into() };
        assert!(!format!("{scram:?}").contains("hunter2"));
        let broken: [fn(&mut WalSenderConfig); 4] = [
            |c| c.auth = SenderAuth::ScramSha256 { user: "u".into(), password: String::new() },
            |c| c.standby_timeout = Duration::ZERO,
            |c| c.max_message_len = 10,
            |c| c.max_connections = 0,
        ];
        for f in broken {
            let mut c = WalSenderConfig::default();
            f(&mut c);
            assert!(matches!(c.validate(), Err(WalSenderError::Config(_))), "{c:?}");
        }
    }
}
