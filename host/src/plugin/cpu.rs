//! A plugin call's time cap measured on the calling thread's CPU clock: what a call spends
//! running plugin code, not the wall time a loaded machine adds while the thread waits for a
//! core. The epoch ticker still wakes the store; at each wake-up [`CpuBudget::extension`]
//! says whether the call has used its budget or how many more ticks it may run.
//!
//! Must never: let a call running wasm go past its budget by more than a few ticks.

use std::time::Duration;

use super::engine::deadline_ticks;

/// CPU time the calling thread has used so far (user and system).
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_THREAD_CPUTIME_ID exists on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// The budget of the call in progress on a store.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuBudget {
    started: Duration,
    limit: Duration,
}

impl CpuBudget {
    /// A budget of `limit` CPU time, counted from now on this thread.
    pub fn start(limit: Duration) -> Self {
        Self { started: thread_cpu(), limit }
    }

    /// At an epoch deadline: the ticks the call may still run, or None when its CPU time is
    /// spent. (A call that migrated threads would read another clock; calls never do.)
    pub fn extension(&self) -> Option<u64> {
        let used = thread_cpu().saturating_sub(self.started);
        let left = self.limit.checked_sub(used).filter(|left| !left.is_zero())?;
        Some(deadline_ticks(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_waits_keeps_its_budget_and_one_that_spins_spends_it() {
        let budget = CpuBudget::start(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(40));
        assert!(budget.extension().is_some(), "sleeping is not running");
        // Spins until this thread's own clock says 60 ms (the wall clock may say far more on a
        // loaded machine).
        let until = thread_cpu() + Duration::from_millis(60);
        let mut x = 0u64;
        while thread_cpu() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert_eq!(budget.extension(), None, "60 ms of running spends a 20 ms budget");
    }
}
