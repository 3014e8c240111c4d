//! The REST API over TLS (rustls): the certificate is the site's own (`api.cert_file`,
//! `api.key_file`) or one tandem makes on first start (`<data_dir>/api.crt` and `api.key`,
//! 0600, self-signed for the listen and advertised addresses), identified by the SHA-256
//! fingerprint of its DER, which the daemon logs and writes to `<data_dir>/api.fingerprint`
//! for the CLI to pin. The API's server (`super::server`) runs each connection's handshake in
//! its own admitted slot within [`HANDSHAKE_TIMEOUT`]: a client that stalls one holds nobody
//! else up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// A client must finish its TLS handshake within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The file the daemon writes the certificate's fingerprint to (its data folder).
pub const FINGERPRINT_FILE: &str = "api.fingerprint";
const CERT_FILE: &str = "api.crt";
const KEY_FILE: &str = "api.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("making the API's certificate: {0}")]
    Generate(String),
    #[error("the API's certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto this build uses: ring, already built for the peer transport. rustls 0.23.48
/// deprecates it for lacking post-quantum key exchange; the alternative (aws-lc-rs) is a large
/// C build, and an admin API whose certificate is pinned does not need it today.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `sha256:` and the colon-separated hex of the SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    let hex: Vec<String> = Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect();
    format!("sha256:{}", hex.join(":"))
}

/// The server's TLS settings and its certificate's fingerprint: the site's files when given,
/// else the ones tandem made in `data_dir` (made now, for `names`, when missing).
pub fn server_config(
    files: Option<(&Path, &Path)>,
    data_dir: &Path,
    names: &[String],
) -> Result<(Arc<rustls::ServerConfig>, String), TlsError> {
    let (cert_path, key_path) = match files {
        Some((c, k)) => (c.to_path_buf(), k.to_path_buf()),
        None => {
            let (c, k) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
            if !c.exists() || !k.exists() {
                make(&c, &k, names)?;
            }
            (c, k)
        }
    };
    let bad = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls::pki_types::pem::Error| TlsError::File { path, why: e.to_string() }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(bad(&cert_path))?
        .collect::<Result<_, _>>()
        .map_err(bad(&cert_path))?;
    let first = certs
        .first()
        .ok_or_else(|| TlsError::File { path: cert_path.clone(), why: "no certificate in it".into() })?;
    let print = fingerprint(first);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(bad(&key_path))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), print))
}

/// A self-signed certificate for `names` (addresses or host names), the key private.
fn make(cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let made =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| TlsError::Generate(e.to_string()))?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| TlsError::File { path, why: e.to_string() }
    };
    crate::durable::write_private(key, made.key_pair.serialize_pem().as_bytes()).map_err(io(key))?;
    crate::durable::write_private(cert, made.cert.pem().as_bytes()).map_err(io(cert))?;
    tracing::info!(cert = %cert.display(), "made a certificate for the REST API");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_certificate_is_private_stable_and_fingerprinted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let (_, first) = server_config(None, dir.path(), &names).unwrap();
        let (_, again) = server_config(None, dir.path(), &names).unwrap();
        assert_eq!(first, again, "made once, then loaded");
        assert!(first.starts_with("sha256:") && first.len() == 7 + 32 * 3 - 1, "{first}");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
        let junk = dir.path().join("junk.pem");
        assert!(server_config(Some((&junk, &junk)), dir.path(), &names).is_err());
    }
}
