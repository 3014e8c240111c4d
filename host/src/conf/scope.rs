//! Where a change lives: the whole system, one app, or one user's view of one app. A scope
//! maps to a folder of the etc root (see `layout`); this file owns only the type, its
//! validation and its display.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clip::clip_bare;
use crate::conf::error::ConfError;
use crate::conf::names;

/// The level of the configuration hierarchy a change or a lookup addresses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `system/` (only `.conf` targets).
    System,
    /// `apps/<app>/`.
    App(String),
    /// `users/<user>/<app>/`.
    User { app: String, user: String },
}

impl Scope {
    /// Checks the app and user names (they become folder names).
    pub fn validate(&self) -> Result<(), ConfError> {
        match self {
            Scope::System => Ok(()),
            Scope::App(app) => names::app(app),
            Scope::User { app, user } => names::app(app).and_then(|()| names::user(user)),
        }
    }

    /// The app this scope reaches, if any.
    pub fn app(&self) -> Option<&str> {
        match self {
            Scope::System => None,
            Scope::App(app) | Scope::User { app, .. } => Some(app),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::System => f.write_str("system"),
            Scope::App(app) => write!(f, "app:{}", clip_bare(app)),
            // Same order as the folder, users/<user>/<app>.
            Scope::User { app, user } => write!(f, "user:{}/{}", clip_bare(user), clip_bare(app)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        assert_eq!(Scope::System.to_string(), "system");
        assert_eq!(Scope::App("search".into()).to_string(), "app:search");
        let user = Scope::User { app: "search".into(), user: "admin".into() };
        assert_eq!(user.to_string(), "user:admin/search");
    }

    #[test]
    fn validation_checks_both_names() {
        assert!(Scope::App("..".into()).validate().is_err());
        let bad_user = Scope::User { app: "search".into(), user: "../root".into() };
        assert!(matches!(bad_user.validate(), Err(ConfError::UserName(_))));
        let bad_app = Scope::User { app: ".x".into(), user: "admin".into() };
        assert!(matches!(bad_app.validate(), Err(ConfError::AppName(_))));
    }

    #[test]
    fn serde_is_externally_tagged() {
        let user = Scope::User { app: "search".into(), user: "admin".into() };
        let json = serde_json::to_string(&user).unwrap();
        assert_eq!(json, r#"{"user":{"app":"search","user":"admin"}}"#);
        assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), user);
        assert_eq!(serde_json::to_string(&Scope::System).unwrap(), r#""system""#);
    }
}
