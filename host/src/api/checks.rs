//! The role checks load balancers already use, in Patroni's names and meanings, so an HAProxy
//! or Kubernetes configuration written for Patroni works unchanged: `/primary` (also
//! `/read-write`, `/leader`, `/master`), `/replica` and `/read-only` (both with `?lag=` as bytes,
//! `16kB`, `64MB`, or a time, `500ms`, `10s`, `1min`), `/liveness` and `/readiness`. Each
//! answers GET, HEAD and OPTIONS (HAProxy's `option httpchk OPTIONS /primary`) without a token:
//! 200 when the host is what the path asks, else 503, with the same JSON body either way.
//!
//! Must never: answer 200 on `/primary` for a standby, a superseded old primary, or a host
//! whose paired database is down or in recovery.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::standby::{Role, StandbyStatus};

/// What every check answers.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// "primary", "replica", "superseded" or "unpaired".
    role: &'static str,
    /// Whether the database takes writes here (or, without one, whether this is the pair's
    /// serving side).
    writable: bool,
    /// The pair's database: running, and in recovery.
    database_running: Option<bool>,
    in_recovery: Option<bool>,
    /// Replicas: WAL not yet replayed, in bytes and as the age of its oldest record.
    lag_bytes: Option<u64>,
    lag_seconds: Option<f64>,
    /// Replicas: the database streams (from tandem, which streams from the primary).
    streaming: bool,
    epoch: u64,
    node: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct LagQuery {
    lag: Option<String>,
}

/// A `?lag=` limit: bytes or a time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lag {
    Bytes(u64),
    Seconds(f64),
}

/// Parses PostgreSQL-style units: bytes (`B`, `kB`, `MB`, `GB`, `TB`, powers of 1024; a bare
/// number is bytes) or times (`us`, `ms`, `s`, `min`, `h`, `d`).
fn parse_lag(text: &str) -> Result<Lag, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("lag `{text}`: expected a number with a unit"))?;
    let bytes = |scale: f64| Ok(Lag::Bytes((n * scale) as u64));
    let seconds = |scale: f64| Ok(Lag::Seconds(n * scale));
    match unit.trim() {
        "" | "B" => bytes(1.0),
        "kB" | "KB" => bytes(1024.0),
        "MB" => bytes(1024.0 * 1024.0),
        "GB" => bytes(1024.0 * 1024.0 * 1024.0),
        "TB" => bytes(1024.0 * 1024.0 * 1024.0 * 1024.0),
        "us" => seconds(1e-6),
        "ms" => seconds(1e-3),
        "s" => seconds(1.0),
        "min" => seconds(60.0),
        "h" => seconds(3600.0),
        "d" => seconds(86_400.0),
        other => {
            Err(format!("lag `{text}`: unknown unit `{other}` (B, kB, MB, GB, TB, us, ms, s, min, h, d)"))
        }
    }
}

/// The facts the checks decide on.
struct Facts {
    answer: Answer,
    primary: bool,
    replica: bool,
}

fn facts(st: &StandbyStatus) -> Facts {
    let db = &st.database;
    let primary = st.healthy;
    let replica = st.role == Some(Role::Standby)
        && st.superseded.is_none()
        && (!db.configured || (db.running && db.in_recovery == Some(true)));
    let role = match (st.role, st.superseded.is_some()) {
        (_, true) => "superseded",
        (Some(Role::Standby), _) => "replica",
        (Some(Role::Primary), _) => "primary",
        (None, _) => "unpaired",
    };
    let answer = Answer {
        role,
        writable: primary,
        database_running: db.configured.then_some(db.running),
        in_recovery: db.in_recovery,
        lag_bytes: db.lag_bytes.filter(|_| replica),
        lag_seconds: db.lag_seconds.filter(|_| replica),
        streaming: db.streaming,
        epoch: st.epoch,
        node: st.node.clone(),
    };
    Facts { answer, primary, replica }
}

/// Whether a replica is within `lag` (an unknown lag is not within any).
fn within(answer: &Answer, lag: Option<Lag>) -> bool {
    match lag {
        None => true,
        Some(Lag::Bytes(max)) => answer.lag_bytes.is_some_and(|l| l <= max),
        Some(Lag::Seconds(max)) => answer.lag_seconds.is_some_and(|l| l <= max),
    }
}

type Reply = (StatusCode, Json<serde_json::Value>);

fn reply(ok: bool, answer: Answer) -> Reply {
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(serde_json::to_value(answer).expect("the answer serializes")))
}

impl LagQuery {
    /// The `?lag=` limit asked, if any; a 400 answer naming the units when it cannot be read.
    fn limit(&self) -> Result<Option<Lag>, Reply> {
        self.lag
            .as_deref()
            .map(parse_lag)
            .transpose()
            .map_err(|why| (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": why }))))
    }
}

/// `/primary`: this host takes the application's writes.
pub async fn primary(State(s): State<AppState>) -> Reply {
    let f = facts(&s.standby.status().await);
    reply(f.primary, f.answer)
}

/// `/replica[?lag=]`: a standby whose database follows, within the lag asked.
pub async fn replica(State(s): State<AppState>, Query(q): Query<LagQuery>) -> Reply {
    let lag = match q.limit() {
        Ok(lag) => lag,
        Err(refused) => return refused,
    };
    let f = facts(&s.standby.status().await);
    let ok = f.replica && within(&f.answer, lag);
    reply(ok, f.answer)
}

/// `/read-only[?lag=]`: the primary, or a replica within the lag asked.
pub async fn read_only(State(s): State<AppState>, Query(q): Query<LagQuery>) -> Reply {
    let lag = match q.limit() {
        Ok(lag) => lag,
        Err(refused) => return refused,
    };
    let f = facts(&s.standby.status().await);
    let ok = f.primary || (f.replica && within(&f.answer, lag));
    reply(ok, f.answer)
}

/// `/liveness`: the daemon answers (a hung one does not).
pub async fn liveness() -> Reply {
    (StatusCode::OK, Json(serde_json::json!({ "live": true })))
}

/// `/readiness`: the primary, or a replica whose database streams.
pub async fn readiness(State(s): State<AppState>) -> Reply {
    let st = s.standby.status().await;
    let f = facts(&st);
    let ok = f.primary || (f.replica && (!st.database.configured || st.database.streaming));
    reply(ok, f.answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_parse_as_bytes_or_times() {
        assert_eq!(parse_lag("1048576"), Ok(Lag::Bytes(1 << 20)));
        assert_eq!(parse_lag("16kB"), Ok(Lag::Bytes(16 << 10)));
        assert_eq!(parse_lag("64MB"), Ok(Lag::Bytes(64 << 20)));
        assert_eq!(parse_lag("1GB"), Ok(Lag::Bytes(1 << 30)));
        assert_eq!(parse_lag("500ms"), Ok(Lag::Seconds(0.5)));
        assert_eq!(parse_lag("10s"), Ok(Lag::Seconds(10.0)));
        assert_eq!(parse_lag("2min"), Ok(Lag::Seconds(120.0)));
        assert!(parse_lag("10 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse_lag("lots").is_err());
    }
}
