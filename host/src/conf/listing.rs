//! Listing the replicated part of a `ConfTree`: every file an op could have written (local
//! `.conf` files, `local.meta`, lookup and data files) with what it is. This decides what a
//! snapshot carries and what installing one may delete.
//!
//! Must never: follow a symlink (a linked folder is skipped with a warning, so a snapshot can
//! neither carry nor delete files outside the root), or descend into folders no op writes.

use std::fs;

use tracing::warn;

use crate::conf::change::ConfChangeKey;
use crate::conf::error::ConfError;
use crate::conf::fsio;
use crate::conf::layout;
use crate::conf::relpath::RelPath;
use crate::conf::tree::ConfTree;

/// Levels of folders below `local/data` a data file can sit in (`ui/views/<name>`).
const DATA_DEPTH: usize = 2;

impl ConfTree {
    /// Every file an op could have written (local `.conf` files, `local.meta`, lookup and
    /// data files) with what it is, sorted by path. Unclassifiable files and anything behind
    /// a symlink are skipped.
    pub fn replicable_files(&self) -> Result<Vec<(RelPath, ConfChangeKey)>, ConfError> {
        let mut out = Vec::new();
        self.walk("system/local", 0, &mut out)?;
        let mut scopes = Vec::new();
        for app in self.subdirs("apps")? {
            scopes.push(format!("apps/{app}"));
        }
        for user in self.subdirs("users")? {
            for app in self.subdirs(&format!("users/{user}"))? {
                scopes.push(format!("users/{user}/{app}"));
            }
        }
        for scope in scopes {
            self.walk(&format!("{scope}/local"), 0, &mut out)?;
            self.walk(&format!("{scope}/local/data"), DATA_DEPTH, &mut out)?;
            self.walk(&format!("{scope}/metadata"), 0, &mut out)?;
            self.walk(&format!("{scope}/lookups"), 0, &mut out)?;
        }
        out.sort();
        Ok(out)
    }

    /// Entries of a real folder (no component of its path a symlink), with their UTF-8
    /// names; empty if missing.
    fn entries(&self, rel_dir: &str) -> Result<Vec<(String, fs::FileType)>, ConfError> {
        let Ok(rel) = RelPath::new(rel_dir) else { return Ok(Vec::new()) };
        match fsio::inspect(self.root(), &rel) {
            Err(ConfError::Symlink { path }) => {
                warn!(path = %path.display(), "skipping symlink in the configuration tree");
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
            Ok(Some(meta)) if meta.is_dir() => {}
            Ok(_) => return Ok(Vec::new()),
        }
        let dir = self.root().join(rel.as_path());
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| ConfError::io(&dir, e))? {
            let entry = entry.map_err(|e| ConfError::io(&dir, e))?;
            let kind = entry.file_type().map_err(|e| ConfError::io(&entry.path(), e))?;
            if let Ok(name) = entry.file_name().into_string() {
                out.push((name, kind));
            }
        }
        Ok(out)
    }

    fn subdirs(&self, rel_dir: &str) -> Result<Vec<String>, ConfError> {
        Ok(self
            .entries(rel_dir)?
            .into_iter()
            .filter(|(_, kind)| kind.is_dir())
            .map(|(name, _)| name)
            .collect())
    }

    fn walk(
        &self,
        rel_dir: &str,
        depth: usize,
        out: &mut Vec<(RelPath, ConfChangeKey)>,
    ) -> Result<(), ConfError> {
        for (name, kind) in self.entries(rel_dir)? {
            let path = format!("{rel_dir}/{name}");
            if kind.is_dir() && depth > 0 {
                self.walk(&path, depth - 1, out)?;
            } else if kind.is_file()
                && let Ok(rel) = RelPath::new(path)
                && let Some(key) = layout::classify(&rel)
            {
                out.push((rel, key));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::change::{ConfChange, Op, Target, TargetKind};
    use crate::conf::scope::Scope;
    use std::os::unix::fs::symlink;

    fn app() -> Scope {
        Scope::App("search".into())
    }

    fn set(stanza: &str, key: &str, value: &str) -> ConfChange {
        let op = Op::SetKey { stanza: stanza.into(), key: key.into(), value: value.into() };
        ConfChange { conf_type: "savedsearches".into(), scope: app(), target: Target::Conf, op }
    }

    fn tree() -> (tempfile::TempDir, ConfTree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = ConfTree::open(dir.path().join("etc")).unwrap();
        (dir, tree)
    }

    #[test]
    fn listing_never_goes_through_a_symlink_at_any_depth() {
        let (dir, tree) = tree();
        let outside = dir.path().join("outside");
        for p in ["data/ui/views/home.xml", "props.conf", "local/props.conf"] {
            let path = outside.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        fs::create_dir_all(tree.root().join("apps/search")).unwrap();
        symlink(&outside, tree.root().join("apps/search/local")).unwrap();
        symlink(&outside, tree.root().join("system")).unwrap();
        fs::write(tree.root().join("users"), "a file where a folder belongs").unwrap();
        assert_eq!(tree.replicable_files().unwrap(), []);
    }

    #[test]
    fn replicable_files_lists_what_ops_write() {
        let (_dir, tree) = tree();
        let user = Scope::User { app: "search".into(), user: "admin".into() };
        for p in [
            "system/default/props.conf",
            "system/local/props.conf",
            "apps/search/default/savedsearches.conf",
            "apps/search/local/data/ui/views/home.xml",
            "apps/search/local/data/models/m.json",
            "apps/search/metadata/default.meta",
            "apps/search/metadata/local.meta",
            "apps/search/lookups/a.csv",
            "apps/search/bin/tool.py",
            "apps/search/local/.tandem-tmp.1.1",
            "users/admin/search/local/props.conf",
        ] {
            let path = tree.root().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        tree.apply(&set("a", "k", "1")).unwrap();
        let files: Vec<(String, TargetKind, Scope)> = tree
            .replicable_files()
            .unwrap()
            .into_iter()
            .map(|(p, k)| (p.to_string(), k.target_kind, k.scope))
            .collect();
        let expect = [
            ("apps/search/local/data/models/m.json", TargetKind::File, app()),
            ("apps/search/local/data/ui/views/home.xml", TargetKind::File, app()),
            ("apps/search/local/savedsearches.conf", TargetKind::Conf, app()),
            ("apps/search/lookups/a.csv", TargetKind::File, app()),
            ("apps/search/metadata/local.meta", TargetKind::Meta, app()),
            ("system/local/props.conf", TargetKind::Conf, Scope::System),
            ("users/admin/search/local/props.conf", TargetKind::Conf, user),
        ]
        .map(|(p, k, s)| (p.to_owned(), k, s));
        assert_eq!(files, expect);
    }
}
