//! tandem's block in `pg_hba.conf`: the lines that let the pair's replication role in
//! (replication, and the `postgres` database that `pg_rewind` and the status SQL read
//! through), with its SCRAM password, over the Unix socket only: the peer's connections arrive
//! through tandem's database tunnel, which connects the local socket, so no network line is
//! needed. Between two marker lines at the top of the file (`pg_hba.conf` is first-match, so a
//! broader `trust` or `peer` line below cannot shadow them). [`with_hba_block`] is the pure
//! rewrite; [`LocalPg::set_hba`] applies it to the server's file and reloads.
//!
//! Must never: touch a line outside the markers, or change the file's owner or mode.

use std::path::PathBuf;

use super::{LocalPg, PgError};

/// First line of tandem's block.
pub const HBA_BEGIN: &str = "# tandem warm standby: begin";
/// Last line of tandem's block.
pub const HBA_END: &str = "# tandem warm standby: end";
const HBA_NOTE: &str = "# (written by tandem standby configure; edit outside this block)";

/// `text` (a `pg_hba.conf`) with tandem's block for `user` at the top when `on`, replacing any
/// earlier block wherever it was (an older tandem's network lines too); without a block when
/// not `on`. Idempotent. A begin marker without an end marker is dropped alone (never the
/// lines after it).
pub fn with_hba_block(text: &str, user: &str, on: bool) -> String {
    if !on && !text.lines().any(|l| l.trim_end() == HBA_BEGIN) {
        return text.to_owned();
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut kept: Vec<&str> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_end() == HBA_BEGIN {
            match lines[i..].iter().position(|l| l.trim_end() == HBA_END) {
                Some(end) => i += end + 1,
                None => i += 1,
            }
            continue;
        }
        kept.push(lines[i]);
        i += 1;
    }
    let mut out = String::with_capacity(text.len() + 256);
    if on {
        out.push_str(HBA_BEGIN);
        out.push('\n');
        out.push_str(HBA_NOTE);
        out.push('\n');
        // Quoted: a role named like a keyword (`all`) must match only itself.
        for database in ["replication", "postgres"] {
            out.push_str(&format!("local {database} \"{user}\" scram-sha-256\n"));
        }
        out.push_str(HBA_END);
        out.push('\n');
    }
    for line in kept {
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl LocalPg {
    /// Writes (`on`) or removes tandem's block for `user` in the server's `pg_hba.conf` (`SHOW
    /// hba_file`; the data folder's `pg_hba.conf` when the server is down), then reloads the
    /// server. An unchanged file is not rewritten.
    pub async fn set_hba(&self, user: &str, on: bool) -> Result<(), PgError> {
        self.apply_hba(user, on).await.map(drop)
    }

    /// [`LocalPg::set_hba`], telling whether the file changed.
    pub(super) async fn apply_hba(&self, user: &str, on: bool) -> Result<bool, PgError> {
        let client = match self.client().await {
            Ok(c) => Some(c),
            Err(e) => {
                let me = self.clone();
                if tokio::task::spawn_blocking(move || me.is_running()).await.unwrap_or(true) {
                    return Err(e);
                }
                None
            }
        };
        let path = match &client {
            Some(c) => {
                let row =
                    c.query_one("SHOW hba_file", &[]).await.map_err(|e| PgError::sql("SHOW hba_file", e))?;
                PathBuf::from(row.get::<_, String>(0))
            }
            None => self.data_dir.join("pg_hba.conf"),
        };
        let io = |what| {
            let path = path.clone();
            move |source| PgError::Io { what, path, source }
        };
        let old = std::fs::read_to_string(&path).map_err(io("reading"))?;
        let new = with_hba_block(&old, user, on);
        if new == old {
            tracing::debug!(path = %path.display(), "pg_hba.conf already as wanted");
            return Ok(false);
        }
        crate::durable::replace_keeping_owner(&path, new.as_bytes()).map_err(io("rewriting"))?;
        tracing::info!(path = %path.display(), on, user, "rewrote tandem's block in pg_hba.conf");
        let Some(client) = client else {
            return Ok(true);
        };
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(|e| PgError::sql("pg_reload_conf()", e))?;
        let errors = client
            .query("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL", &[])
            .await
            .map_err(|e| PgError::sql("reading pg_hba_file_rules", e))?;
        if !errors.is_empty() {
            let errors = errors
                .iter()
                .map(|r| {
                    format!("line {}: {}", r.get::<_, Option<i32>>(0).unwrap_or(0), r.get::<_, String>(1))
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(PgError::HbaRejected { path, errors });
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREIGN: &str =
        "# TYPE DATABASE USER ADDRESS METHOD\nlocal all postgres peer\nhost all all 0.0.0.0/0 reject\n";

    #[test]
    fn the_block_goes_to_the_top_local_only_and_foreign_lines_stay() {
        let out = with_hba_block(FOREIGN, "rep", true);
        let expected = format!(
            "{HBA_BEGIN}\n{HBA_NOTE}\n\
             local replication \"rep\" scram-sha-256\n\
             local postgres \"rep\" scram-sha-256\n\
             {HBA_END}\n{FOREIGN}"
        );
        assert_eq!(out, expected);
        assert_eq!(with_hba_block(&out, "rep", true), out, "idempotent");
        assert!(!out.contains("host replication"), "no network line: the peer comes through the tunnel");
    }

    #[test]
    fn a_block_anywhere_is_replaced_and_off_removes_it() {
        // An older tandem's block, with network lines, moved below the operator's lines.
        let old = format!("{HBA_BEGIN}\nhost replication \"rep\" 10.0.0.2/32 scram-sha-256\n{HBA_END}\n");
        let moved = format!("{FOREIGN}{old}local all all trust\n");
        let out = with_hba_block(&moved, "rep", true);
        assert!(out.starts_with(HBA_BEGIN), "{out}");
        assert_eq!(out.matches(HBA_BEGIN).count(), 1, "{out}");
        assert!(!out.contains("10.0.0.2"), "{out}");
        assert!(out.ends_with(&format!("{FOREIGN}local all all trust\n")), "{out}");
        assert_eq!(with_hba_block(&out, "rep", false), format!("{FOREIGN}local all all trust\n"));
        assert_eq!(with_hba_block(FOREIGN, "rep", false), FOREIGN, "no block, nothing to do");
    }

    #[test]
    fn a_begin_without_end_drops_only_the_marker() {
        let damaged = format!("{HBA_BEGIN}\n{FOREIGN}");
        assert_eq!(with_hba_block(&damaged, "rep", false), FOREIGN);
        // Nothing to remove: not even a missing final newline is added.
        assert_eq!(with_hba_block("local all all trust", "rep", false), "local all all trust");
    }
}
