//! The cluster secret: every host of a cluster holds the same one (as Splunk's `pass4SymmKey`),
//! and the transport's handshake proves knowledge of it in both directions. Hosts never send
//! it; they derive a 32-byte Noise pre-shared key from it.

use std::fs;
use std::path::Path;

use super::error::PeerError;
use crate::durable;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
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

    /// Reads the secret file.
    pub fn load(path: &Path) -> Result<Self, PeerError> {
        let bad = |why: String| PeerError::SecretFile { path: path.display().to_string(), why };
        let text = fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        Self::from_text(&text).map_err(bad)
    }

    /// Reads the secret file, first writing a new random secret there if there is none.
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
}
