//! What a plugin instance may touch: the per-store state (an empty WASI context, a memory
//! limiter, a bounded stderr buffer), the linker that grants only WASI 0.2's interfaces with
//! no capabilities behind them plus the `host` log, and the host's `log` implementation.
//!
//! Never grant here: preopened directories, environment variables, arguments, inherited
//! stdio, network access.

use std::sync::Arc;

use tracing::{Level as TLevel, event};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::host::{self, Level};
use super::engine::engine;

/// Most of a guest's stderr kept for an error message (panic messages land there).
const STDERR_CAPTURE: usize = 4096;
/// Longest log line a plugin may write; longer ones are cut.
const MAX_LOG_LINE: usize = 2048;
/// Tables hold function references; a plugin needs few.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Per-instance state.
pub struct PluginState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    memory_limit: usize,
    /// Set when the guest asked for more memory than allowed: how much it asked for.
    pub(crate) memory_refused: Option<usize>,
}

impl PluginState {
    pub fn new(plugin: Arc<str>, memory_limit: usize) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        Self { plugin, wasi, table: ResourceTable::new(), stderr, memory_limit, memory_refused: None }
    }

    /// What the guest wrote to stderr, for an error message.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim().to_string()
    }
}

/// A store for one plugin instance, with its limiter installed.
pub fn new_store(plugin: Arc<str>, memory_limit: usize) -> Store<PluginState> {
    let mut store = Store::new(engine(), PluginState::new(plugin, memory_limit));
    store.limiter(|state| state as &mut dyn ResourceLimiter);
    store
}

/// The linker every plugin is instantiated with.
pub fn linker() -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    host::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;
    Ok(linker)
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl ResourceLimiter for PluginState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_refused = Some(desired);
            wasmtime::bail!("memory cap of {} bytes exceeded", self.memory_limit);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        let plugin = &*self.plugin;
        match level {
            Level::Trace => {
                event!(target: "tandem::plugin::guest", TLevel::TRACE, plugin, "{message}")
            }
            Level::Debug => {
                event!(target: "tandem::plugin::guest", TLevel::DEBUG, plugin, "{message}")
            }
            Level::Info => {
                event!(target: "tandem::plugin::guest", TLevel::INFO, plugin, "{message}")
            }
            Level::Warn => {
                event!(target: "tandem::plugin::guest", TLevel::WARN, plugin, "{message}")
            }
            Level::Error => {
                event!(target: "tandem::plugin::guest", TLevel::ERROR, plugin, "{message}")
            }
        }
    }
}
