//! Settings of tree sync (`[sync]` in tandem.toml): the application's home, the named trees
//! under it (the seed's table by default), what file metadata each tree keeps beyond
//! `rsync -a` (`[sync.metadata.<tree>]`), and, on a standby, the primary to pull from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The seed's trees, relative to the application home: name -> path.
pub const DEFAULT_TREES: &[(&str, &str)] = &[
    ("vault", "vault"),
    ("etc", "etc"),
    ("playbooks", "scm/git"),
    ("app_states", "local_data/app_states"),
    ("tmp", "tmp"),
    ("etc_ssl", "etc/ssl"),
    ("etc_ssl_certs", "etc/ssl/certs"),
    ("reports", "vault/reports"),
    ("saml2_xml", "www/phantom_ui/auth_backends/saml2_xml"),
    ("pip_req", "pip_req"),
    ("rpm_req", "rpm_req"),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// The application's home; trees are relative to it. Unset: `<data_dir>/app`.
    pub app_home: Option<PathBuf>,
    /// On a standby: the primary's peer address. Unset: this host does not pull.
    pub primary: Option<String>,
    /// Trees by name: a path relative to `app_home`; set one to "" to leave it out.
    pub trees: BTreeMap<String, String>,
    /// On a primary: quiet time after a change before followers are woken, milliseconds.
    pub debounce_ms: u64,
    /// On a standby: minutes between passes that compare whole trees.
    pub verify_minutes: u64,
    /// Either side: how long the other may stay silent (or not take what is sent) in the
    /// middle of a pass before the pass is dropped as dead, milliseconds.
    pub idle_timeout_ms: u64,
    /// Per tree, by name: the metadata kept beyond what `rsync -a` keeps (a tree not listed
    /// keeps [`TreeMeta::default`]). Read on the primary, which tells the standby each pass.
    pub metadata: BTreeMap<String, TreeMeta>,
}

/// The file metadata one tree keeps. Modes, mtimes, symlinks, hard links and sparse files are
/// always kept (what `rsync -aHS` keeps); these are the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TreeMeta {
    /// Owner and group as numeric ids, applied when the standby runs as root (as `rsync -a`
    /// run by root does); a standby that is not root never tries.
    pub owner: bool,
    /// Extended attributes: `user.*`, and `trusted.*` and `security.*` (but the standby's own
    /// `security.selinux` label) when both sides run as root (`rsync -X`).
    pub xattrs: bool,
    /// POSIX ACLs, the `system.posix_acl_access` and `system.posix_acl_default` attributes
    /// (`rsync -A`).
    pub acls: bool,
}

impl Default for TreeMeta {
    fn default() -> Self {
        // What `rsync -a` keeps when run as root: owners yes, attributes and ACLs no.
        Self { owner: true, xattrs: false, acls: false }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            app_home: None,
            primary: None,
            trees: DEFAULT_TREES.iter().map(|(n, p)| (n.to_string(), p.to_string())).collect(),
            debounce_ms: 50,
            verify_minutes: 10,
            idle_timeout_ms: 300_000,
            metadata: BTreeMap::new(),
        }
    }
}

impl SyncConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, path) in &self.trees {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!("sync.trees: `{name}` is not a tree name (letters, digits, _ and -)"));
            }
            let p = std::path::Path::new(path);
            if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(format!(
                    "sync.trees.{name}: `{path}` must be relative to app_home, without `..`"
                ));
            }
        }
        if !(1_000..=86_400_000).contains(&self.idle_timeout_ms) {
            return Err(format!(
                "sync.idle_timeout_ms = {}: expected 1000 (a second) to 86400000 (a day)",
                self.idle_timeout_ms
            ));
        }
        for name in self.metadata.keys() {
            if !self.trees.contains_key(name) {
                return Err(format!("sync.metadata.{name}: no tree `{name}` in sync.trees"));
            }
        }
        Ok(())
    }

    /// How long a peer may stay silent in the middle of a pass.
    pub fn idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.idle_timeout_ms)
    }

    /// The metadata tree `name` keeps.
    pub fn meta_of(&self, name: &str) -> TreeMeta {
        self.metadata.get(name).copied().unwrap_or_default()
    }

    /// The other trees inside tree `name`, relative to its root (etc holds etc/ssl): each is
    /// synced on its own, so the outer tree leaves it out.
    pub fn nested_in(&self, name: &str) -> Vec<String> {
        let Some(outer) = self.trees.get(name).filter(|p| !p.is_empty()) else { return Vec::new() };
        let outer = std::path::Path::new(outer);
        self.trees
            .iter()
            .filter(|(other, p)| *other != name && !p.is_empty())
            .filter_map(|(_, p)| std::path::Path::new(p).strip_prefix(outer).ok())
            .filter(|rel| !rel.as_os_str().is_empty())
            .filter_map(|rel| rel.to_str().map(str::to_string))
            .collect()
    }

    /// The folder of tree `name`, if it is configured.
    pub fn tree_root(&self, name: &str) -> Option<PathBuf> {
        let home = self.app_home.as_ref()?;
        self.trees.get(name).filter(|p| !p.is_empty()).map(|p| home.join(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_trees_by_default_and_escapes_refused() {
        let mut c = SyncConfig { app_home: Some("/opt/app".into()), ..SyncConfig::default() };
        assert_eq!(c.tree_root("playbooks").unwrap(), PathBuf::from("/opt/app/scm/git"));
        assert!(c.tree_root("nope").is_none());
        assert_eq!(c.nested_in("etc"), ["ssl", "ssl/certs"]);
        assert_eq!(c.nested_in("vault"), ["reports"]);
        assert!(c.nested_in("tmp").is_empty());
        c.trees.insert("vault".into(), String::new());
        assert!(c.tree_root("vault").is_none(), "an emptied tree is left out");
        c.trees.insert("x".into(), "../etc".into());
        assert!(c.validate().unwrap_err().contains("without `..`"));
    }

    #[test]
    fn metadata_is_per_tree_off_by_default_and_names_a_configured_tree() {
        let c: SyncConfig =
            toml::from_str("[trees]\nvault = \"vault\"\n[metadata.vault]\nxattrs = true\nacls = true\n")
                .unwrap();
        c.validate().unwrap();
        assert_eq!(c.meta_of("vault"), TreeMeta { owner: true, xattrs: true, acls: true });
        assert_eq!(c.meta_of("etc"), TreeMeta { owner: true, xattrs: false, acls: false });
        let typo: SyncConfig = toml::from_str("[metadata.valut]\nxattrs = true\n").unwrap();
        assert!(typo.validate().unwrap_err().contains("no tree `valut`"));
        assert!(toml::from_str::<SyncConfig>("[metadata.vault]\nxattr = true\n").is_err());
    }
}
