//! The standby side of the tunnel: a Unix socket named as PostgreSQL names its own
//! (`<folder>/.s.PGSQL.<port>`, so libpq clients reach it with `host=<folder> port=<port>`),
//! owned by the PostgreSQL user and mode 0600, and each connection's peer credentials checked
//! (`SO_PEERCRED`: root and that user only). A connection's startup packet is read first (a
//! bounded wait), then the pair's peer is dialled, its identity checked, and the bytes pumped.
//! Anything that stops a tunnel from opening is told to the client as a PostgreSQL error.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::codec;
use super::config::TunnelConfig;
use super::error::TunnelError;
use super::pump::Tunnel;
use super::startup::{self, First, MAX_STARTUP_LEN, NO_ENCRYPTION};
use super::stats::{LinkStats, StreamKind};
use crate::peer::{ClusterSecret, PeerConnection, PeerIdentity};

const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Where a new tunnel goes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The peer's transport address (`host:port`).
    pub addr: String,
    /// Its node name, when known: another node answering there is refused.
    pub node: Option<String>,
}

/// Where tunnels go, asked per connection (the peer's address may change).
pub type RouteFn = Arc<dyn Fn() -> Result<Route, String> + Send + Sync>;

/// The standby side.
pub struct Entry {
    /// The socket file.
    pub path: PathBuf,
    /// The OS user (the PostgreSQL user) that may connect besides tandem's own.
    pub owner: Option<String>,
    pub route: RouteFn,
    pub secret: ClusterSecret,
    pub me: PeerIdentity,
    pub max_frame: u64,
    pub config: TunnelConfig,
    pub stats: Arc<LinkStats>,
}

/// The socket file for `port` in `dir`, as libpq names it.
pub fn socket_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

impl Entry {
    /// Binds the socket (a stale file from an earlier run is replaced; a live one is refused),
    /// owned by [`Entry::owner`], mode 0600; the uids allowed to connect.
    pub fn bind(&self) -> Result<(UnixListener, Vec<u32>), TunnelError> {
        if self.path.exists() {
            if std::os::unix::net::UnixStream::connect(&self.path).is_ok() {
                return Err(TunnelError::Refused(format!(
                    "{} is in use by another program",
                    self.path.display()
                )));
            }
            std::fs::remove_file(&self.path)?;
        }
        let listener = UnixListener::bind(&self.path)?;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))?;
        // SAFETY: geteuid has no preconditions.
        let mut uids = vec![unsafe { libc::geteuid() }];
        if let Some(user) = &self.owner {
            crate::wal::auto_conf::chown(user, &self.path)?;
            uids.push(std::fs::metadata(&self.path)?.uid());
        }
        Ok((listener, uids))
    }

    /// Serves until `shutdown`, then waits for open tunnels and removes the socket.
    pub async fn serve(self: Arc<Self>, listener: UnixListener, uids: Vec<u32>, shutdown: CancellationToken) {
        info!(socket = %self.path.display(), "database tunnel entry listening");
        let tasks = TaskTracker::new();
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "tunnel entry: accept failed; retrying");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let uid = stream.peer_cred().map(|c| c.uid()).ok();
            if !uid.is_some_and(|u| uids.contains(&u)) {
                warn!(
                    ?uid,
                    "tunnel entry: a local user that is neither root nor the PostgreSQL user; closed"
                );
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let (me, stop) = (self.clone(), shutdown.clone());
            tasks.spawn(
                async move {
                    if let Err(e) = me.handle(stream, &stop).await {
                        debug!(error = %e, "tunnel ended");
                    }
                }
                .instrument(info_span!("tunnel_entry")),
            );
        }
        tasks.close();
        tasks.wait().await;
        let _ = std::fs::remove_file(&self.path);
    }

    async fn handle(&self, mut local: UnixStream, shutdown: &CancellationToken) -> Result<(), TunnelError> {
        let (first, kind) =
            match tokio::time::timeout(self.config.connect_timeout(), read_startup(&mut local)).await {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(TunnelError::Startup("none within the connect timeout".into())),
            };
        let conn = match self.dial().await {
            Ok(conn) => conn,
            Err(why) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                warn!(%why, "tunnel entry: no tunnel");
                local.write_all(&startup::error_response(&format!("tandem tunnel: {why}"))).await?;
                return Ok(());
            }
        };
        let mut tunnel = Tunnel::new(conn, &self.config, self.stats.clone());
        tunnel.set_kind(kind);
        tunnel.outbound.queue(codec::open()).await?;
        self.stats.opened.fetch_add(1, Ordering::Relaxed);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let result = tunnel.run(local, &first, &[], shutdown).await;
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
        result
    }

    /// Connects to the pair's peer and checks who answered.
    async fn dial(&self) -> Result<PeerConnection, String> {
        let route = (self.route)()?;
        let limit = self.config.connect_timeout();
        let work = async {
            let target = tokio::net::lookup_host(&route.addr)
                .await
                .map_err(|e| format!("cannot resolve {}: {e}", route.addr))?
                .next()
                .ok_or_else(|| format!("cannot resolve {}", route.addr))?;
            PeerConnection::connect(target, &self.secret, &self.me, self.max_frame)
                .await
                .map_err(|e| format!("the peer's tandem at {}: {e}", route.addr))
        };
        let conn = tokio::time::timeout(limit, work)
            .await
            .map_err(|_| format!("the peer's tandem at {} did not answer within {limit:?}", route.addr))??;
        match &route.node {
            Some(node) if *node != conn.peer.node => {
                Err(format!("`{}` answered at {}, not the pair's peer `{node}`", conn.peer.node, route.addr))
            }
            _ => Ok(conn),
        }
    }
}

/// Reads the client's first message (answering encryption requests `N` on the way); the bytes
/// to send on and the kind of stream.
async fn read_startup(local: &mut UnixStream) -> Result<(Vec<u8>, StreamKind), TunnelError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        match startup::parse(&buf).map_err(TunnelError::Startup)? {
            Some((First::EncryptionRequest, len)) => {
                local.write_all(NO_ENCRYPTION).await?;
                buf.drain(..len);
                continue;
            }
            Some((First::Cancel, _)) => return Ok((buf, StreamKind::Other)),
            Some((First::Startup(params), _)) => {
                return Ok((buf, StreamKind::of(params.get("application_name").map(String::as_str))));
            }
            None => {}
        }
        let n = local.read(&mut chunk).await?;
        if n == 0 {
            return Err(TunnelError::Startup("the client left before it".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 2 * MAX_STARTUP_LEN {
            return Err(TunnelError::Startup("too long".into()));
        }
    }
}
