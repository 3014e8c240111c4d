//! The REST API's edges against a real daemon: what an unauthenticated or hostile client can
//! make it do (read a body, echo a value), and what it keeps answering.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::Node;
use crate::support::http;

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
