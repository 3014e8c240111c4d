//! An example third-party path filter a site can copy: it keeps the built-in rules that matter
//! (never replicate sockets, FIFOs or devices) and also skips `*.bak` files and prunes one
//! directory name (`skip_dir`, default `cache`) wherever it appears.
//!
//! Build it with `cargo build --release --target wasm32-wasip2 -p tandem-plugin-example-skip-bak`
//! and drop `target/wasm32-wasip2/release/tandem_plugin_example_skip_bak.wasm` into the plugin
//! folder; the host validates it and swaps it in without a restart.

/// The decision, in plain Rust so it can be unit-tested natively.
pub fn skip(path: &[u8], is_dir: bool, is_special: bool, skip_dir: &[u8]) -> Option<bool> {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    if is_special {
        return Some(false); // skip, never prune
    }
    if is_dir && name == skip_dir {
        return Some(true); // prune: do not descend
    }
    if !is_dir && name.ends_with(b".bak") {
        return Some(false);
    }
    None
}

#[cfg(target_arch = "wasm32")]
mod component {
    use std::cell::RefCell;

    wit_bindgen::generate!({ path: "../../../wit", world: "path-filter" });

    use exports::tandem::policy::tree_filter::{EntryBatch, EntryKind, Guest, Verdict};
    use tandem::policy::host::{Level, log};

    thread_local! {
        static SKIP_DIR: RefCell<Vec<u8>> = RefCell::new(b"cache".to_vec());
    }

    struct Plugin;

    impl Guest for Plugin {
        fn configure(settings: Vec<(String, String)>) -> Result<(), String> {
            for (key, value) in settings {
                match key.as_str() {
                    "skip_dir" if !value.is_empty() && !value.contains('/') => {
                        SKIP_DIR.with(|d| *d.borrow_mut() = value.into_bytes());
                    }
                    "skip_dir" => return Err(format!("skip_dir `{value}` must be one name")),
                    other => return Err(format!("unknown setting `{other}`")),
                }
            }
            let dir = SKIP_DIR.with(|d| String::from_utf8_lossy(&d.borrow()).into_owned());
            log(Level::Info, &format!("skip-bak example ready: skipping *.bak and {dir}/"));
            Ok(())
        }

        fn filter(batch: EntryBatch) -> Result<Vec<Verdict>, String> {
            SKIP_DIR.with(|d| {
                let skip_dir = d.borrow();
                let mut start = 0usize;
                let mut paths = Vec::with_capacity(batch.ends.len());
                for &end in &batch.ends {
                    let end = end as usize;
                    paths.push(batch.paths.get(start..end).ok_or("bad path ends")?);
                    start = end;
                }
                Ok(paths
                    .into_iter()
                    .zip(&batch.kinds)
                    .map(|(path, kind)| {
                        let is_dir = matches!(kind, EntryKind::Dir);
                        let special = matches!(kind, EntryKind::Other);
                        match super::skip(path, is_dir, special, &skip_dir) {
                            None => Verdict::Keep,
                            Some(true) => Verdict::Prune,
                            Some(false) => Verdict::Skip,
                        }
                    })
                    .collect())
            })
        }
    }

    export!(Plugin);
}

#[cfg(test)]
mod tests {
    use super::skip;

    #[test]
    fn skips_bak_and_prunes_the_directory() {
        assert_eq!(skip(b"a/b.bak", false, false, b"cache"), Some(false));
        assert_eq!(skip(b"a/cache", true, false, b"cache"), Some(true));
        assert_eq!(skip(b"a/cache", false, false, b"cache"), None, "a file named cache stays");
        assert_eq!(skip(b"a/fifo", false, true, b"cache"), Some(false));
        assert_eq!(skip(b"a/b.txt", false, false, b"cache"), None);
    }
}
