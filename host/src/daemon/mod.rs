//! The long-running host: loads the plugins (and watches their folder), opens the conf tree
//! and the cluster member (commit log, recovery, purge), the peer listener and the REST API,
//! and the warm-standby pair (which runs tree sync and WAL streaming as its role needs), and
//! serves until shutdown. It runs on a data folder claimed first ([`DataDir`]), and fits its
//! listeners into its file-descriptor budget ([`FdBudget`]).

mod data_dir;
mod fd_budget;

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api::{self, AppState, ServeLimits, Tokens};
use crate::cluster::{self, ClusterNode, Dialer, Member};
use crate::conf::ConfTree;
use crate::config::Config;
use crate::listen;
use crate::peer::{self, Acceptor, ClusterSecret, PeerConnection, PeerError, PeerIdentity};
use crate::plugin::Plugins;
use crate::standby::Standby;
use crate::standby::jobs::JobContext;
use crate::standby::protocol::{self, STANDBY_FRAME};
use crate::sync::protocol::SYNC_FRAME;
use crate::sync::server::SyncServer;
use crate::tunnel;

/// The file in the data folder that holds the address the peer listener is bound to (useful
/// when the configuration asks for port 0).
pub const PEER_ADDR_FILE: &str = "peer.addr";
/// The same for the REST API.
pub const API_ADDR_FILE: &str = "api.addr";

pub use data_dir::{DataDir, DataDirError, LOCK_FILE};
pub use fd_budget::{Caps, FdBudget, FdError, MIN_NOFILE};

/// Runs the host until `shutdown` is cancelled, on the data folder `_claimed` holds.
pub async fn run(config: Config, _claimed: &DataDir, shutdown: CancellationToken) -> anyhow::Result<()> {
    let budget = FdBudget::raise()?;
    let caps = budget.fit(Caps {
        api: config.api.max_connections,
        handshakes: config.peer.max_handshakes,
        peers: config.peer.max_connections,
    });
    info!(
        limit = budget.limit,
        reserved = budget.reserved(),
        api = caps.api,
        handshakes = caps.handshakes,
        peers = caps.peers,
        "file descriptors: the listeners' caps"
    );
    if let Some(dir) = &config.plugins.dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the plugin folder {}", dir.display()))?;
    }
    let plugin_config = config.plugins.clone();
    let plugins = tokio::task::spawn_blocking(move || Plugins::new(plugin_config)).await??;
    for status in plugins.statuses() {
        let world = status.world.map_or_else(|| "-".to_string(), |w| w.to_string());
        info!(%world, plugin = %status.name, state = %status.state, "plugin");
    }
    let watcher = plugins.spawn_watcher(shutdown.clone()).context("starting the plugin watcher")?;

    let secret_file = config.peer.secret_file.clone().expect("resolved config has a secret file");
    // Only the default place is filled with a new secret; see peer::secret.
    let secret = if secret_file == config.data_dir.join(peer::DEFAULT_SECRET_FILE) {
        ClusterSecret::load_or_create(&secret_file)?
    } else {
        ClusterSecret::load(&secret_file)?
    };
    let me = Arc::new(PeerIdentity::new(config.node_name.clone()));
    let listener = listen::bind(config.peer.listen)
        .with_context(|| format!("binding the peer listener on {}", config.peer.listen))?;
    let addr = listener.local_addr()?;
    crate::durable::write_readable(&config.data_dir.join(PEER_ADDR_FILE), format!("{addr}\n").as_bytes())?;
    info!(node = %config.node_name, %addr, plugins = %config.plugins.dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(), "tandem is up");

    // The token first: a CLI that finds the API's address finds its token too.
    let token_file = config.api.token_file.clone().expect("resolved config has a token file");
    let tokens = Tokens::load(&config.api, &token_file)
        .with_context(|| format!("loading the API token {}", token_file.display()))?;
    let api_listener = listen::bind(config.api.listen)
        .with_context(|| format!("binding the REST API on {}", config.api.listen))?;
    let api_addr = api_listener.local_addr()?;
    let api_tls = api_tls(&config, api_addr)?;
    crate::durable::write_readable(&config.data_dir.join(API_ADDR_FILE), format!("{api_addr}\n").as_bytes())?;

    let conf_root = config.cluster.conf_root.clone().expect("resolved config has a conf root");
    let tree = ConfTree::open(&conf_root)
        .with_context(|| format!("opening the conf tree {}", conf_root.display()))?;
    let member = Member {
        peer: advertised(&config.peer.advertise, addr, "peer")?,
        api: advertised(&config.api.advertise, api_addr, "api")?,
        name: config.node_name.clone(),
    };
    let dialer = Dialer {
        secret: secret.clone(),
        me: me.clone(),
        max_frame: config.peer.max_frame_bytes,
        connect_timeout: config.peer.handshake_timeout(),
    };
    let my_peer_addr = member.peer.clone();
    let node = ClusterNode::open(
        config.cluster.clone(),
        &config.data_dir.join("cluster"),
        tree,
        member,
        dialer,
        plugins.clone(),
    )
    .await
    .context("starting the cluster member")?;
    info!(%api_addr, conf_root = %conf_root.display(), "REST API and conf tree ready");

    let mut tasks = tokio::task::JoinSet::new();
    let sync_state = config.data_dir.join("sync");
    let sync_server = SyncServer {
        config: config.sync.clone(),
        state_dir: sync_state.clone(),
        plugins: plugins.clone(),
        journals: Default::default(),
    };
    // The warm-standby pair decides which jobs run: tree following or watching, WAL streaming.
    let jobs = JobContext {
        secret: secret.clone(),
        me: (*me).clone(),
        max_frame: config.peer.max_frame_bytes,
        sync_state: sync_state.clone(),
        log_dir: config.log.dir.clone(),
        verify_minutes: config.sync.verify_minutes,
        journals: sync_server.journals.clone(),
    };
    let standby = Standby::open(config.clone(), jobs, my_peer_addr, shutdown.clone())
        .context("opening the warm-standby pairing")?;
    standby.start().await;
    {
        let (n, stop) = (node.clone(), shutdown.clone());
        tasks.spawn(async move { n.run_recovery(stop).await });
        let (n, stop) = (node.clone(), shutdown.clone());
        tasks.spawn(async move { n.run_purge(stop).await });
        let (n, stop) = (node.clone(), shutdown.clone());
        tasks.spawn(async move { n.run_checkpoints(stop).await });
        let state = AppState { node: node.clone(), tokens, standby: standby.clone() };
        let limits = ServeLimits { max_connections: caps.api, header_timeout: config.api.header_timeout() };
        tasks.spawn(api::serve(api_listener, state, limits, api_tls, shutdown.clone()));
    }

    let acceptor = Acceptor {
        secret: secret.clone(),
        me: me.clone(),
        max_frame: config.peer.max_frame_bytes,
        handshake_timeout: config.peer.handshake_timeout(),
        max_handshakes: caps.handshakes,
        max_connections: caps.peers,
    };
    let handler_node = node.clone();
    let handler_standby = standby.clone();
    let handler = move |conn, stop| {
        dispatch(handler_node.clone(), sync_server.clone(), handler_standby.clone(), conn, stop)
    };
    peer::serve(listener, acceptor, handler, shutdown.clone()).await;
    shutdown.cancel();
    standby.stop().await;
    while tasks.join_next().await.is_some() {}
    node.shutdown().await;
    watcher.join().map_err(|_| anyhow::anyhow!("the plugin watcher panicked"))?;
    info!("tandem stopped");
    Ok(())
}

/// Hands a peer connection to the subsystem its first frame belongs to: tree sync, the
/// warm-standby pair, the database tunnel, or the cluster (which also answers pings).
async fn dispatch(
    node: Arc<ClusterNode>,
    sync: SyncServer,
    standby: Arc<Standby>,
    mut conn: PeerConnection,
    stop: CancellationToken,
) -> Result<(), PeerError> {
    let first = tokio::select! {
        _ = stop.cancelled() => return Ok(()),
        f = conn.read_frame() => f?,
    };
    match first {
        None => Ok(()),
        Some(f) if f.kind == SYNC_FRAME => sync.serve(conn, f, stop).await,
        Some(f) if tunnel::codec::is_open(&f) => standby.tunnel_exit().serve(conn, f, stop).await,
        Some(f) if f.kind == STANDBY_FRAME => {
            let request = protocol::decode(&f)?;
            let answer = standby.answer(request).await;
            conn.write_frame(&protocol::encode(&answer)).await
        }
        Some(f) => cluster::serve_connection(node, conn, Some(f), stop).await,
    }
}

/// The API's TLS settings when it speaks TLS (the certificate made on first start when the
/// site gave none); its fingerprint is logged and written for the CLI to pin. Without TLS the
/// fingerprint file goes.
fn api_tls(
    config: &Config,
    bound: std::net::SocketAddr,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let print_file = config.data_dir.join(api::tls::FINGERPRINT_FILE);
    if !config.api.uses_tls() {
        let _ = std::fs::remove_file(&print_file);
        return Ok(None);
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !bound.ip().is_unspecified() {
        names.push(bound.ip().to_string());
    }
    if let Some((host, _)) = config.api.advertise.as_deref().and_then(crate::standby::plan::split_host_port) {
        names.push(host);
    }
    let files = config.api.cert_file.as_deref().zip(config.api.key_file.as_deref());
    let (tls, print) = api::tls::server_config(files, &config.data_dir, &names)
        .context("setting up TLS for the REST API")?;
    std::fs::write(&print_file, format!("{print}\n"))?;
    info!(fingerprint = %print, "REST API over TLS; the CLI pins this certificate fingerprint");
    Ok(Some(tls))
}

/// The address other members are told to use: the configured one, else the bound one (which
/// must then be a concrete address, not 0.0.0.0 or ::).
fn advertised(
    configured: &Option<String>,
    bound: std::net::SocketAddr,
    section: &str,
) -> anyhow::Result<String> {
    match configured {
        Some(a) => Ok(a.clone()),
        None if bound.ip().is_unspecified() => Err(anyhow::anyhow!(
            "{section}.listen is {bound}: set {section}.advertise to the address other members reach this host at"
        )),
        None => Ok(bound.to_string()),
    }
}
