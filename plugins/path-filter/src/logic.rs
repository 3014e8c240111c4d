//! The default path filter, as plain Rust: skip what must never replicate (sockets, FIFOs,
//! devices, temporary and partial files), prune the package trees when the site ignores
//! package updates, and honour the site's glob excludes.

use glob::{MatchOptions, Pattern};

/// The kind of a tree entry, as the host reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Sockets, FIFOs, block and character devices.
    Other,
}

/// The answer for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Skip,
    Prune,
}

/// Trees holding the package lists the seed syncs (pip and rpm requirements).
pub const DEFAULT_PACKAGE_TREES: &[&str] = &["pip_req", "rpm_req"];

/// Basename suffixes of files being written by someone: editors, downloads, tandem itself.
const TEMP_SUFFIXES: &[&[u8]] =
    &[b".tmp", b".temp", b".part", b".partial", b".crdownload", b".swp", b".swx", b"~"];
/// Basename prefixes of the same.
const TEMP_PREFIXES: &[&[u8]] = &[b".#", b".tandem-tmp-"];

/// A configured path filter.
#[derive(Debug, Clone)]
pub struct PathFilter {
    ignore_package_updates: bool,
    package_trees: Vec<String>,
    /// Patterns with a `/` match the whole relative path; others match the basename.
    path_excludes: Vec<Pattern>,
    name_excludes: Vec<Pattern>,
}

impl Default for PathFilter {
    fn default() -> Self {
        Self {
            ignore_package_updates: false,
            package_trees: DEFAULT_PACKAGE_TREES.iter().map(|s| s.to_string()).collect(),
            path_excludes: Vec::new(),
            name_excludes: Vec::new(),
        }
    }
}

const GLOB_OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl PathFilter {
    /// Settings: `ignore_package_updates = true|false`, `package_trees = "a,b"`, and
    /// `exclude` or `exclude.<label>` = one or more comma-separated globs.
    pub fn from_settings<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut filter = Self::default();
        for (key, value) in settings {
            match key {
                "ignore_package_updates" => {
                    filter.ignore_package_updates = match value.trim() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        other => return Err(format!("`{key}`: `{other}` is not a boolean")),
                    }
                }
                "package_trees" => {
                    filter.package_trees = split_list(value).map(str::to_string).collect();
                }
                _ if key == "exclude" || key.starts_with("exclude.") => {
                    for glob in split_list(value) {
                        let pattern =
                            Pattern::new(glob).map_err(|e| format!("`{key}`: bad glob `{glob}`: {e}"))?;
                        if glob.contains('/') {
                            filter.path_excludes.push(pattern);
                        } else {
                            filter.name_excludes.push(pattern);
                        }
                    }
                }
                _ => return Err(format!("unknown setting `{key}`")),
            }
        }
        Ok(filter)
    }

    /// Whether this tree is pruned whole (a package tree while package updates are ignored).
    pub fn skips_tree(&self, tree: &str) -> bool {
        self.ignore_package_updates && self.package_trees.iter().any(|t| t == tree)
    }

    /// The verdict for one entry of `tree`; `path` is relative to the tree root.
    pub fn decide(&self, tree_skipped: bool, path: &[u8], kind: Kind) -> Verdict {
        let excluded = tree_skipped || {
            let temporary = match kind {
                Kind::Other => return Verdict::Skip,
                Kind::Dir => false,
                Kind::File | Kind::Symlink => is_temporary(basename(path)),
            };
            temporary || self.matches_exclude(path)
        };
        match (excluded, kind) {
            (false, _) => Verdict::Keep,
            (true, Kind::Dir) => Verdict::Prune,
            (true, _) => Verdict::Skip,
        }
    }

    /// Decides a whole batch: entry i's path is `paths[ends[i-1]..ends[i]]`. Calls `emit` once
    /// per entry, in order; an `ends` that is not a valid split of `paths` is an error.
    pub fn decide_batch(
        &self,
        tree: &str,
        paths: &[u8],
        ends: &[u32],
        kinds: impl ExactSizeIterator<Item = Kind>,
        mut emit: impl FnMut(Verdict),
    ) -> Result<(), String> {
        if ends.len() != kinds.len() {
            return Err(format!("batch has {} path ends but {} kinds", ends.len(), kinds.len()));
        }
        let tree_skipped = self.skips_tree(tree);
        let mut start = 0usize;
        for (&end, kind) in ends.iter().zip(kinds) {
            let end = end as usize;
            let Some(path) = paths.get(start..end) else {
                return Err(format!("path end {end} is outside 0..{} or before {start}", paths.len()));
            };
            emit(self.decide(tree_skipped, path, kind));
            start = end;
        }
        if start != paths.len() {
            return Err(format!("{} path bytes after the last entry", paths.len() - start));
        }
        Ok(())
    }

    fn matches_exclude(&self, path: &[u8]) -> bool {
        if self.path_excludes.is_empty() && self.name_excludes.is_empty() {
            return false;
        }
        let path = String::from_utf8_lossy(path);
        let name = path.rsplit('/').next().unwrap_or(&path);
        self.path_excludes.iter().any(|p| p.matches_with(&path, GLOB_OPTIONS))
            || self.name_excludes.iter().any(|p| p.matches_with(name, GLOB_OPTIONS))
    }
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Temporary files by name. Hot: one call per path, so it branches on the last byte before
/// comparing any suffix, and looks at prefixes only for names starting with `.` or `#`.
fn is_temporary(name: &[u8]) -> bool {
    let Some(&last) = name.last() else { return false };
    let suffix = match last {
        b'p' | b't' | b'l' | b'd' | b'x' | b'~' => TEMP_SUFFIXES.iter().any(|s| name.ends_with(s)),
        _ => false,
    };
    suffix
        || match name[0] {
            b'.' => TEMP_PREFIXES.iter().any(|p| name.starts_with(p)),
            // Emacs auto-save files: #name#
            b'#' => name.len() > 2 && last == b'#',
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(f: &PathFilter, tree: &str, path: &str, kind: Kind) -> Verdict {
        f.decide(f.skips_tree(tree), path.as_bytes(), kind)
    }

    #[test]
    fn keeps_ordinary_entries() {
        let f = PathFilter::default();
        assert_eq!(decide(&f, "vault", "a/b/report.pdf", Kind::File), Verdict::Keep);
        assert_eq!(decide(&f, "vault", "a/b", Kind::Dir), Verdict::Keep);
        assert_eq!(decide(&f, "etc", "ssl/current", Kind::Symlink), Verdict::Keep);
        assert_eq!(decide(&f, "pip_req", "requirements.txt", Kind::File), Verdict::Keep);
    }

    #[test]
    fn skips_special_files_and_temporaries() {
        let f = PathFilter::default();
        assert_eq!(decide(&f, "tmp", "run/app.sock", Kind::Other), Verdict::Skip);
        for name in [
            "x.tmp",
            "d/x.part",
            "x.partial",
            ".x.swp",
            "notes~",
            ".#lock",
            "#auto#",
            ".tandem-tmp-123",
            "big.iso.crdownload",
        ] {
            assert_eq!(decide(&f, "vault", name, Kind::File), Verdict::Skip, "{name}");
        }
        // A directory that merely looks temporary is still walked.
        assert_eq!(decide(&f, "vault", "build.tmp", Kind::Dir), Verdict::Keep);
        // `#` alone or a name that only contains `~` is not temporary.
        assert_eq!(decide(&f, "vault", "#", Kind::File), Verdict::Keep);
        assert_eq!(decide(&f, "vault", "a~b", Kind::File), Verdict::Keep);
    }

    #[test]
    fn package_trees_pruned_only_when_ignored() {
        let f = PathFilter::from_settings([("ignore_package_updates", "true")]).unwrap();
        assert_eq!(decide(&f, "pip_req", "", Kind::Dir), Verdict::Prune);
        assert_eq!(decide(&f, "rpm_req", "list.txt", Kind::File), Verdict::Skip);
        assert_eq!(decide(&f, "vault", "list.txt", Kind::File), Verdict::Keep);
        let f = PathFilter::from_settings([("ignore_package_updates", "true"), ("package_trees", "wheels")])
            .unwrap();
        assert_eq!(decide(&f, "wheels", "x.whl", Kind::File), Verdict::Skip);
        assert_eq!(decide(&f, "pip_req", "x", Kind::File), Verdict::Keep);
    }

    #[test]
    fn glob_excludes_by_name_and_by_path() {
        let f =
            PathFilter::from_settings([("exclude", "*.log, cache"), ("exclude.reports", "reports/old/**")])
                .unwrap();
        assert_eq!(decide(&f, "vault", "a/b/x.log", Kind::File), Verdict::Skip);
        assert_eq!(decide(&f, "vault", "a/cache", Kind::Dir), Verdict::Prune);
        assert_eq!(decide(&f, "vault", "reports/old/2020/x.pdf", Kind::File), Verdict::Skip);
        assert_eq!(decide(&f, "vault", "reports/new/x.pdf", Kind::File), Verdict::Keep);
        // `*` does not cross `/` in a path pattern.
        let f = PathFilter::from_settings([("exclude", "top/*.pdf")]).unwrap();
        assert_eq!(decide(&f, "vault", "top/x.pdf", Kind::File), Verdict::Skip);
        assert_eq!(decide(&f, "vault", "top/sub/x.pdf", Kind::File), Verdict::Keep);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(PathFilter::from_settings([("exclude", "[")]).unwrap_err().contains("bad glob"));
        assert!(PathFilter::from_settings([("nope", "1")]).unwrap_err().contains("unknown"));
        assert!(
            PathFilter::from_settings([("ignore_package_updates", "sure")])
                .unwrap_err()
                .contains("not a boolean")
        );
    }

    fn batch(f: &PathFilter, paths: &[u8], ends: &[u32], kinds: &[Kind]) -> Result<Vec<Verdict>, String> {
        let mut out = Vec::new();
        f.decide_batch("vault", paths, ends, kinds.iter().copied(), |v| out.push(v)).map(|()| out)
    }

    #[test]
    fn batch_splits_paths_at_their_ends_and_checks_them() {
        let f = PathFilter::default();
        let got = batch(&f, b"ab.tmps", &[1, 6, 7], &[Kind::File, Kind::File, Kind::Other]).unwrap();
        assert_eq!(got, [Verdict::Keep, Verdict::Skip, Verdict::Skip]);
        assert!(batch(&f, b"ab", &[1], &[Kind::File, Kind::File]).is_err(), "count mismatch");
        assert!(batch(&f, b"ab", &[3], &[Kind::File]).is_err(), "end past the buffer");
        assert!(batch(&f, b"ab", &[2, 1], &[Kind::File, Kind::File]).is_err(), "ends going back");
        assert!(batch(&f, b"ab", &[1], &[Kind::File]).is_err(), "bytes left over");
        assert_eq!(batch(&f, b"", &[], &[]).unwrap(), []);
    }

    #[test]
    fn the_fast_temporary_check_matches_the_plain_rule() {
        let plain = |name: &[u8]| {
            TEMP_SUFFIXES.iter().any(|s| name.ends_with(s))
                || TEMP_PREFIXES.iter().any(|p| name.starts_with(p))
                || (name.len() > 2 && name.starts_with(b"#") && name.ends_with(b"#"))
        };
        let parts: [&[u8]; 12] =
            [b"", b".", b"#", b"~", b"a", b"tmp", b".tmp", b"part", b".#", b"x.swx", b"tandem-tmp-", b"d"];
        for a in parts {
            for b in parts {
                for c in parts {
                    let name = [a, b, c].concat();
                    assert_eq!(is_temporary(&name), plain(&name), "{:?}", String::from_utf8_lossy(&name));
                }
            }
        }
    }
}
