//! State the member's parts share: the outbox, the lock that serialises writes to the live
//! conf tree (commit-log applies and local-only changes), the resync flag and the facts the
//! status reports (last successful replication, last error), and the applied index as a
//! watch so a writer can wait for its change to land here; and whether committed changes
//! cannot be applied here (an apply stall).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tracing::{error, info};

use super::outbox::Outbox;
use super::pending_base::PendingBase;

/// The seed's words, kept so operators recognise them.
pub const RESYNC_MESSAGE: &str = "Error pulling configurations from the search head cluster captain; consider \
     performing a destructive configuration resync on this member (`tandem cluster resync --destructive`)";

#[derive(Debug, Default, Clone)]
pub struct LocalFacts {
    /// Unix ms of the last time committed changes from the captain were applied here.
    pub last_conf_replication_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Set while committed changes cannot be applied here (this member's disk failed them):
    /// the error and since when (Unix ms). The applied index waits meanwhile.
    pub cannot_apply: Option<ApplyStall>,
}

/// Why, and since when, this member cannot apply committed changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplyStall {
    pub error: String,
    pub since_ms: u64,
}

pub struct Shared {
    pub outbox: Outbox,
    /// The committed copies of the files pending changes touch.
    pub base: PendingBase,
    /// Held while writing the live tree, so a commit-log apply and a local-only change never
    /// interleave their read-modify-write of one file.
    pub tree_lock: Mutex<()>,
    needs_resync: AtomicBool,
    facts: Mutex<LocalFacts>,
    applied: watch::Sender<u64>,
}

impl Shared {
    pub fn new(outbox: Outbox, base: PendingBase, needs_resync: bool) -> Self {
        Self {
            outbox,
            base,
            tree_lock: Mutex::new(()),
            needs_resync: AtomicBool::new(needs_resync),
            facts: Mutex::new(LocalFacts::default()),
            applied: watch::channel(0).0,
        }
    }

    pub fn needs_resync(&self) -> bool {
        self.needs_resync.load(Ordering::SeqCst)
    }

    /// Marks the member as needing a destructive resync and says so, once, in the log.
    pub fn require_resync(&self) {
        if !self.needs_resync.swap(true, Ordering::SeqCst) {
            error!(pending = self.outbox.len(), "{RESYNC_MESSAGE}");
        }
        self.set_error(RESYNC_MESSAGE.to_string());
    }

    pub fn resynced(&self) {
        self.needs_resync.store(false, Ordering::SeqCst);
        self.facts.lock().expect("facts lock").last_error = None;
    }

    pub fn set_error(&self, message: String) {
        self.facts.lock().expect("facts lock").last_error = Some(message);
    }

    pub fn clear_error(&self) {
        if !self.needs_resync() {
            self.facts.lock().expect("facts lock").last_error = None;
        }
    }

    /// An apply failed on this member's disk and waits to be tried again; logged once per
    /// stall (each attempt is logged by the state machine).
    pub fn cannot_apply(&self, message: &str) {
        let mut facts = self.facts.lock().expect("facts lock");
        match &mut facts.cannot_apply {
            Some(stall) => stall.error = message.to_string(),
            None => {
                error!(error = %message, "committed changes cannot be applied here; retrying until they can");
                facts.cannot_apply = Some(ApplyStall { error: message.to_string(), since_ms: now_ms() });
            }
        }
    }

    /// Applies go through again.
    pub fn apply_resumed(&self) {
        let mut facts = self.facts.lock().expect("facts lock");
        if let Some(stall) = facts.cannot_apply.take() {
            info!(since_ms = stall.since_ms, "committed changes apply here again");
        }
    }

    /// The current apply stall, if any.
    pub fn apply_stall(&self) -> Option<ApplyStall> {
        self.facts.lock().expect("facts lock").cannot_apply.clone()
    }

    pub fn replicated_at(&self, ms: u64) {
        self.facts.lock().expect("facts lock").last_conf_replication_ms = Some(ms);
    }

    pub fn facts(&self) -> LocalFacts {
        self.facts.lock().expect("facts lock").clone()
    }

    pub fn set_applied(&self, index: u64) {
        self.applied.send_if_modified(|cur| {
            let moved = *cur != index;
            *cur = index;
            moved
        });
    }

    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the applied index reaches `index` or `timeout` passes; true if reached.
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a >= index)).await.is_ok_and(|r| r.is_ok())
    }
}

pub use crate::plugin::now_ms;
