//! The durable outbox: replicated-type changes this member accepted while no captain could
//! commit them. They are already applied to the local tree; they wait here until the captain
//! commits them (then they leave) or a destructive resync discards them.
//!
//! Must never: acknowledge a change as pending before it is on disk (every mutation rewrites
//! the file durably before returning).

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::conf::ConfChange;
use crate::durable;

/// One accepted batch of changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub id: u64,
    /// The batch id its commit-log entry carries.
    pub batch: u64,
    pub at_ms: u64,
    pub changes: Vec<ConfChange>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    next_id: u64,
    pending: Vec<Pending>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("outbox {path} is damaged: {message}")]
    Damaged { path: PathBuf, message: String },
}

#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    contents: Mutex<Contents>,
}

impl Outbox {
    /// Opens (or starts) the outbox file at `path`.
    pub fn open(path: PathBuf) -> Result<Self, OutboxError> {
        let contents = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| OutboxError::Damaged { path: path.clone(), message: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(source) => return Err(OutboxError::Io { path, source }),
        };
        Ok(Self { path, contents: Mutex::new(contents) })
    }

    /// Adds a batch durably and returns its id.
    pub fn push(&self, batch: u64, at_ms: u64, changes: Vec<ConfChange>) -> Result<u64, OutboxError> {
        let mut c = self.contents.lock().expect("outbox lock");
        let id = c.next_id;
        c.next_id += 1;
        c.pending.push(Pending { id, batch, at_ms, changes });
        self.save(&c).inspect_err(|_| {
            c.pending.pop();
        })?;
        Ok(id)
    }

    /// Removes a committed batch.
    pub fn remove(&self, id: u64) -> Result<(), OutboxError> {
        let mut c = self.contents.lock().expect("outbox lock");
        c.pending.retain(|p| p.id != id);
        self.save(&c)
    }

    /// Removes the batch with this batch id, if pending (its entry was committed); true if
    /// it was there.
    pub fn remove_batch(&self, batch: u64) -> Result<bool, OutboxError> {
        let mut c = self.contents.lock().expect("outbox lock");
        let before = c.pending.len();
        c.pending.retain(|p| p.batch != batch);
        if c.pending.len() == before {
            return Ok(false);
        }
        self.save(&c)?;
        Ok(true)
    }

    /// Discards everything (destructive resync); returns how many batches went.
    pub fn clear(&self) -> Result<usize, OutboxError> {
        let mut c = self.contents.lock().expect("outbox lock");
        let n = c.pending.len();
        c.pending.clear();
        self.save(&c)?;
        Ok(n)
    }

    pub fn pending(&self) -> Vec<Pending> {
        self.contents.lock().expect("outbox lock").pending.clone()
    }

    /// Number of pending changes (not batches).
    pub fn len(&self) -> usize {
        self.contents.lock().expect("outbox lock").pending.iter().map(|p| p.changes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.contents.lock().expect("outbox lock").pending.is_empty()
    }

    fn save(&self, c: &Contents) -> Result<(), OutboxError> {
        let bytes = serde_json::to_vec(c).expect("outbox contents serialize");
        durable::write_private(&self.path, &bytes)
            .map_err(|source| OutboxError::Io { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{Op, Scope, Target};

    fn change(v: &str) -> ConfChange {
        ConfChange {
            conf_type: "macros".into(),
            scope: Scope::App("search".into()),
            target: Target::Conf,
            op: Op::SetKey { stanza: "m".into(), key: "definition".into(), value: v.into() },
        }
    }

    #[test]
    fn pending_changes_survive_a_reopen_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.json");
        let outbox = Outbox::open(path.clone()).unwrap();
        let a = outbox.push(11, 1, vec![change("a")]).unwrap();
        let b = outbox.push(12, 2, vec![change("b"), change("c")]).unwrap();
        assert_ne!(a, b);
        let again = Outbox::open(path.clone()).unwrap();
        assert_eq!(again.len(), 3);
        again.remove(a).unwrap();
        assert!(!again.remove_batch(11).unwrap(), "already gone");
        let again = Outbox::open(path.clone()).unwrap();
        assert_eq!(again.pending().len(), 1);
        assert_eq!(again.pending()[0].id, b);
        assert_eq!(again.clear().unwrap(), 1);
        assert!(Outbox::open(path.clone()).unwrap().is_empty());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(Outbox::open(path).unwrap_err().to_string().contains("damaged"));
    }
}
