//! Settings of tree sync (`[sync]` in tandem.toml): the application's home, the named trees
//! under it (the seed's table by default), and, on a standby, the primary to pull from.

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
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            app_home: None,
            primary: None,
            trees: DEFAULT_TREES.iter().map(|(n, p)| (n.to_string(), p.to_string())).collect(),
            debounce_ms: 50,
            verify_minutes: 10,
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
        Ok(())
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
}
