//! The three plugin worlds of `tandem:policy`, and telling which one a component targets (and
//! for which version of the contract) from the names of its exports.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::FailureKind;

/// The WIT package every plugin is built against (`wit/policy.wit`).
pub const PACKAGE: &str = "tandem:policy";
/// The package version this host speaks.
pub const VERSION: Version = Version { major: 0, minor: 1, patch: 0 };

/// A decision a plugin can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    Whitelist,
    PathFilter,
    PurgePolicy,
}

impl World {
    pub const ALL: [World; 3] = [World::Whitelist, World::PathFilter, World::PurgePolicy];

    /// The world's name in `wit/policy.wit`.
    pub fn name(self) -> &'static str {
        match self {
            World::Whitelist => "whitelist",
            World::PathFilter => "path-filter",
            World::PurgePolicy => "purge-policy",
        }
    }

    /// The interface the world exports.
    pub fn interface(self) -> &'static str {
        match self {
            World::Whitelist => "replication-whitelist",
            World::PathFilter => "tree-filter",
            World::PurgePolicy => "history-purge",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for World {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        World::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| format!("unknown world `{s}` (expected whitelist, path-filter or purge-policy)"))
    }
}

/// A semantic version of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    fn parse(s: &str) -> Option<Self> {
        let core = s.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let v = Version { major: parts.next()??, minor: parts.next()??, patch: parts.next()?? };
        parts.next().is_none().then_some(v)
    }

    /// Semver compatibility: same major, or for 0.x the same minor.
    pub fn compatible_with(self, other: Version) -> bool {
        self.major == other.major && (self.major != 0 || self.minor == other.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Finds the world a component targets from its export names
/// (`tandem:policy/<interface>@<version>`), refusing other versions with a clear reason.
pub fn identify<'a>(exports: impl IntoIterator<Item = &'a str>) -> Result<(World, Version), FailureKind> {
    let mut seen = Vec::new();
    let mut incompatible = None;
    for name in exports {
        seen.push(name.to_string());
        let Some(rest) = name.strip_prefix(PACKAGE).and_then(|r| r.strip_prefix('/')) else {
            continue;
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let Some(world) = World::ALL.into_iter().find(|w| w.interface() == interface) else {
            continue;
        };
        match Version::parse(version) {
            Some(v) if v.compatible_with(VERSION) => return Ok((world, v)),
            _ => incompatible = Some(format!("{PACKAGE}@{}", if version.is_empty() { "?" } else { version })),
        }
    }
    match incompatible {
        Some(found) => Err(FailureKind::IncompatibleVersion { found, supported: VERSION.to_string() }),
        None => Err(FailureKind::UnknownWorld(seen.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_each_world_and_refuses_other_versions() {
        for w in World::ALL {
            let name = format!("tandem:policy/{}@0.1.3", w.interface());
            assert_eq!(identify([name.as_str()]).unwrap().0, w);
        }
        let e = identify(["tandem:policy/tree-filter@1.0.0"]).unwrap_err();
        assert_eq!(
            e,
            FailureKind::IncompatibleVersion {
                found: "tandem:policy@1.0.0".into(),
                supported: "0.1.0".into()
            }
        );
        assert!(matches!(
            identify(["tandem:policy/tree-filter@0.2.0"]),
            Err(FailureKind::IncompatibleVersion { .. })
        ));
        let e = identify(["wasi:cli/run@0.2.6"]).unwrap_err();
        assert_eq!(e, FailureKind::UnknownWorld("wasi:cli/run@0.2.6".into()));
    }

    #[test]
    fn version_compatibility_follows_semver() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("0.1.9").compatible_with(v("0.1.0")));
        assert!(!v("0.2.0").compatible_with(v("0.1.0")));
        assert!(v("1.4.0").compatible_with(v("1.0.0")));
        assert!(!v("2.0.0").compatible_with(v("1.9.0")));
        assert!(Version::parse("1.2").is_none());
        assert!(Version::parse("1.2.3.4").is_none());
    }
}
