//! The default replication whitelist, as plain Rust: the seed's include list, per-type
//! overrides from `conf_replication_include.<type> = true|false`, and `history` never.

use std::collections::BTreeMap;

/// The conf types that replicate unless a setting says otherwise (the seed's default
/// `server.conf` list). A `.meta` permission change follows the type it guards.
pub const DEFAULT_INCLUDE: &[&str] = &[
    "alert_actions",
    "authentication",
    "authorize",
    "datamodels",
    "event_renderers",
    "eventtypes",
    "fields",
    "html",
    "literals",
    "lookups",
    "macros",
    "manager",
    "models",
    "multikv",
    "nav",
    "panels",
    "passwd",
    "passwords",
    "props",
    "quickstart",
    "savedsearches",
    "searchbnf",
    "searchscripts",
    "segmenters",
    "tags",
    "times",
    "transforms",
    "transactiontypes",
    "ui-prefs",
    "user-prefs",
    "views",
    "viewstates",
    "workflow_actions",
];

/// Types that never replicate, whatever the settings say: the seed states that setting
/// `conf_replication_include.history = true` has no effect.
pub const NEVER: &[&str] = &["history"];

/// The settings key prefix for per-type overrides.
pub const INCLUDE_PREFIX: &str = "conf_replication_include.";

/// A configured whitelist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Whitelist {
    overrides: BTreeMap<String, bool>,
}

impl Whitelist {
    /// Builds the whitelist from settings; an unknown key or a value that is not a boolean is
    /// an error, so a typo does not silently change what replicates.
    pub fn from_settings<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut overrides = BTreeMap::new();
        for (key, value) in settings {
            let Some(conf_type) = key.strip_prefix(INCLUDE_PREFIX) else {
                return Err(format!(
                    "unknown setting `{key}` (expected `{INCLUDE_PREFIX}<type> = true|false`)"
                ));
            };
            if conf_type.is_empty() {
                return Err(format!("setting `{key}` names no conf type"));
            }
            overrides.insert(conf_type.to_string(), parse_bool(key, value)?);
        }
        Ok(Self { overrides })
    }

    /// Whether a change of `conf_type` replicates. `meta` changes follow their type.
    pub fn replicates(&self, conf_type: &str, _meta: bool) -> bool {
        if NEVER.contains(&conf_type) {
            return false;
        }
        match self.overrides.get(conf_type) {
            Some(&decision) => decision,
            None => DEFAULT_INCLUDE.contains(&conf_type),
        }
    }
}

/// Splunk-style booleans: true/false, 1/0, yes/no, t/f, case-insensitive.
fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "t" | "y" | "on" => Ok(true),
        "false" | "0" | "no" | "f" | "n" | "off" => Ok(false),
        other => Err(format!("setting `{key}`: `{other}` is not a boolean")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(settings: &[(&str, &str)]) -> Whitelist {
        Whitelist::from_settings(settings.iter().copied()).unwrap()
    }

    #[test]
    fn default_list_replicates_and_others_do_not() {
        let w = Whitelist::default();
        for t in DEFAULT_INCLUDE {
            assert!(w.replicates(t, false), "{t}");
            assert!(w.replicates(t, true), "{t} meta");
        }
        for t in ["inputs", "indexes", "server", "outputs", "history", ""] {
            assert!(!w.replicates(t, false), "{t}");
        }
    }

    #[test]
    fn overrides_add_and_remove_types() {
        let w =
            with(&[("conf_replication_include.inputs", "true"), ("conf_replication_include.props", "false")]);
        assert!(w.replicates("inputs", false));
        assert!(!w.replicates("props", false));
        assert!(!w.replicates("props", true), "meta follows its type");
        assert!(w.replicates("savedsearches", false));
    }

    #[test]
    fn history_never_replicates_even_when_set() {
        let w = with(&[("conf_replication_include.history", "true")]);
        assert!(!w.replicates("history", false));
        assert!(!w.replicates("history", true));
    }

    #[test]
    fn bad_settings_are_refused_clearly() {
        let e = Whitelist::from_settings([("conf_replication_include.props", "maybe")]).unwrap_err();
        assert!(e.contains("not a boolean"), "{e}");
        let e = Whitelist::from_settings([("include.props", "true")]).unwrap_err();
        assert!(e.contains("unknown setting"), "{e}");
        let e = Whitelist::from_settings([("conf_replication_include.", "true")]).unwrap_err();
        assert!(e.contains("names no conf type"), "{e}");
    }
}
