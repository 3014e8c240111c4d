//! A request/response client to one member over the peer transport: connects lazily, keeps
//! the connection between calls, drops it on any error or timeout so the next call starts
//! clean. One call in flight per client (openraft drives each replication stream with its
//! own client).
//!
//! Not cancel-safe: a `call` dropped midway leaves the connection mid-frame, so `call` itself
//! wraps the exchange in the timeout and discards the connection when it fires.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::lookup_host;

use super::rpc::{self, RPC_RESPONSE, RpcRequest, RpcResponse};
use crate::peer::{ClusterSecret, PeerConnection, PeerError, PeerIdentity};

/// What a client needs to reach members: the secret, our identity, limits.
#[derive(Clone)]
pub struct Dialer {
    pub secret: ClusterSecret,
    pub me: Arc<PeerIdentity>,
    pub max_frame: u64,
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("{0} is this member's own address; a member never dials itself")]
    Ourselves(String),
    #[error("{addr}: {source}")]
    Peer { addr: String, source: PeerError },
    #[error("{addr}: no answer within {ms} ms")]
    Timeout { addr: String, ms: u64 },
    #[error("{addr}: closed the connection")]
    Closed { addr: String },
    #[error("{addr}: {source}")]
    Codec { addr: String, source: rpc::CodecError },
    #[error("{addr}: unexpected frame kind {kind}")]
    Unexpected { addr: String, kind: u16 },
    #[error("{addr}: the call ended without an answer ({reason})")]
    Lost { addr: String, reason: String },
}

pub struct PeerClient {
    addr: String,
    dialer: Dialer,
    conn: Option<PeerConnection>,
}

impl PeerClient {
    pub fn new(addr: impl Into<String>, dialer: Dialer) -> Self {
        Self { addr: addr.into(), dialer, conn: None }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The largest frame the peer accepts (the same setting cluster-wide).
    pub fn max_frame(&self) -> u64 {
        self.dialer.max_frame
    }

    /// Sends `req` and waits up to `timeout` for the answer (connection set-up included).
    pub async fn call(&mut self, req: &RpcRequest, timeout: Duration) -> Result<RpcResponse, CallError> {
        let result = tokio::time::timeout(timeout, self.exchange(req)).await;
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(CallError::Timeout { addr: self.addr.clone(), ms: timeout.as_millis() as u64 })
            }
        }
    }

    async fn exchange(&mut self, req: &RpcRequest) -> Result<RpcResponse, CallError> {
        let addr = self.addr.clone();
        let frame =
            rpc::request_frame(req).map_err(|source| CallError::Codec { addr: addr.clone(), source })?;
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let peer_err = |source| CallError::Peer { addr: addr.clone(), source };
        conn.write_frame(&frame).await.map_err(peer_err)?;
        let answer = conn.read_frame().await.map_err(peer_err)?;
        let answer = answer.ok_or_else(|| CallError::Closed { addr: addr.clone() })?;
        if answer.kind != RPC_RESPONSE {
            return Err(CallError::Unexpected { addr, kind: answer.kind });
        }
        rpc::decode_response(&answer.body).map_err(|source| CallError::Codec { addr, source })
    }

    async fn connect(&self) -> Result<PeerConnection, CallError> {
        let target = lookup_host(&self.addr)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| CallError::Resolve(self.addr.clone()))?;
        let d = &self.dialer;
        tokio::time::timeout(
            d.connect_timeout,
            PeerConnection::connect(target, &d.secret, &d.me, d.max_frame),
        )
        .await
        .map_err(|_| CallError::Timeout {
            addr: self.addr.clone(),
            ms: d.connect_timeout.as_millis() as u64,
        })?
        .map_err(|source| CallError::Peer { addr: self.addr.clone(), source })
    }
}
