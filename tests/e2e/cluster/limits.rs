//! The size limit of one replicated change, end to end (issue 14 item 1: a 17 MB put-file
//! used to be accepted by the API, refused by the log store, and stop raft on the captain and
//! on every captain after it). Refused where it enters with 413 and the limit; a change
//! exactly at the limit replicates; the cluster keeps electing and committing.

use super::{MACROS, Node, captain, converge, put_lookup_args};
use std::time::{Duration, Instant};

use crate::support::{http_within, wait_for};

const LIMIT: &str = "over the 16777216 byte limit of one replicated change";
const LOOKUP: &str = "apps/search/lookups/big.csv";

/// A change putting `len` bytes as `big.csv`.
fn put_file(len: usize) -> tandem::conf::ConfChange {
    tandem::conf::ConfChange {
        conf_type: "lookups".into(),
        scope: tandem::conf::Scope::App("search".into()),
        target: tandem::conf::Target::File { name: "big.csv".into() },
        op: tandem::conf::Op::PutFile { content: vec![b'a'; len] },
    }
}

/// A change request putting `len` bytes as `big.csv`, as the API takes it.
fn put_file_body(len: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "changes": [put_file(len)] })).unwrap()
}

fn post(node: &Node, body: &[u8]) -> (u16, String) {
    let t = Instant::now();
    let answer = http_within(
        &node.api_addr(),
        "POST",
        "/v1/conf/changes",
        Some(&node.admin_token()),
        body,
        Duration::from_secs(120),
    );
    eprintln!("{} MB to {}: HTTP {} in {:?}", body.len() >> 20, node.name, answer.0, t.elapsed());
    answer
}

fn file_len(node: &Node, rel: &str) -> Option<u64> {
    std::fs::metadata(node.data().join("etc").join(rel)).ok().map(|m| m.len())
}

#[test]
fn a_change_over_the_log_limit_is_refused_with_413_and_the_cluster_keeps_electing_and_committing() {
    // The harness's fast timing (50 ms heartbeat): a 16 MiB entry's send has a timeout of its
    // own (cluster.append_timeout_ms), not the heartbeat's.
    let mut nodes: Vec<Node> = ["a", "b", "c"].iter().map(|n| Node::new(n, "")).collect();
    nodes[0].ok(&["cluster", "init"]);
    nodes[0].ok(&["cluster", "add-member", &nodes[1].peer]);
    nodes[1].ok(&["cluster", "add-member", &nodes[2].peer]);
    let cap = captain(&nodes);
    let follower = (cap + 1) % 3;
    // The CLI measures the file before sending it: non-zero exit, the limit named.
    let big = nodes[0].data().join("big.csv");
    std::fs::write(&big, vec![b'a'; 17_000_000]).unwrap();
    let out = nodes[follower].cli(&put_lookup_args("big.csv", &big));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "17 MB put-file exited 0: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(LIMIT), "{stderr}");
    // The API refuses it where it enters, on a follower (which would forward it) and on the
    // captain alike: 413 naming the size and the limit.
    let body = put_file_body(17_000_000);
    let mut measured = 0;
    for i in [follower, cap] {
        let (code, text) = post(&nodes[i], &body);
        assert_eq!(code, 413, "{}: {text}", nodes[i].name);
        assert!(text.contains(LIMIT), "{text}");
        measured =
            text.split(" is ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    }
    assert!(measured > 17_000_000, "{measured}");
    // Exactly at the limit: accepted, committed, replicated; one byte more is refused.
    let fits = 17_000_000 - (measured - 16_777_216) as usize;
    let (code, text) = post(&nodes[follower], &put_file_body(fits + 1));
    assert_eq!(code, 413, "{text}");
    let (code, text) = post(&nodes[follower], &put_file_body(fits));
    assert_eq!(code, 200, "{text}");
    // Committed within the API's wait (1.5 s in the harness), or pending in the member's
    // outbox when a loaded debug build is slower: either way it must reach every member.
    assert!(text.contains("\"committed\"") || text.contains("\"pending\""), "{text}");
    for n in &nodes {
        wait_for(Duration::from_secs(90), || (file_len(n, LOOKUP) == Some(fits as u64)).then_some(()))
            .unwrap_or_else(|| panic!("the {fits} byte file never reached {}", n.name));
    }
    // Every member still commits...
    for (i, n) in nodes.iter().enumerate() {
        let out = n.set("macros", "app:search", &format!("after{i}"), "definition", &format!("v{i}"));
        assert!(out.starts_with("committed"), "{}: {out}", n.name);
    }
    let all: Vec<&Node> = nodes.iter().collect();
    converge(&all, MACROS, "definition = v2");
    // ... and elects: the captain goes, the other two elect one and commit.
    nodes[cap].kill9();
    let rest: Vec<&Node> = nodes.iter().enumerate().filter(|(i, _)| *i != cap).map(|(_, n)| n).collect();
    let out = rest[0].set("macros", "app:search", "elected", "definition", "yes");
    assert!(out.starts_with("committed"), "{out}");
    converge(&rest, MACROS, "definition = yes");
    let new = captain(&nodes);
    assert_ne!(new, cap);
    nodes[cap].start();
    converge(&[&nodes[cap]], MACROS, "definition = yes");

    // An outbox that an older version filled with a change the log cannot hold, and a small
    // change queued behind it: the big one is dropped loudly (never offered to a captain), the
    // small one commits.
    let k = (new + 1) % 3;
    nodes[k].kill9();
    let queued = tandem::conf::ConfChange {
        conf_type: "macros".into(),
        scope: tandem::conf::Scope::App("search".into()),
        target: tandem::conf::Target::Conf,
        op: tandem::conf::Op::SetKey {
            stanza: "queued".into(),
            key: "definition".into(),
            value: "queued".into(),
        },
    };
    let outbox = serde_json::json!({ "next_id": 2, "pending": [
        { "id": 0, "batch": 11, "at_ms": 1, "changes": [put_file(17_000_000)] },
        { "id": 1, "batch": 12, "at_ms": 2, "changes": [queued] },
    ]});
    std::fs::write(nodes[k].data().join("cluster/outbox.json"), serde_json::to_vec(&outbox).unwrap())
        .unwrap();
    nodes[k].start();
    let all: Vec<&Node> = nodes.iter().collect();
    converge(&all, MACROS, "definition = queued");
    let (me, _) = wait_for(Duration::from_secs(60), || {
        let me = nodes[k].me();
        (me["outbox"] == 0).then_some(me)
    })
    .expect("the outbox never drained");
    let error = me["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("dropped from the outbox") && error.contains(LIMIT), "{me}");
    assert!(nodes[k].log().contains("a pending change no captain can take was dropped"));
    for n in &nodes {
        let out = n.set("macros", "app:search", "last", "definition", &n.name);
        assert!(out.starts_with("committed"), "{}: {out}", n.name);
    }
    for n in &nodes {
        assert!(!n.log().contains("above the limit of"), "{}: {}", n.name, n.log());
    }
}
