//! tandem's end-to-end tests: real compiled plugin components, real sockets, real `tandem`
//! processes. One harness, a module per theme.

mod cli;
mod cluster;
#[path = "../common.rs"]
mod common;
mod peer;
/// PostgreSQL test clusters: the library's own helper, shared (it names `ConnConfig` from here).
#[path = "../../host/src/wal/client/tests/pg.rs"]
#[allow(dead_code)]
mod pg;
mod plugins;
mod standby;
mod support;
mod sync;
mod sync_e2e;
mod sync_follow;
mod sync_meta;
mod wal;

#[allow(unused_imports)] // for pg.rs
use tandem::wal::{base_backup::default_bin_dir, client::ConnConfig};
