//! The cluster secret: every host of a cluster holds the same one (as Splunk's `pass4SymmKey`),
//! and the transport's handshake proves knowledge of it in both directions. Hosts never send
//! it; they derive a 32-byte Noise pre-shared key from it.
//!
//! The file must be private (mode 0600 or narrower) and a regular file of at most
//! [`MAX_SECRET_FILE`] bytes. Only the default place is filled with a new random secret when
//! the file is missing; a configured file that is missing is an error (a typo in the path
//! would otherwise start a member with a secret no other member has).

use std::fs;
use std::path::Path;

use super::error::PeerError;
use crate::durable;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Largest secret file read, in bytes.
pub const MAX_SECRET_FILE: u64 = 4096;
const KDF_CONTEXT: &str = "tandem peer transport 2026-11 noise psk v1";

/// A loaded cluster secret, as the derived pre-shared key.
#[derive(Clone)]
pub struct ClusterSecret {
    psk: [u8; 32],
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// From the secret's text (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() < MIN_SECRET_LEN {
            return Err(format!("a cluster secret needs at least {MIN_SECRET_LEN} characters"));
        }
        Ok(Self { psk: blake3::derive_key(KDF_CONTEXT, text.as_bytes()) })
    }

    /// Reads the secret file (which must be private).
    pub fn load(path: &Path) -> Result<Self, PeerError> {
        let text = durable::read_private(path, MAX_SECRET_FILE).map_err(|e| {
            if e.is_not_found() { PeerError::SecretMissing(path.display().to_string()) } else { e.into() }
        })?;
        Self::from_text(&text).map_err(|why| PeerError::SecretFile { path: path.display().to_string(), why })
    }

    /// Reads the secret file, first writing a new random secret there if there is none. Only
    /// for the default place: see the module doc.
    pub fn load_or_create(path: &Path) -> Result<Self, PeerError> {
        if !path.exists() {
            let bad = |e: std::io::Error| PeerError::SecretFile {
                path: path.display().to_string(),
                why: e.to_string(),
            };
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(|e| bad(std::io::Error::other(e.to_string())))?;
            let text: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(bad)?;
            }
            durable::write_private(path, format!("{text}\n").as_bytes()).map_err(bad)?;
            tracing::info!(path = %path.display(), "generated a new cluster secret; copy it to every peer");
        }
        Self::load(path)
    }

    pub(crate) fn psk(&self) -> &[u8; 32] {
        &self.psk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused_and_whitespace_ignored() {
        assert!(ClusterSecret::from_text("short").is_err());
        let a = ClusterSecret::from_text("0123456789abcdef\n").unwrap();
        let b = ClusterSecret::from_text("  0123456789abcdef").unwrap();
        assert_eq!(a.psk, b.psk);
        assert_ne!(a.psk, ClusterSecret::from_text("0123456789abcdeg").unwrap().psk);
    }

    #[test]
    fn a_created_secret_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cluster.secret");
        let a = ClusterSecret::load_or_create(&path).unwrap();
        let b = ClusterSecret::load_or_create(&path).unwrap();
        assert_eq!(a.psk, b.psk);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    /// Regression (issue 14): a world-readable secret was accepted silently, and a configured
    /// secret file that did not exist was replaced by a new random secret.
    #[test]
    fn an_open_or_missing_secret_file_is_refused_naming_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        let missing = ClusterSecret::load(&path).unwrap_err().to_string();
        assert!(
            missing.contains("does not exist") && missing.contains(&path.display().to_string()),
            "{missing}"
        );
        assert!(!path.exists(), "load never creates");
        fs::write(&path, "0123456789abcdef0123\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let open = ClusterSecret::load(&path).unwrap_err().to_string();
        assert!(open.contains(&format!("chmod 600 {}", path.display())), "{open}");
        assert!(ClusterSecret::load_or_create(&path).is_err(), "not replaced either");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        ClusterSecret::load(&path).unwrap();
    }
}
