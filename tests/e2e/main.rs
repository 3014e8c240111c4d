//! tandem's end-to-end tests: real compiled plugin components, real sockets, real `tandem`
//! processes. One harness, a module per theme.

mod cli;
mod cluster;
mod peer;
mod plugins;
mod support;
mod sync;
mod sync_e2e;
mod sync_follow;
