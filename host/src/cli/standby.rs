//! `tandem standby ...`: the warm-standby commands, through the running daemon's REST API.
//! `status` prints the standby module's text (the seed's wording, see `standby::status_text`).

use std::process::ExitCode;
use std::time::Duration;

use super::args::StandbyCommand;
use super::http::ApiClient;
use crate::config::Config;
use crate::plugin::now_ms;
use crate::standby::check::{LagLimits, check};
use crate::standby::status_text::render;
use crate::standby::{ConfigureRequest, Options, Report, Role, StandbyStatus};

/// A status reads the database and the trees: seconds at most.
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);
/// A configure (base backup), convert or rejoin (rewind) may take long on a big database.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);
/// Before any command the daemon must show it answers at all, within this (a daemon stopped
/// with SIGSTOP accepts connections and never answers).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(config: Config, cmd: StandbyCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    if let StandbyCommand::Check { warn_lag, crit_lag } = cmd {
        let limits = LagLimits { warning: warn_lag, critical: crit_lag };
        let judged = runtime.block_on(async {
            let api = ApiClient::new(&config)?.with_timeout(STATUS_TIMEOUT)?;
            let status: StandbyStatus = serde_json::from_value(api.get("/v1/standby/status").await?)?;
            anyhow::Ok(check(&status, limits))
        });
        return Ok(super::report::nagios(judged));
    }
    runtime.block_on(async {
        let api = ApiClient::new(&config)?;
        api.check_answers(ANSWER_TIMEOUT).await?;
        let limit =
            if matches!(cmd, StandbyCommand::Status { .. }) { STATUS_TIMEOUT } else { COMMAND_TIMEOUT };
        let api = api.with_timeout(limit)?;
        match cmd {
            StandbyCommand::Check { .. } => unreachable!("a check is answered before anything else"),
            StandbyCommand::Status { json } => {
                let v = api.get("/v1/standby/status").await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    let status: StandbyStatus = serde_json::from_value(v)?;
                    print!("{}", render(&status, now_ms()));
                }
                Ok(ExitCode::SUCCESS)
            }
            StandbyCommand::Configure {
                primary_mode,
                standby_mode: _,
                peer,
                ignore_database,
                ignore_vault,
                ignore_package_updates,
                recovery_dir,
                rebuild,
            } => {
                let recovery_dir = recovery_dir.map(std::path::absolute).transpose()?;
                let req = ConfigureRequest {
                    mode: if primary_mode { Role::Primary } else { Role::Standby },
                    peer,
                    options: Options { ignore_database, ignore_vault, ignore_package_updates, recovery_dir },
                    rebuild,
                };
                let body = serde_json::to_value(&req)?;
                report("configured", api.post("/v1/standby/configure", &body).await?)
            }
            StandbyCommand::ConvertToPrimary { force } => {
                let body = serde_json::json!({ "force": force });
                report("converted to primary", api.post("/v1/standby/convert-to-primary", &body).await?)
            }
            StandbyCommand::Rejoin { peer } => {
                let body = serde_json::json!({ "peer": peer });
                report("rejoined as standby", api.post("/v1/standby/rejoin", &body).await?)
            }
            StandbyCommand::Off => {
                report("warm standby off", api.post("/v1/standby/off", &serde_json::json!({})).await?)
            }
        }
    })
}

fn report(what: &str, v: serde_json::Value) -> anyhow::Result<ExitCode> {
    let r: Report = serde_json::from_value(v)?;
    for step in &r.steps {
        println!("  {step}");
    }
    let role = r.role.map_or("unpaired".to_string(), |r| r.to_string());
    match r.writable_after_seconds {
        Some(w) => println!("{what} in {:.2} s (writable after {w:.2} s); this host: {role}", r.seconds),
        None => println!("{what} in {:.2} s; this host: {role}", r.seconds),
    }
    Ok(ExitCode::SUCCESS)
}
