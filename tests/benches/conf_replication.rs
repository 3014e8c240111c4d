//! Configuration replication, measured with three real `tandem` members on loopback (release
//! build): propagation latency of one change to all three members' files (p50, p99), committed
//! changes per second with concurrent clients (one change per request, and batches), and the
//! time a fourth member takes to bootstrap (snapshot + log) from a 20,000-change history. The
//! seed's members pull every 5 s: 2.5 s on average, up to 5 s, per change.
//!
//! Run: `cargo bench -p tandem --bench conf_replication`

#[path = "../common.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::free_port;
use serde_json::{Value, json};

const SECRET: &str = "conf replication benchmark secret";

struct Member {
    dir: tempfile::TempDir,
    peer: String,
    api: String,
    child: Child,
}

impl Member {
    fn start(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        common::write_secret(&dir.path().join("secret"), SECRET);
        let (p, a) = (free_port(), free_port());
        std::fs::write(
            dir.path().join("tandem.toml"),
            format!(
                "node_name = \"{name}\"\ndata_dir = \"{0}/data\"\n[log]\nlevel = \"info\"\n\
                 [peer]\nlisten = \"127.0.0.1:{p}\"\nsecret_file = \"{0}/secret\"\n\
                 [api]\nlisten = \"127.0.0.1:{a}\"\nadmin_token = \"bench-admin-token-0123\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(dir.path().join("tandem.toml"))
            .arg("daemon")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = Self { dir, peer: format!("127.0.0.1:{p}"), api: format!("http://127.0.0.1:{a}"), child };
        let start = Instant::now();
        while !m.data().join("api.addr").exists() {
            assert!(start.elapsed() < Duration::from_secs(60), "member never came up");
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn macros(&self) -> PathBuf {
        self.data().join("etc/apps/bench/local/macros.conf")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.data().join("logs/tandem.log")).unwrap_or_default();
            eprintln!(
                "---- {} ----\n{}",
                self.peer,
                log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    let resp = http
        .post(format!("{base}{path}"))
        .bearer_auth("bench-admin-token-0123")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

async fn get(http: &reqwest::Client, base: &str, path: &str) -> Value {
    http.get(format!("{base}{path}"))
        .bearer_auth("bench-admin-token-0123")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn change(stanza: &str, value: &str) -> Value {
    json!({"conf_type": "macros", "scope": {"app": "bench"}, "target": "conf",
           "op": {"set_key": {"stanza": stanza, "key": "definition", "value": value}}})
}

fn file_has(path: &PathBuf, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let http = reqwest::Client::new();
    let members = [Member::start("a"), Member::start("b"), Member::start("c")];
    post(&http, &members[0].api, "/v1/cluster/init", json!({})).await;
    for m in &members[1..] {
        post(&http, &members[0].api, "/v1/cluster/members", json!({"peer": m.peer})).await;
    }
    let status = get(&http, &members[0].api, "/v1/cluster/status").await;
    let captain = status["captain"].as_u64().unwrap();
    let cap_api =
        status["members"].as_array().unwrap().iter().find(|m| m["node_id"] == captain).unwrap()["api"]
            .as_str()
            .unwrap()
            .to_string();
    let cap = format!("http://{cap_api}");
    println!("conf replication: 3 members on loopback, captain node {captain}");

    // (1) Propagation latency: submit on a follower, time until the line is in all three files.
    let follower = members.iter().find(|m| m.api != cap).unwrap();
    let mut lat = Vec::new();
    for i in 0..200 {
        let value = format!("lat-{i}-{}", std::process::id());
        let start = Instant::now();
        post(
            &http,
            &follower.api,
            "/v1/conf/changes",
            json!({"changes": [change(&format!("l{}", i % 10), &value)]}),
        )
        .await;
        loop {
            if members.iter().all(|m| file_has(&m.macros(), &value)) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "change {i} never reached everyone");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lat.push(start.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "propagation to all 3 members (submitted on a follower, 200 changes): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms  (seed: 5 s pull period, 2500 ms average)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().unwrap()
    );

    // (2) Throughput with concurrent clients against the captain.
    for (clients, batch) in [(16usize, 1usize), (16, 10), (8, 100)] {
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, cap, done) = (http.clone(), cap.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let changes: Vec<Value> =
                        (0..batch).map(|k| change(&format!("t{c}-{k}"), &format!("{n}"))).collect();
                    post(&http, &cap, "/v1/conf/changes", json!({ "changes": changes })).await;
                    n += 1;
                    done.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }));
        }
        let start = Instant::now();
        for t in tasks {
            t.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "committed changes/s, {clients} clients, {batch} change(s) per request: {:.0}",
            done.load(Ordering::Relaxed) as f64 / secs
        );
    }

    // (3) A 20,000-change history (one change per commit), then a fourth member bootstraps.
    let status = get(&http, &cap, "/v1/cluster/status").await;
    let before = status["members"][0]["applied"].as_u64().unwrap_or(0);
    let start = Instant::now();
    let written = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..32u64 {
        let (http, cap, written) = (http.clone(), cap.clone(), written.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..625u64 {
                post(
                    &http,
                    &cap,
                    "/v1/conf/changes",
                    json!({"changes": [change(&format!("h{c}-{}", k % 50), &format!("{k}"))]}),
                )
                .await;
                written.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "history: 20,000 single-change commits in {:.1} s (log index {} -> {})",
        start.elapsed().as_secs_f64(),
        before,
        get(&http, &cap, "/v1/cluster/status").await["members"][0]["applied"]
    );
    let marker = format!("final-{}", std::process::id());
    post(&http, &cap, "/v1/conf/changes", json!({"changes": [change("final", &marker)]})).await;
    let d = Member::start("d");
    let start = Instant::now();
    post(&http, &cap, "/v1/cluster/members", json!({"peer": d.peer})).await;
    while !file_has(&d.macros(), &marker) {
        assert!(start.elapsed() < Duration::from_secs(60), "the fourth member never caught up");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "fourth member: add-member to holding the newest change: {:.2} s (snapshot, then the log after it)",
        start.elapsed().as_secs_f64()
    );
}
