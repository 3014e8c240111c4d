//! What only SQL on the primary tells: its current WAL position and the state of tandem's slot
//! (`pg_replication_slots.wal_status`, `safe_wal_size`), polled over an ordinary connection
//! (tokio-postgres) for status. The replication connection cannot run these queries.
//!
//! Owns the poll task and [`read_slot`], the one reading of a slot's row (the standby's own
//! PostgreSQL administration uses it too). Must never change anything on the primary.

use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::ConnConfig;
use super::lsn::Lsn;

/// How often the primary is asked.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// Database to connect to for the queries.
const DBNAME: &str = "postgres";
/// The poll's `application_name` (the tunnel counts its bytes by it).
pub const STATUS_APPLICATION_NAME: &str = "tandem-status";

/// The parts of a `pg_replication_slots` row tandem watches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotRow {
    pub active: bool,
    pub restart_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// Bytes the primary may still write before the slot loses WAL; `None` without a cap.
    pub safe_wal_size: Option<i64>,
}

/// Slot `name`'s row of `pg_replication_slots` on `client`'s server, if the slot exists.
pub async fn read_slot(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<Option<SlotRow>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT active, restart_lsn::text, wal_status, safe_wal_size FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await?;
    Ok(rows.first().map(|r| SlotRow {
        active: r.get(0),
        // PostgreSQL's own text form; NULL until the slot has reserved WAL.
        restart_lsn: r.get::<_, Option<String>>(1).and_then(|s| s.parse().ok()),
        wal_status: r.get(2),
        safe_wal_size: r.get(3),
    }))
}

/// The primary's answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrimaryFacts {
    /// `pg_current_wal_lsn()`.
    pub current_lsn: Option<Lsn>,
    /// Tandem's slot; `None` when it does not exist.
    pub slot: Option<SlotRow>,
    pub max_slot_wal_keep_size: Option<String>,
    pub at: Option<SystemTime>,
    pub error: Option<String>,
}

/// Polls the primary until `shutdown`, publishing on `out`.
pub async fn poll(
    conn: ConnConfig,
    slot: String,
    out: watch::Sender<PrimaryFacts>,
    shutdown: CancellationToken,
) {
    let mut config = tokio_postgres::Config::new();
    match &conn.socket_dir {
        Some(dir) => config.host_path(dir),
        None => config.host(&conn.host),
    };
    config.port(conn.port).user(&conn.user).dbname(DBNAME).application_name(STATUS_APPLICATION_NAME);
    config.connect_timeout(conn.connect_timeout);
    if let Some(pw) = &conn.password {
        config.password(pw);
    }
    // One connection, kept while it works: a new connection (and its SCRAM exchange) every
    // poll costs the primary and tandem more than the queries.
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        let answer = tokio::select! {
            _ = shutdown.cancelled() => return,
            f = ask(&config, &mut client, &slot) => f,
        };
        let facts = answer.unwrap_or_else(|e| {
            client = None;
            PrimaryFacts { error: Some(e.to_string()), ..PrimaryFacts::default() }
        });
        out.send_replace(PrimaryFacts { at: Some(SystemTime::now()), ..facts });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

async fn ask(
    config: &tokio_postgres::Config,
    client: &mut Option<tokio_postgres::Client>,
    slot: &str,
) -> Result<PrimaryFacts, tokio_postgres::Error> {
    let c = match client {
        Some(c) if !c.is_closed() => c,
        _ => {
            let (c, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client.insert(c)
        }
    };
    let lsn = |s: Option<String>| s.and_then(|s| s.parse::<Lsn>().ok());
    let now = c
        .query_one(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)::text, \
             current_setting('max_slot_wal_keep_size')",
            &[],
        )
        .await?;
    Ok(PrimaryFacts {
        current_lsn: lsn(now.get(0)),
        max_slot_wal_keep_size: now.get(1),
        slot: read_slot(c, slot).await?,
        ..PrimaryFacts::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::client::tests::pg::PgServer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_the_position_and_the_slot_state() {
        let Some(pg) = PgServer::start(&[]) else { return };
        pg.psql("SELECT pg_create_physical_replication_slot('tandem', true)");
        let (tx, mut rx) = watch::channel(PrimaryFacts::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(poll(pg.config("rep_scram"), "tandem".into(), tx, stop.clone()));
        let facts = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|f| f.at.is_some()))
            .await
            .expect("polled")
            .unwrap()
            .clone();
        stop.cancel();
        task.await.unwrap();
        assert_eq!(facts.error, None);
        assert!(facts.current_lsn.is_some_and(|l| l.is_valid()), "{facts:?}");
        let slot = facts.slot.as_ref().expect("the slot exists");
        assert!(!slot.active, "{facts:?}");
        assert_eq!(slot.wal_status.as_deref(), Some("reserved"));
        assert_eq!(slot.safe_wal_size, None, "no max_slot_wal_keep_size");
        assert_eq!(facts.max_slot_wal_keep_size.as_deref(), Some("-1"));
    }
}
