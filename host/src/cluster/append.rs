//! Sends raft RPCs to one member so that large entries arrive: each AppendEntries carries at
//! most a byte budget of entries (at least one), and a send outlives openraft's per-send
//! timeout. openraft gives an AppendEntries one heartbeat interval (`heartbeat_ms`) and drops
//! the call when it runs out; a 4 MiB lookup does not cross a link in 50-100 ms, so a send
//! that started keeps going in its own task and openraft's next attempt for the same entries
//! waits for it instead of starting over (which would never finish).
//!
//! Every call runs in a spawned task that owns its connection and gives it back to the pool
//! only after a whole answer, so a call dropped midway never leaves a connection mid-frame
//! (where the next call would read the previous call's answer as its own).
//!
//! Must never: report entries as matched that the member did not acknowledge, or answer for
//! a different leader, `prev_log_id` or entry range than the member acknowledged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::client::{CallError, Dialer, PeerClient};
use super::rpc::{RpcRequest, RpcResponse};
use super::types::{LogId, NodeId, Request, TypeConfig};
use crate::conf::Op;

/// Idle connections kept per member (one data send, a heartbeat beside it, a vote).
const POOL_SIZE: usize = 3;

/// The result of a spawned call.
type Call = JoinHandle<Result<RpcResponse, CallError>>;

/// An AppendEntries with entries that is under way (possibly past openraft's timeout).
struct InFlight {
    vote: openraft::Vote<NodeId>,
    prev: Option<LogId>,
    last: LogId,
    task: Call,
}

impl Drop for Sender {
    fn drop(&mut self) {
        if let Some(b) = &self.beat {
            b.abort();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A send nobody will claim (a new leader, a conflict moved `prev`) stops using the link.
        self.task.abort();
    }
}

/// Raft RPCs to one member.
pub struct Sender {
    addr: String,
    dialer: Dialer,
    pool: Arc<Mutex<Vec<PeerClient>>>,
    inflight: Option<InFlight>,
    /// The last heartbeat sent beside a send under way.
    beat: Option<Call>,
    /// Entry bytes per AppendEntries (the first entry always goes, whatever its size).
    max_bytes: u64,
    /// How long a send of entries may take, past openraft's heartbeat-long timeout.
    append_timeout: Duration,
}

impl Sender {
    pub fn new(addr: String, dialer: Dialer, max_bytes: u64, append_timeout: Duration) -> Self {
        // Half a frame leaves room for the request's envelope and the estimate's error.
        let max_bytes = max_bytes.min(dialer.max_frame / 2).max(1);
        Self { addr, dialer, pool: Arc::default(), inflight: None, beat: None, max_bytes, append_timeout }
    }

    /// Runs `req` in its own task with `timeout`; the connection returns to the pool once the
    /// answer is read. Cancel-safe: dropping the returned handle's waiter leaves the call
    /// running to its end.
    pub fn spawn(&self, req: RpcRequest, timeout: Duration) -> Call {
        let pool = self.pool.clone();
        let pooled = pool.lock().expect("pool lock").pop();
        let mut client = pooled.unwrap_or_else(|| PeerClient::new(self.addr.clone(), self.dialer.clone()));
        tokio::spawn(
            async move {
                let result = client.call(&req, timeout).await;
                if result.is_ok() {
                    let mut idle = pool.lock().expect("pool lock");
                    if idle.len() < POOL_SIZE {
                        idle.push(client);
                    }
                }
                result
            }
            .in_current_span(),
        )
    }

    /// One call, waited for (cancel-safe, see [`Sender::spawn`]).
    pub async fn call(&self, req: RpcRequest, timeout: Duration) -> Result<RpcResponse, CallError> {
        let task = self.spawn(req, timeout);
        joined(&self.addr, task.await)
    }

    /// Sends `rpc` (its entries cut to the byte budget), or waits for the send of the same
    /// entries already under way; `timeout` is openraft's for an empty request (a heartbeat).
    /// Cancel-safe: a send of entries interrupted here goes on and is claimed next time.
    pub async fn append(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        timeout: Duration,
    ) -> Result<RpcResponse, CallError> {
        let Some(asked_last) = rpc.entries.last().map(|e| e.log_id) else {
            // A heartbeat goes beside any send under way (it only needs `prev` to match).
            return self.call(RpcRequest::AppendEntries(rpc), timeout).await;
        };
        let claim = self.inflight.as_ref().is_some_and(|f| {
            f.vote == rpc.vote && f.prev == rpc.prev_log_id && f.last.index <= asked_last.index
        });
        if claim {
            // The member hears nothing else from the captain while a large send crosses the
            // link (openraft sends a heartbeat only when it has nothing else to send): beat
            // beside it, or the member calls an election before the entries arrive.
            let f = self.inflight.as_ref().expect("claimed");
            let idle = self.beat.as_ref().is_none_or(|b| b.is_finished());
            if !f.task.is_finished() && idle {
                let beat = AppendEntriesRequest {
                    vote: rpc.vote,
                    prev_log_id: f.prev,
                    leader_commit: rpc.leader_commit,
                    entries: Vec::new(),
                };
                self.beat = Some(self.spawn(RpcRequest::AppendEntries(beat), timeout));
            }
        } else {
            self.inflight = None;
            let keep = within_budget(&rpc.entries, self.max_bytes);
            rpc.entries.truncate(keep);
            let bytes: u64 = rpc.entries.iter().map(entry_weight).sum();
            let last = rpc.entries.last().map(|e| e.log_id).expect("at least one entry kept");
            let (vote, prev) = (rpc.vote, rpc.prev_log_id);
            tracing::debug!(entries = keep, bytes, "sending entries");
            let task = self.spawn(RpcRequest::AppendEntries(rpc), self.append_timeout);
            self.inflight = Some(InFlight { vote, prev, last, task });
        }
        let f = self.inflight.as_mut().expect("set above");
        let result = (&mut f.task).await;
        let sent_last = f.last;
        self.inflight = None;
        let answer = joined(&self.addr, result)?;
        Ok(match answer {
            RpcResponse::AppendEntries(Ok(r)) => {
                RpcResponse::AppendEntries(Ok(narrow(r, sent_last, asked_last)))
            }
            other => other,
        })
    }
}

fn joined(
    addr: &str,
    result: Result<Result<RpcResponse, CallError>, tokio::task::JoinError>,
) -> Result<RpcResponse, CallError> {
    result.map_err(|e| CallError::Lost { addr: addr.to_string(), reason: e.to_string() })?
}

/// The answer to a send of `(prev, sent_last]` as an answer to the request for
/// `(prev, asked_last]` (the same `prev`): never more matched than either range.
fn narrow(
    answer: AppendEntriesResponse<NodeId>,
    sent_last: LogId,
    asked_last: LogId,
) -> AppendEntriesResponse<NodeId> {
    let matched = match answer {
        AppendEntriesResponse::Success => sent_last,
        AppendEntriesResponse::PartialSuccess(Some(m)) => m,
        other => return other,
    };
    if matched.index >= asked_last.index {
        AppendEntriesResponse::Success
    } else {
        AppendEntriesResponse::PartialSuccess(Some(matched))
    }
}

/// How many of `entries` fit in `budget` bytes (at least one).
fn within_budget(entries: &[openraft::Entry<TypeConfig>], budget: u64) -> usize {
    let mut total = 0u64;
    let mut keep = 0;
    for e in entries {
        total += entry_weight(e);
        if keep > 0 && total > budget {
            break;
        }
        keep += 1;
    }
    keep
}

/// A generous estimate of an entry's encoded size.
pub fn entry_weight(entry: &openraft::Entry<TypeConfig>) -> u64 {
    const OVERHEAD: u64 = 256;
    match &entry.payload {
        openraft::EntryPayload::Normal(Request::Changes { changes, .. }) => changes
            .iter()
            .map(|c| match &c.op {
                Op::PutFile { content } => content.len() as u64 + OVERHEAD,
                Op::SetKey { stanza, key, value } => {
                    (stanza.len() + key.len() + value.len()) as u64 + OVERHEAD
                }
                _ => OVERHEAD,
            })
            .sum(),
        _ => OVERHEAD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(1, 1), index)
    }

    fn blank(index: u64) -> openraft::Entry<TypeConfig> {
        openraft::Entry { log_id: id(index), payload: openraft::EntryPayload::Blank }
    }

    #[test]
    fn a_claimed_send_never_answers_for_more_than_it_carried_or_was_asked() {
        use AppendEntriesResponse::*;
        assert_eq!(narrow(Success, id(5), id(5)), Success);
        assert_eq!(narrow(Success, id(5), id(9)), PartialSuccess(Some(id(5))));
        assert_eq!(narrow(Success, id(9), id(5)), Success);
        assert_eq!(narrow(PartialSuccess(Some(id(3))), id(5), id(9)), PartialSuccess(Some(id(3))));
        assert_eq!(narrow(Conflict, id(5), id(9)), Conflict);
    }

    #[test]
    fn the_budget_keeps_at_least_one_entry() {
        let entries: Vec<_> = (1..=10).map(blank).collect();
        assert_eq!(within_budget(&entries, 1), 1);
        assert_eq!(within_budget(&entries, 256 * 3), 3);
        assert_eq!(within_budget(&entries, u64::MAX), 10);
    }
}
