//! `tandem plugins list|check|eval`.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::args::PluginsCommand;
use super::eval;
use crate::config::Config;
use crate::durable;
use crate::plugin::{MAX_PLUGIN_BYTES, PluginConfig, Plugins, Source};

pub fn run(config: Config, cmd: PluginsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginsCommand::List { json } => {
            let plugins = Plugins::new(config.plugins)?;
            let statuses = plugins.statuses();
            if json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<13} {:<28} {:<22} {:<9} STATE", "WORLD", "NAME", "VERSION", "SOURCE");
            for s in statuses {
                let world = s.world.map(|w| w.to_string()).unwrap_or_else(|| "?".into());
                let source = match s.source {
                    Source::BuiltIn => "built-in",
                    Source::File(_) => "file",
                };
                let version = s.version.unwrap_or_else(|| "-".into());
                println!("{world:<13} {:<28} {version:<22} {source:<9} {}", s.name, s.state);
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Check { file } => {
            let bytes = read_plugin(&file)?;
            let plugins = Plugins::new(without_folder(config).plugins)?;
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match plugins.check(&name, &bytes) {
                Ok(info) => {
                    println!("ok: {name} is a {} plugin built for {}", info.world, info.version);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("refused: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        PluginsCommand::Eval { world, plugin, settings, input } => {
            let mut config = config;
            let source = plugin.clone().map_or(Source::BuiltIn, Source::File);
            let settings_key = PluginConfig::settings_key(&source, world);
            for (key, value) in &settings {
                config.plugins.set(&settings_key, key, value);
            }
            if plugin.is_some() {
                config = without_folder(config);
            }
            let plugins = Plugins::new(config.plugins)?;
            if let Some(path) = &plugin {
                let bytes = read_plugin(path)?;
                let info = plugins.install(path, &bytes)?;
                if info.world != world {
                    bail!("{} is a {} plugin, not a {world} plugin", path.display(), info.world);
                }
            }
            let text = read_input(&input)?;
            let answer = eval::decide(&plugins, world, &text)?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A plugin file a user named: a regular file (a FIFO would hang, `/dev/zero` never end) of at
/// most the size the daemon loads.
fn read_plugin(path: &Path) -> anyhow::Result<Vec<u8>> {
    durable::read_regular(path, MAX_PLUGIN_BYTES).context("reading the plugin")
}

/// The same configuration without the site plugin folder: built-ins plus what the command names.
fn without_folder(mut config: Config) -> Config {
    config.plugins.dir = None;
    config
}

fn read_input(input: &str) -> anyhow::Result<String> {
    if input == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
        Ok(text)
    } else if let Some(path) = input.strip_prefix('@') {
        std::fs::read_to_string(Path::new(path)).with_context(|| format!("reading {path}"))
    } else {
        Ok(input.to_string())
    }
}
