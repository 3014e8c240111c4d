//! Errors of the peer transport. Every one ends the connection; none panics.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("the peer is not a tandem host (bad greeting)")]
    NotTandem,
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    Version { ours: u16, theirs: u16 },
    #[error("the peer does not know our cluster secret (its handshake failed authentication)")]
    BadSecret,
    #[error("the peer refused us: we do not share its cluster secret")]
    RefusedBySecret,
    #[error("connection closed during the handshake")]
    HandshakeClosed,
    #[error("handshake timed out after {0} ms")]
    HandshakeTimeout(u64),
    #[error("refusing to talk to ourselves (the peer has our instance id)")]
    SelfConnection,
    #[error("frame of {len} bytes is over the {max} byte limit")]
    Oversized { len: u64, max: u64 },
    #[error("truncated frame: the connection closed {0}")]
    Truncated(&'static str),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("integrity check failed: the frame was altered or is not from our peer")]
    Integrity,
    #[error("bad cluster secret file {path}: {why}")]
    SecretFile { path: String, why: String },
    #[error("cluster secret: {0}")]
    SecretRead(#[from] crate::durable::SmallFileError),
    #[error(
        "the cluster secret file {0} does not exist: copy the cluster's secret there (tandem makes \
         a new one only at the default place, when peer.secret_file is unset)"
    )]
    SecretMissing(String),
    #[error("noise: {0}")]
    Noise(String),
}

impl From<snow::Error> for PeerError {
    fn from(e: snow::Error) -> Self {
        PeerError::Noise(e.to_string())
    }
}
