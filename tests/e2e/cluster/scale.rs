//! Size and time: a member that missed large entries catches up (and is not called up or
//! healthy while it lags), a member added after large files becomes a voter only once caught
//! up, how long an election takes, and a purged log giving its disk back.

use std::time::{Duration, Instant};

use super::{Node, put_lookup_args, three_tuned};
use crate::support::wait_for;

const MIB: usize = 1024 * 1024;

/// tandem's default heartbeat and election timeout, and a commit timeout for a debug build.
const DEFAULT_TIMING: &[(&str, &str)] =
    &[("heartbeat_ms", "100"), ("election_timeout_ms", "800"), ("commit_timeout_ms", "15000")];

/// A lookup of `size` bytes that compresses poorly (hex of a xorshift stream), distinct per `seed`.
fn big_lookup(seed: u64, size: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = b"key,value\n".to_vec();
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(format!("{:016x},{:016x}\n", x, x.rotate_left(29)).as_bytes());
    }
    out.truncate(size);
    out
}

/// Writes `count` lookups of `size` bytes through `node`; each must be committed.
fn put_lookups(node: &Node, first: usize, count: usize, size: usize) {
    for i in first..first + count {
        let file = node.data().join(format!("big{i}.csv"));
        std::fs::write(&file, big_lookup(i as u64, size)).unwrap();
        let out = node.ok(&put_lookup_args(&format!("big{i}.csv"), &file));
        assert!(out.starts_with("committed"), "{out}");
        std::fs::remove_file(&file).unwrap();
    }
}

/// True once `node` holds every one of the lookups `0..count` at full size.
fn holds_lookups(node: &Node, count: usize, size: usize) -> bool {
    (0..count).all(|i| {
        std::fs::metadata(node.data().join(format!("etc/apps/search/lookups/big{i}.csv")))
            .is_ok_and(|m| m.len() == size as u64)
    })
}

#[test]
fn a_member_that_missed_ten_4_mib_lookups_catches_up_and_is_not_up_meanwhile() {
    // Regression (issue 14 item 8): openraft gives a log send one heartbeat (here 50 ms), and
    // the network packed up to ~32 MiB into it; the member stayed at the same applied index
    // for minutes while status said "up".
    // The product's timing (the harness's 50 ms heartbeat is tighter); a debug build on a
    // shared machine needs more than the harness's 1.5 s to commit 4 MiB.
    let mut nodes = three_tuned(DEFAULT_TIMING, "");
    nodes[2].kill9();
    let writing = Instant::now();
    put_lookups(&nodes[0], 0, 10, 4 * MIB);
    eprintln!("10 x 4 MiB committed by 2 of 3 in {:?}", writing.elapsed());
    let captain_applied = nodes[0].me()["applied"].as_u64().unwrap();
    let started = Instant::now();
    nodes[2].start();
    let mut seen_behind = false;
    let caught = wait_for(Duration::from_secs(60), || {
        let s = nodes[0].status();
        let c = s["members"].as_array().unwrap().iter().find(|m| m["name"] == "c").cloned()?;
        let lag = c["lag"].as_u64().unwrap_or(0);
        // Up means within 2 entries (`UP_LAG_ENTRIES`) of the most advanced member.
        if lag > 2 && c["state"] == "up" {
            panic!("c is {lag} entries behind but shown up: {s}");
        }
        seen_behind |= lag > 0;
        (holds_lookups(&nodes[2], 10, 4 * MIB) && c["applied"].as_u64()? >= captain_applied).then_some(())
    });
    let took = started.elapsed();
    eprintln!("catch-up after missing 10 x 4 MiB: {took:?} (seen behind: {seen_behind})");
    assert!(caught.is_some(), "c never caught up in 60 s: {}", nodes[0].status());
    assert!(took < Duration::from_secs(30), "catch-up took {took:?}");
    let me = nodes[2].me();
    assert_eq!(me["state"], "up", "{me}");
}

#[test]
fn a_killed_captain_is_replaced_within_the_documented_election_timeout() {
    // Regression (issue 14 item 11): with `election_timeout_ms = 800` a follower waited
    // openraft's leader lease (the maximum, 1.6 s) plus its own timeout (0.8-1.6 s) before
    // calling an election: 2.4-3.2 s, never the documented 800 ms (up to a third more now).
    let mut nodes = three_tuned(DEFAULT_TIMING, "");
    nodes[0].set("macros", "app:search", "before", "definition", "1");
    let mut elections = Vec::new();
    for round in 0..2 {
        let old = super::captain(&nodes);
        // Every member has heard the captain lately (a heartbeat is 100 ms).
        std::thread::sleep(Duration::from_millis(300));
        let killed = Instant::now();
        nodes[old].kill9();
        let (new, elected) = wait_for(Duration::from_secs(20), || {
            nodes.iter().position(|n| n.is_running() && n.me()["role"] == "captain")
        })
        .expect("no new captain");
        let out = nodes[new].set("macros", "app:search", &format!("after{round}"), "definition", "2");
        assert!(out.starts_with("committed"), "{out}");
        let committed = killed.elapsed();
        eprintln!(
            "election round {round}: new captain seen after {elected:?}, a change committed after {committed:?}"
        );
        elections.push(elected);
        nodes[old].start();
        super::converge(&nodes.iter().collect::<Vec<_>>(), super::MACROS, "definition = 2");
    }
    for e in &elections {
        // 800 ms to 1,067 ms by configuration, plus status polling and a loaded machine; the
        // old timing could not go under 2.4 s.
        assert!(*e < Duration::from_millis(2_000), "elections took {elections:?}");
    }
}
