//! The database tunnel: PostgreSQL connections between the two hosts of a pair carried inside
//! tandem's authenticated, encrypted peer link, so no database byte and no credential crosses
//! the network in clear and the primary's PostgreSQL needs no network listener or `pg_hba`
//! network line for replication.
//!
//! ```text
//!  standby host                                         primary host
//!  WAL receiver, status SQL,    unix     +-------+  peer link (Noise,  +------+  unix
//!  pg_basebackup, pg_rewind --> socket ->| entry |==== AES-GCM, zstd) =| exit |-> socket -> PostgreSQL
//!  (as root or the pg user)   .s.PGSQL.N +-------+                     +------+   (local line in pg_hba)
//! ```
//!
//! Why a tunnel rather than TLS to PostgreSQL with certificates tandem makes and pins: one
//! authenticated link (the cluster secret, already proven both ways) instead of a certificate
//! authority, its files and their renewal on both hosts; PostgreSQL listens on its socket only
//! (nothing to scan or brute-force from the network); every client (`pg_basebackup`,
//! `pg_rewind`, tandem's own) works unchanged, since libpq reaches a Unix socket; and the link
//! compresses what it carries (WAL and base backups shrink 3-10x), which PostgreSQL 15's
//! streaming cannot do. The cost is a second hop through tandem on each side (measured in the
//! README's benchmarks).
//!
//! - [`entry`]: the standby side: a Unix socket in the local PostgreSQL's socket folder, open
//!   to root and the PostgreSQL user only (`SO_PEERCRED`); each connection dials the peer.
//! - [`exit`]: the primary side: admits only the pair's peer, only the replication role (read
//!   from the startup packet), and connects to the local PostgreSQL's socket.
//! - [`pump`]: the bytes both ways, compressed when it pays, with keepalives and an idle limit.
//! - [`compress`]: zstd per direction and the policy that turns it off when it does not pay.
//! - [`codec`] (frame kinds, the open request), [`startup`] (PostgreSQL's startup packet),
//!   [`stats`] (bytes before and after compression, per kind of stream), [`config`].
//!
//! Must never: forward a byte before the peer proved the cluster secret, connect anything but
//! the local PostgreSQL, admit a role other than the replication role, or buffer more than one
//! chunk per direction.

pub mod codec;
pub mod compress;
pub mod config;
pub mod entry;
pub mod error;
pub mod exit;
pub mod pump;
pub mod startup;
pub mod stats;

pub use config::TunnelConfig;
pub use entry::{Entry, Route};
pub use error::TunnelError;
pub use exit::{Exit, Target};
pub use stats::{LinkStats, StreamKind};
