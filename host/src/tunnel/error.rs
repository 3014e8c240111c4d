//! What can go wrong in the tunnel.

use crate::peer::PeerError;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("local socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer sent a malformed tunnel frame: {0}")]
    Malformed(&'static str),
    #[error("a compressed chunk {0}")]
    Decompress(String),
    #[error("nothing heard from the peer for {0} ms: the link is gone")]
    Idle(u64),
    #[error("refused: {0}")]
    Refused(String),
    #[error("the client's startup packet: {0}")]
    Startup(String),
}
