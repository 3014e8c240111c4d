//! JSON in and out for `tandem plugins eval`: the shell-friendly shapes of each world's input
//! and answer, mapped to and from the plugin bindings.

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::plugin::{
    ConfChange, EntryBatch, EntryKind, History, Plugins, Scope, UserScope, Verdict, World, now_ms,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeIn {
    conf_type: String,
    #[serde(default = "system")]
    scope: ScopeIn,
    #[serde(default)]
    meta: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ScopeIn {
    System,
    App(String),
    User { app: String, user: String },
}

fn system() -> ScopeIn {
    ScopeIn::System
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchIn {
    tree: String,
    entries: Vec<EntryIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn {
    path: String,
    kind: KindIn,
    #[serde(default)]
    size: u64,
    #[serde(default = "default_mode")]
    mode: u32,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum KindIn {
    File,
    Dir,
    Symlink,
    Other,
}

fn default_mode() -> u32 {
    0o644
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryIn {
    count: u64,
    oldest: Vec<u64>,
    now: Option<u64>,
}

/// Runs one decision of `world` on the JSON `input`.
pub fn decide(plugins: &Plugins, world: World, input: &str) -> anyhow::Result<Value> {
    let bad_input = || format!("the input is not a {world} request (see `tandem plugins eval --help`)");
    Ok(match world {
        World::Whitelist => {
            let c: ChangeIn = serde_json::from_str(input).with_context(bad_input)?;
            let scope = match c.scope {
                ScopeIn::System => Scope::System,
                ScopeIn::App(app) => Scope::App(app),
                ScopeIn::User { app, user } => Scope::User(UserScope { app, user }),
            };
            let change = ConfChange { conf_type: c.conf_type, scope, meta: c.meta };
            json!({ "replicates": plugins.replicates(&change)? })
        }
        World::PathFilter => {
            let b: BatchIn = serde_json::from_str(input).with_context(bad_input)?;
            let mut batch = EntryBatch::new(b.tree);
            for e in &b.entries {
                let kind = match e.kind {
                    KindIn::File => EntryKind::File,
                    KindIn::Dir => EntryKind::Dir,
                    KindIn::Symlink => EntryKind::Symlink,
                    KindIn::Other => EntryKind::Other,
                };
                batch.push(e.path.as_bytes(), kind, e.size, e.mode);
            }
            let verdicts = plugins.filter(&batch)?;
            let answers: Vec<Value> = b
                .entries
                .iter()
                .zip(verdicts)
                .map(|(e, v)| {
                    let v = match v {
                        Verdict::Keep => "keep",
                        Verdict::Skip => "skip",
                        Verdict::Prune => "prune",
                    };
                    json!({ "path": e.path, "verdict": v })
                })
                .collect();
            json!({ "verdicts": answers })
        }
        World::PurgePolicy => {
            let h: HistoryIn = serde_json::from_str(input).with_context(bad_input)?;
            let history = History { count: h.count, oldest: h.oldest, now: h.now.unwrap_or_else(now_ms) };
            json!({ "purgeable": plugins.purgeable(&history)? })
        }
    })
}
