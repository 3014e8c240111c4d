//! The local PostgreSQL's programs and data folder: `pg_ctl` (status, start, stop),
//! `pg_rewind`, moving the data folder aside, and the standby configuration. Every program runs
//! as `os_user` (when tandem is root) from `/`, a folder every user may enter.
//!
//! Blocking (a start waits up to a minute, a rewind longer): callers use `spawn_blocking`.
//! Must never: pass a password on a command line (`PGPASSWORD` in the environment instead).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{LocalPg, PgError};
use crate::wal::auto_conf;
use crate::wal::base_backup::{self, Endpoint};

/// The comment above the port and socket folder in `postgresql.auto.conf`.
const LISTEN_MARK: &str = "# tandem: where tandem starts this server (so a plain pg_ctl start does too)";
/// `pg_ctl -t`: how long a start or stop may take, seconds.
const PG_CTL_WAIT_SECS: &str = "60";
/// How much of the server log a failed start quotes.
const LOG_TAIL_BYTES: u64 = 2048;
/// `connect_timeout` of pg_rewind's connection to the source, seconds.
const REWIND_CONNECT_TIMEOUT_SECS: u32 = 10;
/// `application_name` of pg_rewind's connection (as the source's `pg_stat_activity` shows it).
pub const REWIND_APPLICATION_NAME: &str = "tandem-rewind";

/// How `pg_ctl stop` shuts the server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, checkpoint, stop: a clean shutdown.
    Fast,
    /// Stop every process at once; the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

impl LocalPg {
    /// [`LocalPg::is_running`] off the async runtime (it runs `pg_ctl status`).
    pub async fn running(&self) -> bool {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.is_running()).await.unwrap_or(false)
    }

    /// Whether a server runs in `data_dir` (`pg_ctl status`; a missing or unreadable folder
    /// counts as not running).
    pub fn is_running(&self) -> bool {
        let Ok(mut cmd) = self.command("pg_ctl") else {
            return false;
        };
        cmd.arg("status").arg("-D").arg(&self.data_dir);
        match cmd.output() {
            Ok(out) => out.status.success(),
            Err(e) => {
                tracing::warn!(error = %e, "pg_ctl status could not run");
                false
            }
        }
    }

    /// Starts the server on `port` with its socket in `socket_dir`, logging to `log_file`, and
    /// waits until it accepts connections (or, for a standby, reaches a consistent state). Ok
    /// if it runs already. The port and socket folder are written into `postgresql.auto.conf`
    /// first, so a plain `pg_ctl start` (an operator's, a boot script's) brings it up where
    /// tandem expects it, not on 5432 or on the port a base backup copied from the primary.
    pub fn start(&self) -> Result<(), PgError> {
        if self.is_running() {
            tracing::info!(data = %self.data_dir.display(), "PostgreSQL runs already");
            return Ok(());
        }
        self.prepare_log_file()?;
        let (port, socket_dir) = (self.port.to_string(), self.socket_dir.to_string_lossy());
        let edit = auto_conf::Edit {
            mark: LISTEN_MARK,
            set: &[("port", &port), ("unix_socket_directories", &socket_dir)],
            remove: &[],
        };
        edit.apply(&self.data_dir, self.os_user.as_deref())?;
        let opts = format!("-p {} -k {}", self.port, shell_quote(&self.socket_dir.to_string_lossy()));
        let mut cmd = self.command("pg_ctl")?;
        cmd.arg("start").arg("-D").arg(&self.data_dir).arg("-l").arg(&self.log_file);
        cmd.args(["-o", &opts, "-w", "-t", PG_CTL_WAIT_SECS]);
        tracing::info!(data = %self.data_dir.display(), port = self.port, "starting PostgreSQL");
        match self.run("pg_ctl", "start", cmd) {
            Err(PgError::Failed { program, action, status, detail }) => {
                let log = log_tail(&self.log_file);
                let detail = format!("{detail}\n{} ends with:\n{log}", self.log_file.display());
                Err(PgError::Failed { program, action, status, detail })
            }
            other => other.map(drop),
        }
    }

    /// Stops the server and waits for it; Ok if it was not running.
    pub fn stop(&self, mode: StopMode) -> Result<(), PgError> {
        if !self.is_running() {
            return Ok(());
        }
        let mut cmd = self.command("pg_ctl")?;
        cmd.arg("stop").arg("-D").arg(&self.data_dir);
        cmd.args(["-m", mode.as_arg(), "-w", "-t", PG_CTL_WAIT_SECS]);
        tracing::info!(data = %self.data_dir.display(), mode = mode.as_arg(), "stopping PostgreSQL");
        match self.run("pg_ctl", "stop", cmd) {
            // It stopped by itself meanwhile.
            Err(_) if !self.is_running() => Ok(()),
            other => other.map(drop),
        }
    }

    /// A fast stop, then a start (with this `LocalPg`'s port, socket and log).
    pub fn restart(&self) -> Result<(), PgError> {
        self.stop(StopMode::Fast)?;
        self.start()
    }

    /// Moves the data folder to `to` (a rename on the same filesystem; never a copy). The
    /// server must be stopped.
    pub fn move_aside(&self, to: &Path) -> Result<(), PgError> {
        if self.is_running() {
            return Err(PgError::Running(self.data_dir.clone()));
        }
        let aside = || (self.data_dir.clone(), to.to_path_buf());
        if std::fs::symlink_metadata(to).is_ok() {
            let (from, to) = aside();
            return Err(PgError::AsideExists { from, to });
        }
        std::fs::rename(&self.data_dir, to).map_err(|source| {
            if source.raw_os_error() == Some(libc::EXDEV) {
                let (from, to) = aside();
                PgError::AsideCrossDevice { from, to }
            } else {
                PgError::Io { what: "moving aside the data folder", path: self.data_dir.clone(), source }
            }
        })?;
        tracing::warn!(from = %self.data_dir.display(), to = %to.display(), "moved the data folder aside");
        Ok(())
    }

    /// Rewinds this (former primary's) data folder to the timeline of `source`, the new
    /// primary, with `pg_rewind`. A running server is stopped (fast) first; a crashed one is
    /// fine: pg_rewind runs its crash recovery in single-user mode first. `source.user` needs
    /// LOGIN, the EXECUTE grants [`LocalPg::prepare_primary`] gives, and a `pg_hba.conf` line
    /// for the `postgres` database. Returns how long pg_rewind took.
    pub fn rewind(&self, source: &Endpoint) -> Result<Duration, PgError> {
        self.stop(StopMode::Fast)?;
        let cmd = self.rewind_command(source, false)?;
        tracing::info!(data = %self.data_dir.display(), source = %format!("{}:{}", source.host, source.port), "pg_rewind");
        let started = Instant::now();
        let out = self.run("pg_rewind", "rewind", cmd)?;
        let took = started.elapsed();
        tracing::info!(took_ms = took.as_millis() as u64, output = %String::from_utf8_lossy(&out.stderr).trim(), "pg_rewind done");
        Ok(took)
    }

    /// `pg_rewind` of this data folder from `source` (`--dry-run`: only say what it would do).
    pub(super) fn rewind_command(&self, source: &Endpoint, dry_run: bool) -> Result<Command, PgError> {
        let no_password = Endpoint { password: None, ..source.clone() };
        let conninfo = format!(
            "{} dbname=postgres connect_timeout={REWIND_CONNECT_TIMEOUT_SECS}",
            base_backup::conninfo(&no_password, REWIND_APPLICATION_NAME)
        );
        let mut cmd = self.command("pg_rewind")?;
        cmd.arg("--target-pgdata").arg(&self.data_dir).arg("--source-server").arg(&conninfo);
        if dry_run {
            cmd.arg("--dry-run");
        }
        if let Some(pw) = &source.password {
            cmd.env("PGPASSWORD", pw);
        }
        Ok(cmd)
    }

    /// `standby.signal` and a `primary_conninfo` naming `walsender` (tandem's), replacing
    /// earlier `primary_conninfo` lines (see [`base_backup::write_standby_config`]); whether
    /// anything changed.
    pub fn write_standby_config(
        &self,
        walsender: &Endpoint,
        application_name: &str,
    ) -> Result<bool, PgError> {
        Ok(base_backup::write_standby_config(
            &self.data_dir,
            walsender,
            application_name,
            self.os_user.as_deref(),
        )?)
    }

    /// `program` from `bin_dir`, as `os_user` when set, from `/`, without an inherited
    /// `PGPASSWORD`.
    pub(crate) fn command(&self, program: &'static str) -> Result<Command, PgError> {
        let exe = self.bin_dir.join(program);
        if !exe.exists() {
            return Err(PgError::Missing { program, dir: self.bin_dir.clone() });
        }
        let mut cmd = base_backup::as_user(&exe, self.os_user.as_deref());
        cmd.current_dir("/").env_remove("PGPASSWORD");
        Ok(cmd)
    }

    pub(crate) fn run(
        &self,
        program: &'static str,
        action: &'static str,
        mut cmd: Command,
    ) -> Result<Output, PgError> {
        let out = cmd.output().map_err(|source| PgError::Spawn { program, source })?;
        if out.status.success() {
            return Ok(out);
        }
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if detail.is_empty() {
            detail = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        Err(PgError::Failed { program, action, status: out.status.to_string(), detail })
    }

    /// The log file exists and `os_user` may append to it (pg_ctl opens it as that user).
    fn prepare_log_file(&self) -> Result<(), PgError> {
        fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PgError {
            let path = path.to_path_buf();
            move |source| PgError::Io { what, path, source }
        }
        if let Some(dir) = self.log_file.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating the log folder", dir))?;
        }
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log_file)
            .map_err(io("creating the server log", &self.log_file))?;
        if let Some(user) = &self.os_user {
            let out = Command::new("chown").arg(user).arg(&self.log_file).output();
            let failed = match out {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(std::io::Error::other(String::from_utf8_lossy(&o.stderr).trim().to_owned())),
                Err(e) => Some(e),
            };
            if let Some(source) = failed {
                return Err(PgError::Io {
                    what: "giving the server log to the PostgreSQL user",
                    path: self.log_file.clone(),
                    source,
                });
            }
        }
        Ok(())
    }
}

/// `sh` single quotes (pg_ctl hands `-o` to a shell).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The last [`LOG_TAIL_BYTES`] of the server log, for a failed start's error.
fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).trim().to_owned())
    };
    read().unwrap_or_else(|e| format!("(unreadable: {e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_aside_renames_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("PG_VERSION"), "15").unwrap();
        let pg = LocalPg {
            // No programs: pg_ctl status cannot run, so the server counts as stopped.
            bin_dir: dir.path().join("no-bin"),
            data_dir: data.clone(),
            port: 5432,
            socket_dir: dir.path().into(),
            os_user: None,
            superuser: "postgres".into(),
            log_file: dir.path().join("log"),
        };
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        assert!(matches!(pg.move_aside(&taken), Err(PgError::AsideExists { .. })));
        assert!(data.join("PG_VERSION").exists(), "left in place");
        let aside = dir.path().join("data.aside");
        pg.move_aside(&aside).unwrap();
        assert!(aside.join("PG_VERSION").exists() && !data.exists());
    }

    #[test]
    fn socket_folder_is_quoted_for_the_shell() {
        assert_eq!(shell_quote("/var/run/postgresql"), "'/var/run/postgresql'");
        assert_eq!(shell_quote("/tmp/it's here"), r"'/tmp/it'\''s here'");
    }
}
