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
    /// Runtime configuration changes and reads on this member (through its REST API).
    #[command(subcommand)]
    Conf(ConfCommand),
    /// The configuration cluster: members, status, resync.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// File-tree sync: pull a tree from the primary.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// WAL streaming: status, and base backups for a new standby.
    #[command(subcommand)]
    Wal(WalCommand),
    /// The warm-standby pair: configure, status, convert-to-primary, rejoin, off.
    #[command(subcommand)]
    Standby(StandbyCommand),
    /// Try everything on this machine: a warm-standby pair and a three-member cluster.
    ///
    /// A primary and a standby (with PostgreSQL 15 when it is
    /// installed, files only otherwise) and a three-member configuration cluster, on loopback
    /// in a temporary folder; makes a few changes, prints the statuses and commands to try;
    /// Ctrl-C stops it all.
    Sandbox(super::sandbox::SandboxArgs),
    /// Print the default configuration or the effective one.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum StandbyCommand {
    /// Pair this host with another, as primary or standby.
    ///
    /// On the primary (first): prepares
    /// PostgreSQL (a replication role with a random password, pg_hba for the standby only,
    /// wal_level, wal_log_hints, max_slot_wal_keep_size) and serves its trees. On the standby:
    /// joins the primary, streams its WAL into tandem's archive, moves its previous database
    /// to the recovery location, takes a base backup, starts PostgreSQL following tandem, and
    /// follows the primary's trees. Run it again to change options; it says what changed.
    #[command(group(clap::ArgGroup::new("mode").required(true).args(["primary_mode", "standby_mode"])))]
    Configure {
        /// Make this host the primary; --peer is the standby's peer address.
        #[arg(long)]
        primary_mode: bool,
        /// Make this host the standby; --peer is the primary's peer address.
        #[arg(long)]
        standby_mode: bool,
        /// The other host's peer address (host:port of its [peer] listener).
        #[arg(long, value_name = "HOST:PORT")]
        peer: String,
        /// Files only: do not replicate the database.
        #[arg(long)]
        ignore_database: bool,
        /// Leave the vault (and the reports inside it) out of tree sync.
        #[arg(long)]
        ignore_vault: bool,
        /// Leave the package lists (pip_req, rpm_req) out of tree sync.
        #[arg(long)]
        ignore_package_updates: bool,
        /// On the standby: where its previous database is moved (default: next to it, as
        /// <data folder>.tandem-previous-<time>).
        #[arg(long, value_name = "DIR")]
        recovery_dir: Option<PathBuf>,
        /// On the standby: take a fresh base backup even if the database already follows.
        #[arg(long)]
        rebuild: bool,
    },
    /// The pair as it is now.
    ///
    /// Role, peer, database replication (streaming, last WAL, WAL
    /// segments in use and configured, lag in bytes and seconds), each tree's sync, last errors.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Judge the pair for monitoring, in the Nagios convention: one line; exit 0 OK,
    /// 1 WARNING, 2 CRITICAL (a daemon that does not answer is CRITICAL).
    Check {
        /// WAL lag in bytes past which the check warns.
        #[arg(long, value_name = "BYTES", default_value_t = crate::standby::check::LagLimits::default().warning)]
        warn_lag: u64,
        /// WAL lag in bytes past which the check is critical.
        #[arg(long, value_name = "BYTES", default_value_t = crate::standby::check::LagLimits::default().critical)]
        crit_lag: u64,
    },
    /// Fail over: make this standby the primary.
    ///
    /// Refuses while the old primary still answers
    /// as a primary, or while WAL replay is paused; lets the database take all WAL tandem
    /// holds, stops pulling trees, promotes, checkpoints, and says how long it took.
    ConvertToPrimary {
        /// Convert even though the old primary answers as a primary (split brain unless you
        /// stop it).
        #[arg(long)]
        force: bool,
    },
    /// Bring this old primary back as the standby of the new one (pg_rewind, not a new base
    /// backup).
    Rejoin {
        /// The new primary's peer address (default: the recorded peer).
        #[arg(long, value_name = "HOST:PORT")]
        peer: Option<String>,
    },
    /// Unpair both sides.
    ///
    /// Stops WAL streaming and tree sync; the primary drops the standby's
    /// pg_hba entries and tandem's slot. The standby's database is left as it is.
    Off,
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

/// Which conf file a key-level change targets.
#[derive(Debug, clap::Args)]
pub struct ConfTarget {
    /// The conf type: the file's stem (savedsearches, macros, props, ...).
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    pub conf_type: String,
    /// system, app:NAME or user:APP:USER.
    #[arg(long, short = 's', default_value = "system")]
    pub scope: String,
    /// Change the object's permissions in the scope's local.meta instead (the stanza is then
    /// `TYPE` or `TYPE/NAME`).
    #[arg(long)]
    pub meta: bool,
}

impl ConfTarget {
    pub fn resolve(self) -> anyhow::Result<(String, crate::conf::Scope, crate::conf::Target)> {
        let scope = crate::api::parse_scope(&self.scope).map_err(anyhow::Error::msg)?;
        let target = if self.meta { crate::conf::Target::Meta } else { crate::conf::Target::Conf };
        Ok((self.conf_type, scope, target))
    }
}

/// Which whole file (a lookup table, a view, ...) a file change targets.
#[derive(Debug, clap::Args)]
pub struct FileTarget {
    /// lookups, views, nav, html, models, ...
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    pub conf_type: String,
    /// app:NAME or user:APP:USER.
    #[arg(long, short = 's')]
    pub scope: String,
    /// The file's name in the tree (one path component).
    #[arg(long)]
    pub name: String,
}

impl FileTarget {
    /// A change of this file by `op`.
    pub fn change(self, op: crate::conf::Op) -> anyhow::Result<crate::conf::ConfChange> {
        let scope = crate::api::parse_scope(&self.scope).map_err(anyhow::Error::msg)?;
        let target = crate::conf::Target::File { name: self.name };
        Ok(crate::conf::ConfChange { conf_type: self.conf_type, scope, target, op })
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfCommand {
    /// Set `KEY = VALUE` in `[STANZA]` of the scope's local file. A replicated type is
    /// committed through the captain; others apply on this member only (the answer says which).
    Set {
        #[command(flatten)]
        target: ConfTarget,
        /// The stanza, without brackets (created if missing).
        stanza: String,
        /// The key (no `=`, no newline).
        key: String,
        /// The value (one line).
        value: String,
    },
    /// Delete KEY from [STANZA], or the whole stanza when no key is given.
    Delete {
        #[command(flatten)]
        target: ConfTarget,
        /// The stanza, without brackets.
        stanza: String,
        /// The key; without it the whole stanza goes.
        key: Option<String>,
    },
    /// Replace a whole file (a lookup table, a view, ...) with FILE's content.
    PutFile {
        #[command(flatten)]
        target: FileTarget,
        /// The local file whose content is sent.
        file: PathBuf,
    },
    /// Delete a whole file (a lookup table, a view, ...).
    DeleteFile {
        #[command(flatten)]
        target: FileTarget,
    },
    /// Show a conf type as seen from a scope: every layer merged (default < local,
    /// system < app < user), each value with the file it came from.
    Get {
        #[arg(long = "type", short = 't', value_name = "TYPE")]
        conf_type: String,
        #[arg(long, short = 's', default_value = "system")]
        scope: String,
        /// Only this stanza.
        stanza: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the files under the conf tree that runtime changes can write.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Replicate a file's current content on purpose (direct edits are not captured): every
    /// stanza of a .conf file is replaced on all members, a lookup or data file is sent whole.
    Push {
        /// Path relative to the conf root, e.g. apps/search/local/macros.conf.
        path: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make this member the first member (node 1) of a new cluster.
    Init,
    /// Add the tandem host listening at PEER (its peer address) as a new member. It must
    /// not belong to a cluster; it downloads the captain's snapshot, then follows the log.
    AddMember {
        /// The new member's peer address, e.g. 127.0.0.1:7430.
        peer: String,
    },
    /// Remove member NODE_ID. Its id is never reused; it must be cleaned before it rejoins.
    RemoveMember {
        /// The member's node id (see `tandem cluster status`).
        node_id: u64,
    },
    /// The captain and every member: state, applied commit, last_conf_replication, pending
    /// outbox, last error.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Judge the cluster for monitoring, in the Nagios convention: one line; exit 0 OK,
    /// 1 WARNING, 2 CRITICAL (no captain, or this member cannot apply; a daemon that does not
    /// answer is CRITICAL).
    Check,
    /// Replace this member's replicated configuration with the captain's, discarding its
    /// pending local changes (needed when its history was purged meanwhile).
    Resync {
        /// Required: the resync discards pending local changes.
        #[arg(long, required = true)]
        destructive: bool,
    },
    /// Forget this host's cluster state (commit log, snapshot, outbox) so it can be added
    /// again after removal. Its conf tree stays. Refused on a member that was not removed.
    Clean {
        /// Clean even though this host was never told of its removal (it was down then).
        #[arg(long)]
        force: bool,
    },
    /// Run the history purge now instead of waiting for the purge period.
    Purge,
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Pull one tree from the primary into this host in one pass: new and changed files
    /// (large changed files as deltas), folders, links, modes, mtimes; deletions of what the
    /// primary no longer has (never of what it could not read).
    Once {
        /// The tree's name in sync.trees (vault, etc, playbooks, ...).
        #[arg(long)]
        tree: String,
        /// The primary's peer address; default: sync.primary.
        #[arg(long)]
        primary: Option<String>,
        /// Print the pass's figures as one JSON object.
        #[arg(long)]
        json: bool,
        /// Compare whole trees instead of starting from where the last pass left off.
        #[arg(long)]
        full: bool,
    },
    /// Per tree on this standby: last pass, files and bytes moved, lag, last error.
    Status {
        /// One JSON object per tree, in an array.
        #[arg(long)]
        json: bool,
    },
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// What the running daemon knows of WAL streaming: every position (primary, received,
    /// flushed, the standby's replayed), lag in bytes and seconds, the last WAL, archive use,
    /// the slot's state on the primary and the last error.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a new standby PostgreSQL from the primary in [wal] (pg_basebackup, WAL streamed
    /// alongside) whose primary_conninfo points at this host's walsender. Start it afterwards
    /// with pg_ctl; it streams from tandem.
    BaseBackup {
        /// The new standby's data folder (absent or empty).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Folder holding pg_basebackup (default: $TANDEM_PG_BIN, /usr/lib/postgresql/15/bin,
        /// or the folder pg_ctl on PATH links to).
        #[arg(long, value_name = "DIR")]
        pg_bin: Option<PathBuf>,
        /// Run pg_basebackup as this OS user (PostgreSQL refuses root).
        #[arg(long, value_name = "USER")]
        os_user: Option<String>,
        /// The standby's application_name.
        #[arg(long, default_value = "tandem_standby")]
        application_name: String,
    },
}
