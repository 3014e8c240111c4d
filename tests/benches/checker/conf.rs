//! Part A, the configuration cluster: three real members, one client per member writing conf
//! changes through that member's REST API and recording every answer, a sampler reading
//! cluster status while faults play, then heal, convergence and the checks: every acknowledged
//! change on every member, replicated trees byte-equal, no status claiming what is not so.
//! Must never count an answer it did not get as an acknowledgement.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::faults::{self, Kind, Played};
use crate::lab::Lab;
use crate::member::{Member, http};
use crate::rng::Rng;
use crate::tally::Outcome;

const NAMES: [&str; 3] = ["a", "b", "c"];
/// Peer and API ports inside a lab host (each host has its own port space).
const LAB_PORTS: (u16, u16) = (7100, 7200);
/// How long a client waits for an answer (the members' commit timeout is 1.5 s).
const CLIENT_LIMIT: Duration = Duration::from_secs(8);
/// Pause between one client's requests.
const CLIENT_PAUSE: Duration = Duration::from_millis(30);
/// How often the sampler reads a member's status while faults play.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How long the healed cluster has to converge before what differs is a violation.
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);
/// An isolated member may believe it is fine this long (several election timeouts).
const ISOLATION_GRACE: Duration = Duration::from_secs(3);
const CONF_FILE: &str = "apps/chk/local/macros.conf";
/// Marks a violation where members agree on every stanza and value but not on their order.
pub const ORDER_ONLY: &str = "[order only]";

/// One client's answer to one change.
#[derive(Debug, Clone)]
enum Answer {
    Committed,
    Pending,
    /// Refused before anything was done (connection refused): not an attempt.
    NotSent,
    /// No answer, or an error answer: the change may or may not have happened.
    Indeterminate(String),
}

#[derive(Debug, Clone)]
struct Write {
    member: usize,
    stanza: String,
    value: String,
    answer: Answer,
}

/// One status read during the faults: who answered, when the request went out and came back.
struct Sample {
    reporter: usize,
    sent: Instant,
    answered: Instant,
    status: Value,
}

/// Runs one schedule from `seed`; `window` is how long faults are played.
pub fn run(seed: u64, lab: Option<&Lab>, window: Duration, faults_per: usize) -> Outcome {
    let mut out = Outcome::default();
    let mut rng = Rng::new(seed);
    let schedule = faults::schedule(&mut rng, NAMES.len(), window, faults_per, lab.is_some());
    eprintln!("  faults: {}", faults::describe(&schedule, &NAMES));
    let mut members = match form(lab) {
        Ok(m) => m,
        Err(e) => {
            out.violations.push(format!("conf seed {seed:#x}: the cluster did not form: {e}"));
            return out;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(Mutex::new(Vec::<Write>::new()));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let mut threads = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let (stop, writes, api, ns) = (stop.clone(), writes.clone(), m.api.clone(), m.ns.clone());
        threads.push(std::thread::spawn(move || {
            in_host(ns, move || client(i, seed, &api, &stop, &writes));
        }));
    }
    {
        let (stop, samples) = (stop.clone(), samples.clone());
        let targets: Vec<(String, Option<String>)> =
            members.iter().map(|m| (m.api.clone(), m.ns.clone())).collect();
        threads.push(std::thread::spawn(move || sampler(&targets, &stop, &samples)));
    }
    let mut played = Played::default();
    faults::play(&schedule, &mut members, lab, &mut played);
    faults::heal_all(&mut members, lab, &mut played);
    // A little quiet writing after the heal, then the clients stop.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    let writes = std::mem::take(&mut *writes.lock().unwrap());
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    for (k, n) in &played.injected {
        *out.faults.entry(*k).or_default() += n;
    }
    for f in &played.failures {
        out.violations.push(format!("conf seed {seed:#x}: {f}"));
    }
    claims(seed, &samples, &played, &mut out);
    settle(seed, &members, &writes, &mut out);
    if !out.violations.is_empty() {
        // The clients' record beside the members' folders: which member answered what.
        let record: String = writes
            .iter()
            .map(|w| {
                format!("{} [{}] definition = {} -> {:?}\n", NAMES[w.member], w.stanza, w.value, w.answer)
            })
            .collect();
        for m in members {
            let name = m.name.clone();
            let _ = std::fs::write(m.data().join("../checker-writes.txt"), &record);
            out.kept.push(format!("{name}: {}", m.keep().display()));
        }
    }
    out
}

/// Three members in hosts a, b, c (or on loopback): a initialises, b and c are added.
fn form(lab: Option<&Lab>) -> Result<Vec<Member>, String> {
    let mut members = Vec::new();
    for name in NAMES {
        let m = match lab {
            Some(lab) => {
                let h = lab.host(name);
                Member::new(name, Some(h.ns.clone()), &h.ip, LAB_PORTS, "")?
            }
            None => Member::new(
                name,
                None,
                "127.0.0.1",
                (crate::common::low_port(21_000, 400), crate::common::low_port(21_000, 400)),
                "",
            )?,
        };
        members.push(m);
    }
    ok(&members[0], "POST", "/v1/cluster/init", "{}")?;
    for i in 1..members.len() {
        let body = json!({ "peer": members[i].peer }).to_string();
        ok(&members[i - 1], "POST", "/v1/cluster/members", &body)?;
    }
    let start = Instant::now();
    while !members.iter().all(|m| own_row(m).is_some_and(|r| r["state"] == "up")) {
        if start.elapsed() > CONVERGE_LIMIT {
            return Err("the members never all reported up".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(members)
}

fn ok(m: &Member, method: &str, path: &str, body: &str) -> Result<String, String> {
    match m.http(method, path, body, Duration::from_secs(30))? {
        (200, text) => Ok(text),
        (code, text) => Err(format!("{} {method} {path}: {code} {text}", m.name)),
    }
}

/// Runs `f` on a thread inside lab host `ns` (or here).
fn in_host(ns: Option<String>, f: impl FnOnce() + Send + 'static) {
    match ns {
        Some(ns) => crate::lab::in_netns(&ns, f),
        None => f(),
    }
}

/// One client: unique keys (so each acknowledged write can be looked for), and every fourth
/// write an overwrite of one shared key (so log order matters to the final trees).
fn client(i: usize, seed: u64, api: &str, stop: &AtomicBool, writes: &Mutex<Vec<Write>>) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let shared = n % 4 == 3;
        let stanza = if shared { "shared".to_string() } else { format!("w{i}x{n}") };
        let value = format!("{seed:x}-{i}-{n}");
        let body = json!({"changes": [{"conf_type": "macros", "scope": {"app": "chk"}, "target": "conf",
            "op": {"set_key": {"stanza": stanza, "key": "definition", "value": value}}}]});
        let answer = match http(api, "POST", "/v1/conf/changes", &body.to_string(), CLIENT_LIMIT) {
            Err(e) if e.starts_with("connect:") => Answer::NotSent,
            Err(e) => Answer::Indeterminate(e),
            Ok((200, text)) => {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match v[0]["disposition"].as_str() {
                    Some("committed") if v[0]["changed"] == true => Answer::Committed,
                    Some("pending") => Answer::Pending,
                    _ => Answer::Indeterminate(format!("200 {text}")),
                }
            }
            Ok((code, text)) => Answer::Indeterminate(format!("{code} {text}")),
        };
        if !shared {
            writes.lock().unwrap().push(Write { member: i, stanza, value, answer });
        }
        n += 1;
        std::thread::sleep(CLIENT_PAUSE);
    }
}

fn sampler(targets: &[(String, Option<String>)], stop: &AtomicBool, samples: &Mutex<Vec<Sample>>) {
    let mut k = 0;
    while !stop.load(Ordering::SeqCst) {
        let reporter = k % targets.len();
        k += 1;
        let (api, ns) = targets[reporter].clone();
        let sent = Instant::now();
        let got = match ns {
            Some(ns) => crate::lab::in_netns(&ns, move || {
                http(&api, "GET", "/v1/cluster/status", "", Duration::from_secs(5))
            }),
            None => http(&api, "GET", "/v1/cluster/status", "", Duration::from_secs(5)),
        };
        if let Ok((200, text)) = got
            && let Ok(status) = serde_json::from_str(&text)
        {
            samples.lock().unwrap().push(Sample { reporter, sent, answered: Instant::now(), status });
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

/// Status claims while faults played: a member shown up while it was killed or stopped
/// through the whole request, or a member cut off well past an election still calling itself
/// up (it cannot hear a captain, or cannot lead one).
fn claims(seed: u64, samples: &[Sample], played: &Played, out: &mut Outcome) {
    let mut seen = std::collections::BTreeSet::new();
    for s in samples {
        let rows = s.status["members"].as_array().cloned().unwrap_or_default();
        for row in rows {
            let Some(m) = NAMES.iter().position(|n| row["name"] == *n) else { continue };
            if row["state"] != "up" {
                continue;
            }
            out.claims_checked += 1;
            let dead = played.out_throughout(m, &[Kind::Kill, Kind::Stop, Kind::Restart], s.sent, s.answered);
            let isolated = m == s.reporter
                && played.out_throughout(m, &[Kind::Cut], s.sent - ISOLATION_GRACE, s.answered);
            let what = if dead {
                "was killed or stopped throughout the request"
            } else if isolated {
                "was cut off from every peer for over 3 s"
            } else {
                continue;
            };
            if seen.insert((m, what)) {
                out.violations.push(format!(
                    "conf seed {seed:#x}: {}'s status showed {} as up (role {}, captain {}) while it {what}",
                    NAMES[s.reporter], NAMES[m], row["role"], row["captain"]
                ));
            }
        }
    }
}

/// Waits for convergence, then checks every acknowledged change everywhere and the trees equal.
fn settle(seed: u64, members: &[Member], writes: &[Write], out: &mut Outcome) {
    for w in writes {
        match &w.answer {
            Answer::Committed => out.acks_committed += 1,
            Answer::Pending => out.acks_pending += 1,
            Answer::Indeterminate(why) => {
                out.indeterminate += 1;
                let short: String = why.chars().take(60).collect();
                *out.indeterminate_why.entry(short).or_default() += 1;
            }
            Answer::NotSent => {}
        }
    }
    let acked: Vec<&Write> =
        writes.iter().filter(|w| matches!(w.answer, Answer::Committed | Answer::Pending)).collect();
    let start = Instant::now();
    let mut problems;
    loop {
        problems = Vec::new();
        let rows: Vec<Option<Value>> = members.iter().map(own_row).collect();
        for (m, row) in members.iter().zip(&rows) {
            match row {
                None => problems.push(format!("{} does not answer status", m.name)),
                Some(r) if r["state"] != "up" || r["outbox"] != 0 => problems.push(format!(
                    "{} reports state {} with {} change(s) in its outbox (last error {})",
                    m.name, r["state"], r["outbox"], r["last_error"]
                )),
                Some(_) => {}
            }
        }
        let captains: std::collections::BTreeSet<String> =
            rows.iter().flatten().map(|r| r["captain"].to_string()).collect();
        if captains.len() > 1 {
            problems.push(format!("members name different captains: {captains:?}"));
        }
        let trees: Vec<BTreeMap<String, Vec<u8>>> = members.iter().map(tree).collect();
        let meaning = |t: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Conf> {
            t.iter().map(|(k, v)| (k.clone(), conf(v))).collect()
        };
        let first = meaning(&trees[0]);
        for (m, t) in members.iter().zip(&trees).skip(1) {
            let mine = meaning(t);
            if mine != first {
                let differ: Vec<&String> =
                    mine.keys().chain(first.keys()).filter(|k| mine.get(*k) != first.get(*k)).collect();
                problems.push(format!(
                    "{}'s replicated tree holds other stanzas or values than {}'s: {differ:?}",
                    m.name, members[0].name
                ));
            }
        }
        for (m, t) in members.iter().zip(&trees) {
            let have = stanzas(t.get(CONF_FILE).map(Vec::as_slice).unwrap_or_default());
            let missing: Vec<&&Write> =
                acked.iter().filter(|w| have.get(&w.stanza) != Some(&w.value)).collect();
            if let Some(first) = missing.first() {
                problems.push(format!(
                    "{} lacks {} acknowledged change(s), e.g. [{}] definition = {} ({:?} by {})",
                    m.name,
                    missing.len(),
                    first.stanza,
                    first.value,
                    first.answer,
                    NAMES[first.member]
                ));
            }
        }
        if problems.is_empty() || start.elapsed() > CONVERGE_LIMIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    out.converge_ms.push(start.elapsed().as_millis() as u64);
    if problems.is_empty() {
        // Same stanzas, keys and values everywhere: are the bytes equal too?
        let trees: Vec<BTreeMap<String, Vec<u8>>> = members.iter().map(tree).collect();
        for (m, t) in members.iter().zip(&trees).skip(1) {
            let differ: Vec<&String> = t.keys().filter(|k| t.get(*k) != trees[0].get(*k)).collect();
            if !differ.is_empty() {
                out.violations.push(format!(
                    "conf seed {seed:#x}: {ORDER_ONLY} {}'s and {}'s {differ:?} hold the same stanzas and values in another order",
                    m.name, members[0].name
                ));
            }
        }
    }
    for p in problems {
        out.violations
            .push(format!("conf seed {seed:#x}: after heal and {} s: {p}", CONVERGE_LIMIT.as_secs()));
    }
}

/// The member's own row of its status.
fn own_row(m: &Member) -> Option<Value> {
    let s = m.status().ok()?;
    let reporter = s["reporter"].clone();
    s["members"].as_array()?.iter().find(|r| r["node_id"] == reporter).cloned()
}

/// The member's replicated files (as it lists them), path to bytes.
fn tree(m: &Member) -> BTreeMap<String, Vec<u8>> {
    let Ok((200, text)) = m.http("GET", "/v1/conf/files", "", Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    let files: Vec<Value> = serde_json::from_str(&text).unwrap_or_default();
    files
        .iter()
        .filter_map(|f| f["path"].as_str())
        .map(|p| (p.to_string(), std::fs::read(m.data().join("etc").join(p)).unwrap_or_default()))
        .collect()
}

/// A .conf file's meaning: stanza -> key -> value, order aside.
type Conf = BTreeMap<String, BTreeMap<String, String>>;

fn conf(text: &[u8]) -> Conf {
    let mut out = Conf::new();
    let mut current = String::new();
    for line in String::from_utf8_lossy(text).lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            out.entry(current.clone()).or_default();
        } else if let Some((k, v)) = line.split_once('=') {
            out.entry(current.clone()).or_default().insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

/// `[stanza]` -> its `definition` value, from a .conf file's text.
fn stanzas(text: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current = String::new();
    for line in String::from_utf8_lossy(text).lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
        } else if let Some((k, v)) = line.split_once('=')
            && k.trim() == "definition"
        {
            out.insert(current.clone(), v.trim().to_string());
        }
    }
    out
}
