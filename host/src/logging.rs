//! Logs through `tracing`: to the terminal, and to one file per job in the log folder
//! (`tandem.log` for everything, `plugins.log`, `peer.log`, `cluster.log`, `wal.log`), human-readable or JSON.
//! The files are 0600 (narrowed if they were wider): logs name members, paths and changes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{Layer, Registry};

/// Default filter when neither the config nor `RUST_LOG` says otherwise.
pub const DEFAULT_LEVEL: &str = "info";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub dir: Option<PathBuf>,
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { dir: None, format: LogFormat::Human, level: DEFAULT_LEVEL.to_string() }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), String> {
        EnvFilter::try_new(&self.level).map(drop).map_err(|e| format!("log.level `{}`: {e}", self.level))
    }
}

/// Mode of the log files.
const LOG_FILE_MODE: u32 = 0o600;

/// The jobs with a file of their own: (file, target prefix).
const JOB_FILES: &[(&str, &str)] = &[
    ("plugins.log", "tandem::plugin"),
    ("peer.log", "tandem::peer"),
    ("cluster.log", "tandem::cluster"),
    ("wal.log", "tandem::wal"),
    ("warm_standby.log", "tandem::standby"),
];

/// openraft narrates every vote and membership step at `info`; it speaks up at `warn` unless
/// the filter names it.
fn filter(directives: &str) -> EnvFilter {
    if directives.contains("openraft") {
        EnvFilter::new(directives)
    } else {
        EnvFilter::new(format!("{directives},openraft=warn"))
    }
}

/// Keeps the file writers flushing; drop it last.
pub struct LogGuard {
    _guards: Vec<WorkerGuard>,
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber: the terminal (stderr) at `terminal_level`, and with a log
/// folder, the per-job files at the configured level.
pub fn init(config: &LogConfig, terminal_level: &str, with_files: bool) -> std::io::Result<LogGuard> {
    let mut layers: Vec<BoxedLayer> = Vec::new();
    let mut guards = Vec::new();
    let terminal_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| filter(terminal_level));
    layers.push(fmt_layer(config.format, std::io::stderr, true).with_filter(terminal_filter).boxed());
    if let (true, Some(dir)) = (with_files, &config.dir) {
        std::fs::create_dir_all(dir)?;
        let (all, guard) = file_writer(dir, "tandem.log")?;
        guards.push(guard);
        layers.push(fmt_layer(config.format, all, false).with_filter(filter(&config.level)).boxed());
        for (file, target) in JOB_FILES {
            let (writer, guard) = file_writer(dir, file)?;
            guards.push(guard);
            let filter = Targets::new().with_target(*target, level_of(&config.level));
            layers.push(fmt_layer(config.format, writer, false).with_filter(filter).boxed());
        }
    }
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(LogGuard { _guards: guards })
}

fn fmt_layer<W>(format: LogFormat, writer: W, ansi: bool) -> BoxedLayer
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    match format {
        LogFormat::Human => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    }
}

fn file_writer(
    dir: &Path,
    file: &str,
) -> std::io::Result<(tracing_appender::non_blocking::NonBlocking, WorkerGuard)> {
    // The appender would make it 0644.
    durable::private_file(&dir.join(file), LOG_FILE_MODE)?;
    Ok(tracing_appender::non_blocking(tracing_appender::rolling::never(dir, file)))
}

/// The level part of a filter such as `info` or `warn,tandem=debug` (first bare level wins).
fn level_of(filter: &str) -> tracing::Level {
    filter.split(',').find_map(|d| d.trim().parse::<tracing::Level>().ok()).unwrap_or(tracing::Level::INFO)
}
