//! `tandem sandbox`: the whole product on one machine, on loopback, with embedded defaults.
//! Starts three `tandem daemon` processes in a temporary folder: `a` (primary) and `b`
//! (standby) of a warm-standby pair — each with its own PostgreSQL 15 when it is installed,
//! files only otherwise (and says so) — and `c`, which with them forms a three-member
//! configuration cluster. Then makes a few changes (rows, files, a conf change), prints both
//! standby statuses and the cluster's, and leaves a short list of commands to try. Ctrl-C
//! stops everything (daemons, PostgreSQL) and removes the folder.
//!
//! An edge: processes and files, `anyhow` errors. Must never: leave a daemon or a PostgreSQL
//! running after it exits, or touch anything outside its folder.

mod members;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use self::members::{Member, Sandbox};
use super::http::ApiClient;
use crate::conf::{ConfChange, Op, Target};

/// How long each step may take before the sandbox gives up (a base backup included).
const STEP: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// The folder to run in (default: a new one under the system's temporary folder).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Files only, even if PostgreSQL 15 is installed.
    #[arg(long)]
    pub no_postgres: bool,
    /// Keep the folder (data, logs, configuration) after Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Set up, show, and stop at once (no waiting for Ctrl-C).
    #[arg(long)]
    pub once: bool,
}

pub fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let started = Instant::now();
        let mut sandbox = Sandbox::create(&args)?;
        // Ctrl-C during the set-up (a base backup can take minutes) stops cleanly too.
        let shown = tokio::select! {
            shown = show(&mut sandbox, started) => shown,
            _ = tokio::signal::ctrl_c() => {
                println!("\ninterrupted; stopping ...");
                sandbox.stop();
                return Ok(ExitCode::FAILURE);
            }
        };
        match shown {
            Ok(()) if !args.once => {
                println!(
                    "\nRunning. Ctrl-C stops the sandbox{}.",
                    if args.keep { "" } else { " and removes its folder" }
                );
                tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
                println!("\nstopping ...");
            }
            Ok(()) => {}
            Err(e) => {
                sandbox.print_log_tails();
                sandbox.stop();
                return Err(e);
            }
        }
        sandbox.stop();
        Ok(ExitCode::SUCCESS)
    })
}

async fn show(s: &mut Sandbox, started: Instant) -> anyhow::Result<()> {
    match &s.postgres {
        Some(pg) => println!(
            "PostgreSQL 15 found in {}: the pair replicates a database and files",
            pg.bin_dir.display()
        ),
        None => println!("{}: the pair replicates files only", s.no_postgres_because),
    }
    println!("sandbox in {}", s.dir.display());
    s.start_daemons()?;
    let (a, b, c) = (s.api(0)?, s.api(1)?, s.api(2)?);
    step("configuration cluster a + b + c", async {
        a.post("/v1/cluster/init", &json!({})).await?;
        a.post("/v1/cluster/members", &json!({ "peer": s.members[1].peer })).await?;
        a.post("/v1/cluster/members", &json!({ "peer": s.members[2].peer })).await?;
        Ok(())
    })
    .await?;
    let database = s.postgres.is_some();
    step(
        if database {
            "warm standby a -> b (PostgreSQL base backup, WAL, trees)"
        } else {
            "warm standby a -> b (trees)"
        },
        async {
            let primary = json!({ "mode": "primary", "peer": s.members[1].peer });
            a.post("/v1/standby/configure", &primary).await?;
            let standby = json!({ "mode": "standby", "peer": s.members[0].peer });
            b.post("/v1/standby/configure", &standby).await?;
            Ok(())
        },
    )
    .await?;

    let changes = if database {
        "a few changes: a conf change on c, a file and rows on the primary"
    } else {
        "a few changes: a conf change on c, a file on the primary"
    };
    step(changes, async {
        let change = ConfChange {
            conf_type: "macros".into(),
            scope: crate::api::parse_scope("app:search").map_err(anyhow::Error::msg)?,
            target: Target::Conf,
            op: Op::SetKey {
                stanza: "sandbox_macro".into(),
                key: "definition".into(),
                value: "index=main".into(),
            },
        };
        c.post("/v1/conf/changes", &json!({ "changes": [change] })).await?;
        s.members[0].write_file("vault/welcome.txt", "written on the primary, synced to the standby\n")?;
        if database {
            s.sql(
                0,
                "CREATE TABLE IF NOT EXISTS sandbox (note text, at timestamptz DEFAULT now()); \
                      INSERT INTO sandbox (note) VALUES ('hello from the primary')",
            )
            .await?;
        }
        Ok(())
    })
    .await?;
    step("the changes reached every member", async {
        let deadline = Instant::now() + STEP;
        loop {
            let conf = [0, 1, 2]
                .iter()
                .all(|&i| s.members[i].conf_has("apps/search/local/macros.conf", "sandbox_macro"));
            let file = s.members[1].read_file("vault/welcome.txt").is_some();
            let rows = !database || s.sql_count(1, "SELECT count(*) FROM sandbox").await.unwrap_or(0) > 0;
            if conf && file && rows {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not everywhere after {STEP:?}: conf {conf}, file {file}, rows {rows}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await?;

    for (api, name) in [(&a, "a (primary)"), (&b, "b (standby)")] {
        let status: crate::standby::StandbyStatus =
            serde_json::from_value(api.get("/v1/standby/status").await?)?;
        println!("\n`tandem standby status` on {name}:");
        print!("{}", crate::standby::status_text::render(&status, crate::plugin::now_ms()));
    }
    let cluster = a.get("/v1/cluster/status").await?;
    let members = cluster["members"].as_array().map_or(0, Vec::len);
    println!(
        "\nconfiguration cluster: {members} members, captain node {}",
        cluster["captain"].as_u64().map_or("?".into(), |l| l.to_string())
    );
    println!("ready in {:.1} s", started.elapsed().as_secs_f64());
    s.print_commands();
    Ok(())
}

async fn step(what: &str, work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let started = Instant::now();
    match tokio::time::timeout(STEP, work).await {
        Ok(Ok(())) => {
            println!("  ok  {what} ({:.1} s)", started.elapsed().as_secs_f64());
            Ok(())
        }
        Ok(Err(e)) => Err(e.context(format!("sandbox step `{what}`"))),
        Err(_) => bail!("sandbox step `{what}` took over {STEP:?}"),
    }
}

impl Sandbox {
    fn api(&self, i: usize) -> anyhow::Result<ApiClient> {
        let config = crate::config::Config::load(Some(&self.members[i].config))?;
        ApiClient::new(&config)?.with_timeout(STEP)
    }
}

impl Member {
    fn conf_has(&self, rel: &str, needle: &str) -> bool {
        std::fs::read_to_string(self.data.join("etc").join(rel)).is_ok_and(|t| t.contains(needle))
    }
}
