//! A member's own disk failing under it: applying committed changes on a full conf tree (issue
//! 14 item 2: the applied index used to move past the failed change, which was lost for good)
//! and a destructive resync whose install fails (item 5, in `recovery.rs`).

use super::{CONVERGE, MACROS, Node, captain};
use crate::support::wait_for;
use crate::tmpfs::Tmpfs;

/// The members' applied index, once they all report the same.
fn applied_everywhere(nodes: &[Node]) -> Option<u64> {
    let applied: Vec<u64> = nodes.iter().map(|n| n.me()["applied"].as_u64().unwrap_or(0)).collect();
    applied.windows(2).all(|w| w[0] == w[1]).then(|| applied[0])
}

#[test]
fn a_full_disk_stops_applies_loudly_and_every_committed_change_arrives_once_space_returns() {
    let Some(fs) = Tmpfs::mount(4 << 20) else { return };
    let tree = fs.path().join("etc");
    let mut nodes = vec![
        Node::new("a", ""),
        Node::new("b", ""),
        Node::new("c", &format!("conf_root = \"{}\"\n", tree.display())),
    ];
    nodes[0].ok(&["cluster", "init"]);
    nodes[0].ok(&["cluster", "add-member", &nodes[1].peer]);
    nodes[0].ok(&["cluster", "add-member", &nodes[2].peer]);
    let files: Vec<_> = (0..3)
        .map(|i| if i == 2 { tree.join(MACROS) } else { nodes[i].data().join("etc").join(MACROS) })
        .collect();
    let names = ["a", "b", "c"];
    let holds = |i: usize, line: &str| {
        std::fs::read_to_string(&files[i]).unwrap_or_default().lines().any(|l| l.trim() == line)
    };
    let arrives = |line: &str| {
        for (i, name) in names.iter().enumerate() {
            wait_for(CONVERGE, || holds(i, line).then_some(()))
                .unwrap_or_else(|| panic!("`{line}` never reached {name}"));
        }
    };
    nodes[0].set("macros", "app:search", "base", "definition", "0");
    arrives("definition = 0");
    let cap = captain(&nodes);
    assert_ne!(cap, 2, "c must be a follower here");

    // c's conf tree fills up. Changes still commit on the majority; c applies none of them,
    // and says so.
    fs.fill_leaving(0);
    for i in 0..5 {
        let out = nodes[cap].set("macros", "app:search", &format!("full{i}"), "definition", &format!("f{i}"));
        assert!(out.starts_with("committed"), "{out}");
    }
    let through_c = nodes[2].set("macros", "app:search", "via-c", "definition", "c");
    assert!(through_c.starts_with("committed"), "{through_c}");
    assert!(!through_c.contains("and applied here"), "c answered applied here: {through_c}");
    assert!(through_c.contains("NOT applied here"), "{through_c}");
    let (me, _) = wait_for(CONVERGE, || {
        let me = nodes[2].me();
        (me["state"] == "cannot_apply").then_some(me)
    })
    .unwrap_or_else(|| panic!("c never said it cannot apply: {}", nodes[2].me()));
    let error = me["cannot_apply"]["error"].as_str().unwrap();
    assert!(error.contains("No space left on device"), "{error}");
    assert!(me["cannot_apply"]["since_ms"].as_u64().unwrap() > 0, "{me}");
    let leader_applied = nodes[cap].me()["applied"].as_u64().unwrap();
    assert!(me["applied"].as_u64().unwrap() < leader_applied, "c's applied index moved: {me}");
    let (_, metrics) = nodes[2].http_get("/metrics");
    assert!(metrics.contains("tandem_cluster_cannot_apply 1"), "{metrics}");
    let (_, health) = nodes[2].http_get("/health");
    assert!(health.contains("conf changes cannot be applied here"), "{health}");
    assert!(!holds(2, "definition = f0") && !holds(2, "definition = c"));

    // Space returns: c catches up without a restart, every change in order, and says so.
    fs.free_filler();
    arrives("definition = f4");
    arrives("definition = c");
    for i in 0..5 {
        assert!(holds(2, &format!("definition = f{i}")), "c lost full{i}");
    }
    wait_for(CONVERGE, || (nodes[2].me()["state"] == "up").then_some(())).expect("c never came back up");
    wait_for(CONVERGE, || applied_everywhere(&nodes)).expect("the applied indexes never agreed");
    let (_, metrics) = nodes[2].http_get("/metrics");
    assert!(metrics.contains("tandem_cluster_cannot_apply 0"), "{metrics}");

    // Full again, and c restarted while it cannot apply: after the restart it still applies
    // nothing past the failure, and catches up once space returns.
    fs.fill_leaving(0);
    let out = nodes[cap].set("macros", "app:search", "while-down", "definition", "restart");
    assert!(out.starts_with("committed"), "{out}");
    wait_for(CONVERGE, || (nodes[2].me()["state"] == "cannot_apply").then_some(())).expect("c never stalled");
    nodes[2].kill9();
    nodes[2].start();
    wait_for(CONVERGE, || (nodes[2].me()["state"] == "cannot_apply").then_some(()))
        .expect("after its restart, c never said it cannot apply");
    assert!(!holds(2, "definition = restart"));
    fs.free_filler();
    arrives("definition = restart");
    wait_for(CONVERGE, || applied_everywhere(&nodes))
        .expect("the applied indexes never agreed after the restart");
    assert_eq!(nodes[2].me()["state"], "up");
}
