//! Bearer tokens and roles: the admin role may change configuration and membership, the
//! read-only role may only read. Tokens are compared in constant time.
//!
//! [`guard`] checks every request of a guarded route before its handler runs, so nothing of an
//! unauthenticated request's body is read: reads (`GET`, `HEAD`) need a role, everything else
//! the admin role.

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use super::config::{ApiConfig, MAX_TOKEN_FILE, MIN_TOKEN_LEN};
use crate::durable::{self, SmallFileError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Admin,
}

#[derive(Clone)]
pub struct Tokens {
    admin: String,
    read: Option<String>,
}

impl Tokens {
    /// The configured tokens; the admin token is loaded from (or generated into) the token
    /// file when the configuration has none.
    pub fn load(config: &ApiConfig, token_file: &Path) -> Result<Self, TokenError> {
        let admin = match &config.admin_token {
            Some(t) => t.clone(),
            None => load_or_create(token_file)?,
        };
        Ok(Self { admin, read: config.read_token.clone() })
    }

    /// The role a request's `Authorization: Bearer` token grants, if any.
    pub fn role(&self, headers: &HeaderMap) -> Option<Role> {
        let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?.trim();
        if constant_eq(token.as_bytes(), self.admin.as_bytes()) {
            Some(Role::Admin)
        } else if self.read.as_ref().is_some_and(|r| constant_eq(token.as_bytes(), r.as_bytes())) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// The role a request needs: reads need a role, anything else the admin role.
fn needed(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD { Role::Read } else { Role::Admin }
}

/// Refuses a request without the role its method needs before anything of it is read past its
/// headers (`axum::middleware::from_fn_with_state`).
pub async fn guard(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    match ApiError::need(tokens.role(request.headers()), needed(request.method())) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Why the admin token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("API token: {0}")]
    File(#[from] SmallFileError),
    #[error("the API token in {} is shorter than {MIN_TOKEN_LEN} characters", .0.display())]
    TooShort(PathBuf),
    #[error("writing a new API token to {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// Reads the admin token a CLI uses: the configured one, else the token file (which must be
/// private).
pub fn client_token(config: &ApiConfig, token_file: &Path) -> Result<String, TokenError> {
    match &config.admin_token {
        Some(t) => Ok(t.clone()),
        None => read_token(token_file),
    }
}

fn read_token(path: &Path) -> Result<String, TokenError> {
    let text = durable::read_private(path, MAX_TOKEN_FILE)?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort(path.to_path_buf()));
    }
    Ok(token.to_string())
}

fn load_or_create(path: &Path) -> Result<String, TokenError> {
    match read_token(path) {
        Err(TokenError::File(e)) if e.is_not_found() => {
            let write = |source| TokenError::Write { path: path.to_path_buf(), source };
            let mut raw = [0u8; 24];
            getrandom::fill(&mut raw).expect("the OS random source works");
            let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(write)?;
            }
            durable::write_private(path, format!("{token}\n").as_bytes()).map_err(write)?;
            Ok(token)
        }
        other => other,
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn roles_follow_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let config = ApiConfig { read_token: Some("read-only-token-0123".into()), ..ApiConfig::default() };
        let tokens = Tokens::load(&config, &dir.path().join("api.token")).unwrap();
        let admin = client_token(&config, &dir.path().join("api.token")).unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(tokens.role(&h), None);
        h.insert("authorization", HeaderValue::from_str(&format!("Bearer {admin}")).unwrap());
        assert_eq!(tokens.role(&h), Some(Role::Admin));
        h.insert("authorization", HeaderValue::from_static("Bearer read-only-token-0123"));
        assert_eq!(tokens.role(&h), Some(Role::Read));
        h.insert("authorization", HeaderValue::from_static("Bearer nope"));
        assert_eq!(tokens.role(&h), None);
        // the generated token is stable across loads
        let again = Tokens::load(&config, &dir.path().join("api.token")).unwrap();
        assert_eq!(again.admin, admin);
    }

    /// Regression (issue 14): a token file other users could read was used silently.
    #[test]
    fn an_open_token_file_is_refused_naming_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.token");
        std::fs::write(&path, "a-token-of-enough-length\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Tokens::load(&ApiConfig::default(), &path).err().unwrap().to_string();
        assert!(e.contains(&format!("chmod 600 {}", path.display())), "{e}");
        let e = client_token(&ApiConfig::default(), &path).unwrap_err().to_string();
        assert!(e.contains("open to other users"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(client_token(&ApiConfig::default(), &path).unwrap(), "a-token-of-enough-length");
    }
}
