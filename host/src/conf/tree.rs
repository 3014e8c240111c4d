//! `ConfTree`: one member's etc root on disk. Applies validated changes (singly or batched,
//! touching each file once) and reads files and docs. Listing lives in `listing`, layered
//! lookups in `layers`.
//!
//! Must never: write outside the root or through a symlink (see `fsio`), or write a `default`
//! layer; every path comes from `layout`, which only names `local` files and data files.

use std::collections::HashMap;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::conf::change::{ConfChange, Op, TargetKind};
use crate::conf::error::ConfError;
use crate::conf::fsio::{self, DirSync};
use crate::conf::parse::ConfDoc;
use crate::conf::relpath::RelPath;

/// A member's configuration tree rooted at an etc folder.
#[derive(Clone, Debug)]
pub struct ConfTree {
    root: PathBuf,
}

/// Per change of one file: whether that op changed the content; plus whether the file was
/// written (or removed).
type FileOutcome = (Vec<bool>, bool);

impl ConfTree {
    /// Opens the tree, creating the root (mode 0700) if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ConfError> {
        let root = root.into();
        DirBuilder::new().recursive(true).mode(0o700).create(&root).map_err(|e| ConfError::io(&root, e))?;
        Ok(ConfTree { root })
    }

    /// The etc root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Applies one change (read, parse, apply, render, atomic durable write). Returns whether
    /// the file content changed.
    pub fn apply(&self, change: &ConfChange) -> Result<bool, ConfError> {
        let mut results = self.apply_batch(std::slice::from_ref(change), true);
        results.pop().unwrap_or(Ok(false))
    }

    /// Applies many changes, touching each file once: all ops on a file are applied in order
    /// to one parsed doc and the file is written once. With `durable`, each written file is
    /// fsynced before its rename and each touched folder once at the end. An invalid change
    /// is reported at its index and the others still apply; a file that cannot be read,
    /// parsed or written fails every change that targeted it.
    pub fn apply_batch(&self, changes: &[ConfChange], durable: bool) -> Vec<Result<bool, ConfError>> {
        let mut results = Vec::with_capacity(changes.len());
        let mut files: Vec<(RelPath, Vec<usize>)> = Vec::new();
        let mut by_path: HashMap<RelPath, usize> = HashMap::new();
        for (i, change) in changes.iter().enumerate() {
            match change.rel_path() {
                Ok(rel) => {
                    results.push(Ok(false));
                    let slot = *by_path.entry(rel.clone()).or_insert_with(|| {
                        files.push((rel, Vec::new()));
                        files.len() - 1
                    });
                    files[slot].1.push(i);
                }
                Err(e) => {
                    warn!(change = %change, error = %e, "refused configuration change");
                    results.push(Err(e));
                }
            }
        }
        let mut sync = DirSync::new(durable);
        let mut written = Vec::new();
        for (rel, indices) in &files {
            let ops: Vec<&ConfChange> = indices.iter().map(|&i| &changes[i]).collect();
            match self.apply_file(rel, &ops, &mut sync) {
                Ok((changed, wrote)) => {
                    for (&i, changed) in indices.iter().zip(changed) {
                        results[i] = Ok(changed);
                    }
                    if wrote {
                        written.extend(indices.iter().copied());
                    }
                }
                Err(e) => {
                    warn!(path = %rel, error = %e, "configuration file not updated");
                    for &i in indices {
                        results[i] = Err(e.clone());
                    }
                }
            }
        }
        // A failed folder fsync leaves every write of the batch not known durable.
        if let Err(e) = sync.finish() {
            for i in written {
                results[i] = Err(e.clone());
            }
        }
        results
    }

    /// Applies `changes` (all targeting `rel`, validated) in order and writes the result once.
    fn apply_file(
        &self,
        rel: &RelPath,
        changes: &[&ConfChange],
        sync: &mut DirSync,
    ) -> Result<FileOutcome, ConfError> {
        let before = fsio::read(&self.root, rel)?;
        let mut changed = Vec::with_capacity(changes.len());
        let after: Option<Vec<u8>> = match changes.first().map(|c| c.target.kind()) {
            Some(TargetKind::File) => {
                let mut now = before.as_deref();
                for change in changes {
                    match &change.op {
                        Op::PutFile { content } => {
                            changed.push(now != Some(content.as_slice()));
                            now = Some(content);
                        }
                        Op::DeleteFile => {
                            changed.push(now.is_some());
                            now = None;
                        }
                        op => return Err(ConfError::OpTarget { op: op.verb(), target: "file" }),
                    }
                }
                now.map(<[u8]>::to_vec)
            }
            _ => {
                let mut doc = decode(rel, before.as_deref())?;
                for change in changes {
                    changed.push(doc.apply(&change.op)?);
                }
                // Ops that leave nothing on a missing file do not create it.
                let text = doc.render().into_bytes();
                if before.is_none() && text.is_empty() { None } else { Some(text) }
            }
        };
        if before == after {
            return Ok((changed, false));
        }
        match &after {
            Some(bytes) => fsio::write_atomic(&self.root, rel, bytes, sync)?,
            None => {
                fsio::remove(&self.root, rel, sync)?;
            }
        }
        debug!(path = %rel, ops = changes.len(), removed = after.is_none(), "configuration file updated");
        Ok((changed, true))
    }

    /// A `.conf` or `.meta` file parsed (`None` if absent).
    pub fn read_doc(&self, rel: &RelPath) -> Result<Option<ConfDoc>, ConfError> {
        match fsio::read(&self.root, rel)? {
            Some(bytes) => decode(rel, Some(&bytes)).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces a file's bytes durably (`None`: removes it), whatever it held.
    pub fn replace_file(&self, rel: &RelPath, bytes: Option<&[u8]>) -> Result<(), ConfError> {
        let mut sync = DirSync::new(true);
        match bytes {
            Some(bytes) => fsio::write_atomic(&self.root, rel, bytes, &mut sync)?,
            None => {
                fsio::remove(&self.root, rel, &mut sync)?;
            }
        }
        sync.finish()
    }

    /// A file's bytes (`None` if absent). Refuses symlinks like writes do.
    pub fn read_file(&self, rel: &RelPath) -> Result<Option<Vec<u8>>, ConfError> {
        fsio::read(&self.root, rel)
    }
}

/// Parses a file's bytes (missing = empty) into a doc, naming the file in errors.
fn decode(rel: &RelPath, bytes: Option<&[u8]>) -> Result<ConfDoc, ConfError> {
    let text = std::str::from_utf8(bytes.unwrap_or_default())
        .map_err(|_| ConfError::NotUtf8 { path: rel.to_string() })?;
    ConfDoc::parse(text).map_err(|e| match e {
        ConfError::Parse { line_no, line } => ConfError::ParseFile { path: rel.to_string(), line_no, line },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::change::Target;
    use crate::conf::scope::Scope;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn app() -> Scope {
        Scope::App("search".into())
    }

    fn set(stanza: &str, key: &str, value: &str) -> ConfChange {
        let op = Op::SetKey { stanza: stanza.into(), key: key.into(), value: value.into() };
        ConfChange { conf_type: "savedsearches".into(), scope: app(), target: Target::Conf, op }
    }

    fn file(name: &str, op: Op) -> ConfChange {
        ConfChange {
            conf_type: "lookups".into(),
            scope: app(),
            target: Target::File { name: name.into() },
            op,
        }
    }

    fn rel(p: &str) -> RelPath {
        RelPath::new(p).unwrap()
    }

    fn tree() -> (tempfile::TempDir, ConfTree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = ConfTree::open(dir.path().join("etc")).unwrap();
        (dir, tree)
    }

    const SAVED: &str = "apps/search/local/savedsearches.conf";

    #[test]
    fn open_creates_a_private_root() {
        let (_dir, tree) = tree();
        assert_eq!(fs::metadata(tree.root()).unwrap().permissions().mode() & 0o777, 0o700);
        ConfTree::open(tree.root()).unwrap();
    }

    #[test]
    fn apply_writes_the_local_file_and_is_idempotent() {
        let (_dir, tree) = tree();
        let change = set("my search", "cron_schedule", "*/5 * * * *");
        assert!(tree.apply(&change).unwrap());
        assert!(!tree.apply(&change).unwrap());
        let text = fs::read_to_string(tree.root().join(SAVED)).unwrap();
        assert_eq!(text, "[my search]\ncron_schedule = */5 * * * *\n");
        let doc = tree.read_doc(&rel(SAVED)).unwrap().unwrap();
        assert_eq!(doc.semantic()["my search"]["cron_schedule"], "*/5 * * * *");
        assert_eq!(tree.read_doc(&rel("apps/search/local/nope.conf")).unwrap(), None);
    }

    #[test]
    fn refused_change_writes_nothing() {
        let (_dir, tree) = tree();
        let err = tree.apply(&set("s", "search", "x\n[evil]\nk = v")).unwrap_err();
        assert!(matches!(err, ConfError::Value { .. }));
        assert!(fs::read_dir(tree.root()).unwrap().next().is_none());
    }

    #[test]
    fn deleting_from_a_missing_file_does_not_create_it() {
        let (_dir, tree) = tree();
        let change =
            ConfChange { op: Op::DeleteKey { stanza: "s".into(), key: "k".into() }, ..set("s", "k", "v") };
        assert!(!tree.apply(&change).unwrap());
        assert_eq!(tree.read_file(&rel(SAVED)).unwrap(), None);
    }

    #[test]
    fn file_ops_put_and_delete() {
        let (_dir, tree) = tree();
        let put = file("a.csv", Op::PutFile { content: b"a,b\n1,2\n".to_vec() });
        assert!(tree.apply(&put).unwrap());
        assert!(!tree.apply(&put).unwrap());
        assert_eq!(tree.read_file(&rel("apps/search/lookups/a.csv")).unwrap().unwrap(), b"a,b\n1,2\n");
        assert!(tree.apply(&file("a.csv", Op::DeleteFile)).unwrap());
        assert!(!tree.apply(&file("a.csv", Op::DeleteFile)).unwrap());
        assert_eq!(tree.read_file(&rel("apps/search/lookups/a.csv")).unwrap(), None);
    }

    #[test]
    fn batch_reports_a_bad_change_at_its_index_and_applies_the_rest() {
        let (_dir, tree) = tree();
        let changes = [
            set("a", "k", "1"),
            set("a", "bad", "two\nlines"),
            set("b", "k", "2"),
            file("x.csv", Op::PutFile { content: b"x".to_vec() }),
            file("x.csv", Op::DeleteFile),
            set("a", "k", "1"),
        ];
        let results = tree.apply_batch(&changes, true);
        assert_eq!(results.len(), 6);
        assert!(matches!(results[1], Err(ConfError::Value { .. })));
        let flags: Vec<_> = results.iter().map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(flags, [Some(true), None, Some(true), Some(true), Some(true), Some(false)]);
        let text = fs::read_to_string(tree.root().join(SAVED)).unwrap();
        assert_eq!(text, "[a]\nk = 1\n\n[b]\nk = 2\n");
        assert_eq!(tree.read_file(&rel("apps/search/lookups/x.csv")).unwrap(), None);
    }

    #[test]
    fn unparsable_file_fails_only_its_changes() {
        let (_dir, tree) = tree();
        fs::create_dir_all(tree.root().join("apps/search/local")).unwrap();
        fs::write(tree.root().join(SAVED), "[a]\nnot conf\n").unwrap();
        let other = ConfChange { conf_type: "props".into(), ..set("s", "k", "v") };
        let results = tree.apply_batch(&[set("a", "k", "1"), other], false);
        match &results[0] {
            Err(ConfError::ParseFile { path, line_no: 2, .. }) => assert_eq!(path, SAVED),
            other => panic!("unexpected {other:?}"),
        }
        assert!(results[1].as_ref().unwrap());
        assert_eq!(fs::read_to_string(tree.root().join(SAVED)).unwrap(), "[a]\nnot conf\n");
    }

    #[test]
    fn symlinked_directory_inside_the_root_is_refused() {
        let (dir, tree) = tree();
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::create_dir_all(tree.root().join("apps/search")).unwrap();
        symlink(&outside, tree.root().join("apps/search/local")).unwrap();
        let err = tree.apply(&set("a", "k", "1")).unwrap_err();
        assert!(
            matches!(err, ConfError::Symlink { ref path } if path.ends_with("apps/search/local")),
            "{err}"
        );
        assert!(fs::read_dir(&outside).unwrap().next().is_none());
        // Listing skips it rather than follow it.
        fs::write(outside.join("props.conf"), "[a]\n").unwrap();
        assert!(tree.replicable_files().unwrap().is_empty());
    }
}
