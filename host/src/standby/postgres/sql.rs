//! Questions and orders to the local PostgreSQL over its Unix socket, as the superuser: is it
//! a standby, where are its WAL positions, promote, checkpoint, the replication it serves
//! (`pg_stat_replication`) and its slots. A connection per call: these are rare (role changes;
//! a status reads everything it needs over one, [`LocalPg::overview`]), and a fresh connection
//! never carries a broken session.

use std::net::IpAddr;
use std::time::SystemTime;

use tokio_postgres::Client;

use super::error::describe;
use super::{LocalPg, PgError};
use crate::wal::lsn::Lsn;
use crate::wal::primary_sql::{SlotRow, read_slot};

/// The database tandem connects to.
const DBNAME: &str = "postgres";
/// `application_name` of tandem's administrative sessions.
const APPLICATION_NAME: &str = "tandem-admin";
/// How long a connection over the socket may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One row of `pg_stat_replication`: a standby (or tandem's WAL client) this server sends to.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicationRow {
    pub application_name: String,
    /// `None` over a Unix socket.
    pub client_addr: Option<IpAddr>,
    /// `startup`, `catchup`, `streaming`, `backup`, `stopping`.
    pub state: Option<String>,
    pub sent_lsn: Option<Lsn>,
    pub write_lsn: Option<Lsn>,
    pub flush_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// When the standby last reported.
    pub reply_time: Option<SystemTime>,
    /// PostgreSQL's `flush_lag`: how long WAL took from here to durable at the standby side
    /// (NULL, so `None`, once it has caught up and nothing is in flight).
    pub flush_lag_seconds: Option<f64>,
}

/// What status shows of the server, read over one session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overview {
    pub in_recovery: bool,
    /// A standby only: replay paused (or a pause requested).
    pub replay_paused: Option<bool>,
    /// `pg_last_wal_receive_lsn()`: the WAL a standby received and flushed; `None` before any
    /// streaming and on a primary.
    pub receive_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()`: the WAL a standby replayed; `None` on a primary.
    pub replay_lsn: Option<Lsn>,
    /// A primary only: `pg_current_wal_flush_lsn()`.
    pub current_lsn: Option<Lsn>,
    /// A primary only: the slot asked about, if it exists.
    pub slot: Option<SlotRow>,
    /// A primary only: `pg_stat_replication`.
    pub replication: Vec<ReplicationRow>,
}

/// One query for the state every status needs; each branch only where it is allowed (the
/// pause state errors on a primary, the flush position on a standby).
const OVERVIEW_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() <> 'not paused' END, \
     pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
     CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_flush_lsn()::text END";

impl LocalPg {
    /// The server's state for a status, over one session (status and health are asked often:
    /// one connection instead of one per question); on a primary also `slot` and whom it
    /// streams to.
    pub async fn overview(&self, slot: &str) -> Result<Overview, PgError> {
        let client = self.client().await?;
        let row = client
            .query_one(OVERVIEW_SQL, &[])
            .await
            .map_err(|e| PgError::sql("reading the server's state", e))?;
        let mut o = Overview {
            in_recovery: row.get(0),
            replay_paused: row.get(1),
            receive_lsn: parse_lsn("pg_last_wal_receive_lsn()", row.get(2))?,
            replay_lsn: parse_lsn("pg_last_wal_replay_lsn()", row.get(3))?,
            current_lsn: parse_lsn("pg_current_wal_flush_lsn()", row.get(4))?,
            ..Overview::default()
        };
        if !o.in_recovery {
            o.slot = read_slot(&client, slot)
                .await
                .map_err(|e| PgError::sql("reading pg_replication_slots", e))?;
            o.replication = replication_rows(&client).await?;
        }
        Ok(o)
    }

    /// A session as `superuser` over the socket; its connection task runs on the current
    /// runtime until the client is dropped.
    pub async fn client(&self) -> Result<Client, PgError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(&self.superuser)
            .dbname(DBNAME)
            .application_name(APPLICATION_NAME)
            .connect_timeout(CONNECT_TIMEOUT);
        let (client, connection) =
            config.connect(tokio_postgres::NoTls).await.map_err(|source| PgError::Connect {
                socket_dir: self.socket_dir.clone(),
                port: self.port,
                user: self.superuser.clone(),
                detail: describe(&source),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %describe(&e), "local PostgreSQL session ended");
            }
        });
        Ok(client)
    }

    /// `pg_is_in_recovery()`: true on a standby.
    pub async fn in_recovery(&self) -> Result<bool, PgError> {
        self.one("SELECT pg_is_in_recovery()").await
    }

    /// `pg_current_wal_flush_lsn()`: on a primary, the WAL flushed to disk.
    pub async fn current_lsn(&self) -> Result<Lsn, PgError> {
        self.lsn("pg_current_wal_flush_lsn()").await?.ok_or(PgError::Null("pg_current_wal_flush_lsn()"))
    }

    /// Promotes this standby and waits up to `wait_secs` for it to accept writes.
    pub async fn promote(&self, wait_secs: u32) -> Result<(), PgError> {
        let wait = i32::try_from(wait_secs).unwrap_or(i32::MAX);
        let client = self.client().await?;
        let row = client
            .query_one("SELECT pg_promote(true, $1)", &[&wait])
            .await
            .map_err(|e| PgError::sql("pg_promote", e))?;
        if !row.get::<_, bool>(0) {
            return Err(PgError::PromoteTimedOut(wait_secs));
        }
        tracing::warn!(data = %self.data_dir.display(), "promoted the local PostgreSQL");
        Ok(())
    }

    /// `CHECKPOINT` (after a promotion, so that `pg_rewind` reads the new timeline from the
    /// control file).
    pub async fn checkpoint(&self) -> Result<(), PgError> {
        let client = self.client().await?;
        client.batch_execute("CHECKPOINT").await.map_err(|e| PgError::sql("CHECKPOINT", e))
    }

    /// Makes new transactions read-only by default (`default_transaction_read_only`), or
    /// undoes it: the `read-only` fence of an old primary whose peer took over, kept for sites
    /// that choose it. A soft fence (a session may still ask for read-write): the default
    /// fence is a demotion (see `fence`).
    pub async fn set_read_only(&self, on: bool) -> Result<(), PgError> {
        let client = self.client().await?;
        let sql = if on {
            "ALTER SYSTEM SET default_transaction_read_only = on"
        } else {
            "ALTER SYSTEM RESET default_transaction_read_only"
        };
        client.batch_execute(sql).await.map_err(|e| PgError::sql("default_transaction_read_only", e))?;
        client.batch_execute("SELECT pg_reload_conf()").await.map_err(|e| PgError::sql("reloading", e))
    }

    /// `pg_reload_conf()`: the server rereads its configuration files.
    pub async fn reload(&self) -> Result<(), PgError> {
        let client = self.client().await?;
        client.batch_execute("SELECT pg_reload_conf()").await.map_err(|e| PgError::sql("reloading", e))
    }

    /// Drops the replication slot `name` if it exists; `Ok(false)` if there is none, an error
    /// if a session uses it.
    pub async fn drop_slot(&self, name: &str) -> Result<bool, PgError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", &[&name])
            .await
            .map_err(|e| PgError::sql("reading pg_replication_slots", e))?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        if let Some(pid) = row.get::<_, Option<i32>>(0) {
            return Err(PgError::SlotActive { slot: name.to_owned(), pid });
        }
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&name])
            .await
            .map_err(|e| PgError::sql(format!("dropping replication slot {name}"), e))?;
        tracing::info!(slot = name, "dropped replication slot");
        Ok(true)
    }

    /// Makes the physical replication slot `name`, holding WAL from the last checkpoint's redo
    /// point on, unless it exists; whether it was made. A just-promoted primary makes it for
    /// its old primary: that one's rejoin then finds the WAL from the fork on.
    pub async fn create_slot(&self, name: &str) -> Result<bool, PgError> {
        let client = self.client().await?;
        let made = client
            .query(
                "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS \
                 (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&name],
            )
            .await
            .map_err(|e| PgError::sql(format!("making replication slot {name}"), e))?;
        Ok(!made.is_empty())
    }

    /// `pg_stat_replication`: whom this server streams WAL to.
    pub async fn replication(&self) -> Result<Vec<ReplicationRow>, PgError> {
        replication_rows(&self.client().await?).await
    }

    /// The slot `name`'s row of `pg_replication_slots`, if it exists.
    pub async fn slot(&self, name: &str) -> Result<Option<SlotRow>, PgError> {
        let client = self.client().await?;
        read_slot(&client, name).await.map_err(|e| PgError::sql("reading pg_replication_slots", e))
    }

    /// The single value of `sql` (one row, one column).
    async fn one<T>(&self, sql: &'static str) -> Result<T, PgError>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let client = self.client().await?;
        let row = client.query_one(sql, &[]).await.map_err(|e| PgError::sql(sql, e))?;
        row.try_get(0).map_err(|e| PgError::sql(sql, e))
    }

    /// `SELECT <function>::text`, parsed.
    async fn lsn(&self, function: &'static str) -> Result<Option<Lsn>, PgError> {
        let client = self.client().await?;
        let sql = format!("SELECT {function}::text");
        let row = client.query_one(&sql, &[]).await.map_err(|e| PgError::sql(function, e))?;
        parse_lsn(function, row.get(0))
    }
}

/// `pg_stat_replication` on `client`'s server.
async fn replication_rows(client: &Client) -> Result<Vec<ReplicationRow>, PgError> {
    let rows = client
        .query(
            "SELECT application_name, client_addr, state, sent_lsn::text, write_lsn::text, \
             flush_lsn::text, replay_lsn::text, reply_time, \
             extract(epoch FROM flush_lag)::float8 FROM pg_stat_replication ORDER BY pid",
            &[],
        )
        .await
        .map_err(|e| PgError::sql("reading pg_stat_replication", e))?;
    rows.iter()
        .map(|r| {
            let lsn = |i: usize, what| parse_lsn(what, r.get(i));
            Ok(ReplicationRow {
                application_name: r.get::<_, Option<String>>(0).unwrap_or_default(),
                client_addr: r.get(1),
                state: r.get(2),
                sent_lsn: lsn(3, "pg_stat_replication.sent_lsn")?,
                write_lsn: lsn(4, "pg_stat_replication.write_lsn")?,
                flush_lsn: lsn(5, "pg_stat_replication.flush_lsn")?,
                replay_lsn: lsn(6, "pg_stat_replication.replay_lsn")?,
                reply_time: r.get(7),
                flush_lag_seconds: r.get(8),
            })
        })
        .collect()
}

fn parse_lsn(what: &'static str, value: Option<String>) -> Result<Option<Lsn>, PgError> {
    value.map(|v| v.parse().map_err(|source| PgError::BadLsn { what, value: v, source })).transpose()
}
