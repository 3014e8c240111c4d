//! The generated trees, one per shape, each deterministic from its seed, and each shape's
//! edits. The shape keeps a model of its current files (renames and deletions move them), so
//! every round's edit picks files that exist.
//!
//! - `standard`: 20,000 small files (1-16 KiB, half text) in 40 x 25 folders and 20 large files
//!   (20-50 MiB); edit: 1 % of the small files rewritten and 1 MiB overwritten in 5 large ones.
//! - `deep`: 133,000 folders up to 8 deep, 60,000 files of 0.1-2 KiB, names with spaces and
//!   non-ASCII letters; edit: 1 % rewritten, 1,000 renames, 500 mode changes, a folder deleted.
//! - `million`: 1,000,000 files of 0.1-2 KiB in 100 x 100 folders; edit: 1 % rewritten.
//! - `shifting`: the standard small files and 3 random files of 300 MiB; edit: bytes inserted
//!   at the front and in the middle of each large file, 1,000 renames, 500 mode changes, a
//!   folder of files deleted.
//!
//! Every shape also has a rename step (1,000 files moved to other folders, content unchanged).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

const CHUNK: usize = 1 << 20;

/// splitmix64: deterministic content from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn between(&mut self, (lo, hi): (u64, u64)) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Appends `len` bytes: random, or log-like text from a small vocabulary (compresses ~3x).
    fn fill(&mut self, out: &mut Vec<u8>, len: usize, text: bool) {
        const WORDS: [&str; 32] = [
            "request",
            "user",
            "session",
            "ok",
            "error",
            "retry",
            "vault",
            "playbook",
            "container",
            "status",
            "timeout",
            "queue",
            "the",
            "a",
            "of",
            "to",
            "and",
            "in",
            "event",
            "artifact",
            "action",
            "run",
            "asset",
            "owner",
            "closed",
            "open",
            "severity",
            "high",
            "low",
            "note",
            "ticket",
            "update",
        ];
        let end = out.len() + len;
        if !text {
            while out.len() < end {
                out.extend_from_slice(&self.next().to_le_bytes());
            }
        }
        while out.len() < end {
            let _ = write!(out, "{:06} ", self.below(1_000_000));
            let mut bits = self.next();
            for _ in 0..10 {
                out.extend_from_slice(WORDS[(bits & 31) as usize].as_bytes());
                out.push(b' ');
                bits >>= 5;
            }
            out.push(b'\n');
        }
        out.truncate(end);
    }

    /// `n` distinct indices below `of`.
    pub fn pick(&mut self, n: usize, of: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..of).collect();
        for i in 0..n.min(of) {
            let j = i + self.below((of - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(n.min(of));
        all
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Kind {
    Standard,
    Deep,
    Million,
    Shifting,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Standard, Kind::Deep, Kind::Million, Kind::Shifting];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Standard => "standard",
            Kind::Deep => "deep",
            Kind::Million => "million",
            Kind::Shifting => "shifting",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Sizes of a shape (scaled by the bench's knobs).
pub struct Sizes {
    pub small: usize,
    pub large: usize,
    pub folders: usize,
}

/// A generated tree and its edits.
pub struct Shape {
    pub kind: Kind,
    pub sizes: Sizes,
    small_bytes: (u64, u64),
    large_bytes: (u64, u64),
    /// Each folder's path (deep shape: a random tree of folders); deleted ones leave.
    folders: RefCell<Vec<PathBuf>>,
    /// Each small file's current path (None once deleted), and its content version.
    files: RefCell<Vec<Option<(PathBuf, u64)>>>,
    renamed: RefCell<usize>,
}

/// Names the deep shape's folders take: spaces, accents, other scripts.
const DEEP_NAMES: [&str; 8] =
    ["dossier é", "報告", "a b", "Ünïcödé", "plain", "κατάλογος", "with space", "données"];

impl Shape {
    pub fn new(kind: Kind, scale: f64) -> Shape {
        let n = |x: usize| ((x as f64 * scale).round() as usize).max(1);
        let (sizes, small_bytes, large_bytes) = match kind {
            Kind::Standard => (
                Sizes { small: n(20_000), large: 20, folders: 1000 },
                (1 << 10, 16 << 10),
                (20 << 20, 50 << 20),
            ),
            Kind::Deep => (Sizes { small: n(60_000), large: 0, folders: n(133_000) }, (100, 2 << 10), (0, 0)),
            Kind::Million => {
                (Sizes { small: n(1_000_000), large: 0, folders: 10_000 }, (100, 2 << 10), (0, 0))
            }
            Kind::Shifting => (
                Sizes { small: n(20_000), large: 3, folders: 1000 },
                (1 << 10, 16 << 10),
                (300 << 20, 300 << 20),
            ),
        };
        let folders = match kind {
            Kind::Deep => deep_folders(sizes.folders),
            Kind::Million => (0..sizes.folders)
                .map(|i| PathBuf::from(format!("m{:02}/n{:02}", i / 100, i % 100)))
                .collect(),
            Kind::Standard | Kind::Shifting => {
                (0..sizes.folders).map(|i| PathBuf::from(format!("d{:02}/e{:02}", i / 25, i % 25))).collect()
            }
        };
        let files = (0..sizes.small)
            .map(|i| {
                let folder: &PathBuf = &folders[(i * 7919) % folders.len()];
                let ext = if i.is_multiple_of(2) { "txt" } else { "bin" };
                Some((folder.join(format!("f{i:07}.{ext}")), 0))
            })
            .collect();
        Shape {
            kind,
            sizes,
            small_bytes,
            large_bytes,
            folders: RefCell::new(folders),
            files: RefCell::new(files),
            renamed: RefCell::new(0),
        }
    }

    /// What the tree is, for the report.
    pub fn describe(&self, bytes: u64) -> String {
        let s = &self.sizes;
        let mut out = format!(
            "{} small files ({}-{} bytes, half text, half random) in {} folders",
            s.small, self.small_bytes.0, self.small_bytes.1, s.folders
        );
        if self.kind == Kind::Deep {
            out.push_str(" up to 8 deep, names with spaces and non-ASCII letters");
        }
        if s.large > 0 {
            let _ = write!(
                out,
                " and {} large files ({}-{} MiB)",
                s.large,
                self.large_bytes.0 >> 20,
                self.large_bytes.1 >> 20
            );
        }
        let _ = write!(out, ", {:.2} GiB in all", bytes as f64 / (1u64 << 30) as f64);
        out
    }

    fn large_path(&self, j: usize) -> PathBuf {
        PathBuf::from(format!(
            "large/big{j:02}.{}",
            if j.is_multiple_of(2) && self.kind != Kind::Shifting { "txt" } else { "bin" }
        ))
    }

    fn write_small(&self, root: &Path, i: usize, version: u64) -> u64 {
        let mut rng = Rng::new((1 << 60) ^ ((i as u64) << 20) ^ version);
        let len = rng.between(self.small_bytes);
        let mut buf = Vec::with_capacity(len as usize);
        rng.fill(&mut buf, len as usize, i.is_multiple_of(2));
        let path = root.join(&self.files.borrow()[i].as_ref().expect("a live file").0);
        std::fs::write(&path, buf).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        len
    }

    fn write_large(&self, root: &Path, j: usize) -> u64 {
        let mut rng = Rng::new((2 << 60) ^ j as u64);
        let len = rng.between(self.large_bytes);
        let path = root.join(self.large_path(j));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut file = File::create(path).unwrap();
        let mut buf = Vec::with_capacity(CHUNK);
        let mut left = len as usize;
        let text = j.is_multiple_of(2) && self.kind != Kind::Shifting;
        while left > 0 {
            buf.clear();
            rng.fill(&mut buf, left.min(CHUNK), text);
            file.write_all(&buf).unwrap();
            left -= buf.len();
        }
        len
    }

    /// The whole tree; returns its size in bytes.
    pub fn generate(&self, root: &Path) -> u64 {
        for f in self.folders.borrow().iter() {
            std::fs::create_dir_all(root.join(f)).unwrap();
        }
        let small: u64 = (0..self.sizes.small).map(|i| self.write_small(root, i, 0)).sum();
        small + (0..self.sizes.large).map(|j| self.write_large(root, j)).sum::<u64>()
    }

    /// Indices of live small files.
    fn live(&self) -> Vec<usize> {
        self.files.borrow().iter().enumerate().filter(|(_, f)| f.is_some()).map(|(i, _)| i).collect()
    }

    /// Round `round`'s edit; returns what it did.
    pub fn edit(&self, root: &Path, round: usize) -> String {
        let mut rng = Rng::new((3 << 60) ^ round as u64);
        let live = self.live();
        let mut did = Vec::new();
        let rewrite: Vec<usize> =
            rng.pick((live.len() / 100).max(1), live.len()).into_iter().map(|k| live[k]).collect();
        for &i in &rewrite {
            let version = {
                let mut files = self.files.borrow_mut();
                let f = files[i].as_mut().unwrap();
                f.1 += 1;
                f.1
            };
            self.write_small(root, i, version << 8 | round as u64);
        }
        did.push(format!("{} small files rewritten", rewrite.len()));
        match self.kind {
            Kind::Standard => {
                let large = rng.pick(5.min(self.sizes.large), self.sizes.large);
                for &j in &large {
                    let file = OpenOptions::new().write(true).open(root.join(self.large_path(j))).unwrap();
                    let len = file.metadata().unwrap().len();
                    let mut buf = Vec::with_capacity(CHUNK);
                    rng.fill(&mut buf, CHUNK, false);
                    file.write_all_at(&buf, rng.below(len - CHUNK as u64)).unwrap();
                }
                did.push(format!("1 MiB overwritten in {} large files", large.len()));
            }
            Kind::Million => {}
            Kind::Deep | Kind::Shifting => {
                if self.kind == Kind::Shifting {
                    for j in 0..self.sizes.large {
                        self.insert_shift(root, j, &mut rng);
                    }
                    did.push(format!(
                        "4 KiB inserted at the front and 64 KiB in the middle of {} large files",
                        self.sizes.large
                    ));
                }
                did.push(self.rename(root, &mut rng, 1000));
                did.push(self.chmod(root, &mut rng, 500));
                did.push(self.delete_folder(root, &mut rng));
            }
        }
        did.join(", ")
    }

    /// The rename step: 1,000 files moved to other folders, content unchanged.
    pub fn renames(&self, root: &Path, round: usize) -> String {
        let mut rng = Rng::new((4 << 60) ^ round as u64);
        self.rename(root, &mut rng, 1000)
    }

    fn rename(&self, root: &Path, rng: &mut Rng, n: usize) -> String {
        let live = self.live();
        let picked: Vec<usize> =
            rng.pick(n.min(live.len()), live.len()).into_iter().map(|k| live[k]).collect();
        let mut files = self.files.borrow_mut();
        for &i in &picked {
            let (old, version) = files[i].take().unwrap();
            let mut count = self.renamed.borrow_mut();
            *count += 1;
            let folders = self.folders.borrow();
            let folder = &folders[rng.below(folders.len() as u64) as usize];
            let ext = old.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
            let new = folder.join(format!("moved{:07}.{ext}", *count));
            std::fs::rename(root.join(&old), root.join(&new)).unwrap();
            files[i] = Some((new, version));
        }
        format!("{} files renamed into other folders", picked.len())
    }

    fn chmod(&self, root: &Path, rng: &mut Rng, n: usize) -> String {
        let live = self.live();
        let picked: Vec<usize> =
            rng.pick(n.min(live.len()), live.len()).into_iter().map(|k| live[k]).collect();
        let files = self.files.borrow();
        for &i in &picked {
            let path = root.join(&files[i].as_ref().unwrap().0);
            let mode = if rng.below(2) == 0 { 0o600 } else { 0o640 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        format!("{} modes changed", picked.len())
    }

    /// Deletes the folder of a random live file, with everything in it.
    fn delete_folder(&self, root: &Path, rng: &mut Rng) -> String {
        let live = self.live();
        let victim = live[rng.below(live.len() as u64) as usize];
        let folder = self.files.borrow()[victim].as_ref().unwrap().0.parent().unwrap().to_path_buf();
        let mut files = self.files.borrow_mut();
        let mut gone = 0;
        for f in files.iter_mut() {
            if f.as_ref().is_some_and(|(p, _)| p.starts_with(&folder)) {
                *f = None;
                gone += 1;
            }
        }
        std::fs::remove_dir_all(root.join(&folder)).unwrap();
        self.folders.borrow_mut().retain(|f| !f.starts_with(&folder));
        format!("folder {} deleted ({gone} files)", folder.display())
    }

    /// Inserts 4 KiB at the front and 64 KiB in the middle of large file `j`: every later
    /// block moves, which only a rolling checksum can follow.
    fn insert_shift(&self, root: &Path, j: usize, rng: &mut Rng) {
        let path = root.join(self.large_path(j));
        let old = std::fs::read(&path).unwrap();
        let mut front = Vec::new();
        rng.fill(&mut front, 4 << 10, false);
        let mut middle = Vec::new();
        rng.fill(&mut middle, 64 << 10, false);
        let half = old.len() / 2;
        let tmp = path.with_extension("edit");
        let mut out = File::create(&tmp).unwrap();
        for part in [&front[..], &old[..half], &middle[..], &old[half..]] {
            out.write_all(part).unwrap();
        }
        drop(out);
        std::fs::rename(tmp, path).unwrap();
    }
}

/// `n` folders as a random tree: each folder's parent is an earlier folder less than 8 deep.
fn deep_folders(n: usize) -> Vec<PathBuf> {
    let mut rng = Rng::new(5 << 60);
    let mut paths: Vec<PathBuf> = Vec::with_capacity(n);
    let mut depth: Vec<u8> = Vec::with_capacity(n);
    let mut shallow: Vec<usize> = Vec::new(); // folders that may still get children
    for k in 0..n {
        let name = format!("{} {k}", DEEP_NAMES[k % DEEP_NAMES.len()]);
        // A few top-level folders, then children of earlier folders.
        let parent = if k < 8 || shallow.is_empty() {
            None
        } else {
            Some(shallow[rng.below(shallow.len() as u64) as usize])
        };
        let (path, d) = match parent {
            None => (PathBuf::from(name), 1),
            Some(p) => (paths[p].join(name), depth[p] + 1),
        };
        if d < 8 {
            shallow.push(k);
        }
        paths.push(path);
        depth.push(d);
    }
    paths
}
