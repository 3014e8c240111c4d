//! The replication commands the client sends, each with a typed result: IDENTIFY_SYSTEM,
//! `SHOW wal_segment_size`, CREATE/READ/DROP_REPLICATION_SLOT, TIMELINE_HISTORY and
//! START_REPLICATION. The parsers from result set to typed value are pure.
//!
//! Must never: put a name into a command without validating it (slot names are the only
//! free text sent), or trust a history file name the server sends (it becomes a file name on
//! our disk).

use bytes::Bytes;

use super::conn::ReplicationConn;
use super::error::{WalClientError, sqlstate};
use super::query::ResultSet;
use super::stream::WalStream;
use crate::wal::lsn::{Lsn, TimeLineId, WalSegmentSize, history_file_name};
use crate::wal::upstream::UpstreamIdentity;

/// PostgreSQL's `NAMEDATALEN - 1`.
const MAX_SLOT_NAME_LEN: usize = 63;

/// The answer to IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's unique id (`pg_control_system().system_identifier`).
    pub systemid: u64,
    /// The timeline the server is on now.
    pub timeline: TimeLineId,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// `None` on a physical replication connection.
    pub dbname: Option<String>,
}

/// A physical replication slot as READ_REPLICATION_SLOT shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub name: String,
    /// Oldest WAL the slot keeps; `None` if it does not reserve WAL yet.
    pub restart_lsn: Option<Lsn>,
    /// The timeline `restart_lsn` is on.
    pub restart_tli: Option<TimeLineId>,
}

/// The outcome of [`ReplicationConn::create_physical_slot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredSlot {
    /// False if the slot existed already and is reused.
    pub created: bool,
    pub slot: SlotInfo,
}

/// A timeline history file as TIMELINE_HISTORY returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    /// `<TLI>.history`, checked against the timeline asked for.
    pub filename: String,
    /// The file's bytes, verbatim.
    pub content: Bytes,
}

/// Checks a slot name against PostgreSQL's rule: 1 to 63 of `a-z`, `0-9`, `_`.
pub fn validate_slot_name(name: &str) -> Result<(), WalClientError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SLOT_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { Ok(()) } else { Err(WalClientError::SlotName(name.chars().take(80).collect())) }
}

impl ReplicationConn {
    /// IDENTIFY_SYSTEM: which cluster, timeline and WAL position this server is at.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, WalClientError> {
        parse_identify_system(&self.simple_query("IDENTIFY_SYSTEM", "IDENTIFY_SYSTEM").await?)
    }

    /// The cluster's WAL segment size (`SHOW wal_segment_size`; it is not a reported
    /// parameter, so the startup exchange does not carry it).
    pub async fn wal_segment_size(&mut self) -> Result<WalSegmentSize, WalClientError> {
        let set = self.simple_query("SHOW", "SHOW wal_segment_size").await?;
        Ok(WalSegmentSize::parse_setting(set.single_row()?.required("wal_segment_size")?)?)
    }

    /// Who this server's WAL belongs to (IDENTIFY_SYSTEM, `SHOW wal_segment_size`, the
    /// `server_version` parameter), with the IDENTIFY_SYSTEM answer itself.
    pub async fn upstream_identity(&mut self) -> Result<(SystemIdentity, UpstreamIdentity), WalClientError> {
        let ident = self.identify_system().await?;
        let seg = self.wal_segment_size().await?;
        let server_version = self.parameter("server_version").unwrap_or_default().to_owned();
        let upstream =
            UpstreamIdentity { system_id: ident.systemid, server_version, segment_size: seg.bytes() };
        Ok((ident, upstream))
    }

    /// Creates the physical slot `name`, or reuses it if it exists already. With
    /// `reserve_wal`, a new slot holds WAL from the current position at once.
    pub async fn create_physical_slot(
        &mut self,
        name: &str,
        reserve_wal: bool,
    ) -> Result<EnsuredSlot, WalClientError> {
        validate_slot_name(name)?;
        let options = if reserve_wal { " (RESERVE_WAL)" } else { "" };
        let sql = format!("CREATE_REPLICATION_SLOT \"{name}\" PHYSICAL{options}");
        let created = match self.simple_query("CREATE_REPLICATION_SLOT", &sql).await {
            Ok(_) => true,
            Err(e) if e.sqlstate() == Some(sqlstate::DUPLICATE_OBJECT) => false,
            Err(e) => return Err(e),
        };
        // The creation answer's consistent_point is always 0/0 for a physical slot: read the
        // slot itself for its restart_lsn.
        let slot = self.read_slot(name).await?.ok_or_else(|| WalClientError::BadResult {
            command: "READ_REPLICATION_SLOT",
            why: format!("slot {name:?} vanished right after it was ensured"),
        })?;
        tracing::info!(slot = name, created, restart_lsn = ?slot.restart_lsn, "physical slot ready");
        Ok(EnsuredSlot { created, slot })
    }

    /// READ_REPLICATION_SLOT (PostgreSQL 15+): `None` if the slot does not exist; an error
    /// if it is a logical slot.
    pub async fn read_slot(&mut self, name: &str) -> Result<Option<SlotInfo>, WalClientError> {
        validate_slot_name(name)?;
        let sql = format!("READ_REPLICATION_SLOT \"{name}\"");
        parse_read_slot(name, &self.simple_query("READ_REPLICATION_SLOT", &sql).await?)
    }

    /// DROP_REPLICATION_SLOT; with `wait`, waits for the slot to become inactive.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), WalClientError> {
        validate_slot_name(name)?;
        let sql = format!("DROP_REPLICATION_SLOT \"{name}\"{}", if wait { " WAIT" } else { "" });
        self.simple_query("DROP_REPLICATION_SLOT", &sql).await.map(drop)
    }

    /// TIMELINE_HISTORY: timeline `tli`'s history file.
    pub async fn timeline_history(&mut self, tli: TimeLineId) -> Result<TimelineHistory, WalClientError> {
        let set = self.simple_query("TIMELINE_HISTORY", &format!("TIMELINE_HISTORY {tli}")).await?;
        parse_timeline_history(tli, &set)
    }

    /// START_REPLICATION of timeline `timeline` from `start`, through physical slot `slot` if
    /// given. The server streams from exactly `start`: a receiver writing segment files asks
    /// for the start of a segment, as walreceiver does. Not cancel-safe (the stream it returns
    /// is).
    pub async fn start_replication(
        &mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: TimeLineId,
    ) -> Result<WalStream<'_>, WalClientError> {
        if let Some(slot) = slot {
            validate_slot_name(slot)?;
        }
        if timeline == 0 {
            return Err(WalClientError::Config("timeline 0 does not exist".into()));
        }
        WalStream::start(self, slot, start, timeline).await
    }
}

pub fn parse_identify_system(set: &ResultSet) -> Result<SystemIdentity, WalClientError> {
    let row = set.single_row()?;
    Ok(SystemIdentity {
        systemid: row.parse("systemid")?.ok_or_else(|| set.bad("systemid is NULL"))?,
        timeline: row.parse("timeline")?.ok_or_else(|| set.bad("timeline is NULL"))?,
        xlogpos: row.required("xlogpos")?.parse()?,
        dbname: row.text("dbname")?.map(str::to_owned),
    })
}

pub fn parse_read_slot(name: &str, set: &ResultSet) -> Result<Option<SlotInfo>, WalClientError> {
    let row = set.single_row()?;
    match row.text("slot_type")? {
        // A missing slot is a row of NULLs.
        None => Ok(None),
        Some("physical") => Ok(Some(SlotInfo {
            name: name.to_owned(),
            restart_lsn: row.text("restart_lsn")?.map(str::parse).transpose()?,
            restart_tli: row.parse("restart_tli")?,
        })),
        Some(other) => Err(set.bad(format!("slot type {other:?} is not physical"))),
    }
}

pub fn parse_timeline_history(tli: TimeLineId, set: &ResultSet) -> Result<TimelineHistory, WalClientError> {
    let row = set.single_row()?;
    let filename = row.required("filename")?;
    let expected = history_file_name(tli);
    if filename != expected {
        return Err(set.bad(format!("history file name {filename:?} instead of {expected:?}")));
    }
    // The file's raw bytes in a text-format column (older releases labelled it bytea, still
    // without escaping it): taken verbatim, never decoded.
    let content = row.bytes("content")?.ok_or_else(|| set.bad("content is NULL"))?.clone();
    Ok(TimelineHistory { filename: expected, content })
}

#[cfg(test)]
mod tests {
    use super::super::codec::Column;
    use super::*;

    fn set(command: &'static str, columns: &[&str], row: &[Option<&'static str>]) -> ResultSet {
        ResultSet {
            command,
            columns: columns.iter().map(|c| Column { name: (*c).into(), type_oid: 25 }).collect(),
            rows: vec![row.iter().map(|v| v.map(|v| Bytes::from_static(v.as_bytes()))).collect()],
            tag: String::new(),
        }
    }

    #[test]
    fn slot_names_follow_postgres_rules() {
        validate_slot_name("tandem_1").unwrap();
        validate_slot_name(&"a".repeat(63)).unwrap();
        for bad in ["", "Tandem", "a-b", "a\"b", "a b", "é", &"a".repeat(64)] {
            assert!(validate_slot_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identify_system_parses() {
        let cols = ["systemid", "timeline", "xlogpos", "dbname"];
        let s =
            set("IDENTIFY_SYSTEM", &cols, &[Some("7301234567890123456"), Some("1"), Some("0/16B3748"), None]);
        let id = parse_identify_system(&s).unwrap();
        assert_eq!(id.systemid, 7_301_234_567_890_123_456);
        assert_eq!((id.timeline, id.xlogpos, id.dbname), (1, Lsn(0x16B_3748), None));
        let s = set("IDENTIFY_SYSTEM", &cols, &[Some("x"), Some("1"), Some("0/0"), None]);
        assert!(matches!(parse_identify_system(&s), Err(WalClientError::BadResult { .. })));
    }

    #[test]
    fn read_slot_answers_none_for_a_row_of_nulls() {
        let cols = ["slot_type", "restart_lsn", "restart_tli"];
        assert_eq!(parse_read_slot("s", &set("R", &cols, &[None, None, None])).unwrap(), None);
        let got = parse_read_slot("s", &set("R", &cols, &[Some("physical"), Some("0/3000000"), Some("1")]))
            .unwrap();
        assert_eq!(
            got,
            Some(SlotInfo { name: "s".into(), restart_lsn: Some(Lsn(0x300_0000)), restart_tli: Some(1) })
        );
        assert!(parse_read_slot("s", &set("R", &cols, &[Some("logical"), None, None])).is_err());
    }

    #[test]
    fn history_file_names_must_match_the_timeline() {
        let cols = ["filename", "content"];
        let ok = parse_timeline_history(
            2,
            &set("T", &cols, &[Some("00000002.history"), Some("1\t0/3000148\tx\n")]),
        );
        assert_eq!(ok.unwrap().content, Bytes::from_static(b"1\t0/3000148\tx\n"));
        let evil = set("T", &cols, &[Some("../../postgresql.conf"), Some("")]);
        assert!(parse_timeline_history(2, &evil).is_err());
    }
}
