//! tandem's built-in purge policy plugin (`tandem:policy/purge-policy`).
//!
//! The decision logic is [`logic`], plain Rust tested natively; the component glue below exists
//! only when built for `wasm32-wasip2`.

pub mod logic;

#[cfg(target_arch = "wasm32")]
mod component {
    use std::cell::Cell;

    use crate::logic::PurgePolicy;

    wit_bindgen::generate!({ path: "../../wit", world: "purge-policy" });

    use exports::tandem::policy::history_purge::{Guest, History};

    thread_local! {
        static POLICY: Cell<PurgePolicy> = Cell::new(PurgePolicy::default());
    }

    struct Plugin;

    impl Guest for Plugin {
        fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
            let policy = PurgePolicy::from_settings(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            POLICY.with(|p| p.set(policy));
            Ok(())
        }

        fn purgeable(history: History) -> u64 {
            POLICY.with(|p| p.get().purgeable(history.count, &history.oldest, history.now))
        }
    }

    export!(Plugin);
}
