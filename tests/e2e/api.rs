//! The REST API's edges against a real daemon: what an unauthenticated or hostile client can
//! make it do (read a body, echo a value, hold its descriptors), and what it keeps answering.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::{MACROS, Node, converge};
use crate::support::{http, wait_for};

/// Raises this test process's soft open-file limit to its hard limit; the limit now.
fn raise_own_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read or write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Peak resident memory of process `pid` in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Regression (issue 14): the body was read and parsed before the token was checked, so an
/// unauthenticated 60 MB body was buffered whole (and answered 400, not 401).
#[test]
fn an_unauthenticated_60_mb_body_is_refused_before_it_is_read() {
    const BODY: usize = 60 << 20;
    let node = Node::new("solo", "");
    let peak_before = peak_rss_kib(node.pid());
    let mut s = TcpStream::connect(node.api_addr()).unwrap();
    write!(
        s,
        "POST /v1/conf/changes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {BODY}\r\n\r\n"
    )
    .unwrap();
    // The body goes out as fast as the daemon takes it, beside the wait for the answer.
    let mut w = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b' '; 1 << 20];
        let mut sent = 0;
        while sent < BODY && w.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("an answer while the body is still coming");
    let took = started.elapsed();
    assert_eq!(&head, b"HTTP/1.1 401", "{}", String::from_utf8_lossy(&head));
    assert!(took < Duration::from_secs(2), "the refusal took {took:?}");
    let sent = sender.join().unwrap();
    assert!(sent < BODY, "the daemon read the whole body ({sent} bytes)");
    let grown = peak_rss_kib(node.pid()).saturating_sub(peak_before);
    assert!(grown < 16 << 10, "the daemon's peak memory grew by {grown} KiB");
    eprintln!("401 after {took:?}; {} MiB of the body sent; peak RSS +{grown} KiB", sent >> 20);
}

/// Regression (issue 14): refusals echoed whole values: a 1 MB stanza name came back whole,
/// a 50 KB value (which could be a credential) too, and serde's messages quote the input.
#[test]
fn refusals_never_echo_a_whole_name_or_any_value() {
    let node = Node::new("solo", "");
    let (addr, token) = (node.api_addr(), node.admin_token());
    let set = |stanza: &str, value: &str| {
        json!({"changes": [{"conf_type": "macros", "scope": {"app": "search"}, "target": "conf",
            "op": {"set_key": {"stanza": stanza, "key": "definition", "value": value}}}]})
        .to_string()
    };
    let post = |body: String| http(&addr, "POST", "/v1/conf/changes", Some(&token), body.as_bytes());

    let (code, answer) = post(set(&"s".repeat(1 << 20), "x"));
    assert_eq!(code, 400, "{answer:.300}");
    assert!(
        answer.len() < 1000 && answer.contains("(1048576 bytes)"),
        "{} bytes: {answer:.300}",
        answer.len()
    );

    let credential = format!("hunter2-{}\n[injected]", "p".repeat(50_000));
    let (code, answer) = post(set("s", &credential));
    assert_eq!(code, 400, "{answer:.300}");
    assert!(!answer.contains("hunter2") && answer.len() < 1000, "{} bytes: {answer:.300}", answer.len());
    assert!(answer.contains("definition") && answer.contains("newline"), "{answer}");

    let unknown_op = json!({"changes": [{"conf_type": "macros", "scope": "system", "target": "conf",
        "op": {"x".repeat(1 << 20): {}}}]});
    let (code, answer) = post(unknown_op.to_string());
    assert_eq!(code, 422, "{answer:.300}");
    assert!(answer.len() < 1000, "{} bytes: {answer:.300}", answer.len());
}

/// Regression (issue 14): ~20,000 idle connections to the API (no token needed to open one)
/// took the captain's descriptors: it then failed to apply a committed change (EMFILE), to
/// checkpoint, to read its plugin folder, and its peer port stopped answering. Here a member
/// runs with a limit of 640 open files while 1500 idle connections are opened against it.
#[test]
fn idle_connections_cannot_take_a_members_descriptors() {
    const NOFILE: u64 = 640;
    let idle = 1500.min(raise_own_nofile().saturating_sub(500) as usize);
    let a = Node::build("a", "", "header_timeout_ms = 1000\n", Some(NOFILE));
    let b = Node::new("b", "");
    a.ok(&["cluster", "init"]);
    a.ok(&["cluster", "add-member", &b.peer]);
    let api: SocketAddr = a.api_addr().parse().unwrap();

    let started = Instant::now();
    let (mut held, mut unanswered) = (Vec::new(), 0);
    while held.len() + unanswered < idle && unanswered < 10 {
        match TcpStream::connect_timeout(&api, Duration::from_secs(1)) {
            Ok(s) => held.push(s),
            // a SYN dropped in a burst costs a second; many mean no one accepts any more
            Err(_) => unanswered += 1,
        }
    }
    let opened = (held.len(), started.elapsed());
    assert!(unanswered < 10, "the API stopped accepting connections after {}", held.len());
    let fds_under_load = open_fds(a.pid());

    // A real request is answered at once: it evicts the oldest idle connection.
    let started = Instant::now();
    let (code, body) = http(&a.api_addr(), "GET", "/v1/cluster/status", Some(&a.admin_token()), b"");
    let answered_in = started.elapsed();
    assert_eq!(code, 200, "{body}");
    // A change through the other member commits (the peer transport to a) and is applied on a
    // (its raft log, its conf tree); one through a commits too (its CLI, its API).
    b.set("macros", "app:search", "from_b", "definition", "x");
    converge(&[&a], MACROS, "definition = x");
    let out = a.set("macros", "app:search", "from_a", "definition", "y");
    assert!(out.starts_with("committed"), "{out}");
    converge(&[&b], MACROS, "definition = y");
    let ping = b.cli(&["peer", "ping", &a.peer]);
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stderr));

    // The idle connections end on their own (evicted, or after the 1 s header timeout).
    let closed = |s: &TcpStream| {
        s.set_nonblocking(true).unwrap();
        match (&*s).read(&mut [0u8; 1]) {
            Ok(n) => n == 0,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    };
    let all_closed = wait_for(Duration::from_secs(10), || held.iter().all(closed).then_some(()));
    let log = a.log();
    assert!(!log.contains("Too many open files"), "the member ran out of descriptors:\n{log}");
    eprintln!(
        "{} idle connections opened in {:?}; member at {fds_under_load} descriptors of {NOFILE}; \
         a request answered in {answered_in:?}; idle ones all closed: {}",
        opened.0,
        opened.1,
        all_closed.map_or("no".to_string(), |(_, t)| format!("after {t:?}")),
    );
    assert!(all_closed.is_some(), "idle connections stayed open");
    assert!(fds_under_load < NOFILE as usize, "{fds_under_load}");
}

/// Regression (issue 14): the API served connections with no timeout at all (axum's server
/// has no timer), so a client that never finishes its headers held a connection for good.
#[test]
fn a_slow_header_is_cut_off_at_the_header_timeout() {
    let node = Node::build("solo", "", "header_timeout_ms = 500\n", None);
    let mut s = TcpStream::connect(node.api_addr()).unwrap();
    s.write_all(b"GET /v1/health HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    // One header line every 100 ms: never idle, never done.
    let cut = loop {
        if started.elapsed() > Duration::from_secs(5) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
        if s.write_all(b"X-Slow: 1\r\n").is_err() {
            break Some(started.elapsed());
        }
        s.set_nonblocking(true).unwrap();
        let ended = matches!((&s).read(&mut [0u8; 64]), Ok(0));
        s.set_nonblocking(false).unwrap();
        if ended {
            break Some(started.elapsed());
        }
    };
    let cut = cut.expect("the slow client was still connected after 5 s");
    assert!(cut < Duration::from_secs(2), "cut after {cut:?}");
    // and a prompt client is served
    let (code, _) = http(&node.api_addr(), "GET", "/v1/health", None, b"");
    assert_eq!(code, 200);
}
