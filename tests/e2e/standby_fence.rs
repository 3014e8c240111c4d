//! Fencing the old primary (issue 17): a convert that can reach the old primary's tandem has it
//! fence its database first (no session, however it asks, commits there), waits for its last
//! WAL, then drains and promotes; every row acknowledged on the old primary up to the convert
//! is on the new one. The fenced old primary rejoins without a rewind and follows, and the
//! pair can be converted back at once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tandem::peer::{ClusterSecret, PeerConnection, PeerIdentity};
use tandem::standby::protocol::{Answer, Request, ask};

use crate::pg::wait_until;
use crate::standby::{Host, host, host_with};

/// Runs `convert` while a writer commits marker rows on `primary`, each in a fresh session;
/// returns the ids whose commit was acknowledged, and what `convert` returned.
fn write_during(primary: &Host, first: u32, convert: impl FnOnce() -> String) -> (Vec<u32>, String) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut acked = Vec::new();
            let mut id = first;
            while !stop.load(Ordering::Relaxed) {
                if primary.pg().try_psql(&format!("INSERT INTO marks VALUES ({id})")).is_ok() {
                    acked.push(id);
                }
                id += 1;
            }
            acked
        });
        // The writer runs before, during and after the convert.
        std::thread::sleep(Duration::from_millis(1500));
        let out = convert();
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        (writer.join().unwrap(), out)
    })
}

/// Asks `host`'s tandem one pair request over the peer transport, as a peer of the cluster.
fn ask_raw(host: &Host, request: &Request) -> Answer {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let secret = ClusterSecret::from_text(crate::cluster::SECRET).unwrap();
        let addr = host.tandem.peer.parse().unwrap();
        let mut conn =
            PeerConnection::connect(addr, &secret, &PeerIdentity::new("stranger"), 1 << 20).await.unwrap();
        ask(&mut conn, request).await.unwrap()
    })
}

/// What `acked` lacks on `new_primary`, and the refusals the fenced `old` owes: an empty list
/// when all is well.
fn check_fenced(old: &Host, new_primary: &Host, acked: &[u32]) -> Vec<String> {
    let mut wrong = Vec::new();
    let there: BTreeSet<u32> =
        new_primary.pg().psql("SELECT id FROM marks").lines().map(|l| l.trim().parse().unwrap()).collect();
    let lost: Vec<_> = acked.iter().filter(|id| !there.contains(id)).collect();
    if !lost.is_empty() {
        wrong.push(format!("{} of {} acknowledged rows lost: {lost:?}", lost.len(), acked.len()));
    }
    wait_until("the old primary refuses a plain INSERT", || {
        old.pg().try_psql("INSERT INTO marks VALUES (-1)").is_err()
    });
    let insisting = "BEGIN READ WRITE; INSERT INTO marks VALUES (-2); COMMIT";
    if let Ok(out) = old.pg().try_psql(insisting) {
        wrong.push(format!("`{insisting}` committed on the fenced old primary ({out:?})"));
    }
    wrong
}

#[test]
fn a_convert_that_reaches_the_old_primary_fences_it_first_and_loses_no_acknowledged_row() {
    let Some(a) = host("a", true) else { return };
    let Some(b) = host("b", true) else { return };
    a.pg().psql("CREATE TABLE marks (id int PRIMARY KEY)");
    a.tandem.ok(&["standby", "configure", "--primary-mode", "--peer", &b.tandem.peer]);
    b.tandem.ok(&["standby", "configure", "--standby-mode", "--peer", &a.tandem.peer]);
    b.wait_status("streaming", |s| s["database"]["streaming"] == true);

    // A fence request for another pair, or one not above the primary's epoch, is refused and
    // changes nothing.
    let s = a.status();
    let (pair_id, epoch) = (s["pair_id"].as_str().unwrap().to_owned(), s["epoch"].as_u64().unwrap());
    for (request, why) in [
        (Request::Fence { pair_id: "0123456789abcdef".into(), epoch: epoch + 1 }, "not paired with you"),
        (Request::Fence { pair_id: pair_id.clone(), epoch }, "not above"),
    ] {
        match ask_raw(&a, &request) {
            Answer::Refused { reason } => assert!(reason.contains(why), "{request:?}: {reason}"),
            other => panic!("{request:?} answered {other:?}"),
        }
    }
    assert!(a.status()["fenced"].is_null() && a.health() == 200);
    a.pg().psql("INSERT INTO marks VALUES (0)");

    // Forced, as in the issue: --force only skips the checks of an old primary that does not
    // answer; one that answers is fenced first all the same.
    let (acked, out) = write_during(&a, 1, || b.tandem.ok(&["standby", "convert-to-primary", "--force"]));
    assert!(acked.len() >= 5, "the writer barely ran: {acked:?}");
    println!("forced convert, {} rows acknowledged on the old primary:\n{out}", acked.len());
    let wrong = check_fenced(&a, &b, &acked);
    assert!(wrong.is_empty(), "{}\nconvert said: {out}", wrong.join("\n"));
    assert!(out.contains("old primary fenced (demote)"), "{out}");
    let s = a.status();
    assert_eq!(s["fenced"]["how"], "demote", "{s:#}");
    assert!(a.text().contains("FENCED (demote)"), "{}", a.text());
    assert_eq!(a.health(), 503);
    let health = a.tandem.http_get("/health").1;
    assert!(health.contains("its database is fenced (demote)"), "{health}");
    let s = b.wait_status("the old primary's fence", |s| s["peer"]["fenced"] == "demote");
    let old = s["last_failover"]["old_primary"].as_str().unwrap_or_default();
    assert!(old.contains("fenced (demote) at this host's request"), "{s:#}");

    // The old primary stopped cleanly where the new primary's timeline begins: no rewind.
    let out = a.tandem.ok(&["standby", "rejoin"]);
    println!("rejoin:\n{out}");
    assert!(out.contains("no rewind needed"), "{out}");
    assert!(!a.tandem.data().join("standby/diverged").exists(), "{out}");
    a.wait_status("following the new primary", |s| {
        s["role"] == "standby" && s["database"]["streaming"] == true
    });
    b.pg().psql("INSERT INTO marks VALUES (1000000)");
    wait_until("the new primary's row on the old one", || {
        a.pg().try_psql("SELECT count(*) FROM marks WHERE id = 1000000").is_ok_and(|n| n == "1")
    });
    assert!(a.status()["fenced"].is_null(), "{:#}", a.status());

    // And back at once, this time without --force: b is fenced first, nothing is lost.
    let (acked, out) = write_during(&b, 2_000_000, || a.tandem.ok(&["standby", "convert-to-primary"]));
    println!("convert back, {} rows acknowledged on the old primary:\n{out}", acked.len());
    let wrong = check_fenced(&b, &a, &acked);
    assert!(wrong.is_empty(), "{}\nconvert said: {out}", wrong.join("\n"));
    assert_eq!(b.status()["fenced"]["how"], "demote");

    // Off from the fenced state: the demoted database stays a read-only standby following
    // nothing (the peer took over with all it wrote), not a second writable primary.
    let out = b.tandem.ok(&["standby", "off"]);
    assert!(out.contains("stays fenced"), "{out}");
    assert_eq!(b.pg().psql("SELECT pg_is_in_recovery()"), "t");
    let auto = std::fs::read_to_string(b.pg().data.join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("primary_conninfo"), "{auto}");
    assert!(b.status()["fenced"].is_null());
    a.pg().psql("INSERT INTO marks VALUES (3000000)");
}

/// `[standby] fence = "stop"`: the old primary's database is stopped cleanly instead (nothing
/// reads from it either); the convert still has all its WAL, rejoin starts it as the standby
/// without a rewind, and off after a fence by a stop leaves it stopped.
#[test]
fn a_fence_by_a_stop_keeps_the_old_primary_down_until_it_rejoins() {
    let Some(a) = host_with("a", true, "fence = \"stop\"") else { return };
    let Some(b) = host_with("b", true, "fence = \"stop\"") else { return };
    a.pg().psql("CREATE TABLE marks (id int PRIMARY KEY)");
    a.tandem.ok(&["standby", "configure", "--primary-mode", "--peer", &b.tandem.peer]);
    b.tandem.ok(&["standby", "configure", "--standby-mode", "--peer", &a.tandem.peer]);
    b.wait_status("streaming", |s| s["database"]["streaming"] == true);

    let (acked, out) = write_during(&a, 1, || b.tandem.ok(&["standby", "convert-to-primary"]));
    assert!(out.contains("old primary fenced (stop)"), "{out}");
    let wrong = check_fenced(&a, &b, &acked);
    assert!(wrong.is_empty(), "{}\nconvert said: {out}", wrong.join("\n"));
    let s = a.status();
    assert_eq!(
        (s["fenced"]["how"].as_str(), s["database"]["running"].as_bool()),
        (Some("stop"), Some(false)),
        "{s:#}"
    );
    assert!(a.pg().try_psql("SELECT 1").is_err(), "the stopped old primary answers");

    let out = a.tandem.ok(&["standby", "rejoin"]);
    assert!(out.contains("no rewind needed"), "{out}");
    a.wait_status("following the new primary", |s| {
        s["role"] == "standby" && s["database"]["streaming"] == true
    });
    b.pg().psql("INSERT INTO marks VALUES (1000001)");
    wait_until("the new primary's row on the old one", || {
        a.pg().try_psql("SELECT count(*) FROM marks WHERE id = 1000001").is_ok_and(|n| n == "1")
    });

    // And back: b is stopped; off there leaves it stopped and says so.
    a.tandem.ok(&["standby", "convert-to-primary"]);
    b.wait_status("fenced by a stop", |s| s["fenced"]["how"] == "stop");
    let out = b.tandem.ok(&["standby", "off"]);
    assert!(out.contains("stays stopped"), "{out}");
    assert!(b.pg().try_psql("SELECT 1").is_err());
}
