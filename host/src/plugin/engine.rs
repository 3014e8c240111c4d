//! The one wasmtime `Engine` of the process, with epoch interruption driven by a ticker
//! thread: a call's time cap is a number of ticks.

use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine};

/// How often the epoch advances; a call's deadline is rounded up to whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// The shared engine. The ticker thread lives as long as the process.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true).parallel_compilation(true);
        let engine = Engine::new(&config).expect("the plugin engine's fixed configuration is valid");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawning the plugin epoch ticker");
        engine
    })
}

/// Ticks to allow for a call capped at `limit` (at least two, so a call that starts just
/// before a tick still gets its whole budget).
pub fn deadline_ticks(limit: Duration) -> u64 {
    let tick = EPOCH_TICK.as_micros().max(1);
    (limit.as_micros().div_ceil(tick) as u64).max(1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        assert_eq!(deadline_ticks(Duration::from_millis(50)), 26);
        assert_eq!(deadline_ticks(Duration::from_millis(1)), 2);
        assert_eq!(deadline_ticks(Duration::ZERO), 2);
    }
}
