//! `tandem wal ...`: WAL streaming from the command line. `status` asks the running daemon
//! (REST) and prints every position, lag, the archive and the slot; `base-backup` makes a new
//! standby PostgreSQL that streams from this host's walsender.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use super::ago;
use super::args::WalCommand;
use super::http::ApiClient;
use crate::config::Config;
use crate::wal::base_backup::{BaseBackup, Endpoint, default_bin_dir};
use crate::wal::status::WalStatus;

pub fn run(config: Config, cmd: WalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WalCommand::Status { json } => status(&config, json),
        WalCommand::BaseBackup { data, pg_bin, os_user, application_name } => {
            let bin_dir = pg_bin.or_else(default_bin_dir).context(
                "pg_basebackup not found: pass --pg-bin or set TANDEM_PG_BIN to PostgreSQL's bin folder",
            )?;
            let primary = config.wal.primary_conn().map_err(anyhow::Error::msg)?;
            let host = match &primary.socket_dir {
                Some(dir) => dir.display().to_string(),
                None => primary.host.clone(),
            };
            let listen = config.wal.listen;
            let backup = BaseBackup {
                bin_dir,
                primary: Endpoint {
                    host,
                    port: primary.port,
                    user: primary.user,
                    password: primary.password,
                },
                walsender: config.wal.walsender_endpoint().map_err(anyhow::Error::msg)?,
                data_dir: data.clone(),
                os_user,
                application_name,
            };
            backup.run()?;
            println!(
                "base backup in {}; it streams from tandem at {listen} once started (pg_ctl -D {} start)",
                data.display(),
                data.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    let v = runtime.block_on(async { ApiClient::new(config)?.get("/v1/wal/status").await })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if v["configured"] != Value::Bool(true) {
        println!("WAL streaming: not configured on this host (set [wal] primary_host)");
        return Ok(ExitCode::SUCCESS);
    }
    if v.get("primary").is_none() {
        println!("WAL streaming: {}", v["state"].as_str().unwrap_or("?"));
        if let Some(e) = v["last_error"].as_str() {
            println!("  last error   {e}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let s: WalStatus = serde_json::from_value(v).context("reading the daemon's WAL status")?;
    print!("{}", render(&s));
    Ok(ExitCode::SUCCESS)
}

/// The status as text, a fact per line.
pub fn render(s: &WalStatus) -> String {
    let or = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let mut out = format!("WAL streaming: {} (timeline {})\n", s.state, s.timeline);
    let slot_state = match (&s.slot_wal_status, s.slot_active) {
        (Some(w), Some(active)) => format!("{w}, {}", if active { "active" } else { "inactive" }),
        _ => "state unknown".into(),
    };
    out += &format!("  primary      {}, slot {} ({slot_state})\n", s.primary, s.slot);
    out += &format!(
        "  positions    primary {}  received {}  flushed {}\n",
        or(&s.primary_lsn),
        or(&s.received_lsn),
        or(&s.flushed_lsn)
    );
    match &s.standby {
        Some(sb) => {
            out += &format!(
                "  standby      replayed {}  flushed {}  ({}, {}, reported {})\n",
                sb.replay_lsn,
                sb.flush_lsn,
                if sb.streaming { "streaming" } else { "disconnected" },
                sb.application_name,
                ago(sb.reported_at_ms)
            )
        }
        None => out += "  standby      none has connected\n",
    }
    let bytes = |b: Option<u64>| b.map_or("-".into(), |b| format!("{b} B"));
    let secs = s.replay_lag_seconds.map_or("-".into(), |l| format!("{l:.3} s"));
    out += &format!(
        "  lag          receive {}, replay {} / {secs}\n",
        bytes(s.receive_lag_bytes),
        bytes(s.replay_lag_bytes)
    );
    if let Some(at) = s.last_wal_at_ms {
        out += &format!("  last WAL     {}\n", ago(at));
    }
    let cap = s.archive_disk_cap_bytes.map_or("no cap".into(), |c| format!("cap {} MiB", c >> 20));
    out += &format!(
        "  archive      {} segments in use, {} configured as reserve, {cap}{}\n",
        s.segments_in_use,
        s.segments_reserve,
        match (s.archive_disk_full, s.archive_full) {
            (true, _) => ", DISK FULL: not taking WAL until it has room (the primary's slot holds it)",
            (false, true) => ", FULL (at its cap): not taking WAL",
            _ => "",
        }
    );
    if let Some(e) = &s.primary_sql_error {
        out += &format!("  primary SQL  {e}\n");
    }
    if let Some(e) = &s.last_error {
        let when = match (s.last_error_at_ms, s.last_error_resolved_at_ms) {
            (Some(t), Some(r)) => format!(" ({}, since resolved {})", ago(t), ago(r)),
            (Some(t), None) => format!(" ({})", ago(t)),
            _ => String::new(),
        };
        out += &format!("  last error   {e}{when}\n");
    }
    out
}
