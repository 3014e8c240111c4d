//! The transport between tandem hosts: TCP, a plaintext greeting with the protocol version,
//! a Noise `NNpsk0` handshake keyed by the cluster secret (both sides prove it before any
//! payload; AES-GCM protects every record), then length-prefixed frames.
//!
//! Owns: bytes between hosts. Must never: send a payload before the peer proved the secret,
//! trust a length before checking it against the limit, or panic on anything a peer sends.

pub(crate) mod codec;
mod config;
mod connection;
mod error;
mod handshake;
mod listener;
pub mod ping;
mod secret;

pub use codec::PROTOCOL_VERSION;
pub use config::{DEFAULT_SECRET_FILE, PeerConfig};
pub use connection::{Frame, PeerConnection, PeerReader, PeerWriter};
pub use error::PeerError;
pub use handshake::PeerIdentity;
pub use listener::{Acceptor, serve};
pub use secret::{ClusterSecret, MAX_SECRET_FILE, MIN_SECRET_LEN};
