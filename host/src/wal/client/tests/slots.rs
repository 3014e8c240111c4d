//! Commands outside streaming: IDENTIFY_SYSTEM against the control file, segment size, and
//! physical slots (create, reuse, read, drop).

use super::super::{WalClientError, sqlstate};
use super::{connect_superuser, pg_or_skip};
use crate::wal::{Lsn, WalSegmentSize};

#[tokio::test]
async fn identify_system_matches_the_control_file() {
    let pg = pg_or_skip!(&[]);
    let mut conn = connect_superuser(&pg).await;
    let id = conn.identify_system().await.unwrap();
    let systemid: u64 = pg.psql("SELECT system_identifier FROM pg_control_system()").parse().unwrap();
    assert_eq!(id.systemid, systemid);
    assert_eq!(id.timeline, 1);
    assert_eq!(id.dbname, None, "a physical connection has no database");
    let current: Lsn = pg.psql("SELECT pg_current_wal_flush_lsn()").parse().unwrap();
    assert!(id.xlogpos.is_valid() && id.xlogpos <= current, "{} vs {current}", id.xlogpos);
    assert_eq!(conn.wal_segment_size().await.unwrap(), WalSegmentSize::DEFAULT);
}

#[tokio::test]
async fn slots_are_created_once_then_reused_read_and_dropped() {
    let pg = pg_or_skip!(&[]);
    let mut conn = connect_superuser(&pg).await;
    assert_eq!(conn.read_slot("tandem").await.unwrap(), None);

    let first = conn.create_physical_slot("tandem", true).await.unwrap();
    assert!(first.created);
    let restart = first.slot.restart_lsn.expect("RESERVE_WAL gives the slot a restart_lsn");
    assert_eq!(first.slot.restart_tli, Some(1));
    pg.psql("CREATE TABLE churn AS SELECT generate_series(1, 1000) AS x");

    let second = conn.create_physical_slot("tandem", true).await.unwrap();
    assert!(!second.created, "the existing slot is reused");
    assert_eq!(second.slot, first.slot, "reuse leaves the slot as it was");
    assert_eq!(conn.read_slot("tandem").await.unwrap(), Some(first.slot.clone()));
    let seen = pg
        .psql("SELECT slot_type || ' ' || restart_lsn FROM pg_replication_slots WHERE slot_name = 'tandem'");
    assert_eq!(seen, format!("physical {restart}"));

    let lazy = conn.create_physical_slot("lazy", false).await.unwrap();
    assert!(lazy.created);
    assert_eq!((lazy.slot.restart_lsn, lazy.slot.restart_tli), (None, None), "no WAL reserved yet");

    conn.drop_slot("tandem", false).await.unwrap();
    assert_eq!(conn.read_slot("tandem").await.unwrap(), None);
    let err = conn.drop_slot("tandem", false).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some(sqlstate::UNDEFINED_OBJECT), "{err}");
    assert!(matches!(conn.read_slot("Bad-Name").await, Err(WalClientError::SlotName(_))));
    // Errors left the connection usable.
    conn.identify_system().await.unwrap();
}

#[tokio::test]
async fn starting_from_a_missing_slot_is_refused_and_the_connection_survives() {
    let pg = pg_or_skip!(&[]);
    let mut conn = connect_superuser(&pg).await;
    let id = conn.identify_system().await.unwrap();
    let err = conn.start_replication(Some("nope"), id.xlogpos, 1).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some(sqlstate::UNDEFINED_OBJECT), "{err}");
    conn.identify_system().await.unwrap();
}
