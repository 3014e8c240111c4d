//! The sandbox's parts: its folder, three members (their `tandem.toml`, ports, daemon
//! processes), the primary's PostgreSQL made with initdb, and the clean stop that takes all of
//! it down again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::SandboxArgs;
use crate::standby::postgres::{LocalPg, StopMode, is_root};

/// PostgreSQL as the sandbox uses it.
pub struct Postgres {
    pub bin_dir: PathBuf,
    pub os_user: Option<String>,
}

/// One member.
pub struct Member {
    pub name: &'static str,
    pub root: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
    pub app: PathBuf,
    pub peer: String,
    pub api: u16,
    /// Its PostgreSQL (a and b when PostgreSQL is installed).
    pub pg: Option<LocalPg>,
    child: Option<Child>,
}

pub struct Sandbox {
    pub dir: PathBuf,
    pub members: Vec<Member>,
    pub postgres: Option<Postgres>,
    pub no_postgres_because: String,
    keep: bool,
    stopped: bool,
}

impl Sandbox {
    /// The folder, the configurations, and the primary's database (not yet the daemons).
    pub fn create(args: &SandboxArgs) -> anyhow::Result<Sandbox> {
        let dir = match &args.dir {
            Some(d) => std::path::absolute(d)?,
            None => std::env::temp_dir().join(format!("tandem-sandbox-{}", std::process::id())),
        };
        if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
            bail!("{} exists and is not empty: pick another --dir", dir.display());
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Self::create_in(dir.clone(), args).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })
    }

    fn create_in(dir: PathBuf, args: &SandboxArgs) -> anyhow::Result<Sandbox> {
        let (postgres, no_postgres_because) = if args.no_postgres {
            (None, "--no-postgres".to_string())
        } else {
            match find_postgres() {
                Ok(pg) => (Some(pg), String::new()),
                Err(why) => (None, why),
            }
        };
        let secret = dir.join("cluster.secret");
        crate::peer::ClusterSecret::load_or_create(&secret)?;
        let mut members = Vec::new();
        for name in ["a", "b", "c"] {
            let root = dir.join(name);
            std::fs::create_dir_all(root.join("app"))?;
            let with_pg = postgres.as_ref().filter(|_| name != "c");
            let mut toml = format!(
                "node_name = \"{name}\"\ndata_dir = \"{data}\"\n\
                 [peer]\nlisten = \"127.0.0.1:{peer}\"\nsecret_file = \"{secret}\"\n\
                 [api]\nlisten = \"127.0.0.1:{api}\"\n\
                 [sync]\napp_home = \"{app}\"\n",
                data = root.join("data").display(),
                peer = free_port()?,
                secret = secret.display(),
                api = free_port()?,
                app = root.join("app").display(),
            );
            let mut pg = None;
            if let Some(p) = with_pg {
                let (port, sock, pg_data) = (free_port()?, root.join("sock"), root.join("pg"));
                std::fs::create_dir_all(&sock)?;
                toml.push_str(&format!(
                    "[wal]\nlisten = \"127.0.0.1:{}\"\nreserve_segments = 8\nstatus_interval_ms = 1000\n\
                     [standby]\npg_data = \"{}\"\npg_bin = \"{}\"\npg_port = {port}\npg_socket_dir = \"{}\"\n",
                    free_port()?,
                    pg_data.display(),
                    p.bin_dir.display(),
                    sock.display()
                ));
                if let Some(user) = &p.os_user {
                    chown(&root, user)?;
                }
                pg = Some(LocalPg {
                    bin_dir: p.bin_dir.clone(),
                    data_dir: pg_data,
                    port,
                    socket_dir: sock,
                    os_user: p.os_user.clone(),
                    superuser: "postgres".into(),
                    log_file: root.join("postgresql.log"),
                });
            }
            let config = root.join("tandem.toml");
            std::fs::write(&config, toml)?;
            let loaded = crate::config::Config::load(Some(&config))?;
            let (peer, api) = (loaded.peer.listen.to_string(), loaded.api.listen.port());
            members.push(Member {
                name,
                data: root.join("data"),
                app: root.join("app"),
                config,
                root,
                peer,
                api,
                pg,
                child: None,
            });
        }
        let sandbox =
            Sandbox { dir, members, postgres, no_postgres_because, keep: args.keep, stopped: false };
        if let Some(pg) = &sandbox.members[0].pg {
            initdb(pg)?;
            pg.start().context("starting the primary's PostgreSQL")?;
        }
        Ok(sandbox)
    }

    /// Starts the three daemons and waits for their APIs.
    pub fn start_daemons(&mut self) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        for m in &mut self.members {
            let out = std::fs::File::create(m.root.join("daemon.out"))?;
            let child = Command::new(&exe)
                .env_remove("TANDEM_CONFIG")
                .arg("--config")
                .arg(&m.config)
                .arg("daemon")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting member {}", m.name))?;
            m.child = Some(child);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for m in &mut self.members {
            while !m.data.join(crate::daemon::API_ADDR_FILE).exists() {
                if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    bail!("member {} exited ({status}); see {}", m.name, m.root.join("daemon.out").display());
                }
                if Instant::now() > deadline {
                    bail!("member {} did not come up within a minute", m.name);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Runs SQL on member `i`'s database.
    pub async fn sql(&self, i: usize, sql: &str) -> anyhow::Result<()> {
        let pg = self.members[i].pg.as_ref().context("no database")?;
        pg.client().await?.batch_execute(sql).await?;
        Ok(())
    }

    pub async fn sql_count(&self, i: usize, sql: &str) -> anyhow::Result<i64> {
        let pg = self.members[i].pg.as_ref().context("no database")?;
        Ok(pg.client().await?.query_one(sql, &[]).await?.get(0))
    }

    pub fn print_commands(&self) {
        let exe = std::env::current_exe().map_or("tandem".into(), |p| p.display().to_string());
        let t = |i: usize| format!("{exe} -c {}", self.members[i].config.display());
        let (a, b) = (&self.members[0], &self.members[1]);
        println!("\nTry, from another terminal:");
        println!("  {} standby status              # the primary", t(0));
        println!("  {} standby status --json       # the standby, every fact", t(1));
        println!(
            "  echo hi > {}/vault/hi.txt; sleep 1; cat {}/vault/hi.txt",
            a.app.display(),
            b.app.display()
        );
        println!("  {} conf set --type macros --scope app:search m2 definition 'index=x'", t(2));
        println!("  {} conf get --type macros --scope app:search", t(1));
        println!("  {} cluster status", t(0));
        if let (Some(pa), Some(pb)) = (&a.pg, &b.pg) {
            let psql = pa.bin_dir.join("psql");
            let user = pa.os_user.as_ref().map(|u| format!("runuser -u {u} -- ")).unwrap_or_default();
            println!(
                "  {user}{} -h {} -p {} -U postgres -c \"INSERT INTO sandbox (note) VALUES ('more')\"",
                psql.display(),
                pa.socket_dir.display(),
                pa.port
            );
            println!(
                "  {user}{} -h {} -p {} -U postgres -c 'SELECT * FROM sandbox'   # on the standby",
                psql.display(),
                pb.socket_dir.display(),
                pb.port
            );
        }
        println!("  curl -s http://127.0.0.1:{}/health; curl -s http://127.0.0.1:{}/metrics", b.api, b.api);
        println!("  {} standby convert-to-primary --force   # fail over (--force: a is still up)", t(1));
        println!("  logs: {}/logs/ (warm_standby.log, wal.log, sync_<tree>.log, ...)", b.data.display());
    }

    pub fn print_log_tails(&self) {
        for m in &self.members {
            let log = std::fs::read_to_string(m.data.join("logs/tandem.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("--- last log lines of member {} ---", m.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }

    /// Stops the daemons, then the databases, then removes the folder (unless --keep).
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        for m in &mut self.members {
            if let Some(child) = &m.child {
                // SAFETY: kill has no memory effects; the pid is our own unreaped child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let deadline = Instant::now() + Duration::from_secs(10);
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            if let Some(pg) = &m.pg
                && pg.is_running()
                && let Err(e) = pg.stop(StopMode::Fast)
            {
                eprintln!("stopping {}'s PostgreSQL: {e}", m.name);
            }
        }
        if self.keep {
            println!("kept {}", self.dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        } else {
            println!("stopped; {} removed", self.dir.display());
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Member {
    pub fn write_file(&self, rel: &str, text: &str) -> anyhow::Result<()> {
        let path = self.app.join(rel);
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    pub fn read_file(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.app.join(rel)).ok()
    }
}

/// PostgreSQL 15's programs, and the user to run them as; or why the sandbox goes files only.
fn find_postgres() -> Result<Postgres, String> {
    let bin_dir = crate::wal::base_backup::default_bin_dir()
        .filter(|d| d.join("initdb").exists() && d.join("pg_rewind").exists())
        .ok_or("PostgreSQL 15 not found (no initdb/pg_ctl/pg_basebackup/pg_rewind; set TANDEM_PG_BIN)")?;
    let os_user = if is_root() {
        let exists = Command::new("id").arg("postgres").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if !exists.is_ok_and(|s| s.success()) {
            return Err("running as root without a `postgres` user to run PostgreSQL as".into());
        }
        Some("postgres".to_string())
    } else {
        None
    };
    Ok(Postgres { bin_dir, os_user })
}

fn initdb(pg: &LocalPg) -> anyhow::Result<()> {
    let mut cmd = pg.command("initdb")?;
    cmd.arg("-D").arg(&pg.data_dir).args(["-U", "postgres", "-A", "trust", "--no-sync"]);
    pg.run("initdb", "create the sandbox's cluster", cmd)?;
    Ok(())
}

fn chown(path: &Path, user: &str) -> anyhow::Result<()> {
    let ok = Command::new("chown").arg("-R").arg(user).arg(path).status().is_ok_and(|s| s.success());
    if !ok {
        bail!("chown {user} {} failed", path.display());
    }
    Ok(())
}

/// A free port below the kernel's ephemeral range (32768 and up), where outgoing connections
/// take their ports: a port picked there and freed could be taken by a connection before the
/// daemon binds it.
fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let mut seed = [0u8; 2];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("random: {e}"))?;
    let _ = NEXT.compare_exchange(
        0,
        20_000 + u16::from_le_bytes(seed) % 10_000,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..2_000 {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = if port >= 32_000 { 20_000 + port % 12_000 } else { port };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between 20000 and 32000 on 127.0.0.1")
}
