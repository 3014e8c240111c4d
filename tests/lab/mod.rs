//! The network lab: "hosts" as Linux network namespaces, for end-to-end tests and benchmarks
//! that must see real links between hosts, not one machine's loopback. Each crate that uses it
//! includes this folder as a module (`#[path = "../lab/mod.rs"] mod lab;`).
//!
//! ```text
//!   host ns "a"  eth0 192.0.2.1 ──veth── pa ┐
//!   host ns "b"  eth0 192.0.2.2 ──veth── pb ┼─ br0 in the switch ns
//!   host ns "w"  eth0 192.0.2.3 ──veth── pw ┘
//! ```
//!
//! - Each host has its own loopback (up) and one link to the switch, with its own address in
//!   192.0.2.0/24 (TEST-NET-1: documentation addresses, never routed anywhere; they exist only
//!   inside this lab's namespaces).
//! - [`Lab::limit`] caps a host's link with `tc ... tbf` in both directions (this kernel has no
//!   netem); [`Lab::delay_relay`] adds latency where a test needs it: a TCP relay of our own.
//! - [`Lab::cut`] / [`Lab::heal`] take a host's link down and up (at the switch port: the host
//!   keeps its address, as a pulled cable does); [`Lab::readdress`] gives a host a new address.
//! - [`Lab::command`] runs a program inside a host (`ip netns exec`): tandem daemons, and
//!   PostgreSQL as the `postgres` user; [`in_netns`] runs a closure on a thread that entered a
//!   host's namespace (sockets it makes belong there); [`Lab::capture`] records every frame
//!   crossing a host's link (an `AF_PACKET` socket of our own, no tcpdump needed).
//!
//! Names are unique per lab (`tl<pid>x<n>...`), so tests run concurrently. Everything is
//! removed on drop, even when the test panics (processes still inside the lab's namespaces are
//! killed first); namespaces a killed test run left behind (its pid gone) are removed by the
//! next lab. Unix sockets are not namespaced: a host's PostgreSQL socket stays reachable
//! through the filesystem; the lab separates networks, not filesystems.
//!
//! Needs root. Without it (or without `ip`), [`Lab::new`] says why and returns `None`; with
//! `CI=true` it panics instead: CI must never pass by skipping.

#![allow(dead_code)] // each crate uses some of it

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The lab's network; host `i` (from 0) is `NET.(i + 1)`, and `NET.(i + 101)` after a move.
pub const NET: &str = "192.0.2";
const PREFIX_LEN: u8 = 24;
/// Name prefix of every lab namespace (`tl<pid>x<n><host>`).
const NS_PREFIX: &str = "tl";
/// tbf's bucket and queue: a burst of 256 KiB, at most 50 ms queued before drops.
const TBF_BURST: &str = "256kb";
const TBF_LATENCY: &str = "50ms";

/// A running lab: its switch and its hosts.
pub struct Lab {
    prefix: String,
    switch: String,
    hosts: Vec<Host>,
}

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its address now.
    pub ip: String,
    /// Its switch port's name (in the switch namespace).
    port: String,
    index: usize,
}

impl Lab {
    /// A lab with one host per name, all on one switch; `None` (after saying why) where it
    /// cannot run and this is not CI.
    pub fn new(names: &[&str]) -> Option<Lab> {
        if let Err(why) = can_run() {
            unavailable(&why);
            return None;
        }
        sweep_stale();
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!("{NS_PREFIX}{}x{}", std::process::id(), COUNT.fetch_add(1, Ordering::SeqCst));
        let mut lab = Lab { switch: format!("{prefix}sw"), prefix, hosts: Vec::new() };
        ip(&["netns", "add", &lab.switch]);
        lab.ns_ip(&lab.switch.clone(), &["link", "add", "br0", "type", "bridge"]);
        lab.ns_ip(&lab.switch.clone(), &["link", "set", "br0", "up"]);
        for (index, name) in names.iter().enumerate() {
            let host = Host {
                name: name.to_string(),
                ns: format!("{}{name}", lab.prefix),
                ip: format!("{NET}.{}", index + 1),
                port: format!("p{index}"),
                index,
            };
            ip(&["netns", "add", &host.ns]);
            ip(&[
                "link",
                "add",
                "eth0",
                "netns",
                &host.ns,
                "type",
                "veth",
                "peer",
                "name",
                &host.port,
                "netns",
                &lab.switch,
            ]);
            let sw = lab.switch.clone();
            lab.ns_ip(&sw, &["link", "set", &host.port, "master", "br0"]);
            lab.ns_ip(&sw, &["link", "set", &host.port, "up"]);
            lab.ns_ip(&host.ns, &["addr", "add", &format!("{}/{PREFIX_LEN}", host.ip), "dev", "eth0"]);
            lab.ns_ip(&host.ns, &["link", "set", "eth0", "up"]);
            lab.ns_ip(&host.ns, &["link", "set", "lo", "up"]);
            lab.hosts.push(host);
        }
        Some(lab)
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no lab host {name}"))
    }

    /// `program` to be run inside host `name` (`ip netns exec`).
    pub fn command(&self, name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(name).ns]).arg(program);
        c
    }

    /// Caps host `name`'s link at `mbit` Mbit/s each way (tbf on both ends of its veth).
    pub fn limit(&self, name: &str, mbit: u32) {
        let h = self.host(name).clone();
        let rate = format!("{mbit}mbit");
        for (ns, dev) in [(&h.ns, "eth0"), (&self.switch, h.port.as_str())] {
            run(
                "tc",
                &[
                    "-n",
                    ns,
                    "qdisc",
                    "replace",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    &rate,
                    "burst",
                    TBF_BURST,
                    "latency",
                    TBF_LATENCY,
                ],
            );
        }
    }

    /// Takes host `name`'s link down: nothing crosses until [`Lab::heal`].
    pub fn cut(&self, name: &str) {
        let port = self.host(name).port.clone();
        self.ns_ip(&self.switch, &["link", "set", "dev", &port, "down"]);
    }

    pub fn heal(&self, name: &str) {
        let port = self.host(name).port.clone();
        self.ns_ip(&self.switch, &["link", "set", "dev", &port, "up"]);
    }

    /// Gives host `name` a new address (the old one goes); returns it.
    pub fn readdress(&mut self, name: &str) -> String {
        let h = self.hosts.iter_mut().find(|h| h.name == name).expect("a lab host");
        let new = format!("{NET}.{}", h.index + 101);
        let (ns, old) = (h.ns.clone(), h.ip.clone());
        h.ip = new.clone();
        // Old first: deleting a subnet's primary address deletes its secondaries too.
        self.ns_ip(&ns, &["addr", "del", &format!("{old}/{PREFIX_LEN}"), "dev", "eth0"]);
        self.ns_ip(&ns, &["addr", "add", &format!("{new}/{PREFIX_LEN}"), "dev", "eth0"]);
        new
    }

    /// Records every frame that crosses host `name`'s link, both ways, until the capture is
    /// stopped.
    pub fn capture(&self, name: &str) -> Capture {
        Capture::start(&self.host(name).ns)
    }

    /// A TCP relay inside host `at` on `listen` (`ip:port` of that host) to `target`, holding
    /// each chunk for `delay` in each direction: latency for a test that needs it. Relays
    /// connections until the lab is dropped.
    pub fn delay_relay(&self, at: &str, listen: &str, target: &str, delay: Duration) -> Relay {
        Relay::start(&self.host(at).ns, listen, target, delay)
    }

    fn ns_ip(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        ip(&all);
    }

    fn namespaces(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.ns.clone()).chain([self.switch.clone()]).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            remove_namespace(&ns);
        }
    }
}

/// Kills what still runs inside `ns` (processes this test started there), then removes it.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill has no memory preconditions; the pid is inside our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes the namespaces of labs whose process is gone (a run killed before its drop).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else { continue };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(name);
        }
    }
}

fn can_run() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the network lab needs root (network namespaces)".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`ip netns list` failed: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => Err(format!("no `ip` program (iproute2): {e}")),
    }
}

/// Says why the lab cannot run; panics on CI.
pub fn unavailable(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the network lab is required on CI and could not be set up: {why}");
    }
    eprintln!("SKIPPING a network-lab test: {why}");
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `f` on a new thread that first entered network namespace `ns`; sockets it makes belong
/// to that namespace (and keep it after the thread ends).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in(ns, f).join().expect("the thread in the namespace panicked")
}

fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        enter(&path);
        f()
    })
}

fn enter(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    use std::os::fd::AsRawFd;
    // SAFETY: a valid namespace descriptor; setns changes only this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Frames seen on a host's link, recorded by a thread until [`Capture::stop`].
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<u8>>>,
}

/// How long the capture thread blocks in one read, so it notices `stop`.
const CAPTURE_POLL: Duration = Duration::from_millis(100);

impl Capture {
    fn start(ns: &str) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = spawn_in(ns, move || {
            let fd = packet_socket("eth0");
            ready_tx.send(()).unwrap();
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            while !flag.load(Ordering::SeqCst) {
                // SAFETY: buf is valid for its length; fd is our socket.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 {
                    seen.extend_from_slice(&buf[..n as usize]);
                }
            }
            // SAFETY: our descriptor, closed once.
            unsafe { libc::close(fd) };
            seen
        });
        ready_rx.recv().expect("the capture socket opened");
        Capture { stop, thread: Some(thread) }
    }

    /// Stops recording; every byte of every frame seen (headers included), in order.
    pub fn stop(mut self) -> Vec<u8> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().expect("the capture thread")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// An `AF_PACKET` socket bound to `dev` of the current namespace, all protocols, with a read
/// timeout of [`CAPTURE_POLL`].
fn packet_socket(dev: &str) -> i32 {
    let all = (libc::ETH_P_ALL as u16).to_be() as i32;
    // SAFETY: plain system calls on values we own.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all);
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        let name = std::ffi::CString::new(dev).unwrap();
        let index = libc::if_nametoindex(name.as_ptr());
        assert!(index > 0, "no {dev}");
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all as u16;
        addr.sll_ifindex = index as i32;
        let rc =
            libc::bind(fd, (&addr as *const libc::sockaddr_ll).cast(), size_of::<libc::sockaddr_ll>() as u32);
        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        let tv = libc::timeval { tv_sec: 0, tv_usec: CAPTURE_POLL.as_micros() as libc::suseconds_t };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
        fd
    }
}

/// A delaying TCP relay (see [`Lab::delay_relay`]).
pub struct Relay {
    pub addr: String,
}

impl Relay {
    fn start(ns: &str, listen: &str, target: &str, delay: Duration) -> Relay {
        let (listen, target, ns2) = (listen.to_string(), target.to_string(), ns.to_string());
        let listener = in_netns(ns, move || TcpListener::bind(&listen).expect("relay listen"));
        let addr = listener.local_addr().unwrap().to_string();
        spawn_in(&ns2.clone(), move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (target, ns) = (target.clone(), ns2.clone());
                spawn_in(&ns, move || {
                    let Ok(server) = TcpStream::connect(&target) else { return };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || delayed_copy(c2, s2, delay));
                    delayed_copy(server, client, delay);
                });
            }
        });
        Relay { addr }
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read (a reader and a
/// writer thread with a queue between them, so the delay does not slow the rate).
fn delayed_copy(from: TcpStream, to: TcpStream, delay: Duration) {
    type Queue = (Mutex<(VecDeque<(Instant, Vec<u8>)>, bool)>, Condvar);
    let queue: Arc<Queue> = Arc::new((Mutex::new((VecDeque::new(), false)), Condvar::new()));
    let q = queue.clone();
    let writer = std::thread::spawn(move || {
        let mut to = to;
        loop {
            let (due, chunk) = {
                let mut guard = q.0.lock().unwrap();
                loop {
                    if let Some(item) = guard.0.pop_front() {
                        break item;
                    }
                    if guard.1 {
                        let _ = to.shutdown(Shutdown::Write);
                        return;
                    }
                    guard = q.1.wait(guard).unwrap();
                }
            };
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut from = from;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut guard = queue.0.lock().unwrap();
        guard.0.push_back((Instant::now() + delay, buf[..n].to_vec()));
        queue.1.notify_one();
    }
    queue.0.lock().unwrap().1 = true;
    queue.1.notify_one();
    let _ = writer.join();
}
