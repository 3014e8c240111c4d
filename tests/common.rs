//! Small helpers the side-by-side benchmarks, the failover drill and the end-to-end tests
//! share (each is its own crate and includes this file as a module): knobs from the
//! environment, a quiet page cache before a timed step, a process's CPU time from /proc, free
//! loopback ports, secret files as tandem accepts them.

// Each crate uses only some of these.
#![allow(dead_code)]

/// `name` from the environment as a number, or `default`; anything else stops the run.
pub fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

/// Flushes dirty pages and, when `drop_caches` (root only), drops the page cache, so the next
/// timed step reads from disk and finds no writeback of an earlier one.
pub fn quiesce(drop_caches: bool) {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    if drop_caches {
        std::fs::write("/proc/sys/vm/drop_caches", "1").expect("dropping the page cache (run as root)");
    }
}

/// CPU seconds (user + system) of live process `pid` so far; with `reaped_children`, also
/// those of the children it has waited for.
pub fn cpu_of(pid: u32, reaped_children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    let last = if reaped_children { 15 } else { 13 };
    let ticks: u64 = fields[11..last].iter().map(|f| f.parse::<u64>().unwrap()).sum();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A loopback port free at this moment (the kernel's pick).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port below the kernel's ephemeral range (where port-0 listeners and outgoing connections
/// live), unique within this run, from `first + (pid % spread) * 20` on: a restarted daemon
/// keeps its address and no other socket takes it meanwhile.
pub fn low_port(first: u16, spread: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = first + (std::process::id() % u32::from(spread)) as u16 * 20;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::SeqCst) % 2_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Writes a file holding a credential (a cluster secret) private, mode 0600: tandem refuses
/// one other users could read.
pub fn write_secret(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
