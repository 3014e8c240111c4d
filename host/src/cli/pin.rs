//! The CLI's side of the API's TLS: which certificate it accepts. Only the one whose SHA-256
//! fingerprint is pinned: `api.pin` in the configuration, or else the one this host's daemon
//! wrote (`<data_dir>/api.fingerprint`), remembered at first use in `<data_dir>/api.pinned`.
//! A certificate whose fingerprint differs from the pin is refused, and the refusal says both
//! fingerprints. No certificate authority is involved: the pin is the trust.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::api::tls::{FINGERPRINT_FILE, fingerprint, provider};

/// Where the CLI remembers the fingerprint it first trusted.
pub const PINNED_FILE: &str = "api.pinned";

/// The pin to check, and where it came from.
#[derive(Debug, Clone)]
pub struct Pin {
    pub expected: String,
    /// Set when the pin was taken from the daemon's file on first use: saved after the first
    /// connection that matched it.
    pub remember_in: Option<PathBuf>,
    /// What a refused server presented (for the error message).
    pub seen: Arc<Mutex<Option<String>>>,
}

impl Pin {
    /// The pin for a daemon whose data folder is `data_dir`; `None` when the API is plain HTTP
    /// (no pin configured, none remembered, no fingerprint written by the daemon).
    pub fn find(configured: Option<&str>, data_dir: &Path) -> Option<Pin> {
        let read = |name: &str| {
            std::fs::read_to_string(data_dir.join(name))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let seen = Arc::default();
        if let Some(p) = configured {
            return Some(Pin { expected: p.to_string(), remember_in: None, seen });
        }
        if let Some(p) = read(PINNED_FILE) {
            return Some(Pin { expected: p, remember_in: None, seen });
        }
        read(FINGERPRINT_FILE).map(|p| Pin {
            expected: p,
            remember_in: Some(data_dir.join(PINNED_FILE)),
            seen,
        })
    }

    /// After a connection that matched: remember a first-use pin.
    pub fn confirmed(&self) {
        if let Some(path) = &self.remember_in
            && !path.exists()
        {
            let _ = crate::durable::write_private(path, format!("{}\n", self.expected).as_bytes());
        }
    }

    /// A rustls client configuration that accepts only the pinned certificate.
    pub fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let verifier = Arc::new(Pinned { pin: self.clone(), provider: provider() });
        Ok(rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    /// The refusal in words, when the last handshake failed on the pin.
    pub fn refusal(&self) -> Option<String> {
        let seen = self.seen.lock().expect("not poisoned").clone()?;
        Some(format!(
            "the REST API's certificate changed: it presented {seen}, not the pinned {}; refusing to send the token. \
             If the certificate was replaced on purpose, set api.pin to the new fingerprint (the daemon logs it)",
            self.expected
        ))
    }
}

#[derive(Debug)]
struct Pinned {
    pin: Pin,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        if got == self.pin.expected {
            return Ok(ServerCertVerified::assertion());
        }
        *self.pin.seen.lock().expect("not poisoned") = Some(got.clone());
        Err(rustls::Error::General(format!(
            "certificate fingerprint {got} is not the pinned {}",
            self.pin.expected
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
