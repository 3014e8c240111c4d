//! File descriptors. At start the soft `RLIMIT_NOFILE` is raised to the hard limit (the usual
//! soft limit, 1024, is a relic of select(2)). The listeners' caps (the REST API's connections,
//! the peer listener's handshakes and authenticated connections) are then fitted into what the
//! limit allows after a reserve for the daemon's own descriptors: its logs, the raft log, the
//! conf tree, plugins, tree sync, the WAL archive, PostgreSQL and the connections it dials.
//! A listener at its cap takes nothing from the reserve, so a flood of connections cannot stop
//! the member from applying a change, checkpointing, reading its plugin folder or dialling
//! its peers (issue 14: ~20,000 idle API connections did all four).

use std::io;

/// Descriptors kept for the daemon's own files and outgoing connections...
const RESERVED: u64 = 256;
/// ... plus one in this many of the limit, for a host with large trees and many peers.
const RESERVED_SHARE: u64 = 8;
/// The lowest open-file limit tandem starts with.
pub const MIN_NOFILE: u64 = 512;
/// An unlimited limit counts as this many.
const UNLIMITED_AS: u64 = 1 << 20;

/// The open-file limit in force and what it leaves the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    pub limit: u64,
}

/// Connections each listener may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub api: usize,
    pub handshakes: usize,
    pub peers: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FdError {
    #[error("reading or raising the open-file limit: {0}")]
    Limit(#[from] io::Error),
    #[error(
        "the open-file limit (RLIMIT_NOFILE) is {limit}; tandem needs at least {min}: raise it \
         (`ulimit -Hn` and `ulimit -n`, or LimitNOFILE= in a systemd unit)"
    )]
    TooLow { limit: u64, min: u64 },
}

impl FdBudget {
    /// Raises this process's soft limit to its hard limit; the budget of the limit in force.
    pub fn raise() -> Result<Self, FdError> {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            // SAFETY: setrlimit reads the struct it is given.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            } else {
                tracing::warn!(error = %io::Error::last_os_error(), soft = lim.rlim_cur, "could not raise the open-file limit");
            }
        }
        let limit = if lim.rlim_cur == libc::RLIM_INFINITY { UNLIMITED_AS } else { lim.rlim_cur };
        Self::of(limit)
    }

    /// The budget of `limit` descriptors.
    pub fn of(limit: u64) -> Result<Self, FdError> {
        if limit < MIN_NOFILE {
            return Err(FdError::TooLow { limit, min: MIN_NOFILE });
        }
        Ok(Self { limit })
    }

    /// Descriptors the listeners never take.
    pub fn reserved(&self) -> u64 {
        RESERVED + self.limit / RESERVED_SHARE
    }

    /// The `wanted` caps if they fit beside the reserve, else each scaled down by the same
    /// factor (at least one each).
    pub fn fit(&self, wanted: Caps) -> Caps {
        let room = self.limit - self.reserved();
        let total = (wanted.api + wanted.handshakes + wanted.peers) as u64;
        if total <= room {
            return wanted;
        }
        let scale = |n: usize| ((n as u64 * room / total) as usize).max(1);
        Caps { api: scale(wanted.api), handshakes: scale(wanted.handshakes), peers: scale(wanted.peers) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Caps = Caps { api: 512, handshakes: 256, peers: 256 };

    #[test]
    fn caps_fit_beside_the_reserve() {
        let big = FdBudget::of(1 << 20).unwrap();
        assert_eq!(big.fit(DEFAULTS), DEFAULTS);
        for limit in [MIN_NOFILE, 600, 1024, 4096] {
            let b = FdBudget::of(limit).unwrap();
            let caps = b.fit(DEFAULTS);
            let used = (caps.api + caps.handshakes + caps.peers) as u64;
            assert!(used + b.reserved() <= limit, "{limit}: {caps:?} + {}", b.reserved());
            assert!(caps.api >= caps.handshakes && caps.handshakes >= 1, "{limit}: {caps:?}");
        }
        assert_eq!(FdBudget::of(1024).unwrap().fit(DEFAULTS), Caps { api: 320, handshakes: 160, peers: 160 });
    }

    #[test]
    fn a_limit_too_low_is_refused_with_the_fix() {
        let e = FdBudget::of(256).unwrap_err().to_string();
        assert!(e.contains("is 256") && e.contains("at least 512") && e.contains("LimitNOFILE"), "{e}");
    }
}
