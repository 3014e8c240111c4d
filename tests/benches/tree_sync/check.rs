//! Every copy is compared with its source after each step that changes something: the same
//! folders and files, byte for byte, with the same modes and modification times (seconds).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const CHUNK: usize = 1 << 20;

/// What is compared of an entry besides its content.
#[derive(PartialEq, Eq, Debug)]
struct Meta {
    dir: bool,
    size: u64,
    mode: u32,
    mtime: i64,
}

/// Entries under `root` (not following links).
fn listing(root: &Path) -> BTreeMap<PathBuf, Meta> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in std::fs::read_dir(root.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let (path, meta) = (rel.join(entry.file_name()), entry.metadata().unwrap());
            if meta.is_dir() {
                todo.push(path.clone());
            }
            let m = Meta {
                dir: meta.is_dir(),
                size: if meta.is_dir() { 0 } else { meta.len() },
                mode: meta.mode() & 0o7777,
                mtime: meta.mtime(),
            };
            out.insert(path, m);
        }
    }
    out
}

fn read_full(file: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0; CHUNK], vec![0; CHUNK]);
    loop {
        let (n, m) = (read_full(&mut fa, &mut ba), read_full(&mut fb, &mut bb));
        if ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

/// Panics unless `copy` holds exactly the source's folders and files, byte for byte, with
/// their modes and times.
pub fn assert_same_tree(src: &Path, copy: &Path, who: &str) {
    let (want, got) = (listing(src), listing(copy));
    for (path, meta) in &want {
        assert_eq!(
            got.get(path),
            Some(meta),
            "{who}: {} differs in kind, size, mode or mtime",
            path.display()
        );
        if !meta.dir {
            assert!(same_content(&src.join(path), &copy.join(path)), "{who}: {} differs", path.display());
        }
    }
    if want.len() != got.len() {
        let extra: Vec<&PathBuf> = got.keys().filter(|p| !want.contains_key(*p)).take(5).collect();
        panic!("{who}: the copy has {} entries the source has not, e.g. {extra:?}", got.len() - want.len());
    }
}
