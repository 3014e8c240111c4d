//! Why a plugin was refused or a call failed. Every error names the plugin it is about.

use std::fmt;

/// A plugin failure: which plugin, and what went wrong.
#[derive(Debug, Clone)]
pub struct PluginError {
    /// The plugin's name: the file name for site plugins, `builtin:<world>` for defaults.
    pub plugin: String,
    pub kind: FailureKind,
}

impl PluginError {
    pub fn new(plugin: impl Into<String>, kind: FailureKind) -> Self {
        Self { plugin: plugin.into(), kind }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin `{}`: {}", self.plugin, self.kind)
    }
}

impl std::error::Error for PluginError {}

/// What went wrong, in terms a site operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureKind {
    #[error("cannot read the file: {0}")]
    Io(String),
    #[error("{len} bytes is over the {max} byte limit for a plugin file")]
    TooLarge { len: u64, max: u64 },
    #[error("not a WebAssembly file (no `\\0asm` header)")]
    NotWasm,
    #[error("a core WebAssembly module, not a component; build it with `--target wasm32-wasip2`")]
    CoreModule,
    #[error("not a valid component: {0}")]
    Compile(String),
    #[error(
        "not a tandem policy plugin: it exports none of tandem:policy's worlds \
         (whitelist, path-filter, purge-policy); it exports [{0}]"
    )]
    UnknownWorld(String),
    #[error(
        "built for {found}, but this host speaks tandem:policy@{supported}; rebuild it against this host's wit/"
    )]
    IncompatibleVersion { found: String, supported: String },
    #[error("does not match its world `{world}`: {detail}")]
    Link { world: &'static str, detail: String },
    #[error("refused its settings: {0}")]
    Configure(String),
    #[error("timed out: a call ran past the {limit_ms} ms cap on its CPU time")]
    Timeout { limit_ms: u64 },
    #[error("memory cap exceeded: it asked for {wanted_mib} MiB, the cap is {limit_mib} MiB")]
    MemoryLimit { wanted_mib: u64, limit_mib: u64 },
    #[error("trapped: {0}")]
    Trap(String),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("refused the input: {0}")]
    Refused(String),
}
