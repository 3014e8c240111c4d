//! Connecting: TCP and Unix socket; trust, cleartext password, MD5 and SCRAM-SHA-256; refusals
//! arrive as typed errors with the server's SQLSTATE.

use super::super::{ReplicationConn, WalClientError, sqlstate};
use super::pg::{ROLE_MD5, ROLE_NO_REPLICATION, ROLE_PASSWORD, ROLE_SCRAM, ROLE_TRUST};
use super::pg_or_skip;

#[tokio::test]
async fn every_auth_method_connects_and_identifies() {
    let pg = pg_or_skip!(&[]);
    let systemid: u64 = pg.psql("SELECT system_identifier FROM pg_control_system()").parse().unwrap();
    for user in [ROLE_TRUST, ROLE_PASSWORD, ROLE_MD5, ROLE_SCRAM] {
        let mut conn =
            ReplicationConn::connect(&pg.config(user)).await.unwrap_or_else(|e| panic!("{user}: {e}"));
        assert!(conn.parameter("server_version").unwrap().starts_with("15"), "{user}");
        assert!(conn.backend_pid().is_some());
        assert_eq!(conn.identify_system().await.unwrap().systemid, systemid, "{user}");
        conn.close().await.unwrap();
    }
    // The MD5 role really has an MD5 verifier, the SCRAM one a SCRAM verifier.
    let md5 = pg.psql("SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = 'rep_md5'");
    let scram =
        pg.psql("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'rep_scram'");
    assert_eq!((md5.as_str(), scram.as_str()), ("t", "t"));
}

#[tokio::test]
async fn unix_socket_connects() {
    let pg = pg_or_skip!(&[]);
    let mut conn = ReplicationConn::connect(&pg.unix_config()).await.unwrap();
    assert_eq!(conn.identify_system().await.unwrap().timeline, 1);
}

#[tokio::test]
async fn refusals_are_typed() {
    let pg = pg_or_skip!(&[]);
    for user in [ROLE_PASSWORD, ROLE_MD5, ROLE_SCRAM] {
        let mut config = pg.config(user);
        config.password = Some("wrong".into());
        let err = ReplicationConn::connect(&config).await.unwrap_err();
        assert_eq!(err.sqlstate(), Some(sqlstate::INVALID_PASSWORD), "{user}: {err}");
        config.password = None;
        let err = ReplicationConn::connect(&config).await.unwrap_err();
        assert!(matches!(err, WalClientError::PasswordRequired), "{user}: {err}");
    }
    let err = ReplicationConn::connect(&pg.config(ROLE_NO_REPLICATION)).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some(sqlstate::INSUFFICIENT_PRIVILEGE), "{err}");
    let err = ReplicationConn::connect(&pg.config("nobody")).await.unwrap_err();
    assert_eq!(err.sqlstate(), Some(sqlstate::INVALID_AUTHORIZATION), "{err}");
}
