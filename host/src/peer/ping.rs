//! The transport's own liveness exchange: a `PING` frame is answered by a `PONG` frame with the
//! same body. The daemon serves it; `tandem peer ping` uses it to check a peer end to end.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{ClusterSecret, Frame, PeerConnection, PeerError, PeerIdentity};

pub const PING: u16 = 1;
pub const PONG: u16 = 2;

/// Answers pings on a connection until the peer leaves or `shutdown`.
pub async fn answer(mut conn: PeerConnection, shutdown: CancellationToken) -> Result<(), PeerError> {
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            frame = conn.read_frame() => frame?,
        };
        match frame {
            None => return Ok(()),
            Some(Frame { kind: PING, body }) => {
                let pong = Frame::new(PONG, body);
                tokio::select! {
                    // A peer that stops reading must not hold up shutdown.
                    _ = shutdown.cancelled() => return Ok(()),
                    written = conn.write_frame(&pong) => written?,
                }
            }
            Some(_) => return Err(PeerError::Malformed("unexpected frame kind")),
        }
    }
}

/// What a ping learned about the peer.
#[derive(Debug)]
pub struct PingReport {
    pub node: String,
    pub round_trip: Duration,
}

/// Connects, authenticates (within `timeout`) and times one ping.
pub async fn ping(
    addr: SocketAddr,
    secret: &ClusterSecret,
    me: &PeerIdentity,
    max_frame: u64,
    timeout: Duration,
) -> Result<PingReport, PeerError> {
    let connect = PeerConnection::connect(addr, secret, me, max_frame);
    let mut conn = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| PeerError::HandshakeTimeout(timeout.as_millis() as u64))??;
    let started = Instant::now();
    let body = b"tandem ping".to_vec();
    conn.write_frame(&Frame::new(PING, body.clone())).await?;
    match conn.read_frame().await? {
        Some(Frame { kind: PONG, body: echoed }) if echoed == body => {
            Ok(PingReport { node: conn.peer.node.clone(), round_trip: started.elapsed() })
        }
        Some(_) => Err(PeerError::Malformed("bad pong")),
        None => Err(PeerError::Truncated("before the pong")),
    }
}
