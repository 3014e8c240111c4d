//! The one wasmtime `Engine` of the process, with epoch interruption driven by a ticker
//! thread: a call's time cap is a number of ticks. The ticker runs only while some plugin
//! call is in flight ([`Ticking`]); an idle host does not wake every tick.

use std::sync::{Condvar, Mutex, OnceLock};
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
                loop {
                    // Deadlines are relative to the epoch when they are set, so pausing the
                    // epoch while nothing runs changes no call's budget.
                    drop(ACTIVE.1.wait_while(lock_active(), |n| *n == 0).unwrap_or_else(|p| p.into_inner()));
                    let Some(engine) = ticker.upgrade() else { return };
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawning the plugin epoch ticker");
        engine
    })
}

/// Plugin calls in flight, and the ticker's wake-up.
static ACTIVE: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

fn lock_active() -> std::sync::MutexGuard<'static, usize> {
    ACTIVE.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps the epoch ticking while it lives: hold one across every entry into a store.
pub struct Ticking(());

impl Ticking {
    pub fn start() -> Ticking {
        *lock_active() += 1;
        ACTIVE.1.notify_one();
        Ticking(())
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        *lock_active() -= 1;
    }
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
