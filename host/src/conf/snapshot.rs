//! Snapshots, the seed's "tarball": the replicated files of a tree plus a metadata blob (the
//! raft layer's snapshot meta), packed as tar+zstd straight into a writer (a file), and
//! installed from a reader by staging every entry in a folder of its own first (validated,
//! on disk) and only then replacing the selected files.
//!
//! Must never: hold a snapshot in memory whole (one file at a time is), write anything from a
//! snapshot that has a single bad entry (path escaping the tree, absolute path, link, device,
//! a path no op could have written, duplicate, or more than the cap unpacked), or touch a
//! file the `replicated` predicate leaves out.

use std::io::{Read, Write};
use std::path::Path;

use tracing::{debug, info, warn};

use crate::conf::change::ConfChangeKey;
use crate::conf::error::ConfError;
use crate::conf::fsio::{self, DirSync};
use crate::conf::layout::classify;
use crate::conf::relpath::RelPath;
use crate::conf::tree::ConfTree;
use crate::conf::unpack::{self, entry_cost};

/// The tar entry holding the metadata blob; not a valid layout path, so never a tree file.
pub const META_ENTRY: &str = ".tandem/snapshot-meta";
/// Default cap on the unpacked size of a snapshot (`cluster.max_snapshot_bytes`): file bytes
/// plus, per entry, its path and a bound on its tar framing (so a flood of empty entries is
/// capped too). The packer, the receiver's file and the unpacker all use the member's cap.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 4 << 30;
/// zstd's default level: fast, and config text compresses well at it.
pub(crate) const ZSTD_LEVEL: i32 = 3;

/// The most bytes a packed snapshot of at most `cap` unpacked bytes can take: zstd's worst
/// case (incompressible input stored raw: a 3-byte header per 128 KiB block, frame header and
/// checksum), with room to spare.
pub fn max_packed_bytes(cap: u64) -> u64 {
    cap.saturating_add(cap / 1024).saturating_add(1 << 20)
}

/// Packs `files` (sorted, deduplicated; files that vanished since listing are skipped) plus
/// `meta` as tar+zstd into `out`, refusing past `cap` unpacked bytes; returns `out`. Every
/// path must be one an op could have written. One file at a time is in memory.
pub fn pack_to<W: Write>(
    tree: &ConfTree,
    files: &[RelPath],
    meta: &[u8],
    out: W,
    cap: u64,
) -> Result<W, ConfError> {
    let mut files = files.to_vec();
    files.sort();
    files.dedup();
    let io = |e| ConfError::io(Path::new("<snapshot>"), e);
    let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(io)?;
    // A snapshot crosses the network and sits on disk: let the decoder catch corruption.
    encoder.include_checksum(true).map_err(io)?;
    let mut builder = tar::Builder::new(encoder);
    let mut total = 0u64;
    let mut add = |path: &str, data: &[u8]| -> Result<(), ConfError> {
        total = total.saturating_add(entry_cost(path.len(), data.len() as u64));
        if total > cap {
            return Err(ConfError::SnapshotTooLarge { limit: cap });
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // No clock in the bytes: the same tree packs to the same snapshot.
        header.set_mtime(0);
        builder.append_data(&mut header, path, data).map_err(|e| ConfError::io(Path::new(path), e))
    };
    add(META_ENTRY, meta)?;
    for rel in &files {
        if classify(rel).is_none() {
            return Err(ConfError::SnapshotEntry { path: rel.to_string(), reason: "not a replicable path" });
        }
        match tree.read_file(rel)? {
            Some(data) => add(rel.as_str(), &data)?,
            None => debug!(path = %rel, "file vanished before packing; left out of the snapshot"),
        }
    }
    builder.into_inner().and_then(|encoder| encoder.finish()).map_err(io)
}

/// [`pack_to`] into memory: for small trees and tests.
pub fn pack(tree: &ConfTree, files: &[RelPath], meta: &[u8], cap: u64) -> Result<Vec<u8>, ConfError> {
    pack_to(tree, files, meta, Vec::new(), cap)
}

/// Removes a staging folder when the install ends, however it ends.
struct Staging<'a>(&'a Path);

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

/// Installs the snapshot read from `src`: stages every entry under `staging` (a folder this
/// call owns: emptied first, removed after), which validates the whole snapshot before the
/// tree is touched (nothing is written to it if one entry is bad, the stream is cut or the
/// staging disk fills); then makes the files `replicated` selects match the snapshot (new or
/// changed ones written atomically, selected files absent from it deleted), leaves every
/// other file alone, and makes it durable. Returns the metadata blob. Not atomic across files
/// once writing the tree starts; running it again converges.
pub fn install(
    tree: &ConfTree,
    src: impl Read,
    staging: &Path,
    replicated: impl Fn(&RelPath, &ConfChangeKey) -> bool,
    cap: u64,
) -> Result<Vec<u8>, ConfError> {
    match std::fs::remove_dir_all(staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ConfError::io(staging, e)),
    }
    std::fs::create_dir_all(staging).map_err(|e| ConfError::io(staging, e))?;
    let _cleanup = Staging(staging);
    let staged = unpack::stage(src, cap, Some(staging))?;
    let mut selected = Vec::new();
    for (rel, key) in &staged.files {
        if replicated(rel, key) {
            // Refuse symlinks for every target before the first write, not halfway through.
            fsio::check_no_symlink(tree.root(), rel)?;
            selected.push(rel);
        } else {
            warn!(path = %rel, "snapshot carries a file this member does not replicate; skipped");
        }
    }
    let mut sync = DirSync::new(true);
    let (mut written, mut removed) = (0usize, 0usize);
    for rel in selected {
        let source = staging.join(rel.as_path());
        let data = std::fs::read(&source).map_err(|e| ConfError::io(&source, e))?;
        if tree.read_file(rel)?.as_deref() != Some(data.as_slice()) {
            fsio::write_atomic(tree.root(), rel, &data, &mut sync)?;
            written += 1;
        }
    }
    for (rel, key) in tree.replicable_files()? {
        if replicated(&rel, &key)
            && !staged.files.contains_key(&rel)
            && fsio::remove(tree.root(), &rel, &mut sync)?
        {
            removed += 1;
        }
    }
    sync.finish()?;
    info!(written, removed, files = staged.files.len(), "installed configuration snapshot");
    Ok(staged.meta)
}

/// The metadata blob of the snapshot read from `src`, without installing it.
pub fn read_meta(src: impl Read, cap: u64) -> Result<Vec<u8>, ConfError> {
    unpack::meta(src, cap)
}

/// Checks a whole snapshot without writing anything (fuzzing, tests).
pub fn validate(src: impl Read, cap: u64) -> Result<(), ConfError> {
    unpack::stage(src, cap, None).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::change::TargetKind;
    use crate::conf::unpack::tests::{file, raw};
    use std::fs;
    use std::os::unix::fs::symlink;

    fn rel(p: &str) -> RelPath {
        RelPath::new(p).unwrap()
    }

    fn write(tree: &ConfTree, p: &str, data: &str) {
        let path = tree.root().join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    fn tree() -> (tempfile::TempDir, ConfTree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = ConfTree::open(dir.path().join("etc")).unwrap();
        (dir, tree)
    }

    /// Every file under the root with its content, to check "nothing changed".
    fn listing(tree: &ConfTree) -> Vec<(String, Vec<u8>)> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    out.push((
                        path.strip_prefix(root).unwrap().display().to_string(),
                        fs::read(&path).unwrap(),
                    ));
                }
            }
        }
        let mut out = Vec::new();
        walk(tree.root(), tree.root(), &mut out);
        out.sort();
        out
    }

    fn all(_: &RelPath, _: &ConfChangeKey) -> bool {
        true
    }

    /// A whitelist that replicates everything but `inputs` (index-time settings).
    fn no_inputs(_: &RelPath, key: &ConfChangeKey) -> bool {
        key.conf_type != "inputs"
    }

    const LONG: &str = "apps/search/lookups/a-rather-long-lookup-file-name-that-needs-a-gnu-long-name-entry-in-the-tar-format-0123456789.csv";

    fn seeded() -> (tempfile::TempDir, ConfTree) {
        let (dir, tree) = tree();
        write(&tree, "system/local/props.conf", "[s]\nk = v\n");
        write(&tree, "apps/search/local/savedsearches.conf", "[my search]\ncron_schedule = */5 * * * *\n");
        write(&tree, "apps/search/local/inputs.conf", "[monitor:///var/log]\n");
        write(&tree, "apps/search/metadata/local.meta", "[savedsearches/my search]\nexport = system\n");
        write(&tree, "users/admin/search/local/data/ui/views/home.xml", "<dashboard/>");
        write(&tree, LONG, "a,b\n");
        write(&tree, "apps/search/default/props.conf", "[default-only]\n");
        (dir, tree)
    }

    const CAP: u64 = DEFAULT_MAX_UNPACKED_BYTES;

    fn snapshot_of(tree: &ConfTree, meta: &[u8]) -> Vec<u8> {
        let files: Vec<RelPath> = tree.replicable_files().unwrap().into_iter().map(|(p, _)| p).collect();
        pack(tree, &files, meta, CAP).unwrap()
    }

    /// Installs `bytes` with a staging folder beside the tree (outside it).
    fn install(
        tree: &ConfTree,
        bytes: &[u8],
        replicated: impl Fn(&RelPath, &ConfChangeKey) -> bool,
    ) -> Result<Vec<u8>, ConfError> {
        let staging = tree.root().parent().unwrap().join("staging");
        let meta = super::install(tree, bytes, &staging, replicated, CAP);
        assert!(!staging.exists(), "the staging folder is removed");
        meta
    }

    #[test]
    fn pack_install_round_trip() {
        let (_a, source) = seeded();
        let bytes = snapshot_of(&source, b"raft meta");
        assert_eq!(bytes, snapshot_of(&source, b"raft meta"), "packing is deterministic");
        assert_eq!(read_meta(bytes.as_slice(), CAP).unwrap(), b"raft meta");
        let (_b, dest) = tree();
        assert_eq!(install(&dest, &bytes, all).unwrap(), b"raft meta");
        let replicated = |t: &ConfTree| {
            t.replicable_files()
                .unwrap()
                .into_iter()
                .map(|(p, _)| (p.clone(), t.read_file(&p).unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(replicated(&dest), replicated(&source));
        assert_eq!(replicated(&dest).len(), 6);
        assert_eq!(
            dest.read_file(&rel("apps/search/default/props.conf")).unwrap(),
            None,
            "default layers are not carried"
        );
        // Installing again changes nothing.
        let before = listing(&dest);
        install(&dest, &bytes, all).unwrap();
        assert_eq!(listing(&dest), before);
    }

    #[test]
    fn install_replaces_only_selected_files() {
        let (_a, source) = seeded();
        let bytes = snapshot_of(&source, b"m");
        let (_b, dest) = tree();
        write(&dest, "apps/search/local/inputs.conf", "[mine]\n");
        write(&dest, "apps/search/local/savedsearches.conf", "[stale]\n");
        write(&dest, "apps/other/local/macros.conf", "[only here]\n");
        write(&dest, "apps/other/lookups/old.csv", "x\n");
        write(&dest, "apps/other/default/macros.conf", "[shipped]\n");
        write(&dest, "apps/other/bin/tool.py", "print()\n");
        install(&dest, &bytes, no_inputs).unwrap();
        let read = |p: &str| dest.read_file(&rel(p)).unwrap().map(|b| String::from_utf8(b).unwrap());
        assert_eq!(
            read("apps/search/local/inputs.conf").as_deref(),
            Some("[mine]\n"),
            "unselected: untouched"
        );
        assert_eq!(
            read("apps/search/local/savedsearches.conf").unwrap(),
            "[my search]\ncron_schedule = */5 * * * *\n"
        );
        assert_eq!(
            read("apps/other/local/macros.conf"),
            None,
            "selected but absent from the snapshot: deleted"
        );
        assert_eq!(read("apps/other/lookups/old.csv"), None);
        assert_eq!(read("apps/other/default/macros.conf").as_deref(), Some("[shipped]\n"));
        assert_eq!(read("apps/other/bin/tool.py").as_deref(), Some("print()\n"));
        assert_eq!(read(LONG).as_deref(), Some("a,b\n"));
    }

    #[test]
    fn pack_refuses_paths_no_op_writes() {
        let (_a, source) = seeded();
        let err = pack(&source, &[rel("apps/search/default/props.conf")], b"", CAP).unwrap_err();
        assert!(matches!(err, ConfError::SnapshotEntry { .. }), "{err}");
    }

    #[test]
    fn pack_refuses_beyond_the_cap() {
        let (_a, source) = seeded();
        let err = pack(&source, &[rel(LONG)], b"", 1000).unwrap_err();
        assert!(matches!(err, ConfError::SnapshotTooLarge { limit: 1000 }));
    }

    #[test]
    fn hostile_snapshots_are_refused_and_change_nothing() {
        let good = file("apps/search/local/props.conf", b"[a]\n");
        let meta = file(META_ENTRY, b"m");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dotdot", raw(&[meta, good, file("../x", b"x")])),
            ("dotdot inside", raw(&[meta, good, file("apps/search/../../x", b"x")])),
            ("absolute", raw(&[meta, good, file("/etc/passwd", b"x")])),
            ("symlink", raw(&[meta, good, ("apps/search/lookups/l.csv", tar::EntryType::Symlink, 0, b"")])),
            ("char device", raw(&[meta, good, ("apps/search/lookups/d.csv", tar::EntryType::Char, 0, b"")])),
            ("directory", raw(&[meta, good, ("apps/search/lookups/", tar::EntryType::Directory, 0, b"")])),
            ("not a layout path", raw(&[meta, good, file("apps/search/bin/evil.sh", b"x")])),
            ("duplicate", raw(&[meta, good, good])),
            ("no meta", raw(&[good])),
            (
                "huge entry",
                raw(&[meta, good, ("apps/search/lookups/big.csv", tar::EntryType::Regular, 5 << 30, b"x")]),
            ),
            ("not zstd", b"definitely not a snapshot".to_vec()),
        ];
        for (name, bytes) in cases {
            let (_dir, dest) = tree();
            write(&dest, "apps/search/local/macros.conf", "[keep]\n");
            let before = listing(&dest);
            let err = install(&dest, &bytes, all).unwrap_err();
            assert_eq!(listing(&dest), before, "{name}: {err}");
            let expected = match name {
                "huge entry" => matches!(err, ConfError::SnapshotTooLarge { .. }),
                "no meta" => matches!(err, ConfError::SnapshotNoMeta),
                "not zstd" => matches!(err, ConfError::SnapshotCorrupt(_)),
                _ => matches!(err, ConfError::SnapshotEntry { .. }),
            };
            assert!(expected, "{name}: {err}");
        }
    }

    /// A snapshot cut anywhere (a transfer that stopped) is refused whole: nothing of it
    /// reaches the tree, even the files it carried completely before the cut.
    #[test]
    fn a_cut_snapshot_changes_nothing() {
        let (_a, source) = seeded();
        let filler: Vec<u8> =
            (0..300_000u32).flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()).collect();
        fs::write(source.root().join("apps/search/lookups/zz-big.csv"), &filler).unwrap();
        let bytes = snapshot_of(&source, b"m");
        for cut in [bytes.len() / 3, bytes.len() * 2 / 3, bytes.len() - 1] {
            let (_dir, dest) = tree();
            write(&dest, "apps/search/local/macros.conf", "[keep]\n");
            let before = listing(&dest);
            let err = install(&dest, &bytes[..cut], all).unwrap_err();
            assert!(
                matches!(err, ConfError::SnapshotCorrupt(_) | ConfError::SnapshotEntry { .. }),
                "{cut}: {err}"
            );
            assert_eq!(listing(&dest), before, "cut at {cut}");
        }
    }

    #[test]
    fn install_refuses_a_symlinked_target_before_writing() {
        let (_a, source) = seeded();
        let bytes = snapshot_of(&source, b"m");
        let (dir, dest) = tree();
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(dest.root().join("users/admin/search/local/data/ui")).unwrap();
        symlink(&outside, dest.root().join("users/admin/search/local/data/ui/views")).unwrap();
        let err = install(&dest, &bytes, all).unwrap_err();
        assert!(matches!(err, ConfError::Symlink { .. }), "{err}");
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
        assert_eq!(dest.read_file(&rel("system/local/props.conf")).unwrap(), None, "nothing written");
    }

    #[test]
    fn selected_keys_are_what_replicable_files_reports() {
        let (_a, source) = seeded();
        let bytes = snapshot_of(&source, b"m");
        let seen = std::cell::RefCell::new(Vec::new());
        let (_b, dest) = tree();
        install(&dest, &bytes, |p: &RelPath, k: &ConfChangeKey| {
            seen.borrow_mut().push((p.to_string(), k.target_kind));
            true
        })
        .unwrap();
        assert!(seen.borrow().contains(&("apps/search/metadata/local.meta".into(), TargetKind::Meta)));
    }
}
