//! The CLI's way to a running member: its REST API on the address the daemon wrote (or the
//! configured one), with the admin token from the configuration or the token file.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::api::client_token;
use crate::config::Config;
use crate::daemon::API_ADDR_FILE;

pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
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
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
        Ok(Self { base: format!("http://{addr}"), token, http })
    }

    /// The same client with a longer timeout (base backups, failovers).
    pub fn with_timeout(mut self, timeout: Duration) -> anyhow::Result<Self> {
        self.http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(self)
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
        let resp =
            req.bearer_auth(&self.token).send().await.with_context(|| {
                format!("cannot reach the tandem daemon at {} (is it running?)", self.base)
            })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body.get("error").and_then(Value::as_str).unwrap_or("no details");
            bail!("{msg} (HTTP {status})");
        }
        Ok(body)
    }
}
