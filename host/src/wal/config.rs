//! Settings of WAL streaming (`[wal]` in tandem.toml): the primary PostgreSQL to stream from,
//! the slot tandem owns there, where the archive lives and how much it may keep, and where the
//! walsender listens for the standby PostgreSQL. Owns validation and the translation into the
//! client's and archive's own configs; never does I/O except reading a password file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::archive::{ArchiveConfig, FlushPolicy, SegmentInit};
use super::base_backup::Endpoint;
use super::client::{ConnConfig, validate_slot_name};

/// The slot tandem creates on the primary.
pub const DEFAULT_SLOT: &str = "tandem";
/// The replication role on the primary.
pub const DEFAULT_PRIMARY_USER: &str = "replicator";
/// Where the walsender listens for the standby PostgreSQL.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
/// Status updates to the primary at least this often (PostgreSQL's wal_receiver_status_interval).
pub const DEFAULT_STATUS_INTERVAL_MS: u64 = 10_000;
/// Longest wait between reconnection attempts.
pub const DEFAULT_RETRY_MAX_MS: u64 = 5_000;
/// Largest disk cap accepted (1 PiB), so the byte count cannot overflow.
pub const MAX_DISK_CAP_MIB: u64 = 1 << 30;
/// Largest batch of WAL written before one fsync (the disk thread also flushes whenever it has
/// nothing more queued).
pub const GROUP_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Longest an unflushed byte waits while WAL keeps arriving.
pub const GROUP_MAX_DELAY: Duration = Duration::from_millis(20);
/// The walsender's generated password, in the WAL state folder (mode 0600).
pub const WALSENDER_PASSWORD_FILE: &str = "walsender.password";

/// How the standby PostgreSQL must prove itself to tandem's walsender (which serves the whole
/// database's WAL). See the walsender's module doc for why a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StandbyAuth {
    /// SCRAM-SHA-256 as `standby_user`, with the password in `standby_password_file`, or one
    /// tandem generates into `<dir>/walsender.password` and hands to the standby PostgreSQL in
    /// a passfile named by its `primary_conninfo`.
    #[default]
    Password,
    /// Every client, no password (PostgreSQL's `trust`): only when the site asks for it, and
    /// only on loopback.
    Trust,
}

/// `[wal]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// The primary PostgreSQL: a host name or address, or a Unix socket folder (starting with
    /// `/`). Unset: this host streams no WAL.
    pub primary_host: Option<String>,
    pub primary_port: u16,
    /// A role with the REPLICATION attribute on the primary.
    pub primary_user: String,
    /// A file holding that role's password (for password, MD5 or SCRAM authentication).
    pub primary_password_file: Option<PathBuf>,
    /// The physical replication slot tandem owns on the primary.
    pub slot: String,
    /// WAL state: the archive (`archive/`) and the primary's identity. Unset: `<data_dir>/wal`.
    pub dir: Option<PathBuf>,
    /// Segments kept before the standby's replay position.
    pub reserve_segments: u64,
    /// Disk the archive may use, in MiB; 0 for no cap. At the cap tandem stops taking WAL (the
    /// slot then holds it on the primary) and says so in its log and status.
    pub disk_cap_mib: u64,
    /// Where the walsender listens for the standby PostgreSQL.
    pub listen: SocketAddr,
    /// How the standby must authenticate: a password (by default) or, when the site asks for
    /// it, trust.
    pub standby_auth: StandbyAuth,
    /// The role the standby connects as (with SCRAM-SHA-256).
    pub standby_user: String,
    /// Its password; unset: one tandem generates (`<dir>/walsender.password`).
    pub standby_password_file: Option<PathBuf>,
    /// Status updates to the primary at least this often, milliseconds.
    pub status_interval_ms: u64,
    /// Longest wait between reconnection attempts to the primary, milliseconds.
    pub retry_max_ms: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            primary_host: None,
            primary_port: 5432,
            primary_user: DEFAULT_PRIMARY_USER.into(),
            primary_password_file: None,
            slot: DEFAULT_SLOT.into(),
            dir: None,
            reserve_segments: super::archive::DEFAULT_RESERVE_SEGMENTS,
            disk_cap_mib: super::archive::DEFAULT_DISK_CAP_BYTES >> 20,
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            standby_auth: StandbyAuth::Password,
            standby_user: DEFAULT_PRIMARY_USER.into(),
            standby_password_file: None,
            status_interval_ms: DEFAULT_STATUS_INTERVAL_MS,
            retry_max_ms: DEFAULT_RETRY_MAX_MS,
        }
    }
}

impl WalConfig {
    pub fn validate(&self) -> Result<(), String> {
        validate_slot_name(&self.slot).map_err(|e| format!("wal.slot: {e}"))?;
        if self.primary_host.as_deref() == Some("") {
            return Err("wal.primary_host: empty (leave it out to stream no WAL)".into());
        }
        if self.primary_user.is_empty() || self.standby_user.is_empty() {
            return Err("wal.primary_user and wal.standby_user must not be empty".into());
        }
        if self.status_interval_ms == 0 || self.retry_max_ms == 0 {
            return Err("wal.status_interval_ms and wal.retry_max_ms must be above 0".into());
        }
        if self.disk_cap_mib != 0 && !(64..=MAX_DISK_CAP_MIB).contains(&self.disk_cap_mib) {
            return Err(format!("wal.disk_cap_mib: 64 to {MAX_DISK_CAP_MIB} (or 0 for no cap)"));
        }
        if self.standby_auth == StandbyAuth::Trust && !self.listen.ip().is_loopback() {
            return Err(format!(
                "wal.listen is {}: with wal.standby_auth = \"trust\" the walsender admits every client, \
                 which is allowed on loopback only",
                self.listen
            ));
        }
        if self.standby_auth == StandbyAuth::Trust && self.standby_password_file.is_some() {
            return Err(
                "wal.standby_password_file is set but wal.standby_auth is \"trust\": choose one".into()
            );
        }
        Ok(())
    }

    /// Whether this host streams WAL.
    pub fn enabled(&self) -> bool {
        self.primary_host.is_some()
    }

    /// The state folder (resolved configs always have one).
    pub fn state_dir(&self) -> &Path {
        self.dir.as_deref().expect("resolved config has a WAL folder")
    }

    /// The archive folder.
    pub fn archive_dir(&self) -> PathBuf {
        self.state_dir().join("archive")
    }

    /// How to reach the primary; reads the password file.
    pub fn primary_conn(&self) -> Result<ConnConfig, String> {
        let host = self.primary_host.clone().ok_or("wal.primary_host is not set")?;
        let password = read_password(self.primary_password_file.as_deref())?;
        let mut c = ConnConfig {
            port: self.primary_port,
            user: self.primary_user.clone(),
            password,
            ..ConnConfig::default()
        };
        if host.starts_with('/') {
            c.socket_dir = Some(PathBuf::from(host));
        } else {
            c.host = host;
        }
        Ok(c)
    }

    /// The standby's password; `None` when the site chose trust. Without a password file the
    /// password is generated once (the WAL state folder made private first) and kept.
    pub fn standby_password(&self) -> Result<Option<String>, String> {
        match (self.standby_auth, &self.standby_password_file) {
            (StandbyAuth::Trust, _) => Ok(None),
            (StandbyAuth::Password, Some(file)) => read_password(Some(file)),
            (StandbyAuth::Password, None) => {
                let dir = self.state_dir();
                crate::durable::create_private_dir(dir)
                    .map_err(|e| format!("WAL folder {}: {e}", dir.display()))?;
                let path = self.walsender_password_file();
                let password = super::walsender::random_password();
                crate::durable::create_private_once(&path, format!("{password}\n").as_bytes())
                    .map_err(|e| format!("password file {}: {e}", path.display()))?;
                read_password(Some(&path))
            }
        }
    }

    /// Where the generated walsender password is kept.
    pub fn walsender_password_file(&self) -> PathBuf {
        self.state_dir().join(WALSENDER_PASSWORD_FILE)
    }

    /// Where a standby PostgreSQL reaches this host's walsender (its `primary_conninfo`): the
    /// listen address (loopback when it listens on all addresses) and the standby role.
    pub fn walsender_endpoint(&self) -> Result<Endpoint, String> {
        let ip = self.listen.ip();
        Ok(Endpoint {
            host: if ip.is_unspecified() { "127.0.0.1".into() } else { ip.to_string() },
            port: self.listen.port(),
            user: self.standby_user.clone(),
            password: self.standby_password()?,
        })
    }

    /// Checks the cap against the segment size, known once the primary was reached: the cap
    /// must hold the reserve plus the segment being written and one more, or retention could
    /// never make room.
    pub fn check_cap(&self, segment_size: u64) -> Result<(), String> {
        let need = (self.reserve_segments + 2).saturating_mul(segment_size) >> 20;
        if self.disk_cap_mib != 0 && self.disk_cap_mib < need {
            return Err(format!(
                "wal.disk_cap_mib = {} cannot hold reserve_segments = {} plus 2 segments of {} MiB ({need} MiB)",
                self.disk_cap_mib,
                self.reserve_segments,
                segment_size >> 20
            ));
        }
        Ok(())
    }

    /// The archive's settings for a cluster with `segment_size`-byte segments.
    pub fn archive(&self, segment_size: u64) -> ArchiveConfig {
        ArchiveConfig {
            segment_size,
            flush: FlushPolicy::Group { max_bytes: GROUP_MAX_BYTES, max_delay: GROUP_MAX_DELAY },
            segment_init: SegmentInit::Zeroed,
            reserve_segments: self.reserve_segments,
            disk_cap_bytes: (self.disk_cap_mib > 0).then_some(self.disk_cap_mib << 20),
        }
    }

    pub fn status_interval(&self) -> Duration {
        Duration::from_millis(self.status_interval_ms)
    }

    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }
}

/// The first line of a password file; `None` without a file.
fn read_password(path: Option<&Path>) -> Result<Option<String>, String> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("password file {}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r').to_owned();
    if line.is_empty() {
        return Err(format!("password file {} is empty", path.display()));
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        WalConfig::default().validate().unwrap();
        let bad = WalConfig { slot: "Tandem-1".into(), ..WalConfig::default() };
        assert!(bad.validate().unwrap_err().contains("wal.slot"));
        let bad = WalConfig { disk_cap_mib: 10, ..WalConfig::default() };
        assert!(bad.validate().unwrap_err().contains("disk_cap_mib"));
        let small = WalConfig { disk_cap_mib: 64, ..WalConfig::default() };
        assert!(small.check_cap(16 << 20).unwrap_err().contains("reserve_segments = 32"));
        WalConfig { disk_cap_mib: 64, reserve_segments: 2, ..WalConfig::default() }
            .check_cap(16 << 20)
            .unwrap();
        let open = WalConfig { listen: "0.0.0.0:5433".parse().unwrap(), ..WalConfig::default() };
        open.validate().expect("a password by default: any address");
        let trusting = WalConfig { standby_auth: StandbyAuth::Trust, ..open };
        assert!(trusting.validate().unwrap_err().contains("loopback only"));
    }

    #[test]
    fn the_walsender_password_is_generated_once_privately_unless_the_site_trusts() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = WalConfig { dir: Some(dir.path().join("wal")), ..WalConfig::default() };
        let first = c.standby_password().unwrap().expect("a password by default");
        assert_eq!(first.len(), 32);
        assert_eq!(c.standby_password().unwrap().as_deref(), Some(first.as_str()), "kept");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&c.walsender_password_file()), 0o600);
        assert_eq!(mode(c.state_dir()), 0o700);
        assert_eq!(c.walsender_endpoint().unwrap().password, Some(first));
        let trust = WalConfig { standby_auth: StandbyAuth::Trust, ..c };
        assert_eq!(trust.standby_password().unwrap(), None);
    }

    #[test]
    fn a_socket_folder_or_a_host_and_a_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let c = WalConfig {
            primary_host: Some("/run/postgresql".into()),
            primary_password_file: Some(pw),
            ..WalConfig::default()
        };
        let conn = c.primary_conn().unwrap();
        assert_eq!(conn.socket_dir.as_deref(), Some(Path::new("/run/postgresql")));
        assert_eq!(conn.password.as_deref(), Some("s3cret"));
        let c = WalConfig { primary_host: Some("db1".into()), ..WalConfig::default() };
        assert_eq!(c.primary_conn().unwrap().host, "db1");
    }
}
