//! The CLI's way to a running member: its REST API on the address the daemon wrote (or the
//! configured one), with the admin token from the configuration or the token file; over TLS,
//! accepting only the pinned certificate ([`super::pin`]), when the daemon speaks TLS.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use super::pin::Pin;
use crate::api::client_token;
use crate::config::Config;
use crate::daemon::API_ADDR_FILE;

/// How long a connection to the daemon may take: it is local; a refused one fails at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A request's default time limit.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
    pin: Option<Pin>,
}

impl ApiClient {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let addr = std::fs::read_to_string(config.data_dir.join(API_ADDR_FILE))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| config.api.listen.to_string());
        let token_file = config.api.token_file.clone().expect("resolved");
        let token = client_token(&config.api, &token_file).with_context(|| {
            format!(
                "reading the API token {} (is the daemon started with this configuration?)",
                token_file.display()
            )
        })?;
        let pin = Pin::find(config.api.pin.as_deref(), &config.data_dir);
        let http = client(DEFAULT_TIMEOUT, pin.as_ref())?;
        let scheme = if pin.is_some() { "https" } else { "http" };
        Ok(Self { base: format!("{scheme}://{addr}"), token, http, pin })
    }

    /// The same client with another time limit per request (longer for base backups and
    /// failovers, shorter for a status).
    pub fn with_timeout(mut self, timeout: Duration) -> anyhow::Result<Self> {
        self.http = client(timeout, self.pin.as_ref())?;
        Ok(self)
    }

    /// Fails unless the daemon answers within `within`: asked before a command that may take
    /// an hour, so that a daemon which accepts connections but does not answer (stopped with
    /// SIGSTOP, hung) is named at once instead of after the command's whole time limit.
    pub async fn check_answers(&self, within: Duration) -> anyhow::Result<()> {
        let req = self.http.get(format!("{}/v1/health", self.base)).timeout(within);
        match req.send().await {
            Ok(_) => {
                if let Some(pin) = &self.pin {
                    pin.confirmed();
                }
                Ok(())
            }
            Err(_) if self.refused_by_pin().is_some() => bail!(self.refused_by_pin().unwrap_or_default()),
            Err(e) if e.is_timeout() => bail!(
                "the tandem daemon at {} accepted the connection but did not answer within {} s \
                 (is it stopped or hung?)",
                self.base,
                within.as_secs()
            ),
            Err(e) => Err(e).with_context(|| self.unreachable()),
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.base))).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = match req.bearer_auth(&self.token).send().await {
            Ok(resp) => {
                if let Some(pin) = &self.pin {
                    pin.confirmed();
                }
                resp
            }
            Err(_) if self.refused_by_pin().is_some() => bail!(self.refused_by_pin().unwrap_or_default()),
            Err(e) if e.is_timeout() && !e.is_connect() => bail!(
                "the tandem daemon at {} did not answer in time (is it stopped or hung? a command it \
                 started goes on)",
                self.base
            ),
            Err(e) => return Err(e).with_context(|| self.unreachable()),
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            // The member's own words: its JSON error, else whatever text it sent.
            let msg = match body.get("error").and_then(Value::as_str) {
                Some(m) => m.to_string(),
                None if !text.trim().is_empty() => crate::clip::clip_message(text.trim()).to_string(),
                None => "no details".to_string(),
            };
            bail!("{msg} (HTTP {status})");
        }
        Ok(body)
    }

    /// Why the last connection was refused, when it was the certificate pin.
    fn refused_by_pin(&self) -> Option<String> {
        self.pin.as_ref().and_then(Pin::refusal)
    }

    fn unreachable(&self) -> String {
        format!("cannot reach the tandem daemon at {} (is it running?)", self.base)
    }
}

/// An HTTP client with `timeout` per request and the short [`CONNECT_TIMEOUT`]; with `pin`,
/// TLS accepting only the pinned certificate.
fn client(timeout: Duration, pin: Option<&Pin>) -> anyhow::Result<reqwest::Client> {
    // reqwest builds a TLS configuration even for plain HTTP, from the process's default
    // provider: ring, as everywhere in tandem (an error means one is installed already).
    let _ = rustls::crypto::CryptoProvider::install_default((*crate::api::tls::provider()).clone());
    let mut builder = reqwest::Client::builder().timeout(timeout).connect_timeout(CONNECT_TIMEOUT);
    if let Some(pin) = pin {
        builder = builder.use_preconfigured_tls(pin.client_config()?);
    }
    Ok(builder.build()?)
}
