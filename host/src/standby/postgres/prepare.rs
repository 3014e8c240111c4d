//! Making the local PostgreSQL a primary the peer can follow and rewind from: the replication
//! role (SCRAM password, the EXECUTE grants `pg_rewind` needs as a non-superuser), the server
//! settings replication and a later rewind need (`ALTER SYSTEM`), tandem's `pg_hba.conf` block, a reload, and a
//! restart when a changed setting needs one. Idempotent: a second run changes nothing.
//!
//! Must never: send the password in clear text (the server gets a SCRAM verifier, so it cannot
//! leak into a statement log), or lower a setting an operator raised.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

use super::settings::{SETTINGS, Setting, wanted_settings};
use super::{LocalPg, PgError};
pub use crate::wal::walsender::random_password;

/// The functions `pg_rewind` calls on its source, granted to a non-superuser role.
const REWIND_FUNCTIONS: [&str; 4] = [
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
];

/// The comment on the replication role tandem creates: `off` drops only a role so marked (or
/// named as tandem names it by default), never one the site made itself.
pub const ROLE_COMMENT: &str = "tandem warm standby replication role (tandem standby off drops it)";

/// What [`LocalPg::drop_replication_role`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleDrop {
    Dropped,
    Absent,
    /// The site's own role (not made by tandem): kept.
    Kept,
}

/// What [`LocalPg::prepare_primary`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimarySetup {
    /// The role the standby side replicates and rewinds as.
    pub user: String,
    pub password: String,
    pub max_slot_wal_keep_size_mib: u64,
}

/// What [`LocalPg::prepare_primary`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrepareReport {
    /// One line per change (`max_wal_senders = 10`, `role tandem_replicator created`, ...).
    pub changed: Vec<String>,
    /// Whether the server was restarted for a setting.
    pub restarted: bool,
}

impl LocalPg {
    /// Prepares this (running) server as a primary for `setup` (see the module doc); restarts
    /// it (fast) when a changed setting needs a restart. Not cancel-safe: a cancelled run may
    /// leave changes made and not yet reloaded; run it again.
    pub async fn prepare_primary(&self, setup: &PrimarySetup) -> Result<PrepareReport, PgError> {
        let mut report = PrepareReport::default();
        let client = self.client().await?;
        let sql = |what: String| move |e| PgError::sql(what, e);
        let role = quote_ident(&setup.user);

        // The role: LOGIN REPLICATION, with the password as a SCRAM verifier.
        let rows = client
            .query(
                "SELECT rolcanlogin, rolreplication, rolpassword FROM pg_authid WHERE rolname = $1",
                &[&setup.user],
            )
            .await
            .map_err(sql("reading pg_authid".into()))?;
        let verifier =
            || quote_literal(&postgres_protocol::password::scram_sha_256(setup.password.as_bytes()));
        match rows.first() {
            None => {
                let stmt = format!(
                    "CREATE ROLE {role} LOGIN REPLICATION PASSWORD {}; COMMENT ON ROLE {role} IS {}",
                    verifier(),
                    quote_literal(ROLE_COMMENT)
                );
                client.batch_execute(&stmt).await.map_err(sql(format!("creating role {role}")))?;
                report.changed.push(format!("role {} created", setup.user));
            }
            Some(row) => {
                if !(row.get::<_, bool>(0) && row.get::<_, bool>(1)) {
                    let stmt = format!("ALTER ROLE {role} LOGIN REPLICATION");
                    client.batch_execute(&stmt).await.map_err(sql(format!("altering role {role}")))?;
                    report.changed.push(format!("role {} may log in and replicate", setup.user));
                }
                let stored: Option<String> = row.get(2);
                if !stored.is_some_and(|s| scram_matches(&s, &setup.password)) {
                    let stmt = format!("ALTER ROLE {role} PASSWORD {}", verifier());
                    client
                        .batch_execute(&stmt)
                        .await
                        .map_err(sql(format!("setting the password of {role}")))?;
                    report.changed.push(format!("role {} password set", setup.user));
                }
            }
        }

        // What pg_rewind reads the source with.
        for function in REWIND_FUNCTIONS {
            let row = client
                .query_one("SELECT has_function_privilege($1, $2, 'EXECUTE')", &[&setup.user, &function])
                .await
                .map_err(sql(format!("checking EXECUTE on {function}")))?;
            if !row.get::<_, bool>(0) {
                let stmt = format!("GRANT EXECUTE ON FUNCTION {function} TO {role}");
                client.batch_execute(&stmt).await.map_err(sql(format!("granting {function}")))?;
                report.changed.push(format!("EXECUTE on {function} granted"));
            }
        }

        // Settings.
        let rows = client
            .query(
                "SELECT name, setting, context, source, pending_restart FROM pg_settings WHERE name = ANY($1)",
                &[&SETTINGS.as_slice()],
            )
            .await
            .map_err(sql("reading pg_settings".into()))?;
        let mut pending_restart = false;
        let current: HashMap<String, Setting> = rows
            .iter()
            .map(|r| {
                pending_restart |= r.get::<_, bool>(4);
                (r.get(0), Setting { value: r.get(1), context: r.get(2), source: r.get(3) })
            })
            .collect();
        let mut needs_restart = pending_restart;
        for (name, value) in wanted_settings(&current, setup) {
            let Some(now) = current.get(name) else { continue };
            if now.source == "command line" {
                tracing::warn!(setting = name, now = %now.value, wanted = %value, "set on the server's command line; tandem cannot change it");
                continue;
            }
            let stmt = format!("ALTER SYSTEM SET {name} = {}", quote_literal(&value));
            client.batch_execute(&stmt).await.map_err(sql(format!("ALTER SYSTEM SET {name}")))?;
            needs_restart |= now.context == "postmaster";
            report.changed.push(format!("{name} = {value}"));
        }
        if !report.changed.is_empty() {
            client.batch_execute("SELECT pg_reload_conf()").await.map_err(sql("pg_reload_conf()".into()))?;
        }
        drop(client);

        if self.apply_hba(&setup.user, true).await? {
            report.changed.push("pg_hba.conf".into());
        }
        if needs_restart {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.restart()).await.map_err(|e| PgError::Io {
                what: "restarting",
                path: self.data_dir.clone(),
                source: std::io::Error::other(e),
            })??;
            report.restarted = true;
        }
        tracing::info!(changed = ?report.changed, restarted = report.restarted, "prepared the local PostgreSQL as a primary");
        Ok(report)
    }
}

impl LocalPg {
    /// Undoes [`LocalPg::prepare_primary`]'s role: revokes the EXECUTE grants and drops
    /// `user`, if tandem made it (its comment says so, or it has the default name
    /// `default_name`, as roles made before the comment have). The server keeps the settings
    /// (they suit any primary) and its pg_hba is the caller's.
    pub async fn drop_replication_role(&self, user: &str, default_name: &str) -> Result<RoleDrop, PgError> {
        let client = self.client().await?;
        let sql = |what: String| move |e| PgError::sql(what, e);
        let rows = client
            .query("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1", &[&user])
            .await
            .map_err(sql("reading pg_roles".into()))?;
        let Some(row) = rows.first() else { return Ok(RoleDrop::Absent) };
        let ours = row.get::<_, Option<String>>(0).as_deref() == Some(ROLE_COMMENT) || user == default_name;
        if !ours {
            return Ok(RoleDrop::Kept);
        }
        let role = quote_ident(user);
        let mut stmt: String = REWIND_FUNCTIONS
            .iter()
            .map(|f| format!("REVOKE EXECUTE ON FUNCTION {f} FROM {role}; "))
            .collect();
        stmt.push_str(&format!("DROP ROLE {role}"));
        client.batch_execute(&stmt).await.map_err(sql(format!("dropping role {role}")))?;
        tracing::info!(role = user, "dropped the replication role");
        Ok(RoleDrop::Dropped)
    }
}

/// Whether PostgreSQL's stored SCRAM secret (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:
/// <ServerKey>`) is of `password`.
fn scram_matches(stored: &str, password: &str) -> bool {
    let check = || -> Option<bool> {
        let (iterations_salt, keys) = stored.strip_prefix("SCRAM-SHA-256$")?.split_once('$')?;
        let (iterations, salt) = iterations_salt.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|i| (1..=1 << 24).contains(i))?;
        let salt = B64.decode(salt).ok()?;
        let stored_key = B64.decode(keys.split_once(':')?.0).ok()?;
        let prepared =
            stringprep::saslprep(password).map(|p| p.into_owned()).unwrap_or_else(|_| password.to_owned());
        let mac = |key: &[u8], parts: &[&[u8]]| -> Option<[u8; 32]> {
            let mut m = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).ok()?;
            parts.iter().for_each(|p| m.update(p));
            Some(m.finalize().into_bytes().into())
        };
        // PBKDF2-HMAC-SHA-256, one block.
        let mut block = mac(prepared.as_bytes(), &[&salt, &1u32.to_be_bytes()])?;
        let mut salted = block;
        for _ in 1..iterations {
            block = mac(prepared.as_bytes(), &[&block])?;
            salted.iter_mut().zip(block).for_each(|(s, b)| *s ^= b);
        }
        let client_key = mac(&salted, &[b"Client Key"])?;
        Some(Sha256::digest(client_key).as_slice() == stored_key.as_slice())
    };
    check().unwrap_or(false)
}

/// An SQL identifier in double quotes.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// An SQL string literal, as PostgreSQL's `quote_literal` writes it: quotes doubled, and with
/// a backslash the `E''` form with backslashes doubled (right whatever
/// `standard_conforming_strings` is).
pub fn quote_literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if s.contains('\\') { format!("E'{}'", quoted.replace('\\', "\\\\")) } else { format!("'{quoted}'") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_passwords() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\'b"), r"E'a\\''b'");
    }

    #[test]
    fn a_stored_scram_secret_is_recognised() {
        let stored = postgres_protocol::password::scram_sha_256(b"s3cret");
        assert!(scram_matches(&stored, "s3cret"));
        assert!(!scram_matches(&stored, "other"));
        assert!(!scram_matches("md5abcdef", "s3cret"));
        assert!(!scram_matches("SCRAM-SHA-256$x:y$z:w", "s3cret"));
    }
}
