//! What a plugin instance may touch: the per-store state (an empty WASI context, a memory
//! limiter, a bounded stderr buffer), the linker that grants only WASI 0.2's interfaces with
//! no capabilities behind them plus the `host` log, and the host's `log` implementation.
//!
//! Never grant here: preopened directories, environment variables, arguments, inherited
//! stdio, network access, or any way to wait inside the host (the epoch deadline only
//! interrupts wasm code, so a guest blocked in a host call would escape the time cap).

use std::sync::Arc;
use std::time::Duration;

use tracing::{Level as TLevel, event};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::host::{self, Level};
use super::cpu::CpuBudget;
use super::engine::{deadline_ticks, engine};
use super::tail::TailPipe;

/// How much of a guest's latest stderr is kept for an error message (panics land there).
const STDERR_CAPTURE: usize = 4096;
/// The clock interface as wasmtime-wasi registers it; guests' `0.2.x` imports resolve to it.
/// Its `subscribe-*` functions are the one way a capability-less guest could wait inside the
/// host. (The sleeping-plugin test fails if this name goes stale.)
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";
/// A component built by rustc for wasm32-wasip2 has a handful of core instances, one or two
/// memories and a few tables; these bounds leave room and stop a component made of many.
const MAX_INSTANCES: usize = 32;
const MAX_MEMORIES: usize = 4;
const MAX_TABLES: usize = 32;
/// Longest log line a plugin may write; longer ones are cut.
const MAX_LOG_LINE: usize = 2048;
/// Tables hold function references; a plugin needs few.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Per-instance state.
pub struct PluginState {
    plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: TailPipe,
    /// The cap on all linear memories of the instance together.
    memory_limit: usize,
    /// Bytes of linear memory granted so far, all memories together.
    memory_granted: usize,
    /// The last growth granted, taken back if the growth then fails.
    last_grant: usize,
    /// Set when the guest asked for more memory than allowed: the total it asked for.
    pub(crate) memory_refused: Option<usize>,
    /// The CPU budget of the call in progress.
    budget: CpuBudget,
}

impl PluginState {
    pub fn new(plugin: Arc<str>, memory_limit: usize) -> Self {
        let stderr = TailPipe::new(STDERR_CAPTURE);
        // Sockets are off by default in wasmtime-wasi; say so here rather than rely on it.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            plugin,
            wasi,
            table: ResourceTable::new(),
            stderr,
            memory_limit,
            memory_granted: 0,
            last_grant: 0,
            memory_refused: None,
            budget: CpuBudget::default(),
        }
    }

    /// Starts the CPU budget of the next call into the instance (and sets the epoch deadline
    /// that first checks it).
    pub fn start_call(store: &mut Store<PluginState>, limit: Duration) {
        store.data_mut().budget = CpuBudget::start(limit);
        store.set_epoch_deadline(deadline_ticks(limit));
    }

    /// What the guest wrote to stderr since the last [`Self::clear_stderr`].
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim().to_string()
    }

    /// Forgets earlier output, so an error shows what the failing call wrote.
    pub fn clear_stderr(&self) {
        self.stderr.clear();
    }
}

/// A store for one plugin instance, with its limiter installed.
pub fn new_store(plugin: Arc<str>, memory_limit: usize) -> Store<PluginState> {
    let mut store = Store::new(engine(), PluginState::new(plugin, memory_limit));
    store.limiter(|state| state as &mut dyn ResourceLimiter);
    // The cap is CPU time: on a loaded machine the wall-clock deadline passes first, and the
    // call goes on for what it has left (a daemon starting beside busy neighbours was refused
    // its own built-in plugins when this was wall time).
    store.epoch_deadline_callback(|cx| {
        Ok(match cx.data().budget.extension() {
            Some(ticks) => UpdateDeadline::Continue(ticks),
            None => UpdateDeadline::Interrupt,
        })
    });
    store
}

/// The linker every plugin is instantiated with.
pub fn linker() -> wasmtime::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine());
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    for name in ["subscribe-duration", "subscribe-instant"] {
        clock.func_new(name, |_, _, _, _| wasmtime::bail!("a plugin may not sleep or wait on a clock"))?;
    }
    linker.allow_shadowing(false);
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
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        let total = self.memory_granted.saturating_add(grow);
        if total > self.memory_limit {
            self.memory_refused = Some(total);
            wasmtime::bail!("memory cap of {} bytes exceeded", self.memory_limit);
        }
        self.memory_granted = total;
        self.last_grant = grow;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_granted -= std::mem::take(&mut self.last_grant);
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
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
        // One line per call: a plugin cannot forge log lines of its own.
        let mut message = message.replace(|c: char| c.is_control(), " ");
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_memory_cap_counts_every_memory_of_the_instance() {
        let mut state = PluginState::new("test".into(), 64 * MIB);
        assert!(state.memory_growing(0, 40 * MIB, None).unwrap());
        // a second memory of the same instance
        assert!(state.memory_growing(0, 40 * MIB, None).is_err());
        assert_eq!(state.memory_refused, Some(80 * MIB));
        // growth of the first memory within the cap is fine
        assert!(state.memory_growing(40 * MIB, 60 * MIB, None).unwrap());
        // a growth that then fails is given back
        assert!(state.memory_growing(60 * MIB, 64 * MIB, None).unwrap());
        state.memory_grow_failed(wasmtime::format_err!("no")).unwrap();
        assert!(state.memory_growing(60 * MIB, 64 * MIB, None).unwrap());
    }
}
