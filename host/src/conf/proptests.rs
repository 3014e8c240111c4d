//! Property tests of the `.conf` model, across `parse` and `apply`: formatting never changes
//! what ops mean, unmodified docs round-trip byte for byte, and re-applying a suffix of the
//! log (what the raft state machine does after a crash) changes nothing.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::conf::change::Op;
use crate::conf::parse::ConfDoc;

type Semantic = BTreeMap<String, BTreeMap<String, String>>;

const STANZAS: [&str; 4] = ["a", "b", "c d", "savedsearches/My Search"];
const KEYS: [&str; 3] = ["k", "j", "x.y"];
const VALUES: [&str; 5] = ["1", "2", "*/5 * * * *", "", "index=main | stats count"];

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(options).prop_map(str::to_owned)
}

fn op() -> impl Strategy<Value = Op> {
    let (s, k, v) = (|| pick(&STANZAS), || pick(&KEYS), || pick(&VALUES));
    prop_oneof![
        3 => (s(), k(), v()).prop_map(|(stanza, key, value)| Op::SetKey { stanza, key, value }),
        1 => (s(), k()).prop_map(|(stanza, key)| Op::DeleteKey { stanza, key }),
        1 => s().prop_map(|stanza| Op::AddStanza { stanza }),
        1 => s().prop_map(|stanza| Op::RemoveStanza { stanza }),
    ]
}

fn semantic() -> impl Strategy<Value = Semantic> {
    let keys = || prop::collection::btree_map(pick(&KEYS), pick(&VALUES), 0..3);
    (prop::collection::btree_map(pick(&STANZAS), keys(), 0..4), keys()).prop_map(|(mut sem, preamble)| {
        if !preamble.is_empty() {
            sem.insert(String::new(), preamble);
        }
        sem
    })
}

/// A tiny deterministic generator, so one seed is one formatting of a meaning.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Writes `sem` as `.conf` text, formatted by `seed`: spacing around `=`, comments, blank
/// lines, stanza order, stanzas split into duplicate sections, shadowed duplicate keys,
/// CRLF, final newline.
fn format(sem: &Semantic, seed: u64) -> String {
    let mut rng = Rng(seed | 1);
    let mut lines = Vec::new();
    let key_line = |rng: &mut Rng, key: &str, value: &str| {
        let eq = ["=", " = ", "  =", "= ", "\t=\t"][rng.below(5)];
        let lead = ["", " ", "\t"][rng.below(3)];
        let trail = ["", " ", "  "][rng.below(3)];
        format!("{lead}{key}{eq}{value}{trail}")
    };
    let filler = |rng: &mut Rng, lines: &mut Vec<String>| {
        if rng.chance(3) {
            lines.push(["", "   ", "# a comment", "  #[not a header]", "#k = v"][rng.below(5)].to_owned());
        }
    };
    filler(&mut rng, &mut lines);
    if let Some(preamble) = sem.get("") {
        for (key, value) in preamble {
            lines.push(key_line(&mut rng, key, value));
        }
    }
    let mut chunks: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
    for (stanza, keys) in sem.iter().filter(|(s, _)| !s.is_empty()) {
        let parts = 1 + rng.below(2);
        let mut split = vec![Vec::new(); parts];
        for (key, value) in keys {
            split[rng.below(parts)].push((key.as_str(), value.as_str()));
        }
        chunks.extend(split.into_iter().map(|keys| (stanza.as_str(), keys)));
    }
    for i in (1..chunks.len()).rev() {
        chunks.swap(i, rng.below(i + 1));
    }
    // Shadow some keys in an earlier section of the same stanza: the later one wins.
    let mut shadows: Vec<Vec<&str>> = vec![Vec::new(); chunks.len()];
    for (i, (stanza, keys)) in chunks.iter().enumerate() {
        if let Some(j) = (0..i).find(|&j| chunks[j].0 == *stanza) {
            shadows[j].extend(keys.iter().map(|(key, _)| *key).filter(|_| rng.chance(2)));
        }
    }
    for ((stanza, keys), shadowed) in chunks.into_iter().zip(shadows) {
        filler(&mut rng, &mut lines);
        lines.push(if rng.chance(4) { format!("  [{stanza}] ") } else { format!("[{stanza}]") });
        for key in shadowed {
            lines.push(key_line(&mut rng, key, "shadowed in an earlier section"));
        }
        for (key, value) in keys {
            if rng.chance(4) {
                lines.push(key_line(&mut rng, key, "shadowed"));
            }
            filler(&mut rng, &mut lines);
            lines.push(key_line(&mut rng, key, value));
        }
        filler(&mut rng, &mut lines);
    }
    let eol = if rng.chance(3) { "\r\n" } else { "\n" };
    let mut text = lines.join(eol);
    if !lines.is_empty() && !rng.chance(3) {
        text.push_str(eol);
    }
    text
}

/// What an op means, on the semantic map directly.
fn model(sem: &mut Semantic, op: &Op) {
    match op {
        Op::SetKey { stanza, key, value } => {
            sem.entry(stanza.clone()).or_default().insert(key.clone(), value.trim().to_owned());
        }
        Op::DeleteKey { stanza, key } => {
            if let Some(keys) = sem.get_mut(stanza) {
                keys.remove(key);
            }
        }
        Op::AddStanza { stanza } => {
            sem.entry(stanza.clone()).or_default();
        }
        Op::RemoveStanza { stanza } => {
            sem.remove(stanza);
        }
        Op::PutFile { .. } | Op::DeleteFile => {}
    }
}

/// Raw lines that parse: blanks, comments, headers, key lines, continuations (which may
/// swallow anything, even a would-be header or garbage).
fn raw_line() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        "[ \t]{0,3}".prop_map(|l| vec![l]),
        "[ \t]{0,2}#[ -~é€]{0,12}".prop_map(|l| vec![l]),
        "[ \t]{0,2}\\[[a-z :/\\[\\]]{0,6}\\][ \t]{0,2}".prop_map(|l| vec![l]),
        "[ \t]{0,2}[a-z.]{0,4}[ \t]{0,2}=[ a-z*/=#\\[\\]]{0,8}".prop_map(|l| vec![l]),
        ("[a-z]{1,3} ?= ?[a-z ]{0,4}", prop::collection::vec("[ -~]{0,8}", 1..3)).prop_map(
            |(first, rest)| {
                // Every line but the last of the group ends in a backslash.
                let mut lines = vec![format!("{first}\\")];
                let n = rest.len();
                lines.extend(
                    rest.into_iter().enumerate().map(|(i, l)| if i + 1 < n { format!("{l}\\") } else { l }),
                );
                lines
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn formatting_never_changes_what_ops_mean(
        sem in semantic(),
        seeds in (any::<u64>(), any::<u64>()),
        ops in prop::collection::vec(op(), 0..24),
    ) {
        let (a, b) = (format(&sem, seeds.0), format(&sem, seeds.1));
        let mut doc_a = ConfDoc::parse(&a).unwrap();
        let mut doc_b = ConfDoc::parse(&b).unwrap();
        prop_assert_eq!(&doc_a.semantic(), &sem, "formatter sanity:\n{}", a);
        prop_assert_eq!(doc_b.semantic(), sem.clone());
        let mut expected = sem;
        for op in &ops {
            doc_a.apply(op).unwrap();
            doc_b.apply(op).unwrap();
            model(&mut expected, op);
            prop_assert_eq!(&doc_a.semantic(), &expected, "after {:?}:\n{}", op, doc_a.render());
            prop_assert_eq!(&doc_b.semantic(), &expected, "after {:?}:\n{}", op, doc_b.render());
        }
        for doc in [doc_a, doc_b] {
            let again = ConfDoc::parse(&doc.render()).unwrap();
            prop_assert_eq!(again.semantic(), expected.clone());
            prop_assert_eq!(again.render(), doc.render(), "the rendered text is a fixpoint");
        }
    }

    #[test]
    fn unmodified_docs_render_byte_for_byte(
        groups in prop::collection::vec(raw_line(), 0..16),
        bom in any::<bool>(),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
    ) {
        let lines: Vec<String> = groups.into_iter().flatten().collect();
        let mut text = String::from(if bom { "\u{feff}" } else { "" });
        text.push_str(&lines.join(if crlf { "\r\n" } else { "\n" }));
        if final_newline && !lines.is_empty() {
            text.push_str(if crlf { "\r\n" } else { "\n" });
        }
        let doc = ConfDoc::parse(&text).unwrap();
        prop_assert_eq!(doc.render(), text);
    }

    #[test]
    fn reapplying_a_suffix_changes_nothing(
        sem in semantic(),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..24),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut doc = ConfDoc::parse(&format(&sem, seed)).unwrap();
        for op in &ops {
            doc.apply(op).unwrap();
        }
        let applied = doc.semantic();
        let suffix = &ops[cut.index(ops.len())..];
        // Once on the same doc and once on the doc re-read from its rendered file.
        let mut reread = ConfDoc::parse(&doc.render()).unwrap();
        for op in suffix {
            doc.apply(op).unwrap();
            reread.apply(op).unwrap();
        }
        prop_assert_eq!(doc.semantic(), applied.clone());
        prop_assert_eq!(reread.semantic(), applied);
    }
}
