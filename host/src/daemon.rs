//! The long-running host: loads the plugins (and watches their folder), opens the conf tree
//! and the cluster member (commit log, recovery, purge), the peer listener and the REST API,
//! and serves until shutdown. Later subsystems (tree sync, WAL) start here too.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::api::{self, AppState, Tokens};
use crate::cluster::{self, ClusterNode, Dialer, Member};
use crate::conf::ConfTree;
use crate::config::Config;
use crate::peer::{self, Acceptor, ClusterSecret, PeerConnection, PeerError, PeerIdentity};
use crate::plugin::Plugins;
use crate::sync::follow::Follower;
use crate::sync::live::watch_trees;
use crate::sync::protocol::SYNC_FRAME;
use crate::sync::server::SyncServer;

/// The file in the data folder that holds the address the peer listener is bound to (useful
/// when the configuration asks for port 0).
pub const PEER_ADDR_FILE: &str = "peer.addr";
/// The same for the REST API.
pub const API_ADDR_FILE: &str = "api.addr";

/// Runs the host until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data folder {}", config.data_dir.display()))?;
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
    let secret = ClusterSecret::load_or_create(&secret_file)?;
    let me = Arc::new(PeerIdentity::new(config.node_name.clone()));
    let listener = TcpListener::bind(config.peer.listen)
        .await
        .with_context(|| format!("binding the peer listener on {}", config.peer.listen))?;
    let addr = listener.local_addr()?;
    std::fs::write(config.data_dir.join(PEER_ADDR_FILE), format!("{addr}\n"))?;
    info!(node = %config.node_name, %addr, plugins = %config.plugins.dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default(), "tandem is up");

    let api_listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the REST API on {}", config.api.listen))?;
    let api_addr = api_listener.local_addr()?;
    std::fs::write(config.data_dir.join(API_ADDR_FILE), format!("{api_addr}\n"))?;
    let token_file = config.api.token_file.clone().expect("resolved config has a token file");
    let tokens = Tokens::load(&config.api, &token_file)
        .with_context(|| format!("loading the API token {}", token_file.display()))?;

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
    let wal = Arc::new(std::sync::OnceLock::new());
    if config.wal.enabled() {
        let (wal_config, slot, stop) = (config.wal.clone(), wal.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut wal_tasks = tokio::task::JoinSet::new();
            match crate::wal::service::start(wal_config, stop.clone(), &mut wal_tasks).await {
                Ok(Some(handle)) => {
                    let _ = slot.set(Ok(handle));
                }
                Ok(None) => {}
                Err(e) => {
                    // The rest of the host keeps serving; status shows why WAL did not start.
                    tracing::error!(error = %e, "WAL streaming could not start");
                    let _ = slot.set(Err(e.to_string()));
                }
            }
            while wal_tasks.join_next().await.is_some() {}
        });
    }
    {
        let (n, stop) = (node.clone(), shutdown.clone());
        tasks.spawn(async move { n.run_recovery(stop).await });
        let (n, stop) = (node.clone(), shutdown.clone());
        tasks.spawn(async move { n.run_purge(stop).await });
        let (n, stop) = (node.clone(), shutdown.clone());
        tasks.spawn(async move { n.run_checkpoints(stop).await });
        let state =
            AppState { node: node.clone(), tokens, wal: wal.clone(), wal_enabled: config.wal.enabled() };
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = api::serve(api_listener, state, stop.clone()).await {
                tracing::error!(error = %e, "the REST API stopped");
                stop.cancel();
            }
        });
    }

    let acceptor = Acceptor {
        secret: secret.clone(),
        me: me.clone(),
        max_frame: config.peer.max_frame_bytes,
        handshake_timeout: config.peer.handshake_timeout(),
        max_connections: config.peer.max_connections,
    };
    let sync_state = config.data_dir.join("sync");
    let sync_server = SyncServer {
        config: config.sync.clone(),
        state_dir: sync_state.clone(),
        plugins: plugins.clone(),
        journals: Default::default(),
    };
    match &config.sync.primary {
        // A standby follows its primary's trees; a primary watches its own.
        Some(primary) => {
            let follower = Follower {
                primary: primary.clone(),
                secret: secret.clone(),
                me: (*me).clone(),
                max_frame: config.peer.max_frame_bytes,
                state_dir: sync_state.clone(),
                log_dir: config.log.dir.clone(),
                verify: Duration::from_secs(config.sync.verify_minutes.max(1) * 60),
            };
            let trees: Vec<_> = config
                .sync
                .trees
                .keys()
                .filter_map(|t| Some((t.clone(), config.sync.tree_root(t)?)))
                .collect();
            tasks.spawn(follower.run(trees, shutdown.clone()));
        }
        None => {
            let journals = sync_server.journals.clone();
            tasks.spawn(watch_trees(config.sync.clone(), sync_state.clone(), journals, shutdown.clone()));
        }
    }
    let handler_node = node.clone();
    let handler = move |conn, stop| dispatch(handler_node.clone(), sync_server.clone(), conn, stop);
    peer::serve(listener, acceptor, handler, shutdown.clone()).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    node.shutdown().await;
    watcher.join().map_err(|_| anyhow::anyhow!("the plugin watcher panicked"))?;
    info!("tandem stopped");
    Ok(())
}

/// Hands a peer connection to the subsystem its first frame belongs to: tree sync, or the
/// cluster (which also answers pings).
async fn dispatch(
    node: Arc<ClusterNode>,
    sync: SyncServer,
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
        Some(f) => cluster::serve_connection(node, conn, Some(f), stop).await,
    }
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
