//! `tandem cluster ...`: membership, status and resync through the local member's API.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::args::ClusterCommand;
use super::http::ApiClient;
use crate::cluster::ClusterStatus;
use crate::cluster::check::check;
use crate::config::Config;

pub fn run(config: Config, cmd: ClusterCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    if let ClusterCommand::Check = cmd {
        let judged = runtime.block_on(async {
            let api = ApiClient::new(&config)?;
            let status: ClusterStatus = serde_json::from_value(api.get("/v1/cluster/status").await?)?;
            anyhow::Ok(check(&status))
        });
        return Ok(super::report::nagios(judged));
    }
    runtime.block_on(async move {
        // Adding a member and a destructive resync move the whole conf tree: they may take
        // as long as the member allows a join (`cluster.join_timeout_ms`), plus a margin.
        let slow = config.cluster.join_timeout() + std::time::Duration::from_secs(60);
        let api = ApiClient::new(&config)?;
        let api = match cmd {
            ClusterCommand::AddMember { .. } | ClusterCommand::Resync { .. } => api.with_timeout(slow)?,
            _ => api,
        };
        match cmd {
            ClusterCommand::Init => {
                let r = api.post("/v1/cluster/init", &json!({})).await?;
                println!(
                    "initialised cluster {} ; this member is node {}",
                    r["cluster_id"].as_str().unwrap_or("?"),
                    r["node_id"]
                );
            }
            ClusterCommand::AddMember { peer } => {
                let r = api.post("/v1/cluster/members", &json!({ "peer": peer })).await?;
                println!("added {peer} as node {}", r["node_id"]);
            }
            ClusterCommand::RemoveMember { node_id } => {
                api.delete(&format!("/v1/cluster/members/{node_id}")).await?;
                println!(
                    "removed node {node_id}; clean it (`tandem cluster clean` there) before adding it again"
                );
            }
            ClusterCommand::Check => unreachable!("a check is answered before anything else"),
            ClusterCommand::Status { json } => {
                let r = api.get("/v1/cluster/status").await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    print_status(&serde_json::from_value(r)?);
                }
            }
            ClusterCommand::Resync { destructive } => {
                let r = api.post("/v1/cluster/resync", &json!({ "destructive": destructive })).await?;
                println!(
                    "resynced from the captain; {} pending batch(es) of local changes discarded",
                    r["discarded_pending_batches"]
                );
            }
            ClusterCommand::Clean { force } => {
                api.post("/v1/cluster/clean", &json!({ "force": force })).await?;
                println!("cluster state cleaned; this host can be added to a cluster again");
            }
            ClusterCommand::Purge => {
                let r: Value = api.post("/v1/cluster/purge", &json!({})).await?;
                println!("purged {} entries of history", r["purged"]);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn print_status(s: &ClusterStatus) {
    println!("cluster: {}", s.cluster_id.as_deref().unwrap_or("(not in a cluster)"));
    println!("captain: {}", s.captain.map_or("none".to_string(), |c| format!("node {c}")));
    println!();
    for m in &s.members {
        let last = m.last_conf_replication_ms.map_or("never".to_string(), super::ago);
        println!("node {} `{}`", m.node_id.map_or("-".into(), |i| i.to_string()), m.name);
        println!("  state:                 {:?}", m.state);
        println!("  role:                  {}", m.role);
        println!("  peer / api:            {} / {}", m.peer, m.api);
        println!("  applied commit:        {}", m.applied);
        if m.lag > 0 {
            println!("  behind by:             {} entries", m.lag);
        }
        println!("  last_conf_replication: {last}");
        println!("  pending outbox:        {}", m.outbox);
        if let Some(stall) = &m.cannot_apply {
            println!("  CANNOT APPLY since {}: {}", super::ago(stall.since_ms), stall.error);
        }
        if let Some(e) = &m.last_error {
            println!("  last error:            {e}");
        }
    }
}
