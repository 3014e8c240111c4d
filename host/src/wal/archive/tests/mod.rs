//! Tests of the WAL archive as a whole, on real files (a temporary folder each), one module per
//! theme; unit tests of the parts sit at the bottom of their files.

mod append;
pub(crate) mod common;
mod crash;
mod disk_full;
mod flush;
mod kill9;
mod props;
mod retention_cap;
mod timeline;
pub(crate) mod tmpfs;
mod trailer;

/// For `tmpfs` (which the e2e tests include too).
use super::free_bytes;
