//! The `tandem` command line: flags (clap) in, a validated [`Config`] and a subsystem call out.
//! Errors surface here as `anyhow` with context, one line each, and an exit code.

mod args;
mod cluster;
mod conf;
mod eval;
mod http;
mod pin;
mod plugins;
mod report;
mod sandbox;
mod standby;
mod sync;
mod wal;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

pub use args::{
    Cli, ClusterCommand, Command, ConfCommand, ConfigCommand, PeerCommand, PluginsCommand, StandbyCommand,
    SyncCommand, WalCommand,
};

use crate::config::{Config, DEFAULT_TOML};
use crate::logging;
use crate::peer::{ClusterSecret, PeerIdentity};

/// How long the daemon's leftover blocking work may run after its tasks have stopped.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Daemon | Command::Sandbox(_)) {
        end_quietly_on_a_closed_pipe();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tandem: {}", report::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Daemon => {
            // Before anything is written: a second daemon on this folder stops here.
            let claimed = crate::daemon::DataDir::claim(&config)?;
            let _guard = logging::init(&config.log, &config.log.level, true)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let ran = runtime.block_on(async {
                let shutdown = CancellationToken::new();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("stopping on signal");
                    stop.cancel();
                });
                crate::daemon::run(config, &claimed, shutdown).await
            });
            // Work on blocking threads that no task waits for any more (the scan of a pass
            // dropped at shutdown) gets a moment to end, then is abandoned: each such step is
            // safe to cut, as kill -9 would.
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
            ran?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(cmd) => {
            let _guard = logging::init(&config.log, "warn", false)?;
            plugins::run(config, cmd)
        }
        Command::Peer(PeerCommand::Ping { addr }) => {
            let _guard = logging::init(&config.log, "warn", false)?;
            let secret_file = config.peer.secret_file.clone().expect("resolved");
            let secret = ClusterSecret::load(&secret_file)?;
            let me = PeerIdentity::new(config.node_name.clone());
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime
                .block_on(crate::peer::ping::ping(
                    addr,
                    &secret,
                    &me,
                    config.peer.max_frame_bytes,
                    config.peer.handshake_timeout(),
                ))
                .with_context(|| format!("ping {addr}"))?;
            println!(
                "{addr}: node `{}` answered in {:.2} ms",
                report.node,
                report.round_trip.as_secs_f64() * 1e3
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Conf(cmd) => {
            let _guard = logging::init(&config.log, "warn", false)?;
            conf::run(config, cmd)
        }
        Command::Cluster(cmd) => {
            let _guard = logging::init(&config.log, "warn", false)?;
            cluster::run(config, cmd)
        }
        Command::Sync(cmd) => {
            let _guard = logging::init(&config.log, "warn", false)?;
            sync::run(config, cmd)
        }
        Command::Wal(cmd) => {
            let _guard = logging::init(&config.log, "warn", false)?;
            wal::run(config, cmd)
        }
        Command::Standby(cmd) => {
            let _guard = logging::init(&config.log, "warn", false)?;
            standby::run(config, cmd)
        }
        Command::Sandbox(args) => {
            let _guard = logging::init(&config.log, "warn", false)?;
            sandbox::run(args)
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_TOML}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check) => {
            println!("{}", toml::to_string_pretty(&config.redacted()).context("printing the configuration")?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A command whose output goes to a pipe that closed (`tandem ... | head -1`) ends quietly, as
/// Unix tools do, instead of panicking in `println!` (Rust ignores SIGPIPE, so the write fails
/// and `println!` panics): SIGPIPE gets its default action back. Sockets are unaffected (Rust
/// sends with `MSG_NOSIGNAL`). Not for the daemon and the sandbox, which outlive their output.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: restoring a signal's default action has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// How long ago a time in ms since the epoch was, for status output.
fn ago(ms: u64) -> String {
    crate::when::ago_at(ms, crate::plugin::now_ms())
}
