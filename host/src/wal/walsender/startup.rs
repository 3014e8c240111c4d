//! A connection's first moments: SSL/GSSAPI encryption requests (declined with 'N'), the
//! StartupMessage (physical replication only), readiness (the upstream identity must be
//! known), authentication, and the parameters and key data a client expects before its first
//! ReadyForQuery.
//!
//! Must never: let a client past without `replication=true` and a successful authentication.

use bytes::BufMut;

use super::auth::{self, AuthStep, ScramServer, ScramVerifier};
use super::backend::{self, SqlError};
use super::codec::{FrontendMessage, StartupPacket};
use super::conn::Conn;
use super::error::WalSenderError;
use crate::wal::upstream::UpstreamIdentity;

/// SQLSTATEs of refusals during startup.
mod sqlstate {
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
}

/// Authentication, prepared once for all connections (the SCRAM verifier costs 4096 HMACs).
#[derive(Debug)]
pub enum PreparedAuth {
    /// Anyone.
    Trust,
    /// One SCRAM user.
    Scram {
        /// The user.
        user: String,
        /// Its verifier.
        verifier: ScramVerifier,
    },
}

/// Who connected.
#[derive(Debug, Clone)]
pub struct Client {
    /// The user from the startup packet.
    pub user: String,
    /// `application_name`, empty if not sent.
    pub application_name: String,
}

/// What the startup phase ended with.
#[derive(Debug)]
pub enum Started {
    /// Authenticated and told ReadyForQuery.
    Ready(Client, UpstreamIdentity),
    /// A CancelRequest: nothing to do, close.
    Cancel,
}

/// Runs the startup phase to the first ReadyForQuery. Not cancel-safe (drop the connection).
pub async fn startup(
    conn: &mut Conn,
    auth: &PreparedAuth,
    identity: &tokio::sync::watch::Receiver<Option<UpstreamIdentity>>,
) -> Result<Started, WalSenderError> {
    let params = loop {
        match conn.read_startup().await? {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                conn.out.put_u8(b'N');
                conn.flush().await?;
            }
            StartupPacket::CancelRequest => return Ok(Started::Cancel),
            StartupPacket::UnsupportedVersion(v) => {
                let e = SqlError::fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!(
                        "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
                        v >> 16,
                        v & 0xFFFF
                    ),
                );
                return Err(conn.fatal(e).await);
            }
            StartupPacket::Startup(params) => break params,
        }
    };
    let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let Some(user) = param("user").filter(|u| !u.is_empty()) else {
        let e = SqlError::fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        );
        return Err(conn.fatal(e).await);
    };
    let physical = param("replication")
        .is_some_and(|v| ["true", "on", "yes", "1"].contains(&v.to_ascii_lowercase().as_str()));
    if !physical {
        let e = SqlError::fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "tandem's walsender only serves physical replication connections (replication=true)",
        );
        return Err(conn.fatal(e).await);
    }
    let client = Client {
        user: user.to_owned(),
        application_name: param("application_name").unwrap_or_default().to_owned(),
    };
    let Some(upstream) = identity.borrow().clone() else {
        let e = SqlError::fatal(
            sqlstate::CANNOT_CONNECT_NOW,
            "the tandem walsender is not ready: it has not reached the primary yet, so it does not know whose WAL it serves",
        );
        return Err(conn.fatal(e).await);
    };
    authenticate(conn, auth, &client.user).await?;
    send_session_parameters(conn, &client, &upstream)?;
    conn.flush().await?;
    Ok(Started::Ready(client, upstream))
}

async fn authenticate(conn: &mut Conn, auth: &PreparedAuth, user: &str) -> Result<(), WalSenderError> {
    let (expected, verifier) = match auth {
        PreparedAuth::Trust => {
            backend::auth_ok(&mut conn.out);
            return Ok(());
        }
        PreparedAuth::Scram { user, verifier } => (user, verifier),
    };
    // A wrong user gets the same exchange against a verifier nobody can satisfy.
    let verifier = if user == expected { verifier.clone() } else { ScramVerifier::impossible()? };
    let mut scram = ScramServer::start(user, verifier, ScramServer::random_nonce()?, &mut conn.out);
    loop {
        conn.flush().await?;
        let body = match conn.read_message().await {
            Ok(FrontendMessage::Password(body)) => body,
            // A client that gives up (libpq without a password) just closes.
            Ok(FrontendMessage::Terminate) | Err(WalSenderError::Closed(_)) => {
                return Err(WalSenderError::Fatal(scram.failed()));
            }
            Ok(other) => {
                let e = SqlError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("expected SASL response, got message type {other:?}"),
                );
                return Err(conn.fatal(e).await);
            }
            Err(e) => return Err(e),
        };
        match scram.step(body, &mut conn.out) {
            Ok(AuthStep::Continue) => {}
            Ok(AuthStep::Done) => return Ok(()),
            Err(e) => {
                if e.code == auth::password_failed(user).code {
                    tracing::warn!(peer = %conn.peer, user, "walsender: password authentication failed");
                }
                return Err(conn.fatal(e).await);
            }
        }
    }
}

fn send_session_parameters(
    conn: &mut Conn,
    client: &Client,
    upstream: &UpstreamIdentity,
) -> Result<(), WalSenderError> {
    let params = [
        ("server_version", upstream.server_version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("TimeZone", "UTC"),
        // pg_receivewal and pg_basebackup refuse a server without it.
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "off"),
        ("session_authorization", client.user.as_str()),
        ("application_name", client.application_name.as_str()),
    ];
    for (name, value) in params {
        backend::parameter_status(&mut conn.out, name, value);
    }
    let mut key = [0u8; 8];
    getrandom::fill(&mut key)?;
    let pid = i32::from_be_bytes([key[0] & 0x7F, key[1], key[2], key[3]]);
    backend::backend_key_data(&mut conn.out, pid, i32::from_be_bytes([key[4], key[5], key[6], key[7]]));
    backend::ready_for_query(&mut conn.out);
    Ok(())
}
