//! The data folder, claimed before anything is written to it: made private, then locked, so
//! a second daemon on the same folder stops before it touches a file of the running one
//! (`api.addr`, `peer.addr`, its logs).
//!
//! Private means mode 0700 for the data folder and the log folder, narrowed if an older
//! release or a person made them wider (a log folder outside the data folder only when tandem
//! makes it: an existing one may be shared, and the log files are 0600 anyway). The one
//! exception: when a local PostgreSQL runs as
//! another OS user and its server log lies under one of them (the default
//! `<log dir>/postgresql.log`), `pg_ctl` must pass through them as that user to open the log,
//! so those folders get 0711: passable, never listable, and every file tandem keeps in them is
//! 0600 itself.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::durable;
use crate::standby::postgres::LocalPg;

/// The lock file in the data folder, held while a daemon runs.
pub const LOCK_FILE: &str = "daemon.lock";
/// Folders only tandem uses.
const PRIVATE: u32 = 0o700;
/// Folders another user's program passes through to a file of its own (see the module doc).
const PASSABLE: u32 = 0o711;

/// A claimed data folder; the claim lasts as long as this value.
pub struct DataDir {
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("preparing the folder {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("another tandem daemon runs on the data folder {} (it holds {})", dir.display(), lock.display())]
    Locked { dir: PathBuf, lock: PathBuf },
}

impl DataDir {
    /// Makes the data and log folders private and takes the data folder's lock; see the
    /// module doc. Does not wait for the lock.
    pub fn claim(config: &Config) -> Result<Self, DataDirError> {
        let passed = passed_by_postgres(config);
        let mode = |dir: &Path| if passed.iter().any(|p| p == dir) { PASSABLE } else { PRIVATE };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DataDirError::Io { path, source }
        };
        let dir = &config.data_dir;
        durable::private_dir(dir, mode(dir)).map_err(io(dir))?;
        let lock = dir.join(LOCK_FILE);
        let held = durable::lock_exclusive(&lock, Duration::ZERO).map_err(io(&lock))?;
        let Some(held) = held else {
            return Err(DataDirError::Locked { dir: dir.clone(), lock });
        };
        // A log folder of its own is made private; an existing one elsewhere may be shared
        // (`/var/log`) and is left as it is: the log files are private themselves.
        if let Some(logs) = config.log.dir.as_ref().filter(|l| l.starts_with(dir) || !l.exists()) {
            durable::private_dir(logs, mode(logs)).map_err(io(logs))?;
        }
        Ok(Self { _lock: held })
    }
}

/// The folders a local PostgreSQL of another OS user passes through to its server log.
fn passed_by_postgres(config: &Config) -> Vec<PathBuf> {
    let log_dir = config.log.dir.clone().unwrap_or_else(|| config.data_dir.join("logs"));
    match LocalPg::from_config(&config.standby, &log_dir) {
        Ok(Some(pg)) if pg.os_user.is_some() => {
            pg.log_file.ancestors().skip(1).map(Path::to_path_buf).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn config(dir: &Path) -> Config {
        Config::parse(&format!("data_dir = \"{}/data\"\n", dir.display())).unwrap().resolved().unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Regression (issue 14): the data folder was 0755 (the raft log, every replicated value,
    /// readable by any local user), and a second daemon took the lock only after rewriting
    /// the running one's `api.addr` and `peer.addr`.
    #[test]
    fn the_data_folder_is_private_and_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        std::fs::create_dir_all(&c.data_dir).unwrap();
        std::fs::set_permissions(&c.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let claimed = DataDir::claim(&c).unwrap();
        assert_eq!(mode(&c.data_dir), 0o700);
        assert_eq!(mode(c.log.dir.as_ref().unwrap()), 0o700);
        let second = DataDir::claim(&c).err().expect("a second claim is refused").to_string();
        assert!(second.contains("another tandem daemon runs on the data folder"), "{second}");
        drop(claimed);
        DataDir::claim(&c).unwrap();
    }

    #[test]
    fn a_shared_log_folder_elsewhere_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("var-log");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = format!("data_dir = \"{0}/data\"\n[log]\ndir = \"{0}/var-log\"\n", dir.path().display());
        let c = Config::parse(&text).unwrap().resolved().unwrap();
        let _claimed = DataDir::claim(&c).unwrap();
        assert_eq!(mode(&shared), 0o755);
        assert_eq!(mode(&c.data_dir), 0o700);
    }
}
