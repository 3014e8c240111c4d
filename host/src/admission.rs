//! Who keeps a connection slot when a listener is crowded: the peer listener's handshakes and
//! the REST API's connections. Each listener has a fixed number of slots (what its share of
//! the file descriptors allows). Every new connection is admitted; when the slots are full,
//! room is made by evicting one connection, chosen in this order:
//!
//! 1. the lowest standing: a connection that has shown the least (a handshake that has not
//!    proved the cluster secret before one that has; an idle HTTP connection; a connection
//!    [`PINNED`] while it serves a request is never evicted);
//! 2. of those, one of the source address holding the most slots, so a flood from one host
//!    evicts its own connections before anyone else's;
//! 3. of those, the oldest.
//!
//! A connection that cannot be given a slot (all pinned) is closed on arrival. A newcomer is
//! never refused while an unpinned connection exists: holding slots with silent sockets gains
//! an attacker nothing, and a cluster peer on the same address (loopback, NAT) still gets
//! through: it is the youngest, so evicted last, until its handshake proves the secret and
//! outranks every silent socket. A standing must be earned by something an attacker cannot
//! do for free; a rank anyone can reach (a greeting) would let a flood outrank a genuine
//! newcomer in its first moments.
//!
//! Must never: block, or do I/O; the listener owns the sockets and closes an evicted one when
//! its [`Slot::evicted`] token fires.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The standing of a connection that has shown nothing yet.
pub const FRESH: u8 = 0;
/// The standing of a connection that must not be evicted (an HTTP request in progress).
pub const PINNED: u8 = u8::MAX;

/// A listener's slots; cheap to clone (shared).
#[derive(Clone)]
pub struct Admission {
    pool: Arc<Mutex<Pool>>,
    capacity: usize,
}

#[derive(Default)]
struct Pool {
    next: u64,
    /// By admission order: the oldest first.
    entries: BTreeMap<u64, Entry>,
    per_source: HashMap<IpAddr, usize>,
}

struct Entry {
    source: IpAddr,
    standing: Arc<AtomicU8>,
    evict: CancellationToken,
}

/// One admitted connection's slot, given back when dropped.
pub struct Slot {
    seq: u64,
    pool: Arc<Mutex<Pool>>,
    standing: Arc<AtomicU8>,
    evicted: CancellationToken,
}

impl Admission {
    /// A listener with `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { pool: Arc::default(), capacity: capacity.max(1) }
    }

    /// A slot for a new connection from `source`, evicting another connection if the slots are
    /// full; `None` when every slot is [`PINNED`].
    pub fn admit(&self, source: IpAddr) -> Option<Slot> {
        let mut pool = self.pool.lock().expect("admission lock");
        if pool.entries.len() >= self.capacity && !pool.evict_one() {
            return None;
        }
        let seq = pool.next;
        pool.next += 1;
        let standing = Arc::new(AtomicU8::new(FRESH));
        let evicted = CancellationToken::new();
        pool.entries.insert(seq, Entry { source, standing: standing.clone(), evict: evicted.clone() });
        *pool.per_source.entry(source).or_default() += 1;
        Some(Slot { seq, pool: self.pool.clone(), standing, evicted })
    }

    /// Slots held now.
    pub fn len(&self) -> usize {
        self.pool.lock().expect("admission lock").entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Pool {
    /// Evicts one connection in the module doc's order; false when all are pinned.
    fn evict_one(&mut self) -> bool {
        let mut lowest = PINNED;
        for e in self.entries.values() {
            lowest = lowest.min(e.standing.load(Ordering::Relaxed));
        }
        if lowest == PINNED {
            return false;
        }
        // Of the lowest standing: the source with the most slots, then its oldest connection
        // (entries iterate oldest first, so the first of the heaviest source wins).
        let mut chosen: Option<(u64, usize)> = None;
        for (&seq, e) in &self.entries {
            if e.standing.load(Ordering::Relaxed) != lowest {
                continue;
            }
            let weight = self.per_source.get(&e.source).copied().unwrap_or(0);
            if chosen.is_none_or(|(_, w)| weight > w) {
                chosen = Some((seq, weight));
            }
        }
        let Some((seq, _)) = chosen else { return false };
        if let Some(entry) = self.remove(seq) {
            entry.evict.cancel();
        }
        true
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        if let Some(n) = self.per_source.get_mut(&entry.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

impl Slot {
    /// Fires when the listener took this slot back: close the connection.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// What the connection has shown so far ([`FRESH`] up to [`PINNED`]); see the module doc.
    pub fn set_standing(&self, standing: u8) {
        self.standing.store(standing, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.lock().expect("admission lock").remove(self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_full_listener_evicts_the_oldest_of_the_lowest_standing() {
        let a = Admission::new(3);
        let first = a.admit(ip(1)).unwrap();
        let second = a.admit(ip(1)).unwrap();
        let proved = a.admit(ip(1)).unwrap();
        proved.set_standing(2);
        first.set_standing(1);
        // full: the newcomer evicts the one that showed least (second), not the oldest
        let newcomer = a.admit(ip(1)).unwrap();
        assert!(second.evicted().is_cancelled());
        assert!(!first.evicted().is_cancelled() && !proved.evicted().is_cancelled());
        assert_eq!(a.len(), 3);
        // next: the newcomer (fresh) goes before `first` (greeted)
        let _again = a.admit(ip(1)).unwrap();
        assert!(newcomer.evicted().is_cancelled());
        drop(second);
        assert_eq!(a.len(), 3, "dropping an evicted slot gives nothing back twice");
    }

    #[test]
    fn a_flood_from_one_source_evicts_its_own_connections_first() {
        let a = Admission::new(4);
        let other = a.admit(ip(2)).unwrap();
        let flood: Vec<Slot> = (0..3).map(|_| a.admit(ip(9)).unwrap()).collect();
        let newer: Vec<Slot> = (0..10).map(|_| a.admit(ip(9)).unwrap()).collect();
        assert_eq!(newer.iter().filter(|s| !s.evicted().is_cancelled()).count(), 3);
        assert!(!other.evicted().is_cancelled(), "the flood evicted another source's connection");
        assert!(flood.iter().all(|s| s.evicted().is_cancelled()));
    }

    #[test]
    fn pinned_connections_are_never_evicted_and_a_newcomer_is_refused() {
        let a = Admission::new(2);
        let busy: Vec<Slot> = (0..2).map(|i| a.admit(ip(i)).unwrap()).collect();
        busy.iter().for_each(|s| s.set_standing(PINNED));
        assert!(a.admit(ip(7)).is_none());
        busy[0].set_standing(FRESH);
        assert!(a.admit(ip(7)).is_some());
        assert!(busy[0].evicted().is_cancelled() && !busy[1].evicted().is_cancelled());
        drop(busy);
        assert!(a.is_empty());
    }
}
