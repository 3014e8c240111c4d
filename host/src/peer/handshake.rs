//! Opening a connection: greetings, then a Noise `NNpsk0` handshake keyed by the cluster
//! secret. Both sides prove they know the secret before any payload moves (a wrong secret
//! fails the AEAD check of the first message), ephemeral keys give forward secrecy, and the
//! handshake payloads carry each side's identity (node name and instance id).
//!
//! A responder that finds a wrong secret sends an empty record before closing, so the
//! initiator can say why it was refused instead of seeing a bare hang-up.
//!
//! The first message alone proves nothing about liveness (a recorded one can be replayed), so
//! the initiator then sends a key-confirmation record under the new transport keys, which only
//! the holder of its ephemeral key can produce; the responder accepts the connection only after
//! opening it. Each side's first data record therefore uses nonce 1 initiator-to-responder.
//!
//! The responder reports when a handshake has [`PROVED`] the secret, so the listener can rank
//! it above connections that have not (`crate::admission`). A greeting earns no rank: anyone
//! can send one, and a rank reachable without the secret would let a flood of greeters
//! outrank a genuine peer's connection in its first moments. The initiator sends its greeting
//! and first message in one flight, so a genuine peer has proved the secret as soon as its
//! first bytes are read.

use snow::{Builder, StatelessTransportState};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::codec::{GREETING_LEN, MAX_RECORD, decode_greeting, encode_greeting, record_prefix};
use super::connection::read_exact_or;
use super::error::PeerError;
use super::secret::ClusterSecret;

const PATTERN: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";
const PROLOGUE: &[u8] = b"tandem-peer";
const MAX_NAME: usize = 255;

/// An incoming handshake's first message opened with the cluster secret (a genuine peer, or a
/// replay of one's first message: only the key confirmation that follows tells them apart).
pub const PROVED: u8 = 2;

/// Who is at one end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The configured node name (for logs and status; not a credential).
    pub node: String,
    /// Random per process; two ends with the same id are one process talking to itself.
    pub instance: [u8; 16],
}

impl PeerIdentity {
    /// A new identity for this process.
    pub fn new(node: impl Into<String>) -> Self {
        let mut instance = [0u8; 16];
        getrandom::fill(&mut instance).expect("the OS random source works");
        let mut node = node.into();
        let mut cut = node.len().min(MAX_NAME);
        while !node.is_char_boundary(cut) {
            cut -= 1;
        }
        node.truncate(cut);
        Self { node, instance }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.node.len() + 16);
        out.push(self.node.len() as u8);
        out.extend_from_slice(self.node.as_bytes());
        out.extend_from_slice(&self.instance);
        out
    }

    fn decode(buf: &[u8]) -> Result<Self, PeerError> {
        let bad = PeerError::Malformed("handshake identity");
        let (&len, rest) = buf.split_first().ok_or(bad)?;
        let len = usize::from(len);
        if rest.len() != len + 16 {
            return Err(PeerError::Malformed("handshake identity"));
        }
        let node = String::from_utf8(rest[..len].to_vec()).map_err(|_| PeerError::Malformed("node name"))?;
        Ok(Self { node, instance: rest[len..].try_into().expect("16 bytes") })
    }
}

/// The keys and the peer's identity after a successful handshake.
pub struct Established {
    pub transport: StatelessTransportState,
    pub peer: PeerIdentity,
    /// The first nonce for data this side sends, and for data it receives.
    pub send_nonce: u64,
    pub recv_nonce: u64,
}

/// The content of the key-confirmation record.
const CONFIRM: &[u8] = b"tandem-peer confirm";

/// Opens the connection from the dialling side.
pub async fn initiate(
    stream: &mut TcpStream,
    secret: &ClusterSecret,
    me: &PeerIdentity,
) -> Result<Established, PeerError> {
    let mut noise = builder(secret)?.build_initiator()?;
    let mut buf = vec![0u8; MAX_RECORD];
    let n = noise.write_message(&me.encode(), &mut buf)?;
    // The greeting and the first message in one flight (the same bytes as one after the
    // other): a crowded responder ranks the connection as proved a round trip sooner.
    let mut flight = encode_greeting().to_vec();
    flight.extend_from_slice(&record_prefix(n));
    flight.extend_from_slice(&buf[..n]);
    stream.write_all(&flight).await?;
    read_greeting(stream).await?;
    let msg = read_record(stream).await?;
    if msg.is_empty() {
        return Err(PeerError::RefusedBySecret);
    }
    let n = noise.read_message(&msg, &mut buf).map_err(|_| PeerError::BadSecret)?;
    let peer = PeerIdentity::decode(&buf[..n])?;
    check_not_self(me, &peer)?;
    let transport = noise.into_stateless_transport_mode()?;
    let n = transport.write_message(0, CONFIRM, &mut buf)?;
    write_record(stream, &buf[..n]).await?;
    Ok(Established { transport, peer, send_nonce: 1, recv_nonce: 0 })
}

/// Answers a connection on the listening side, calling `progress` with [`PROVED`] once the
/// initiator's first message opened with the secret.
pub async fn respond(
    stream: &mut TcpStream,
    secret: &ClusterSecret,
    me: &PeerIdentity,
    progress: &(dyn Fn(u8) + Sync),
) -> Result<Established, PeerError> {
    exchange_greetings(stream).await?;
    let mut noise = builder(secret)?.build_responder()?;
    let mut buf = vec![0u8; MAX_RECORD];
    let msg = read_record(stream).await?;
    let n = match noise.read_message(&msg, &mut buf) {
        Ok(n) => n,
        Err(_) => {
            // Best effort: tell the initiator why before hanging up.
            let _ = write_record(stream, &[]).await;
            return Err(PeerError::BadSecret);
        }
    };
    progress(PROVED);
    let peer = PeerIdentity::decode(&buf[..n])?;
    check_not_self(me, &peer)?;
    let n = noise.write_message(&me.encode(), &mut buf)?;
    write_record(stream, &buf[..n]).await?;
    let transport = noise.into_stateless_transport_mode()?;
    let msg = read_record(stream).await?;
    match transport.read_message(0, &msg, &mut buf) {
        Ok(n) if &buf[..n] == CONFIRM => {}
        // A replayed first message: the sender never had the keys.
        _ => return Err(PeerError::BadSecret),
    }
    Ok(Established { transport, peer, send_nonce: 0, recv_nonce: 1 })
}

fn builder(secret: &ClusterSecret) -> Result<Builder<'_>, PeerError> {
    Ok(Builder::new(PATTERN.parse()?).prologue(PROLOGUE)?.psk(0, secret.psk())?)
}

fn check_not_self(me: &PeerIdentity, peer: &PeerIdentity) -> Result<(), PeerError> {
    if me.instance == peer.instance { Err(PeerError::SelfConnection) } else { Ok(()) }
}

async fn exchange_greetings(stream: &mut TcpStream) -> Result<(), PeerError> {
    stream.write_all(&encode_greeting()).await?;
    read_greeting(stream).await
}

async fn read_greeting(stream: &mut TcpStream) -> Result<(), PeerError> {
    let mut theirs = [0u8; GREETING_LEN];
    read_exact_or(stream, &mut theirs, PeerError::HandshakeClosed).await?;
    decode_greeting(&theirs)
}

async fn write_record(stream: &mut TcpStream, body: &[u8]) -> Result<(), PeerError> {
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&record_prefix(body.len()));
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    Ok(())
}

async fn read_record(stream: &mut TcpStream) -> Result<Vec<u8>, PeerError> {
    let mut prefix = [0u8; 2];
    read_exact_or(stream, &mut prefix, PeerError::HandshakeClosed).await?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    read_exact_or(stream, &mut body, PeerError::HandshakeClosed).await?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let id = PeerIdentity::new("é".repeat(200));
        assert_eq!(id.node.len(), 254);
        assert_eq!(PeerIdentity::decode(&id.encode()).unwrap(), id);
    }

    #[test]
    fn identities_round_trip_and_refuse_garbage() {
        let id = PeerIdentity::new("node-a");
        assert_eq!(PeerIdentity::decode(&id.encode()).unwrap(), id);
        assert!(PeerIdentity::decode(&[]).is_err());
        assert!(PeerIdentity::decode(&[5, b'a']).is_err());
        let mut long = id.encode();
        long.push(0);
        assert!(PeerIdentity::decode(&long).is_err());
    }
}
