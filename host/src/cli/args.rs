//! The raw command line, as clap parses it. Validation happens in [`crate::config`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::plugin::World;

/// tandem keeps an application's state replicated: a warm standby (PostgreSQL WAL and file
/// trees) and configuration changes across a cluster, with policies from WASM plugins.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Configuration file (TOML). Without it, the embedded defaults (`tandem config default`).
    #[arg(short, long, global = true, env = "TANDEM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tandem host: load the policy plugins (hot-reloading the plugin folder) and serve
    /// authenticated peers, until Ctrl-C or SIGTERM.
    Daemon,
    /// Inspect, validate and try policy plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Talk to another tandem host over the peer transport.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Print the default configuration or the effective one.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List the plugins of each world as this configuration loads them: name, version, source
    /// (built-in or file) and state (active, fallback, refused or failed, with the reason).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate a plugin file as the host would before loading it: a component of a known
    /// world and version that accepts its settings and answers a probe within the caps.
    Check {
        /// The component (`.wasm`) to check.
        file: PathBuf,
    },
    /// Run one decision through a plugin, with JSON in and JSON out.
    ///
    /// Input per world:
    ///   whitelist:    {"conf_type": "savedsearches", "scope": "system" | {"app": "search"}
    ///                  | {"user": {"app": "search", "user": "admin"}}, "meta": false}
    ///   path-filter:  {"tree": "vault", "entries": [{"path": "a/b.bak", "kind": "file",
    ///                  "size": 10, "mode": 420}]}   (kind: file, dir, symlink, other)
    ///   purge-policy: {"count": 25000, "oldest": [<unix ms>, ...], "now": <unix ms>}
    ///                  ("now" defaults to the current time)
    #[command(verbatim_doc_comment)]
    Eval {
        /// whitelist, path-filter or purge-policy.
        world: World,
        /// Use this plugin file instead of the active plugin of the world.
        #[arg(long, value_name = "FILE")]
        plugin: Option<PathBuf>,
        /// A setting for the plugin evaluated, on top of its table in the configuration
        /// (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// The input: JSON text, @FILE, or - for standard input.
        #[arg(long, short, default_value = "-")]
        input: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Connect to a tandem host, prove the cluster secret both ways, and time a round trip.
    Ping {
        /// The peer's listen address, e.g. 127.0.0.1:7420.
        addr: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the default configuration, every setting documented.
    Default,
    /// Validate the configuration and print it with defaults filled in.
    Check,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}
