//! The client side of PostgreSQL authentication as a pure state machine: given the server's
//! request, what to send back. Speaks trust, cleartext password, MD5 and SCRAM-SHA-256
//! (without channel binding: the connection has no TLS to bind to).
//!
//! Must never: send the password to a server that did not ask for it, accept
//! `AuthenticationOk` in the middle of a SCRAM exchange (a server that skips proving it knows
//! the password could be anyone), or log the password.

use bytes::BytesMut;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;

use super::codec::AuthRequest;
use super::error::WalClientError;

/// Where authentication stands after one server request.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthProgress {
    /// Send what was written (if anything) and wait for the server's next request.
    Continue,
    /// The server accepted us.
    Done,
}

/// One authentication exchange.
pub struct Authenticator<'a> {
    user: &'a str,
    password: Option<&'a str>,
    scram: Scram,
}

enum Scram {
    NotStarted,
    /// Client-first sent; waiting for server-first.
    Started(Box<sasl::ScramSha256>),
    /// Client-final sent; waiting for server-final.
    Proving(Box<sasl::ScramSha256>),
    /// The server proved it knows the password.
    Verified,
}

impl<'a> Authenticator<'a> {
    pub fn new(user: &'a str, password: Option<&'a str>) -> Self {
        Self { user, password, scram: Scram::NotStarted }
    }

    /// The name of the method in use, for logs.
    pub fn method(&self) -> &'static str {
        match self.scram {
            Scram::NotStarted => "password-less or simple",
            _ => sasl::SCRAM_SHA_256,
        }
    }

    /// Answers one request from the server, appending the reply message (if any) to `out`.
    pub fn respond(
        &mut self,
        request: AuthRequest,
        out: &mut BytesMut,
    ) -> Result<AuthProgress, WalClientError> {
        let encode = |e: std::io::Error| WalClientError::Auth(format!("cannot encode the reply: {e}"));
        match request {
            AuthRequest::Ok => match self.scram {
                Scram::NotStarted | Scram::Verified => Ok(AuthProgress::Done),
                _ => Err(WalClientError::Auth(
                    "the server ended SCRAM without proving it knows the password".into(),
                )),
            },
            AuthRequest::CleartextPassword => {
                let password = self.password()?;
                frontend::password_message(password.as_bytes(), out).map_err(encode)?;
                Ok(AuthProgress::Continue)
            }
            AuthRequest::Md5Password { salt } => {
                let hash = md5_hash(self.user.as_bytes(), self.password()?.as_bytes(), salt);
                frontend::password_message(hash.as_bytes(), out).map_err(encode)?;
                Ok(AuthProgress::Continue)
            }
            AuthRequest::Sasl { mechanisms } => {
                if !matches!(self.scram, Scram::NotStarted) {
                    return Err(WalClientError::Auth("the server restarted SASL".into()));
                }
                if !mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                    return Err(WalClientError::UnsupportedAuth(format!("SASL ({})", mechanisms.join(", "))));
                }
                let scram =
                    sasl::ScramSha256::new(self.password()?.as_bytes(), sasl::ChannelBinding::unsupported());
                frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), out).map_err(encode)?;
                self.scram = Scram::Started(Box::new(scram));
                Ok(AuthProgress::Continue)
            }
            AuthRequest::SaslContinue(server_first) => {
                let Scram::Started(mut scram) = std::mem::replace(&mut self.scram, Scram::NotStarted) else {
                    return Err(WalClientError::Auth("SASL continue out of order".into()));
                };
                scram
                    .update(&server_first)
                    .map_err(|e| WalClientError::Auth(format!("bad SCRAM server-first message: {e}")))?;
                frontend::sasl_response(scram.message(), out).map_err(encode)?;
                self.scram = Scram::Proving(scram);
                Ok(AuthProgress::Continue)
            }
            AuthRequest::SaslFinal(server_final) => {
                let Scram::Proving(mut scram) = std::mem::replace(&mut self.scram, Scram::NotStarted) else {
                    return Err(WalClientError::Auth("SASL final out of order".into()));
                };
                scram.finish(&server_final).map_err(|e| {
                    WalClientError::Auth(format!("the server's SCRAM signature does not verify: {e}"))
                })?;
                self.scram = Scram::Verified;
                Ok(AuthProgress::Continue)
            }
            AuthRequest::Unsupported(method) => Err(WalClientError::UnsupportedAuth(method.to_owned())),
        }
    }

    fn password(&self) -> Result<&'a str, WalClientError> {
        self.password.ok_or(WalClientError::PasswordRequired)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn trust_needs_nothing_and_md5_hashes_with_the_user_name() {
        let mut out = BytesMut::new();
        let mut a = Authenticator::new("rep", None);
        assert_eq!(a.respond(AuthRequest::Ok, &mut out).unwrap(), AuthProgress::Done);
        assert!(out.is_empty());
        assert!(matches!(
            a.respond(AuthRequest::Md5Password { salt: [1, 2, 3, 4] }, &mut out),
            Err(WalClientError::PasswordRequired)
        ));

        let mut a = Authenticator::new("md5_user", Some("password"));
        a.respond(AuthRequest::Md5Password { salt: [0x2a, 0x3d, 0x8f, 0xe0] }, &mut out).unwrap();
        // 'p', length, then the hash postgres-protocol's own test expects, NUL-terminated.
        assert_eq!(&out[5..out.len() - 1], b"md562af4dd09bbb41884907a838a3233294");
    }

    #[test]
    fn scram_refuses_shortcuts_and_unknown_mechanisms() {
        let mut out = BytesMut::new();
        let mut a = Authenticator::new("rep", Some("pw"));
        let only_plus = AuthRequest::Sasl { mechanisms: vec!["SCRAM-SHA-256-PLUS".into()] };
        assert!(matches!(a.respond(only_plus, &mut out), Err(WalClientError::UnsupportedAuth(_))));

        let mut a = Authenticator::new("rep", Some("pw"));
        a.respond(AuthRequest::Sasl { mechanisms: vec!["SCRAM-SHA-256".into()] }, &mut out).unwrap();
        assert!(out.starts_with(b"p"));
        // A server that says "ok" without finishing SCRAM has not proven anything.
        assert!(matches!(a.respond(AuthRequest::Ok, &mut out), Err(WalClientError::Auth(_))));

        let mut a = Authenticator::new("rep", Some("pw"));
        assert!(a.respond(AuthRequest::SaslFinal(Bytes::from_static(b"v=AAAA")), &mut out).is_err());
        let mut a = Authenticator::new("rep", Some("pw"));
        a.respond(AuthRequest::Sasl { mechanisms: vec!["SCRAM-SHA-256".into()] }, &mut out).unwrap();
        assert!(
            a.respond(AuthRequest::SaslContinue(Bytes::from_static(b"r=wrong,s=AAAA,i=1")), &mut out)
                .is_err()
        );
    }
}
