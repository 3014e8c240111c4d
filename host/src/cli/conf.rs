//! `tandem conf ...`: runtime configuration changes and reads through the local member's API.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::args::ConfCommand;
use super::http::ApiClient;
use crate::conf::{ConfChange, Op};
use crate::config::Config;

pub fn run(config: Config, cmd: ConfCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let api = ApiClient::new(&config)?;
        match cmd {
            ConfCommand::Set { target, stanza, key, value } => {
                let (conf_type, scope, target) = target.resolve()?;
                let op = Op::SetKey { stanza, key, value };
                submit(&api, vec![ConfChange { conf_type, scope, target, op }]).await
            }
            ConfCommand::Delete { target, stanza, key } => {
                let (conf_type, scope, target) = target.resolve()?;
                let op = match key {
                    Some(key) => Op::DeleteKey { stanza, key },
                    None => Op::RemoveStanza { stanza },
                };
                submit(&api, vec![ConfChange { conf_type, scope, target, op }]).await
            }
            ConfCommand::PutFile { target, file } => {
                let content = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let changes = vec![target.change(Op::PutFile { content })?];
                // Measured before sending, as the member will: no 16 MiB upload to be refused.
                crate::cluster::limits::check_changes(&changes)
                    .with_context(|| format!("{} cannot be replicated", file.display()))?;
                submit(&api, changes).await
            }
            ConfCommand::DeleteFile { target } => submit(&api, vec![target.change(Op::DeleteFile)?]).await,
            ConfCommand::Get { conf_type, scope, stanza, json } => {
                let view = api.get(&format!("/v1/conf/{conf_type}?scope={}", urlish(&scope))).await?;
                let view = match &stanza {
                    Some(s) => view.get("stanzas").and_then(|v| v.get(s)).cloned().unwrap_or(Value::Null),
                    None => view,
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&view)?);
                } else {
                    print_view(&view, stanza.as_deref());
                }
                Ok(ExitCode::SUCCESS)
            }
            ConfCommand::List { json } => {
                let files = api.get("/v1/conf/files").await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&files)?);
                } else {
                    for f in files.as_array().into_iter().flatten() {
                        println!("{}", f["path"].as_str().unwrap_or_default());
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            ConfCommand::Push { path } => {
                let reports = api.post("/v1/conf/push", &json!({ "path": path })).await?;
                print_reports(&reports);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn submit(api: &ApiClient, changes: Vec<ConfChange>) -> anyhow::Result<ExitCode> {
    let reports = api.post("/v1/conf/changes", &json!({ "changes": changes })).await?;
    print_reports(&reports);
    Ok(ExitCode::SUCCESS)
}

fn print_reports(reports: &Value) {
    for r in reports.as_array().into_iter().flatten() {
        let index = r["log_index"].as_u64().map(|i| format!(" #{i}")).unwrap_or_default();
        println!(
            "{}{index}: {}\n  {}",
            r["disposition"].as_str().unwrap_or("?"),
            r["change"].as_str().unwrap_or_default(),
            r["message"].as_str().unwrap_or_default()
        );
    }
}

fn print_view(view: &Value, stanza: Option<&str>) {
    let print_stanza = |name: &str, keys: &Value| {
        println!("[{name}]");
        for (k, v) in keys.as_object().into_iter().flatten() {
            let value = v.get("value").and_then(Value::as_str).or(v.as_str()).unwrap_or_default();
            let from =
                v.get("source").and_then(Value::as_str).map(|s| format!("    # {s}")).unwrap_or_default();
            println!("{k} = {value}{from}");
        }
        println!();
    };
    match stanza {
        Some(s) => print_stanza(s, view),
        None => {
            for (name, keys) in view.get("stanzas").and_then(Value::as_object).into_iter().flatten() {
                print_stanza(name, keys);
            }
        }
    }
}

/// Scope strings are plain ASCII names and colons; encode the few characters a query needs.
fn urlish(s: &str) -> String {
    s.replace('%', "%25").replace(' ', "%20").replace('&', "%26").replace('#', "%23").replace('+', "%2B")
}
