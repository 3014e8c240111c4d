//! Bringing up a new standby PostgreSQL: a base backup of the primary taken with
//! `pg_basebackup` (WAL for consistency streamed alongside, so the copy is usable by itself),
//! then the standby's configuration written so it follows tandem, not the primary:
//! `standby.signal`, a `primary_conninfo` naming tandem's walsender and, when the walsender
//! wants a password, the passfile it names ([`PASSFILE`] in the data folder, 0600, owned by the
//! PostgreSQL user): the password is never in `postgresql.auto.conf`.
//!
//! Must never: write into a non-empty data folder, or leave a password readable by others.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::auto_conf::{self, AutoConfError, Edit};

/// Errors of a base backup.
#[derive(Debug, thiserror::Error)]
pub enum BaseBackupError {
    #[error("{0} exists and is not empty: a base backup needs a new or empty folder")]
    NotEmpty(PathBuf),
    #[error("{program} not found in {dir}")]
    Missing { program: &'static str, dir: PathBuf },
    #[error("running {program}: {source}")]
    Spawn { program: &'static str, source: std::io::Error },
    #[error("{program} failed ({status}): {stderr}")]
    Failed { program: &'static str, status: String, stderr: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] AutoConfError),
}

/// Where to connect, as libpq keywords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name, address, or a Unix socket folder.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
}

/// One base backup.
#[derive(Debug, Clone)]
pub struct BaseBackup {
    /// Folder holding `pg_basebackup`.
    pub bin_dir: PathBuf,
    /// The primary PostgreSQL.
    pub primary: Endpoint,
    /// tandem's walsender, which the standby will stream from.
    pub walsender: Endpoint,
    /// The new standby's data folder.
    pub data_dir: PathBuf,
    /// Run as this OS user (PostgreSQL refuses root); `None` runs as ourselves.
    pub os_user: Option<String>,
    /// The standby's `application_name` (as the primary's `pg_stat_replication` shows it).
    pub application_name: String,
}

impl BaseBackup {
    /// Takes the backup and writes the standby's configuration. Blocking (minutes for a large
    /// database): run it in `spawn_blocking`.
    pub fn run(&self) -> Result<(), BaseBackupError> {
        if std::fs::read_dir(&self.data_dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(BaseBackupError::NotEmpty(self.data_dir.clone()));
        }
        let program = "pg_basebackup";
        let exe = self.bin_dir.join(program);
        if !exe.exists() {
            return Err(BaseBackupError::Missing { program, dir: self.bin_dir.clone() });
        }
        let mut cmd = as_user(&exe, self.os_user.as_deref());
        let p = &self.primary;
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-password",
                "-h",
                &p.host,
                "-p",
                &p.port.to_string(),
                "-U",
                &p.user,
            ])
            .env_remove("PGPASSWORD");
        if let Some(pw) = &p.password {
            cmd.env("PGPASSWORD", pw);
        }
        // A working directory every user may enter (runuser keeps ours otherwise).
        cmd.current_dir(self.data_dir.parent().unwrap_or(Path::new("/")));
        tracing::info!(primary = %format!("{}:{}", p.host, p.port), data = %self.data_dir.display(), "base backup");
        let out = cmd.output().map_err(|source| BaseBackupError::Spawn { program, source })?;
        if !out.status.success() {
            return Err(BaseBackupError::Failed {
                program,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        self.write_standby_config()
    }

    /// `standby.signal` and `primary_conninfo` pointing at tandem (see
    /// [`write_standby_config`]).
    pub fn write_standby_config(&self) -> Result<(), BaseBackupError> {
        write_standby_config(&self.data_dir, &self.walsender, &self.application_name, self.os_user.as_deref())
            .map(drop)
    }
}

/// The passfile `primary_conninfo` names, in the standby's data folder: the walsender's
/// password for the standby PostgreSQL (libpq reads it, and only at mode 0600).
pub const PASSFILE: &str = "tandem.pgpass";

/// The comment line above tandem's `primary_conninfo` in `postgresql.auto.conf`.
const STANDBY_MARK: &str =
    "# tandem: this standby streams from tandem's walsender, which streams from the primary";

/// Makes the cluster in `data_dir` a standby of `walsender`: `standby.signal`, and
/// `primary_conninfo` (and an empty `primary_slot_name`) at the end of `postgresql.auto.conf`;
/// with a password, the [`PASSFILE`] that conninfo names (without one, any old passfile goes).
/// Earlier `primary_conninfo`/`primary_slot_name` lines there are removed (the last line wins
/// anyway), so the file does not grow each time a host rejoins. Every file ends up owned by
/// `os_user` when given. Returns whether anything changed (an unchanged file is not rewritten).
pub fn write_standby_config(
    data_dir: &Path,
    walsender: &Endpoint,
    application_name: &str,
    os_user: Option<&str>,
) -> Result<bool, BaseBackupError> {
    let signal = data_dir.join("standby.signal");
    let mut changed = !signal.exists();
    std::fs::write(&signal, b"").map_err(|source| BaseBackupError::Write { path: signal.clone(), source })?;
    let passfile = data_dir.join(PASSFILE);
    let no_password = Endpoint { password: None, ..walsender.clone() };
    let mut info = conninfo(&no_password, application_name);
    let mut owned = vec![signal];
    match &walsender.password {
        Some(password) => {
            let line = format!("*:*:*:{}:{}\n", passfile_field(&walsender.user), passfile_field(password));
            if std::fs::read(&passfile).ok().as_deref() != Some(line.as_bytes()) {
                crate::durable::write_private(&passfile, line.as_bytes())
                    .map_err(|source| BaseBackupError::Write { path: passfile.clone(), source })?;
                changed = true;
            }
            info.push_str(&format!(" passfile={}", libpq_quote(&passfile.to_string_lossy())));
            owned.push(passfile);
        }
        None => changed |= remove_passfile(data_dir)?,
    }
    let edit = Edit {
        mark: STANDBY_MARK,
        set: &[("primary_conninfo", &info), ("primary_slot_name", "")],
        remove: &[],
    };
    changed |= edit.apply(data_dir, os_user)?;
    if let Some(user) = os_user {
        for path in &owned {
            auto_conf::chown(user, path)
                .map_err(|source| BaseBackupError::Write { path: path.clone(), source })?;
        }
    }
    Ok(changed)
}

/// Takes the cluster in `data_dir` off tandem's walsender, for good (the pair is off): its
/// `primary_conninfo` and `primary_slot_name` lines and the [`PASSFILE`] go; `standby.signal`
/// stays, so a standby stays a read-only copy (promoting it is the operator's choice). Returns
/// whether anything changed.
pub fn remove_standby_config(data_dir: &Path) -> Result<bool, BaseBackupError> {
    let had_passfile = remove_passfile(data_dir)?;
    let edit = Edit { mark: STANDBY_MARK, set: &[], remove: &["primary_conninfo", "primary_slot_name"] };
    Ok(edit.apply(data_dir, None)? || had_passfile)
}

/// Removes the [`PASSFILE`]; whether there was one.
fn remove_passfile(data_dir: &Path) -> Result<bool, BaseBackupError> {
    let passfile = data_dir.join(PASSFILE);
    match std::fs::remove_file(&passfile) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(BaseBackupError::Write { path: passfile, source: e }),
    }
}

/// A passfile field: `:` and `\` escaped with a backslash, as libpq reads them.
fn passfile_field(v: &str) -> String {
    v.replace('\\', "\\\\").replace(':', "\\:")
}

/// A command running `exe` as `os_user` (through `runuser`) when one is given: PostgreSQL's
/// programs refuse to run as root.
pub fn as_user(exe: &Path, os_user: Option<&str>) -> Command {
    match os_user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(exe);
            c
        }
        None => Command::new(exe),
    }
}

/// Where PostgreSQL's programs are: `TANDEM_PG_BIN`, Debian's `/usr/lib/postgresql/15/bin`,
/// or the folder `pg_ctl` on PATH links to.
pub fn default_bin_dir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("pg_basebackup").exists() && d.join("pg_ctl").exists();
    if let Some(dir) = std::env::var_os("TANDEM_PG_BIN").map(PathBuf::from) {
        return has(&dir).then_some(dir);
    }
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if has(&debian) {
        return Some(debian);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .filter_map(|d| std::fs::canonicalize(d.join("pg_ctl")).ok())
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .find(|d| has(d))
}

/// A libpq connection string (values quoted as libpq wants).
pub fn conninfo(e: &Endpoint, application_name: &str) -> String {
    let mut parts = vec![
        format!("host={}", libpq_quote(&e.host)),
        format!("port={}", e.port),
        format!("user={}", libpq_quote(&e.user)),
        format!("application_name={}", libpq_quote(application_name)),
    ];
    if let Some(pw) = &e.password {
        parts.push(format!("password={}", libpq_quote(pw)));
    }
    parts.join(" ")
}

/// libpq: single quotes around the value, backslash before `'` and `\`.
fn libpq_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quotes_what_libpq_and_the_config_file_need() {
        let e = Endpoint {
            host: "127.0.0.1".into(),
            port: 5433,
            user: "rep".into(),
            password: Some("a'b\\c".into()),
        };
        let c = conninfo(&e, "standby 1");
        assert_eq!(
            c,
            r"host='127.0.0.1' port=5433 user='rep' application_name='standby 1' password='a\'b\\c'"
        );
        let quoted = auto_conf::quote(&c);
        assert_eq!(quoted.matches("''").count(), 9);
        // Every backslash libpq needs survives the config parser: doubled once more.
        assert!(quoted.ends_with(r"password=''a\\''b\\\\c''"), "{quoted}");
    }

    #[test]
    fn standby_config_replaces_earlier_conninfo_lines() {
        let dir = tempfile::tempdir().unwrap();
        let auto = dir.path().join("postgresql.auto.conf");
        std::fs::write(
            &auto,
            "# Do not edit this file manually!\nwork_mem = '8MB'\nprimary_conninfo = 'host=old'\n",
        )
        .unwrap();
        let e = Endpoint { host: "10.0.0.1".into(), port: 5433, user: "rep".into(), password: None };
        for _ in 0..3 {
            write_standby_config(dir.path(), &e, "app", None).unwrap();
        }
        let text = std::fs::read_to_string(&auto).unwrap();
        assert_eq!(text.matches("primary_conninfo").count(), 1, "{text}");
        assert_eq!(text.matches(STANDBY_MARK).count(), 1, "{text}");
        assert!(text.starts_with("# Do not edit this file manually!\nwork_mem = '8MB'\n"), "{text}");
        assert!(text.contains("host=''10.0.0.1''"), "{text}");
        assert!(dir.path().join("standby.signal").exists());
        // a new file is private: it may hold a password
        std::fs::remove_file(&auto).unwrap();
        write_standby_config(dir.path(), &e, "app", None).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&auto).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_password_goes_to_a_private_passfile_never_into_the_config() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let e = Endpoint {
            host: "127.0.0.1".into(),
            port: 5433,
            user: "rep:1".into(),
            password: Some("s3cr:et\\".into()),
        };
        write_standby_config(dir.path(), &e, "app", None).unwrap();
        let auto = std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(!auto.contains("s3cr") && !auto.contains("password="), "{auto}");
        let passfile = dir.path().join(PASSFILE);
        assert!(auto.contains(&format!("passfile=''{}''", passfile.display())), "{auto}");
        assert_eq!(std::fs::read_to_string(&passfile).unwrap(), "*:*:*:rep\\:1:s3cr\\:et\\\\\n");
        assert_eq!(std::fs::metadata(&passfile).unwrap().permissions().mode() & 0o777, 0o600);

        // Off: the walsender's lines and the passfile go, the rest (and standby.signal) stays.
        std::fs::write(dir.path().join("postgresql.auto.conf"), format!("work_mem = '8MB'\n{auto}")).unwrap();
        assert!(remove_standby_config(dir.path()).unwrap());
        let auto = std::fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        assert_eq!(auto, "work_mem = '8MB'\n");
        assert!(!passfile.exists() && dir.path().join("standby.signal").exists());
        assert!(!remove_standby_config(dir.path()).unwrap(), "nothing left to remove");
    }

    #[test]
    fn refuses_a_folder_with_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "15").unwrap();
        let e = Endpoint { host: "h".into(), port: 1, user: "u".into(), password: None };
        let b = BaseBackup {
            bin_dir: dir.path().into(),
            primary: e.clone(),
            walsender: e,
            data_dir: dir.path().into(),
            os_user: None,
            application_name: "x".into(),
        };
        assert!(matches!(b.run(), Err(BaseBackupError::NotEmpty(_))));
    }
}
