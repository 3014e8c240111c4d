//! Server-side authentication as a pure state machine: trust, or SCRAM-SHA-256 (RFC 5802/7677
//! as PostgreSQL speaks it, without channel binding: the connection has no TLS to bind to).
//!
//! ```text
//! server                                   client
//! AuthenticationSASL ["SCRAM-SHA-256"] ->
//!                                       <- SASLInitialResponse (client-first)
//! AuthenticationSASLContinue (server-first) ->
//!                                       <- SASLResponse (client-final with proof)
//! AuthenticationSASLFinal (server-final) + AuthenticationOk ->
//! ```
//!
//! A wrong user name runs the same exchange against a verifier nobody can match, so the answer
//! never tells which of user or password was wrong. Must never: accept a proof that does not
//! verify, skip a step, or log the password.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Buf, Bytes, BytesMut};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

use super::backend::{self, SqlError};
use super::codec::cstring;

/// The only mechanism offered (no `-PLUS`: no TLS, so no channel binding).
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// PostgreSQL's default `scram_iterations`.
pub const SCRAM_ITERATIONS: u32 = 4096;
/// Salt and nonce sizes PostgreSQL uses (`SCRAM_DEFAULT_SALT_LEN`, `SCRAM_RAW_NONCE_LEN`).
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 18;
/// Random bytes in a [`random_password`] (32 characters of URL-safe base64).
const PASSWORD_BYTES: usize = 24;
/// SQLSTATE `invalid_password`.
const INVALID_PASSWORD: &str = "28P01";
/// SQLSTATE `protocol_violation`.
const PROTOCOL_VIOLATION: &str = "08P01";

type HmacSha256 = Hmac<Sha256>;

/// A new password: 32 URL-safe characters (192 random bits), for the roles and walsender
/// logins tandem makes.
///
/// Panics if the operating system has no random source (getrandom fails only there).
pub fn random_password() -> String {
    let mut bytes = [0u8; PASSWORD_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// What the server stores for a SCRAM user: never the password itself.
#[derive(Clone)]
pub struct ScramVerifier {
    salt: [u8; SALT_LEN],
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl ScramVerifier {
    /// Derives the verifier of `password` with `salt` (PBKDF2-HMAC-SHA-256 over the SASLprep'd
    /// password, as PostgreSQL and libpq normalise it).
    pub fn derive(password: &str, salt: [u8; SALT_LEN], iterations: u32) -> Self {
        let prepared =
            stringprep::saslprep(password).map(|p| p.into_owned()).unwrap_or_else(|_| password.to_owned());
        let mut block = hmac(prepared.as_bytes(), &[&salt, &1u32.to_be_bytes()]);
        let mut salted = block;
        for _ in 1..iterations {
            block = hmac(prepared.as_bytes(), &[&block]);
            salted.iter_mut().zip(block).for_each(|(s, b)| *s ^= b);
        }
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramVerifier {
            salt,
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// A verifier with a random salt.
    pub fn new(password: &str) -> Result<Self, getrandom::Error> {
        let mut salt = [0; SALT_LEN];
        getrandom::fill(&mut salt)?;
        Ok(Self::derive(password, salt, SCRAM_ITERATIONS))
    }

    /// Random keys: for a user that does not exist, no proof matches.
    pub fn impossible() -> Result<Self, getrandom::Error> {
        let mut v = ScramVerifier {
            salt: [0; SALT_LEN],
            iterations: SCRAM_ITERATIONS,
            stored_key: [0; 32],
            server_key: [0; 32],
        };
        getrandom::fill(&mut v.salt)?;
        getrandom::fill(&mut v.stored_key)?;
        getrandom::fill(&mut v.server_key)?;
        Ok(v)
    }
}

/// Where the exchange stands after one client message.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Send what was written and wait for the next 'p' message.
    Continue,
    /// Authenticated: AuthenticationOk was written.
    Done,
}

/// One server-side SCRAM-SHA-256 exchange.
#[derive(Debug)]
pub struct ScramServer {
    user: String,
    verifier: ScramVerifier,
    server_nonce: String,
    state: State,
}

#[derive(Debug)]
enum State {
    /// AuthenticationSASL sent; waiting for SASLInitialResponse.
    Initial,
    /// server-first sent; waiting for client-final.
    Challenged {
        client_first_bare: String,
        server_first: String,
        nonce: String,
        gs2_header: String,
    },
    Finished,
}

impl ScramServer {
    /// Starts the exchange for `user` (for the logs and the error) and writes
    /// AuthenticationSASL. `server_nonce` is printable and comma-free (base64 of random bytes).
    pub fn start(user: &str, verifier: ScramVerifier, server_nonce: String, out: &mut BytesMut) -> Self {
        backend::auth_sasl(out, &[SCRAM_SHA_256]);
        ScramServer { user: user.to_owned(), verifier, server_nonce, state: State::Initial }
    }

    /// A random server nonce.
    pub fn random_nonce() -> Result<String, getrandom::Error> {
        let mut raw = [0; NONCE_LEN];
        getrandom::fill(&mut raw)?;
        Ok(B64.encode(raw))
    }

    /// Takes the body of one 'p' message; writes the answer to `out`.
    pub fn step(&mut self, body: Bytes, out: &mut BytesMut) -> Result<AuthStep, SqlError> {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Initial => {
                let client_first = initial_response(body)?;
                let (gs2_header, bare, client_nonce) = parse_client_first(&client_first)?;
                let nonce = format!("{client_nonce}{}", self.server_nonce);
                let server_first =
                    format!("r={nonce},s={},i={}", B64.encode(self.verifier.salt), self.verifier.iterations);
                backend::auth_sasl_continue(out, server_first.as_bytes());
                self.state = State::Challenged {
                    client_first_bare: bare.to_owned(),
                    server_first,
                    nonce,
                    gs2_header: gs2_header.to_owned(),
                };
                Ok(AuthStep::Continue)
            }
            State::Challenged { client_first_bare, server_first, nonce, gs2_header } => {
                let text =
                    std::str::from_utf8(&body).map_err(|_| violation("SCRAM client-final is not UTF-8"))?;
                let (without_proof, proof) =
                    text.rsplit_once(",p=").ok_or_else(|| violation("SCRAM client-final has no proof"))?;
                let mut attrs = without_proof.split(',');
                let binding = attrs.next().and_then(|a| a.strip_prefix("c=")).unwrap_or_default();
                if B64.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
                    return Err(violation("SCRAM channel binding check failed"));
                }
                if attrs.next().and_then(|a| a.strip_prefix("r=")) != Some(nonce.as_str()) {
                    return Err(violation("SCRAM nonce mismatch"));
                }
                let proof = B64
                    .decode(proof)
                    .ok()
                    .filter(|p| p.len() == 32)
                    .ok_or_else(|| violation("malformed SCRAM proof"))?;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
                let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
                let computed: [u8; 32] = Sha256::digest(&client_key).into();
                // Constant time: how many bytes matched must not show in the timing.
                let diff = computed.iter().zip(self.verifier.stored_key).fold(0u8, |d, (a, b)| d | (a ^ b));
                if diff != 0 {
                    return Err(self.failed());
                }
                let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
                backend::auth_sasl_final(out, format!("v={}", B64.encode(server_signature)).as_bytes());
                backend::auth_ok(out);
                Ok(AuthStep::Done)
            }
            State::Finished => Err(violation("authentication message after the exchange ended")),
        }
    }

    /// The error PostgreSQL gives for a wrong user or password.
    pub fn failed(&self) -> SqlError {
        password_failed(&self.user)
    }
}

/// FATAL 28P01, as PostgreSQL words it.
pub fn password_failed(user: &str) -> SqlError {
    SqlError::fatal(INVALID_PASSWORD, format!("password authentication failed for user \"{user}\""))
}

fn violation(what: &str) -> SqlError {
    SqlError::fatal(PROTOCOL_VIOLATION, what)
}

/// SASLInitialResponse: mechanism name, then the client-first message with its length.
fn initial_response(mut body: Bytes) -> Result<String, SqlError> {
    let mechanism = cstring(&mut body, "SASL mechanism").map_err(|e| violation(&e.to_string()))?;
    if mechanism != SCRAM_SHA_256 {
        return Err(violation("client selected an invalid SASL authentication mechanism"));
    }
    if body.len() < 4 {
        return Err(violation("SASLInitialResponse without its data"));
    }
    let len = body.get_i32();
    if usize::try_from(len).ok() != Some(body.len()) {
        return Err(violation("SASLInitialResponse data length disagrees with the message"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| violation("SCRAM client-first is not UTF-8"))
}

/// Splits client-first into its gs2 header, the bare part, and the client nonce.
fn parse_client_first(text: &str) -> Result<(&str, &str, &str), SqlError> {
    let header_end = match text.as_bytes().first() {
        Some(b'n' | b'y') if text.get(1..3) == Some(",,") => 3,
        Some(b'p') => return Err(violation("channel binding is not supported (no SSL)")),
        Some(b'n' | b'y') => return Err(violation("SCRAM authorization identities are not supported")),
        _ => return Err(violation("malformed SCRAM client-first message")),
    };
    let (header, bare) = text.split_at(header_end);
    let mut attrs = bare.split(',');
    // The user name in the message is ignored, as PostgreSQL does: the startup packet's counts.
    if !attrs.next().is_some_and(|a| a.starts_with("n=")) {
        return Err(violation("SCRAM client-first without a user attribute"));
    }
    let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).filter(|n| !n.is_empty());
    let nonce = nonce.ok_or_else(|| violation("SCRAM client-first without a nonce"))?;
    if !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
        return Err(violation("SCRAM client nonce has invalid characters"));
    }
    Ok((header, bare, nonce))
}

#[cfg(test)]
mod tests {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use postgres_protocol::message::backend::Message;

    use super::*;

    #[test]
    fn random_passwords_are_long_url_safe_and_differ() {
        let pw = random_password();
        assert_eq!(pw.len(), 32);
        assert!(pw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{pw}");
        assert_ne!(pw, random_password());
    }

    fn initial(client: &ScramSha256) -> Bytes {
        let mut b = BytesMut::new();
        postgres_protocol::message::frontend::sasl_initial_response(SCRAM_SHA_256, client.message(), &mut b)
            .unwrap();
        b.split_off(5).freeze()
    }

    /// Runs postgres-protocol's client against our server; the client's final check included.
    fn exchange(
        server_password: &str,
        client_password: &str,
        binding: ChannelBinding,
    ) -> Result<(), SqlError> {
        let verifier = ScramVerifier::derive(server_password, [7; SALT_LEN], 64);
        let mut out = BytesMut::new();
        let mut server = ScramServer::start("u", verifier, ScramServer::random_nonce().unwrap(), &mut out);
        assert!(matches!(Message::parse(&mut out).unwrap(), Some(Message::AuthenticationSasl(_))));
        let mut client = ScramSha256::new(client_password.as_bytes(), binding);
        assert_eq!(server.step(initial(&client), &mut out)?, AuthStep::Continue);
        let Some(Message::AuthenticationSaslContinue(body)) = Message::parse(&mut out).unwrap() else {
            panic!()
        };
        client.update(body.data()).unwrap();
        assert_eq!(server.step(Bytes::copy_from_slice(client.message()), &mut out)?, AuthStep::Done);
        let Some(Message::AuthenticationSaslFinal(body)) = Message::parse(&mut out).unwrap() else {
            panic!()
        };
        client.finish(body.data()).expect("the client verifies the server's signature");
        assert!(matches!(Message::parse(&mut out).unwrap(), Some(Message::AuthenticationOk)));
        Ok(())
    }

    #[test]
    fn scram_round_trips_with_the_postgres_protocol_client() {
        exchange("secret", "secret", ChannelBinding::unsupported()).unwrap();
        exchange("secret", "secret", ChannelBinding::unrequested()).unwrap();
        exchange("pässwörd", "pässwörd", ChannelBinding::unsupported()).unwrap();
    }

    #[test]
    fn scram_refuses_a_wrong_password_and_impossible_verifiers() {
        let e = exchange("secret", "wrong", ChannelBinding::unsupported()).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), ("28P01", "password authentication failed for user \"u\""));
        let mut out = BytesMut::new();
        let mut server =
            ScramServer::start("u", ScramVerifier::impossible().unwrap(), "abc".into(), &mut out);
        let mut client = ScramSha256::new(b"anything", ChannelBinding::unsupported());
        server.step(initial(&client), &mut out).unwrap();
        let _ = Message::parse(&mut out).unwrap();
        let Some(Message::AuthenticationSaslContinue(body)) = Message::parse(&mut out).unwrap() else {
            panic!()
        };
        client.update(body.data()).unwrap();
        assert_eq!(
            server.step(Bytes::copy_from_slice(client.message()), &mut out).unwrap_err().code,
            "28P01"
        );
    }

    #[test]
    fn malformed_exchanges_are_protocol_violations() {
        for first in
            ["", "x,,n=,r=abc", "p=tls-server-end-point,,n=,r=a", "n,a=admin,n=,r=a", "n,,n=", "n,,n=,r="]
        {
            let mut body = BytesMut::new();
            postgres_protocol::message::frontend::sasl_initial_response(
                SCRAM_SHA_256,
                first.as_bytes(),
                &mut body,
            )
            .unwrap();
            let mut out = BytesMut::new();
            let mut server =
                ScramServer::start("u", ScramVerifier::derive("p", [0; 16], 1), "n".into(), &mut out);
            assert_eq!(
                server.step(body.split_off(5).freeze(), &mut out).unwrap_err().code,
                "08P01",
                "{first:?}"
            );
        }
        let mut out = BytesMut::new();
        let mut server =
            ScramServer::start("u", ScramVerifier::derive("p", [0; 16], 1), "n".into(), &mut out);
        assert!(server.step(Bytes::from_static(b"\xff\xff"), &mut out).is_err());
        assert!(server.step(Bytes::new(), &mut out).is_err(), "no second chance after a failure");
    }
}
