//! tandem's built-in path filter plugin (`tandem:policy/path-filter`).
//!
//! The decision logic is [`logic`], plain Rust tested natively (and benchmarked natively beside
//! the component); the component glue below exists only when built for `wasm32-wasip2`.

pub mod logic;

#[cfg(target_arch = "wasm32")]
mod component {
    use std::cell::RefCell;

    use crate::logic::{Kind, PathFilter, Verdict as V};

    wit_bindgen::generate!({ path: "../../wit", world: "path-filter" });

    use exports::tandem::policy::tree_filter::{EntryBatch, EntryKind, Guest, Verdict};

    thread_local! {
        static POLICY: RefCell<PathFilter> = RefCell::new(PathFilter::default());
    }

    struct Plugin;

    impl Guest for Plugin {
        fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
            let policy = PathFilter::from_settings(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            POLICY.with(|p| *p.borrow_mut() = policy);
            Ok(())
        }

        fn filter(batch: EntryBatch) -> Result<Vec<Verdict>, String> {
            let kinds = batch.kinds.iter().map(|k| match k {
                EntryKind::File => Kind::File,
                EntryKind::Dir => Kind::Dir,
                EntryKind::Symlink => Kind::Symlink,
                EntryKind::Other => Kind::Other,
            });
            let mut out = Vec::with_capacity(batch.kinds.len());
            POLICY.with(|p| {
                p.borrow().decide_batch(&batch.tree, &batch.paths, &batch.ends, kinds, |v| {
                    out.push(match v {
                        V::Keep => Verdict::Keep,
                        V::Skip => Verdict::Skip,
                        V::Prune => Verdict::Prune,
                    })
                })
            })?;
            Ok(out)
        }
    }

    export!(Plugin);
}
