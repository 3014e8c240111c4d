//! Layered lookups: what a conf type (or the `.meta` permissions) means as seen from a scope,
//! merging `system/default` < `system/local` < `apps/<app>/default` < `apps/<app>/local` <
//! `users/<user>/<app>/local`, with each value remembering the layer it came from.
//!
//! The merge is per key, like Splunk's: a higher layer overrides single keys of a stanza, not
//! the whole stanza.

use std::collections::BTreeMap;

use crate::conf::error::ConfError;
use crate::conf::layout;
use crate::conf::names;
use crate::conf::parse::ConfDoc;
use crate::conf::relpath::RelPath;
use crate::conf::scope::Scope;
use crate::conf::tree::ConfTree;

/// A value and the layer file it came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LayeredValue {
    pub value: String,
    pub source: RelPath,
}

/// The merged view of several layers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Layered {
    layers: Vec<RelPath>,
    stanzas: BTreeMap<String, BTreeMap<String, LayeredValue>>,
}

impl Layered {
    /// Merges `(layer, doc)` pairs given lowest precedence first; absent layers are skipped.
    pub fn merge(docs: impl IntoIterator<Item = (RelPath, Option<ConfDoc>)>) -> Self {
        let mut out = Layered::default();
        for (layer, doc) in docs {
            if let Some(doc) = doc {
                for (stanza, keys) in doc.semantic() {
                    let merged = out.stanzas.entry(stanza).or_default();
                    for (key, value) in keys {
                        merged.insert(key, LayeredValue { value, source: layer.clone() });
                    }
                }
            }
            out.layers.push(layer);
        }
        out
    }

    /// The layers consulted, lowest precedence first (present or not).
    pub fn layers(&self) -> &[RelPath] {
        &self.layers
    }

    /// Every stanza with its effective keys.
    pub fn stanzas(&self) -> &BTreeMap<String, BTreeMap<String, LayeredValue>> {
        &self.stanzas
    }

    /// One stanza's effective keys.
    pub fn stanza(&self, stanza: &str) -> Option<&BTreeMap<String, LayeredValue>> {
        self.stanzas.get(stanza)
    }

    /// One effective value.
    pub fn get(&self, stanza: &str, key: &str) -> Option<&LayeredValue> {
        self.stanzas.get(stanza)?.get(key)
    }
}

impl ConfTree {
    /// The layered view of `conf_type` as seen from `scope` (only the layers it reaches).
    pub fn layered(&self, conf_type: &str, scope: &Scope) -> Result<Layered, ConfError> {
        names::conf_type(conf_type)?;
        scope.validate()?;
        self.read_layers(layout::conf_layers(conf_type, scope)?)
    }

    /// The layered `.meta` permissions as seen from `scope`: `default.meta` < `local.meta` <
    /// the user's `local.meta`. Empty for the system scope, which has no meta target.
    pub fn layered_meta(&self, scope: &Scope) -> Result<Layered, ConfError> {
        scope.validate()?;
        self.read_layers(layout::meta_layers(scope)?)
    }

    fn read_layers(&self, layers: Vec<RelPath>) -> Result<Layered, ConfError> {
        let docs = layers
            .into_iter()
            .map(|layer| self.read_doc(&layer).map(|doc| (layer, doc)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Layered::merge(docs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(tree: &ConfTree, rel: &str, text: &str) {
        let path = tree.root().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn user() -> Scope {
        Scope::User { app: "search".into(), user: "admin".into() }
    }

    fn seeded() -> (tempfile::TempDir, ConfTree) {
        let dir = tempfile::tempdir().unwrap();
        let tree = ConfTree::open(dir.path()).unwrap();
        write(&tree, "system/default/props.conf", "[s]\na = sys-default\nb = sys-default\nc = sys-default\n");
        write(&tree, "system/local/props.conf", "[s]\nb = sys-local\n");
        write(&tree, "apps/search/default/props.conf", "[s]\nc = app-default\nd = app-default\n");
        write(&tree, "apps/search/local/props.conf", "[s]\nd = app-local\n[only-app]\n");
        write(&tree, "users/admin/search/local/props.conf", "[s]\ne = user\n");
        write(&tree, "apps/other/local/props.conf", "[s]\na = other-app\n");
        (dir, tree)
    }

    #[test]
    fn higher_layers_override_single_keys() {
        let (_dir, tree) = seeded();
        let view = tree.layered("props", &user()).unwrap();
        let got = |k: &str| {
            let v = view.get("s", k).unwrap();
            (v.value.as_str(), v.source.to_string())
        };
        assert_eq!(got("a"), ("sys-default", "system/default/props.conf".into()));
        assert_eq!(got("b"), ("sys-local", "system/local/props.conf".into()));
        assert_eq!(got("c"), ("app-default", "apps/search/default/props.conf".into()));
        assert_eq!(got("d"), ("app-local", "apps/search/local/props.conf".into()));
        assert_eq!(got("e"), ("user", "users/admin/search/local/props.conf".into()));
        assert!(view.stanza("only-app").unwrap().is_empty());
        assert_eq!(view.layers().len(), 5);
    }

    #[test]
    fn a_scope_sees_only_the_layers_it_reaches() {
        let (_dir, tree) = seeded();
        let system = tree.layered("props", &Scope::System).unwrap();
        assert_eq!(system.get("s", "c").unwrap().value, "sys-default");
        assert!(system.get("s", "d").is_none());
        let app = tree.layered("props", &Scope::App("search".into())).unwrap();
        assert_eq!(app.get("s", "d").unwrap().value, "app-local");
        assert!(app.get("s", "e").is_none());
        assert!(tree.layered("props", &Scope::App("..".into())).is_err());
        assert!(tree.layered("../props", &Scope::System).is_err());
    }

    #[test]
    fn meta_layers() {
        let (_dir, tree) = seeded();
        write(
            &tree,
            "apps/search/metadata/default.meta",
            "[savedsearches]\naccess = read : [ * ]\nexport = none\n",
        );
        write(&tree, "apps/search/metadata/local.meta", "[savedsearches]\nexport = system\n");
        let meta = tree.layered_meta(&user()).unwrap();
        assert_eq!(meta.get("savedsearches", "access").unwrap().value, "read : [ * ]");
        let export = meta.get("savedsearches", "export").unwrap();
        assert_eq!(
            (export.value.as_str(), export.source.as_str()),
            ("system", "apps/search/metadata/local.meta")
        );
        assert!(tree.layered_meta(&Scope::System).unwrap().stanzas().is_empty());
    }
}
