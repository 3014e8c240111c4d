//! How tandem's listeners (the peer transport, the REST API) meet the network: bound with
//! room for a burst of connections the accept loop has not taken yet, and accepting with a
//! pause that grows on errors (out of descriptors, a connection aborted before it was taken),
//! so an error never ends a listener and never spins it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// Connections the kernel may queue before the accept loop takes them (they cost the daemon
/// no descriptor). The usual 128 overflows in a burst, and a dropped SYN costs a client a
/// second.
pub const BACKLOG: u32 = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Binds a listener on `addr` with a [`BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A listener's accept step, with its backoff.
pub struct Accepter {
    listener: TcpListener,
    backoff: Duration,
    /// Names the listener in the log.
    what: &'static str,
}

impl Accepter {
    pub fn new(listener: TcpListener, what: &'static str) -> Self {
        Self { listener, backoff: BACKOFF_MIN, what }
    }

    /// The next connection, or `None` once `shutdown` fires. Errors are logged and retried
    /// after a pause that doubles up to 2 s and resets on success. Cancel-safe.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return None,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok(pair) => {
                    self.backoff = BACKOFF_MIN;
                    return Some(pair);
                }
                Err(e) => {
                    tracing::warn!(listener = self.what, error = %e, "accept failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
