//! The whitelist decision for a change, asked of the whitelist plugin: replicate through the
//! commit log, or apply on this member only.

use crate::conf::{ConfChange, Scope, Target};
use crate::plugin::{self, Plugins};

/// The plugin's view of a conf scope.
pub fn plugin_scope(scope: &Scope) -> plugin::Scope {
    match scope {
        Scope::System => plugin::Scope::System,
        Scope::App(app) => plugin::Scope::App(app.clone()),
        Scope::User { app, user } => {
            plugin::Scope::User(plugin::UserScope { app: app.clone(), user: user.clone() })
        }
    }
}

/// True when `change` replicates. Blocks for the plugin call (up to its time cap).
pub fn replicates(plugins: &Plugins, change: &ConfChange) -> Result<bool, plugin::PluginError> {
    plugins.replicates(&plugin::ConfChange {
        conf_type: change.conf_type.clone(),
        scope: plugin_scope(&change.scope),
        meta: matches!(change.target, Target::Meta),
    })
}
