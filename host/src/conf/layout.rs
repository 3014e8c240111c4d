//! The layout of the etc root: which relative path a (conf type, scope, target) writes, which
//! layers a lookup reads, and the inverse, classifying a path back into what wrote it.
//!
//! `classify` is defined as the exact inverse of `target_path` (it re-derives the path and
//! compares), so a snapshot can only carry files an op could have written.

use crate::conf::change::{ConfChangeKey, Target, TargetKind};
use crate::conf::error::ConfError;
use crate::conf::names;
use crate::conf::relpath::RelPath;
use crate::conf::scope::Scope;

const LOCAL_META: &str = "local.meta";
const DEFAULT_META: &str = "default.meta";

/// `apps/<app>` or `users/<user>/<app>`; `None` for the system scope.
fn scope_dir(scope: &Scope) -> Option<String> {
    match scope {
        Scope::System => None,
        Scope::App(app) => Some(format!("apps/{app}")),
        Scope::User { app, user } => Some(format!("users/{user}/{app}")),
    }
}

/// Where files of a conf type live below a scope folder. Views, nav and html sit under
/// `data/ui/` and lookup tables beside `local/`, as in Splunk.
fn file_dir(conf_type: &str) -> String {
    match conf_type {
        "lookups" => "lookups".to_owned(),
        "views" | "nav" | "html" => format!("local/data/ui/{conf_type}"),
        other => format!("local/data/{other}"),
    }
}

/// The local file a target writes. Names are expected validated (`ConfChange::rel_path`
/// validates first); `RelPath` still re-checks the result.
pub(crate) fn target_path(conf_type: &str, scope: &Scope, target: &Target) -> Result<RelPath, ConfError> {
    let refused = || ConfError::TargetScope { target: target.kind().name(), scope: scope.to_string() };
    let path = match (target, scope_dir(scope)) {
        (Target::Conf, None) => format!("system/local/{conf_type}.conf"),
        (Target::Conf, Some(dir)) => format!("{dir}/local/{conf_type}.conf"),
        (Target::Meta, Some(dir)) => format!("{dir}/metadata/{LOCAL_META}"),
        (Target::File { name }, Some(dir)) => format!("{dir}/{}/{name}", file_dir(conf_type)),
        (Target::Meta | Target::File { .. }, None) => return Err(refused()),
    };
    RelPath::new(path)
}

/// The `.conf` layers a lookup from `scope` reads, lowest precedence first.
pub(crate) fn conf_layers(conf_type: &str, scope: &Scope) -> Result<Vec<RelPath>, ConfError> {
    let file = format!("{conf_type}.conf");
    let mut layers = vec![format!("system/default/{file}"), format!("system/local/{file}")];
    if let Some(app) = scope.app() {
        layers.push(format!("apps/{app}/default/{file}"));
        layers.push(format!("apps/{app}/local/{file}"));
    }
    if let Scope::User { app, user } = scope {
        layers.push(format!("users/{user}/{app}/local/{file}"));
    }
    layers.into_iter().map(RelPath::new).collect()
}

/// The `.meta` layers a lookup from `scope` reads, lowest precedence first (none for system).
pub(crate) fn meta_layers(scope: &Scope) -> Result<Vec<RelPath>, ConfError> {
    let mut layers = Vec::new();
    if let Some(app) = scope.app() {
        layers.push(format!("apps/{app}/metadata/{DEFAULT_META}"));
        layers.push(format!("apps/{app}/metadata/{LOCAL_META}"));
    }
    if let Scope::User { app, user } = scope {
        layers.push(format!("users/{user}/{app}/metadata/{LOCAL_META}"));
    }
    layers.into_iter().map(RelPath::new).collect()
}

/// The candidate (conf type, target) for a path below a scope folder, before verification.
fn candidate(rest: &[&str]) -> Option<(String, Target)> {
    let file =
        |conf_type: &str, name: &str| Some((conf_type.to_owned(), Target::File { name: name.to_owned() }));
    match rest {
        ["local", conf] => Some((conf.strip_suffix(".conf")?.to_owned(), Target::Conf)),
        ["metadata", LOCAL_META] => Some((String::new(), Target::Meta)),
        ["lookups", name] => file("lookups", name),
        ["local", "data", "ui", kind, name] => file(kind, name),
        ["local", "data", kind, name] => file(kind, name),
        _ => None,
    }
}

/// What wrote `rel`, if an op could have: a local `.conf`, a `local.meta` or a data file.
/// Anything else (default layers, app binaries, temporaries, odd names) is `None`.
pub fn classify(rel: &RelPath) -> Option<ConfChangeKey> {
    let parts: Vec<&str> = rel.components().collect();
    let (scope, rest) = match parts.as_slice() {
        ["system", "local", conf] => {
            let conf_type = conf.strip_suffix(".conf")?;
            names::conf_type(conf_type).ok()?;
            let key = ConfChangeKey {
                conf_type: conf_type.to_owned(),
                scope: Scope::System,
                target_kind: TargetKind::Conf,
            };
            return Some(key);
        }
        ["apps", app, rest @ ..] => (Scope::App((*app).to_owned()), rest),
        ["users", user, app, rest @ ..] => {
            (Scope::User { app: (*app).to_owned(), user: (*user).to_owned() }, rest)
        }
        _ => return None,
    };
    scope.validate().ok()?;
    let (conf_type, target) = candidate(rest)?;
    match &target {
        Target::Conf => names::conf_type(&conf_type).ok()?,
        Target::Meta => {}
        Target::File { name } => {
            names::conf_type(&conf_type).ok()?;
            names::file_name(name).ok()?;
            if conf_type == "ui" {
                return None;
            }
        }
    }
    // Only the canonical spelling counts: `local/data/views/x` is not where views go.
    let path_type = if target == Target::Meta { "meta" } else { conf_type.as_str() };
    if target_path(path_type, &scope, &target).ok()? != *rel {
        return None;
    }
    Some(ConfChangeKey { conf_type, scope, target_kind: target.kind() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::change::{ConfChange, Op};

    fn user() -> Scope {
        Scope::User { app: "search".into(), user: "admin".into() }
    }

    fn path(conf_type: &str, scope: Scope, target: Target) -> String {
        let op = if matches!(target, Target::File { .. }) {
            Op::DeleteFile
        } else {
            Op::AddStanza { stanza: conf_type.into() }
        };
        ConfChange { conf_type: conf_type.into(), scope, target, op }.rel_path().unwrap().to_string()
    }

    #[test]
    fn change_paths_follow_the_layout() {
        let app = Scope::App("search".into());
        let f = |n: &str| Target::File { name: n.into() };
        assert_eq!(path("props", Scope::System, Target::Conf), "system/local/props.conf");
        assert_eq!(path("props", app.clone(), Target::Conf), "apps/search/local/props.conf");
        assert_eq!(path("props", user(), Target::Conf), "users/admin/search/local/props.conf");
        assert_eq!(path("props", app.clone(), Target::Meta), "apps/search/metadata/local.meta");
        assert_eq!(path("props", user(), Target::Meta), "users/admin/search/metadata/local.meta");
        assert_eq!(path("lookups", app.clone(), f("a.csv")), "apps/search/lookups/a.csv");
        assert_eq!(path("views", app.clone(), f("d.xml")), "apps/search/local/data/ui/views/d.xml");
        assert_eq!(path("nav", user(), f("default.xml")), "users/admin/search/local/data/ui/nav/default.xml");
        assert_eq!(path("html", app.clone(), f("x.html")), "apps/search/local/data/ui/html/x.html");
        assert_eq!(path("models", app.clone(), f("m.json")), "apps/search/local/data/models/m.json");
        assert_eq!(path("manager", app, f("m.xml")), "apps/search/local/data/manager/m.xml");
    }

    #[test]
    fn classify_inverts_target_path() {
        let cases = [
            ("system/local/props.conf", "props", Scope::System, TargetKind::Conf),
            ("users/admin/search/local/props.conf", "props", user(), TargetKind::Conf),
            ("users/admin/search/metadata/local.meta", "", user(), TargetKind::Meta),
            ("users/admin/search/lookups/a.csv", "lookups", user(), TargetKind::File),
            ("users/admin/search/local/data/ui/views/d.xml", "views", user(), TargetKind::File),
            ("users/admin/search/local/data/models/m.json", "models", user(), TargetKind::File),
            ("users/admin/search/local/data/manager/m.xml", "manager", user(), TargetKind::File),
        ];
        for (p, conf_type, scope, target_kind) in cases {
            let key = classify(&RelPath::new(p).unwrap());
            assert_eq!(key, Some(ConfChangeKey { conf_type: conf_type.into(), scope, target_kind }), "{p}");
        }
    }

    #[test]
    fn classify_of_a_change_path_is_the_change_key() {
        let f = |n: &str| Target::File { name: n.into() };
        let cases = [
            ("savedsearches", Scope::System, Target::Conf),
            ("savedsearches", user(), Target::Meta),
            ("lookups", user(), f("a b.csv")),
            ("views", Scope::App("search".into()), f("home.xml")),
            ("models", user(), f("m.json")),
            ("workflow_actions", user(), f("w.xml")),
        ];
        for (conf_type, scope, target) in cases {
            let op = if matches!(target, Target::File { .. }) {
                Op::DeleteFile
            } else {
                Op::AddStanza { stanza: conf_type.into() }
            };
            let change = ConfChange { conf_type: conf_type.into(), scope, target, op };
            assert_eq!(classify(&change.rel_path().unwrap()), Some(change.key()), "{change}");
        }
    }

    #[test]
    fn classify_skips_what_no_op_writes() {
        for p in [
            "system/default/props.conf",
            "apps/search/default/props.conf",
            "apps/search/metadata/default.meta",
            "apps/search/bin/script.py",
            "apps/search/local/props.txt",
            "apps/search/local/a.b.conf",
            "apps/search/local/.tandem-tmp.1.2",
            "apps/search/local/data/views/d.xml",
            "apps/search/local/data/ui/d.xml",
            "apps/search/local/data/ui/other/d.xml",
            "apps/.hidden/local/props.conf",
            "apps/search/lookups/sub/a.csv",
            ".tandem/snapshot-meta",
            "etc/passwd",
        ] {
            assert_eq!(classify(&RelPath::new(p).unwrap()), None, "{p}");
        }
    }

    #[test]
    fn layers_are_lowest_first() {
        let layers: Vec<String> =
            conf_layers("props", &user()).unwrap().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            layers,
            [
                "system/default/props.conf",
                "system/local/props.conf",
                "apps/search/default/props.conf",
                "apps/search/local/props.conf",
                "users/admin/search/local/props.conf",
            ]
        );
        assert_eq!(conf_layers("props", &Scope::System).unwrap().len(), 2);
        assert_eq!(meta_layers(&user()).unwrap().len(), 3);
        assert!(meta_layers(&Scope::System).unwrap().is_empty());
    }
}
