//! The long-running host: loads the plugins (and watches their folder), opens the peer
//! listener, and serves until shutdown. Later subsystems (commit log, tree sync, WAL) start
//! here too.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::peer::{self, Acceptor, ClusterSecret, PeerIdentity};
use crate::plugin::Plugins;

/// The file in the data folder that holds the address the peer listener is bound to (useful
/// when the configuration asks for port 0).
pub const PEER_ADDR_FILE: &str = "peer.addr";

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

    let acceptor = Acceptor {
        secret,
        me,
        max_frame: config.peer.max_frame_bytes,
        handshake_timeout: config.peer.handshake_timeout(),
        max_connections: config.peer.max_connections,
    };
    peer::serve(listener, acceptor, peer::ping::answer, shutdown.clone()).await;
    shutdown.cancel();
    watcher.join().map_err(|_| anyhow::anyhow!("the plugin watcher panicked"))?;
    info!("tandem stopped");
    Ok(())
}
