//! The hard fences of an old primary's database (see the standby module's `fence`): a clean
//! stop, and a demotion (a clean stop, then a start in recovery that follows nothing), and where
//! the database's WAL ended (its control file's last checkpoint).
//!
//! A clean (fast) stop is what makes either fence lose nothing: PostgreSQL writes a shutdown
//! checkpoint and its walsenders send every WAL byte up to it, and wait for the client to
//! confirm it flushed them, before the server exits; tandem's receiver on the standby side is
//! such a client, and confirms only what its archive holds durably.
//!
//! Blocking (pg_ctl waits): callers use `spawn_blocking`. Must never: start the database
//! without `standby.signal` once it is fenced, or leave it following a walsender.

use super::{LocalPg, PgError, StopMode};
use crate::wal::Lsn;
use crate::wal::base_backup::remove_standby_config;

/// The recovery signal file: with it, PostgreSQL starts as a standby (read-only).
const STANDBY_SIGNAL: &str = "standby.signal";

impl LocalPg {
    /// A clean stop; where the WAL ends (the shutdown checkpoint) when it stopped cleanly.
    pub fn stop_fenced(&self) -> Result<Option<Lsn>, PgError> {
        self.stop(StopMode::Fast)?;
        self.clean_end()
    }

    /// Demotes the database: a clean stop, `standby.signal` and no `primary_conninfo`, then a
    /// start in recovery with no upstream, where every session is read-only and reads are still
    /// served. A database that was not running is not started (`standby.signal` makes its next
    /// start read-only). Returns where the WAL ends when it is known (a clean stop).
    pub fn demote(&self) -> Result<Option<Lsn>, PgError> {
        let was_running = self.is_running();
        let end = self.stop_fenced()?;
        self.write_standby_signal()?;
        // Its days as a standby may have left tandem's walsender named there: follow nothing.
        remove_standby_config(&self.data_dir)?;
        if was_running {
            self.start()?;
        }
        Ok(end)
    }

    /// `standby.signal` in the data folder, owned by `os_user`.
    fn write_standby_signal(&self) -> Result<(), PgError> {
        let path = self.data_dir.join(STANDBY_SIGNAL);
        let io = |source| PgError::Io { what: "writing", path: path.clone(), source };
        std::fs::write(&path, b"").map_err(io)?;
        if let Some(user) = &self.os_user {
            crate::wal::auto_conf::chown(user, &path).map_err(io)?;
        }
        Ok(())
    }

    /// `Latest checkpoint location` of a cleanly stopped cluster (the shutdown checkpoint, its
    /// last WAL record); `None` when it did not stop cleanly.
    pub fn clean_end(&self) -> Result<Option<Lsn>, PgError> {
        let text = self.controldata()?;
        if !matches!(field(&text, "Database cluster state:"), "shut down" | "shut down in recovery") {
            return Ok(None);
        }
        let value = field(&text, "Latest checkpoint location:");
        value.parse().map(Some).map_err(|source| PgError::BadLsn {
            what: "pg_controldata's latest checkpoint location",
            value: value.to_owned(),
            source,
        })
    }

    /// `pg_controldata`'s report (in the C locale).
    pub(super) fn controldata(&self) -> Result<String, PgError> {
        let mut cmd = self.command("pg_controldata")?;
        cmd.arg("-D").arg(&self.data_dir).env("LC_ALL", "C");
        let out = self.run("pg_controldata", "read", cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The value of `pg_controldata`'s line `name` (empty when absent).
pub(super) fn field<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn controldata_fields_are_read_by_name() {
        let text = "pg_control version number:            1300\n\
                    Database cluster state:               shut down in recovery\n\
                    Latest checkpoint location:           0/3001B70\n";
        assert_eq!(super::field(text, "Database cluster state:"), "shut down in recovery");
        assert_eq!(super::field(text, "Latest checkpoint location:"), "0/3001B70");
        assert_eq!(super::field(text, "Nope:"), "");
    }
}
