//! `tandem sync ...`: tree sync from the command line. `once` pulls one tree from the primary
//! into this host (the standby) in one pass, with a progress line on a terminal; `status`
//! shows what the standby knows of each tree.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::lookup_host;

use super::ago;
use super::args::SyncCommand;
use crate::config::Config;
use crate::peer::{ClusterSecret, PeerConnection, PeerIdentity};
use crate::sync::pass::{PassStats, Progress, PullMode, PullState, pull_pass};
use crate::sync::status::{StatusFiles, TreeStatus};
use crate::when::timestamp;

pub fn run(config: Config, cmd: SyncCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SyncCommand::Once { tree, primary, json, full } => once(config, tree, primary, json, full),
        SyncCommand::Status { json } => status(&config, json),
    }
}

fn once(
    config: Config,
    tree: String,
    primary: Option<String>,
    json: bool,
    full: bool,
) -> anyhow::Result<ExitCode> {
    let primary = primary
        .or_else(|| config.sync.primary.clone())
        .context("no primary to pull from: set sync.primary in the configuration or pass --primary")?;
    let root = config.sync.tree_root(&tree).with_context(|| format!("no tree `{tree}` in sync.trees"))?;
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let state = config.data_dir.join("sync");
    std::fs::create_dir_all(&state)?;
    let secret = ClusterSecret::load(config.peer.secret_file.as_deref().expect("resolved"))?;
    let me = PeerIdentity::new(config.node_name.clone());
    let status = StatusFiles::new(&state, config.log.dir.as_deref(), &tree);
    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let pulled = runtime.block_on(async {
        let addr =
            lookup_host(&primary).await?.next().with_context(|| format!("cannot resolve {primary}"))?;
        let mut conn = PeerConnection::connect(addr, &secret, &me, config.peer.max_frame_bytes)
            .await
            .with_context(|| format!("connecting to the primary {primary}"))?;
        let pull = PullState::new(&state, &tree, config.sync.idle());
        let progress = Arc::new(Progress::default());
        let shown = std::io::stderr().is_terminal().then(|| tokio::spawn(show(progress.clone())));
        let how = if full { PullMode::Full } else { PullMode::Since };
        let pulled = pull_pass(&mut conn, &tree, &root, &pull, progress, how).await;
        if let Some(shown) = shown {
            shown.abort();
            eprintln!();
        }
        pulled.with_context(|| format!("sync of `{tree}`"))
    });
    let stats = match pulled {
        Ok(stats) => stats,
        Err(e) => {
            status.failed(&tree, &primary, &super::report::one_line(&e), false);
            return Err(e);
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    status.passed(&tree, &primary, &stats, seconds, false);
    if json {
        let mut v = serde_json::to_value(&stats)?;
        v["tree"] = tree.clone().into();
        v["seconds"] = seconds.into();
        println!("{v}");
    } else {
        println!("{tree}: {} in {seconds:.2} s", summary(&stats));
        for p in &stats.unreadable_paths {
            println!("  unreadable on the primary: {} ({})", p.path, p.reason);
        }
        let unlisted = stats.unreadable.saturating_sub(stats.unreadable_paths.len() as u64);
        if unlisted > 0 {
            println!("  and {unlisted} more unreadable paths");
        }
    }
    // As rsync's exit code 23: some of the tree did not arrive.
    Ok(if stats.failed == 0 && stats.unreadable == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn summary(s: &PassStats) -> String {
    format!(
        "{} whole, {} by delta, {} renamed, {} metadata only, {} deleted, {} folders/links, {} hard links, {} special skipped, {} content bytes, {} bytes on the wire, {} failed, {} unreadable ({})",
        s.files_whole,
        s.files_delta,
        s.moved,
        s.meta_only,
        s.deleted,
        s.dirs_links,
        s.hard_links,
        s.skipped_special,
        s.content_bytes,
        s.wire_bytes,
        s.failed,
        s.unreadable,
        if s.full { "full comparison" } else { "from the primary's journal" }
    )
}

/// A progress line on stderr until aborted.
async fn show(p: Arc<Progress>) {
    loop {
        let (files, bytes) = (p.files.load(Ordering::Relaxed), p.bytes.load(Ordering::Relaxed));
        let (pf, pb) = (p.plan_files.load(Ordering::Relaxed), p.plan_bytes.load(Ordering::Relaxed));
        eprint!("\r{files}/{pf} files, {:.1}/{:.1} MiB    ", bytes as f64 / 1048576.0, pb as f64 / 1048576.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let state = config.data_dir.join("sync");
    let trees: Vec<TreeStatus> = config
        .sync
        .trees
        .iter()
        .filter(|(_, path)| !path.is_empty())
        .map(|(t, _)| StatusFiles::new(&state, None, t).load(t))
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&trees)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<14} {:<10} {:<20} {:<12} {:>10} {:>14} {:>8}  last error",
        "tree", "mode", "last pass", "lag", "files", "bytes", "special"
    );
    for t in &trees {
        let mode = if t.following {
            "following"
        } else if t.last_pass_ms.is_some() {
            "once"
        } else {
            "-"
        };
        let last = t.last_pass_ms.map_or("never".into(), timestamp);
        let lag = t.in_sync_ms.map_or("never".to_string(), ago);
        let error = match (&t.last_error, t.last_error_ms) {
            (Some(e), Some(at)) if t.last_pass_ms.is_none_or(|p| at > p) => {
                format!("{e} ({})", ago(at))
            }
            (Some(e), Some(at)) => format!("(recovered) {e} ({})", ago(at)),
            _ => "-".into(),
        };
        let last = last.get(..19).unwrap_or(&last).to_string();
        println!(
            "{:<14} {:<10} {:<20} {:<12} {:>10} {:>14} {:>8}  {error}",
            t.tree, mode, last, lag, t.files_total, t.bytes_total, t.special_skipped
        );
        if let Some(line) = t.unreadable_line() {
            println!("{:<14} {line}", "");
        }
    }
    Ok(ExitCode::SUCCESS)
}
