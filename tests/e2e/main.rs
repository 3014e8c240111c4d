//! tandem's end-to-end tests: real compiled plugin components, real sockets, real `tandem`
//! processes. One harness, a module per theme.

mod api;
mod api_tls;
mod cli;
mod cluster;
#[path = "../common.rs"]
mod common;
mod daemon;
/// The network lab (hosts as network namespaces), shared with the benchmarks.
#[path = "../lab/mod.rs"]
mod lab;
mod lab_self;
mod links;
mod peer;
/// PostgreSQL test clusters: the library's own helper, shared (it names `ConnConfig` from here).
#[path = "../../host/src/wal/client/tests/pg.rs"]
#[allow(dead_code)]
mod pg;
mod plugins;
mod standby;
mod standby_fence;
mod support;
mod sync;
mod sync_e2e;
mod sync_follow;
mod sync_meta;
mod sync_unreadable;
/// A small tmpfs that fills up: the library's own helper, shared (it names `free_bytes`).
#[path = "../../host/src/wal/archive/tests/tmpfs.rs"]
mod tmpfs;
mod wal;

#[allow(unused_imports)] // for pg.rs and tmpfs.rs
use tandem::wal::{archive::free_bytes, base_backup::default_bin_dir, client::ConnConfig};
