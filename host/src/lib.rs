//! tandem: a replication host. It keeps an application's state replicated: PostgreSQL WAL and
//! file trees from a primary to a warm standby, and runtime configuration changes across a
//! cluster through a captain commit log, with policies decided by sandboxed WASM plugins.
//!
//! # Layout
//! - [`plugin`]: the wasmtime runtime for policy plugins (whitelist, path filter, purge).
//! - [`peer`]: the authenticated, encrypted, framed transport between tandem hosts.
//! - [`conf`]: the Splunk-style conf model: `.conf` files, scopes, layers, typed change ops,
//!   the on-disk tree and its snapshots.
//! - [`cluster`]: the captain commit log (openraft) and the member lifecycle around it.
//! - [`sync`]: file-tree sync: scan, index, journal, delta passes, safe apply, follow mode.
//! - [`wal`]: WAL streaming: the receiver on tandem's slot at the primary, the durable segment
//!   archive, the walsender serving it to the standby PostgreSQL, base backups, status.
//! - [`tunnel`]: the pair's PostgreSQL connections carried inside the peer link (encrypted,
//!   compressed), so no database byte crosses hosts in clear.
//! - [`standby`]: the warm-standby pair: configure, status, convert-to-primary, rejoin, off;
//!   it prepares the local PostgreSQL and starts the WAL and tree-sync jobs a role needs.
//! - [`api`]: the REST API every member serves.
//! - [`config`]: `tandem.toml`, validated.
//! - [`admission`]: who keeps a connection slot when a listener is crowded (peer handshakes,
//!   API connections).
//! - [`clip`]: how supplied names and values appear in errors, logs and status (cut, or
//!   by length only).
//! - [`durable`]: crash-safe replacement of small files tandem owns, and directory lock files.
//! - [`listen`]: how the listeners bind and accept (a deep backlog, a backoff on errors).
//! - [`logging`]: tracing to the terminal and to per-job files.
//! - [`daemon`]: the long-running host that wires the subsystems together.
//! - [`cli`]: the `tandem` command line (the binary is a thin shell over it).
//! - `fuzz` (feature `fuzz` only): the decoders' entry points for `cargo fuzz` (`fuzz/`).

pub mod admission;
pub mod api;
pub mod cli;
pub mod clip;
pub mod cluster;
pub mod conf;
pub mod config;
pub mod daemon;
pub mod durable;
pub mod listen;
pub mod logging;
pub mod nagios;
pub mod peer;
pub mod plugin;
pub mod standby;
pub mod sync;
pub mod tunnel;
pub mod wal;
pub mod when;

#[cfg(feature = "fuzz")]
pub mod fuzz;
