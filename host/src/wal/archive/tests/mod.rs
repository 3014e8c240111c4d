//! Tests of the WAL archive as a whole, on real files (a temporary folder each), one module per
//! theme; unit tests of the parts sit at the bottom of their files.

mod append;
mod common;
mod crash;
mod flush;
mod kill9;
mod props;
mod retention_cap;
mod timeline;
mod trailer;
