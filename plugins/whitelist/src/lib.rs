//! tandem's built-in replication whitelist plugin (`tandem:policy/whitelist`).
//!
//! The decision logic is [`logic`], plain Rust tested natively; the component glue below exists
//! only when built for `wasm32-wasip2`.

pub mod logic;

#[cfg(target_arch = "wasm32")]
mod component {
    use std::cell::RefCell;

    use crate::logic::Whitelist;

    wit_bindgen::generate!({ path: "../../wit", world: "whitelist" });

    use exports::tandem::policy::replication_whitelist::{ConfChange, Guest};

    thread_local! {
        static POLICY: RefCell<Whitelist> = RefCell::new(Whitelist::default());
    }

    struct Plugin;

    impl Guest for Plugin {
        fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
            let policy = Whitelist::from_settings(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            POLICY.with(|p| *p.borrow_mut() = policy);
            Ok(())
        }

        fn replicates(change: ConfChange) -> bool {
            POLICY.with(|p| p.borrow().replicates(&change.conf_type, change.meta))
        }
    }

    export!(Plugin);
}
