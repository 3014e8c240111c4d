//! `tandem sync ...`: tree sync from the command line. `once` pulls one tree from the primary
//! into this host (the standby) in one pass.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use tokio::net::lookup_host;

use super::args::SyncCommand;
use crate::config::Config;
use crate::peer::{ClusterSecret, PeerConnection, PeerIdentity};
use crate::sync::pass::pull_pass;

pub fn run(config: Config, cmd: SyncCommand) -> anyhow::Result<ExitCode> {
    let SyncCommand::Once { tree, primary, json } = cmd;
    let primary = primary
        .or_else(|| config.sync.primary.clone())
        .context("no primary to pull from: set sync.primary in the configuration or pass --primary")?;
    let root = config.sync.tree_root(&tree).with_context(|| format!("no tree `{tree}` in sync.trees"))?;
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let state = config.data_dir.join("sync");
    std::fs::create_dir_all(&state)?;
    let secret = ClusterSecret::load(config.peer.secret_file.as_deref().expect("resolved"))?;
    let me = PeerIdentity::new(config.node_name.clone());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let addr = lookup_host(&primary).await?.next().with_context(|| format!("cannot resolve {primary}"))?;
        let mut conn = PeerConnection::connect(addr, &secret, &me, config.peer.max_frame_bytes)
            .await
            .with_context(|| format!("connecting to the primary {primary}"))?;
        let started = Instant::now();
        let index = state.join(format!("{tree}.standby.index"));
        let stats = pull_pass(&mut conn, &tree, &root, &index).await.with_context(|| format!("sync of `{tree}`"))?;
        let seconds = started.elapsed().as_secs_f64();
        if json {
            let mut v = serde_json::to_value(&stats)?;
            v["tree"] = tree.clone().into();
            v["seconds"] = seconds.into();
            println!("{v}");
        } else {
            println!(
                "{tree}: {} whole, {} by delta, {} deleted, {} folders/links, {} content bytes, {} bytes on the wire, {} failed, in {seconds:.2} s",
                stats.files_whole,
                stats.files_delta,
                stats.deleted,
                stats.dirs_links,
                stats.content_bytes,
                stats.wire_bytes,
                stats.failed,
            );
        }
        Ok(if stats.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
    })
}
