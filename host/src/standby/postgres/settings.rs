//! What `prepare_primary` asks of the server's settings, as a pure function of what
//! `pg_settings` shows: replication on, enough senders and slots, hint bits WAL-logged and
//! WAL kept for `pg_rewind`, and the slot WAL cap (never `listen_addresses`: the peer comes
//! through tandem's tunnel to the Unix socket).
//! Must never: lower a value an operator set higher.

use std::collections::HashMap;

use super::prepare::PrimarySetup;

/// At least this many WAL senders and slots (tandem's client, a standby, a base backup, spares).
pub const MIN_WAL_SENDERS: u32 = 10;
pub const MIN_REPLICATION_SLOTS: u32 = 10;

/// The settings [`wanted_settings`] looks at.
pub(super) const SETTINGS: [&str; 9] = [
    "wal_level",
    "max_wal_senders",
    "max_replication_slots",
    "wal_log_hints",
    "data_checksums",
    "hot_standby",
    "max_slot_wal_keep_size",
    "wal_keep_size",
    "max_wal_size",
];

/// A server setting as `pg_settings` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    /// `postmaster` for settings that take a restart.
    pub context: String,
    /// `command line` cannot be overridden by `ALTER SYSTEM`.
    pub source: String,
}

/// The `ALTER SYSTEM` settings `current` lacks for `setup`, as (name, value): only ever
/// raising (`wal_level` from `minimal`, the sender and slot counts to the minimum,
/// `wal_keep_size` to `max_wal_size`), never lowering what an operator set higher.
pub fn wanted_settings(
    current: &HashMap<String, Setting>,
    setup: &PrimarySetup,
) -> Vec<(&'static str, String)> {
    let get = |name: &str| current.get(name).map_or("", |s| s.value.as_str());
    let number = |name: &str| get(name).parse::<i64>().unwrap_or(0);
    let mut out = Vec::new();
    if get("wal_level") == "minimal" {
        out.push(("wal_level", "replica".to_owned()));
    }
    if number("max_wal_senders") < i64::from(MIN_WAL_SENDERS) {
        out.push(("max_wal_senders", MIN_WAL_SENDERS.to_string()));
    }
    if number("max_replication_slots") < i64::from(MIN_REPLICATION_SLOTS) {
        out.push(("max_replication_slots", MIN_REPLICATION_SLOTS.to_string()));
    }
    // pg_rewind needs hint-bit changes WAL-logged: checksums do that too.
    if get("data_checksums") != "on" && get("wal_log_hints") != "on" {
        out.push(("wal_log_hints", "on".to_owned()));
    }
    if get("hot_standby") != "on" {
        out.push(("hot_standby", "on".to_owned()));
    }
    // pg_settings shows it in MB.
    if get("max_slot_wal_keep_size") != setup.max_slot_wal_keep_size_mib.to_string() {
        out.push(("max_slot_wal_keep_size", format!("{}MB", setup.max_slot_wal_keep_size_mib)));
    }
    // pg_rewind reads the old primary's WAL back to the last checkpoint before the fork, and
    // the end-of-recovery checkpoint it runs on a crashed cluster recycles every segment
    // before the crash: without kept WAL a rewind after a crash nearly always fails ("could
    // not find previous WAL record"). Checkpoints come at most max_wal_size apart, so keeping
    // that much covers the last common checkpoint while the old primary wrote little after
    // the fork. Both in MB in pg_settings.
    if number("wal_keep_size") < number("max_wal_size") {
        out.push(("wal_keep_size", format!("{}MB", number("max_wal_size"))));
    }
    // listen_addresses is left as it is: the peer's connections come through tandem's
    // tunnel to the Unix socket, so the server need not listen on the network for the pair.
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(list: &[(&str, &str)]) -> HashMap<String, Setting> {
        list.iter()
            .map(|(n, v)| {
                let s =
                    Setting { value: (*v).into(), context: "postmaster".into(), source: "default".into() };
                ((*n).to_owned(), s)
            })
            .collect()
    }

    fn setup() -> PrimarySetup {
        PrimarySetup { user: "rep".into(), password: "pw".into(), max_slot_wal_keep_size_mib: 1024 }
    }

    #[test]
    fn settings_are_only_raised_and_listen_addresses_never() {
        let fresh = settings(&[
            ("wal_level", "minimal"),
            ("max_wal_senders", "5"),
            ("max_replication_slots", "20"),
            ("wal_log_hints", "off"),
            ("data_checksums", "off"),
            ("hot_standby", "on"),
            ("max_slot_wal_keep_size", "-1"),
            ("listen_addresses", "localhost"),
            ("wal_keep_size", "0"),
            ("max_wal_size", "1024"),
        ]);
        let names =
            |w: Vec<(&str, String)>| w.into_iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>();
        assert_eq!(
            names(wanted_settings(&fresh, &setup())),
            [
                "wal_level=replica",
                "max_wal_senders=10",
                "wal_log_hints=on",
                "max_slot_wal_keep_size=1024MB",
                "wal_keep_size=1024MB"
            ]
        );
        let mut prepared = settings(&[
            ("wal_level", "logical"),
            ("max_wal_senders", "10"),
            ("max_replication_slots", "10"),
            ("wal_log_hints", "off"),
            ("data_checksums", "on"),
            ("hot_standby", "on"),
            ("max_slot_wal_keep_size", "1024"),
            ("listen_addresses", "10.0.0.1"),
            ("wal_keep_size", "2048"),
            ("max_wal_size", "1024"),
        ]);
        assert!(wanted_settings(&prepared, &setup()).is_empty());
        // Regression guard: the primary was opened to the network (listen_addresses = '*') for
        // a remote standby; the tunnel makes that unnecessary.
        prepared.insert("listen_addresses".into(), settings(&[("x", "127.0.0.1, ::1")])["x"].clone());
        assert!(wanted_settings(&prepared, &setup()).is_empty());
    }
}
