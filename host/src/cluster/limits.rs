//! The size limit of one replicated change, end to end. [`MAX_ENTRY_BYTES`] is the one
//! number: the log store refuses larger records, so the propose path (API, CLI, forwarded
//! proposals, the outbox) measures every change batch as the entry it would become and
//! refuses it before raft sees it, and the API's body limit is derived from it.
//!
//! Must never: let an entry reach the log store that the store would refuse (the store's
//! refusal stops raft on that member).

use super::log_store::encoded_len;
use super::types::{Entry, LogId, Request};
use crate::conf::ConfChange;

/// Largest encoded commit-log entry (one replicated change batch), in bytes.
pub const MAX_ENTRY_BYTES: u32 = 16 * 1024 * 1024;

/// Largest request body the REST API reads. A change request carries file content as a JSON
/// array of numbers (up to four bytes, `255,`, per content byte), so a body that holds an
/// entry of [`MAX_ENTRY_BYTES`] must be allowed up to four times that, plus room for names.
pub const MAX_BODY_BYTES: usize = 4 * MAX_ENTRY_BYTES as usize + (1 << 20);

/// A change batch the commit log cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {len} bytes, over the {max} byte limit of one replicated change")]
pub struct TooLarge {
    /// What was measured (a change, or a batch of N changes).
    pub what: String,
    pub len: u64,
    pub max: u32,
}

/// Bytes `request` takes as a commit-log entry (postcard, as the log store encodes it), with
/// the largest log id and, for changes, the largest origin, time and batch id: the answer
/// holds wherever the entry lands in the log and depends on the changes alone, so the CLI
/// measures a change exactly as the member it sends it to.
pub fn entry_bytes(request: &Request) -> u64 {
    let request = match request {
        Request::Changes { changes, .. } => {
            &Request::Changes { origin: u64::MAX, at_ms: u64::MAX, batch: u64::MAX, changes: changes.clone() }
        }
        other => other,
    };
    let entry = Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(u64::MAX, u64::MAX), u64::MAX),
        payload: openraft::EntryPayload::Normal(request.clone()),
    };
    encoded_len(&entry)
}

/// Refuses `request` if its entry would be over [`MAX_ENTRY_BYTES`].
pub fn check(request: &Request) -> Result<(), TooLarge> {
    let len = entry_bytes(request);
    if len <= u64::from(MAX_ENTRY_BYTES) {
        return Ok(());
    }
    let what = match request {
        Request::Changes { changes, .. } if changes.len() == 1 => format!("change `{}`", changes[0]),
        Request::Changes { changes, .. } => format!("a batch of {} changes", changes.len()),
        _ => "the request".to_string(),
    };
    Err(TooLarge { what, len, max: MAX_ENTRY_BYTES })
}

/// Refuses a batch of `changes` the commit log could not hold (as [`check`] would).
pub fn check_changes(changes: &[ConfChange]) -> Result<(), TooLarge> {
    check(&Request::Changes { origin: 0, at_ms: 0, batch: 0, changes: changes.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{Op, Scope, Target};

    fn put(len: usize) -> Request {
        Request::Changes {
            origin: 1,
            at_ms: 1,
            batch: 7,
            changes: vec![ConfChange {
                conf_type: "lookups".into(),
                scope: Scope::App("search".into()),
                target: Target::File { name: "big.csv".into() },
                op: Op::PutFile { content: vec![b'x'; len] },
            }],
        }
    }

    #[test]
    fn the_measure_is_the_log_stores_encoding_and_the_limit_is_exact() {
        let small = put(1000);
        let entry = Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(3, 1), 42),
            payload: openraft::EntryPayload::Normal(small.clone()),
        };
        let real = postcard::to_allocvec(&entry).unwrap().len() as u64;
        assert!(entry_bytes(&small) >= real, "the worst-case log id never measures less");
        assert!(entry_bytes(&small) - real < 64, "only the ids are worst-case");
        // The largest content that fits, found from the overhead, fits; one more byte does not.
        let overhead = entry_bytes(&put(15 << 20)) - (15 << 20);
        let fits = u64::from(MAX_ENTRY_BYTES) - overhead;
        assert_eq!(entry_bytes(&put(fits as usize)), u64::from(MAX_ENTRY_BYTES));
        check(&put(fits as usize)).unwrap();
        let err = check(&put(fits as usize + 1)).unwrap_err();
        assert_eq!(err.len, u64::from(MAX_ENTRY_BYTES) + 1);
        assert!(err.to_string().contains("over the 16777216 byte limit of one replicated change"), "{err}");
    }
}
