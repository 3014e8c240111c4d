//! What the two hosts of a pair say to each other over the peer transport (authenticated by
//! the cluster secret): one JSON request frame, one JSON answer frame, per connection.
//!
//! - `Join`: the standby's configure asks the primary to pair; the answer carries the pair id,
//!   where the primary's PostgreSQL is and the replication role's credentials.
//! - `Announce`: either side says who and where it is (sent at start and periodically, so an
//!   address change reaches the peer without re-pairing); the answer is the same facts back,
//!   including whether its PostgreSQL runs as a primary (the fencing question).
//! - `Unpair`: the peer is told that `off` ran on this side.
//! - `Fence`: a converting standby asks the old primary to fence its database (see `fence`)
//!   before it promotes; the answer says how, and where the fenced database's WAL ends.

use serde::{Deserialize, Serialize};

use super::config::FenceMode;
use super::pairing::Role;
use crate::peer::{Frame, PeerConnection, PeerError};

/// The frame kind of both directions.
pub const STANDBY_FRAME: u16 = 48;
/// Requests and answers are small; a larger frame is refused.
const MAX_MESSAGE: usize = 64 * 1024;

/// Who and where a host is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub node: String,
    /// Its peer-transport address as it advertises it.
    pub peer_addr: String,
    /// Its PostgreSQL (`host:port`) when it pairs a database.
    pub pg: Option<String>,
    pub role: Option<Role>,
    pub pair_id: Option<String>,
    pub epoch: u64,
    /// Its PostgreSQL is up and not in recovery (accepts writes): `None` when unknown or none.
    pub pg_primary: Option<bool>,
    /// Its database is fenced (an old primary whose peer took over), and how.
    #[serde(default)]
    pub fenced: Option<FenceMode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    Join {
        standby: Presence,
    },
    Announce {
        me: Presence,
    },
    /// `epoch`: the sender's; an old primary whose peer took over cannot unpair the new one.
    Unpair {
        pair_id: String,
        epoch: u64,
    },
    /// `epoch`: the one the sender takes as the new primary; refused for another pair or an
    /// epoch not above the receiver's.
    Fence {
        pair_id: String,
        epoch: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Answer {
    Joined {
        primary: Presence,
        pair_id: String,
        epoch: u64,
        replication_user: String,
        replication_password: Option<String>,
        options: super::pairing::Options,
    },
    Presence {
        me: Presence,
    },
    Done,
    /// The database takes no more writes; `wal_end`: where its WAL ended (see `Fenced`).
    Fenced {
        how: FenceMode,
        wal_end: Option<String>,
    },
    Refused {
        reason: String,
    },
}

pub fn encode<T: Serialize>(message: &T) -> Frame {
    Frame::new(STANDBY_FRAME, serde_json::to_vec(message).expect("plain message"))
}

pub fn decode<T: for<'de> Deserialize<'de>>(frame: &Frame) -> Result<T, PeerError> {
    if frame.kind != STANDBY_FRAME || frame.body.len() > MAX_MESSAGE {
        return Err(PeerError::Malformed("not a standby message"));
    }
    serde_json::from_slice(&frame.body).map_err(|_| PeerError::Malformed("bad standby message"))
}

/// Sends one request and reads its answer.
pub async fn ask(conn: &mut PeerConnection, request: &Request) -> Result<Answer, PeerError> {
    conn.write_frame(&encode(request)).await?;
    match conn.read_frame().await? {
        Some(frame) => decode(&frame),
        None => Err(PeerError::Truncated("before the standby answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_malformed() {
        let me = Presence {
            node: "a".into(),
            peer_addr: "127.0.0.1:7420".into(),
            pg: Some("127.0.0.1:5432".into()),
            role: Some(Role::Primary),
            pair_id: Some("00ff".into()),
            epoch: 2,
            pg_primary: Some(true),
            fenced: None,
        };
        let r = Request::Announce { me };
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        let fence = Request::Fence { pair_id: "00ff".into(), epoch: 3 };
        assert_eq!(decode::<Request>(&encode(&fence)).unwrap(), fence);
        let fenced = Answer::Fenced { how: FenceMode::Demote, wal_end: Some("0/3000028".into()) };
        assert_eq!(decode::<Answer>(&encode(&fenced)).unwrap(), fenced);
        // A presence from a tandem that predates fencing still reads.
        let old = br#"{"request":"announce","me":{"node":"a","peer_addr":"x:1","pg":null,"role":null,"pair_id":null,"epoch":0,"pg_primary":null}}"#;
        assert!(decode::<Request>(&Frame::new(STANDBY_FRAME, old.to_vec())).is_ok());
        assert!(decode::<Request>(&Frame::new(STANDBY_FRAME, b"{\"request\":\"nope\"}".to_vec())).is_err());
        assert!(decode::<Request>(&Frame::new(7, serde_json::to_vec(&r).unwrap())).is_err());
        assert!(decode::<Answer>(&Frame::new(STANDBY_FRAME, vec![b' '; MAX_MESSAGE + 1])).is_err());
    }
}
