//! Applying one key or stanza op to a `ConfDoc`: pure, deterministic and idempotent, because
//! the raft state machine may re-apply a suffix of the log after a crash and every member must
//! reach the same meaning from its own (differently formatted) file.
//!
//! Only the lines an op names change; new lines follow Splunk's own habits (`key = value`,
//! new stanzas at the end after a blank line) and the file's line-ending style.

use crate::conf::change::Op;
use crate::conf::error::ConfError;
use crate::conf::parse::{ConfDoc, Entry, Item, Section};

impl ConfDoc {
    /// Applies a key or stanza op and returns whether the text changed. File ops and invalid
    /// stanza/key/value fields are refused.
    pub fn apply(&mut self, op: &Op) -> Result<bool, ConfError> {
        op.validate_fields()?;
        Ok(match op {
            Op::SetKey { stanza, key, value } => self.set_key(stanza, key, value),
            Op::DeleteKey { stanza, key } => self.delete_key(stanza, key),
            Op::AddStanza { stanza } => self.add_stanza(stanza),
            Op::RemoveStanza { stanza } => self.remove_stanza(stanza),
            Op::PutFile { .. } | Op::DeleteFile => {
                return Err(ConfError::OpTarget { op: op.verb(), target: "conf" });
            }
        })
    }

    /// A new line in this file's line-ending style.
    fn new_line(&self, text: String) -> String {
        if self.crlf { text + "\r" } else { text }
    }

    fn set_key(&mut self, stanza: &str, key: &str, value: &str) -> bool {
        let line = self.new_line(format!("{key} = {value}"));
        let blank = self.new_line(String::new());
        // The occurrence Splunk reads is the last one; earlier ones are shadowed already.
        let existing = self.sections.iter_mut().rev().filter(|s| s.name == stanza).find_map(|s| {
            s.items.iter_mut().rev().find_map(|item| match item {
                Item::Entry(entry) if entry.key == key => Some(entry),
                _ => None,
            })
        });
        if let Some(entry) = existing {
            // Same meaning: keep the line as written rather than reformat it.
            if entry.lines.len() == 1 && entry.value() == value.trim() {
                return false;
            }
            entry.lines = vec![line];
            return true;
        }
        let entry = Item::Entry(Entry { key: key.to_owned(), lines: vec![line] });
        self.final_newline = true;
        match self.sections.iter_mut().rev().find(|s| s.name == stanza) {
            Some(section) => {
                let trailing_blanks = section.items.iter().rev().take_while(|i| i.is_blank()).count();
                let at = section.items.len() - trailing_blanks;
                seal_continuation(&mut section.items[..at], blank);
                section.items.insert(at, entry);
            }
            None => self.push_section(stanza, vec![entry]),
        }
        true
    }

    fn delete_key(&mut self, stanza: &str, key: &str) -> bool {
        let mut changed = false;
        for section in self.sections.iter_mut().filter(|s| s.name == stanza) {
            let before = section.items.len();
            section.items.retain(|item| !matches!(item, Item::Entry(entry) if entry.key == key));
            changed |= section.items.len() != before;
        }
        changed
    }

    fn add_stanza(&mut self, stanza: &str) -> bool {
        if self.sections.iter().any(|s| s.name == stanza) {
            return false;
        }
        self.final_newline = true;
        self.push_section(stanza, Vec::new());
        true
    }

    fn remove_stanza(&mut self, stanza: &str) -> bool {
        let before = self.sections.len();
        self.sections.retain(|s| s.name != stanza);
        self.sections.len() != before
    }

    /// Appends a section at the end of the file, after a blank line unless the file is empty
    /// or already ends with one.
    fn push_section(&mut self, stanza: &str, items: Vec<Item>) {
        let blank = self.new_line(String::new());
        let header = self.new_line(format!("[{stanza}]"));
        let ends_blank = self.last_line_blank();
        let tail = match self.sections.last_mut() {
            Some(section) => &mut section.items,
            None => &mut self.preamble,
        };
        if !seal_continuation(tail, blank.clone()) && ends_blank == Some(false) {
            tail.push(Item::Other(blank));
        }
        self.sections.push(Section { header, name: stanza.to_owned(), items });
    }

    /// Whether the last line is blank (`None` for an empty doc).
    fn last_line_blank(&self) -> Option<bool> {
        let last_section = self.sections.last();
        let last_item = match last_section {
            Some(section) => section.items.last(),
            None => self.preamble.last(),
        };
        match (last_item, last_section) {
            (Some(Item::Other(line)), _) => Some(line.trim().is_empty()),
            (Some(Item::Entry(entry)), _) => Some(entry.lines.last().is_some_and(|l| l.trim().is_empty())),
            (None, Some(_)) => Some(false),
            (None, None) => None,
        }
    }
}

/// A value ending in `\` on the file's last line would swallow a line added after it. Giving
/// it an empty continuation line (which changes no value: values are trimmed) keeps the new
/// line separate, and matches how the rendered text parses back. Returns whether it did.
fn seal_continuation(items: &mut [Item], blank: String) -> bool {
    match items.last_mut() {
        Some(Item::Entry(entry)) if entry.continues() => {
            entry.lines.push(blank);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(stanza: &str, key: &str, value: &str) -> Op {
        Op::SetKey { stanza: stanza.into(), key: key.into(), value: value.into() }
    }

    fn del(stanza: &str, key: &str) -> Op {
        Op::DeleteKey { stanza: stanza.into(), key: key.into() }
    }

    /// Applies `ops` to `text` and returns the rendered result; checks it parses back equal.
    fn run(text: &str, ops: &[Op]) -> String {
        let mut doc = ConfDoc::parse(text).unwrap();
        for op in ops {
            doc.apply(op).unwrap();
        }
        let out = doc.render();
        assert_eq!(ConfDoc::parse(&out).unwrap().semantic(), doc.semantic(), "{out:?}");
        out
    }

    #[test]
    fn set_key_replaces_the_last_occurrence_in_place() {
        let text = "[a]\nk=1 # keep\n\n[b]\nk = x\n[a]\n  k =2\nj = 3\n";
        assert_eq!(run(text, &[set("a", "k", "9")]), "[a]\nk=1 # keep\n\n[b]\nk = x\n[a]\nk = 9\nj = 3\n");
    }

    #[test]
    fn set_key_replaces_continuation_lines_too() {
        let text = "[a]\nk = 1 \\\n  2\nj = 3\n";
        assert_eq!(run(text, &[set("a", "k", "4")]), "[a]\nk = 4\nj = 3\n");
    }

    #[test]
    fn set_key_keeps_a_line_that_already_means_the_value() {
        let mut doc = ConfDoc::parse("[a]\nk=1\n").unwrap();
        assert!(!doc.apply(&set("a", "k", "1")).unwrap());
        assert_eq!(doc.render(), "[a]\nk=1\n");
    }

    #[test]
    fn set_key_appends_to_the_last_section_before_its_trailing_blanks() {
        let text = "[a]\nk = 1\n\n[b]\nx = 1\n[a]\nj = 2\n# note\n\n\n[c]\n";
        let out = run(text, &[set("a", "new", "v")]);
        assert_eq!(out, "[a]\nk = 1\n\n[b]\nx = 1\n[a]\nj = 2\n# note\nnew = v\n\n\n[c]\n");
    }

    #[test]
    fn set_key_appends_a_new_section_at_the_end() {
        assert_eq!(run("", &[set("a", "k", "v")]), "[a]\nk = v\n");
        assert_eq!(run("[b]\nx = 1\n", &[set("a", "k", "v")]), "[b]\nx = 1\n\n[a]\nk = v\n");
        assert_eq!(run("[b]\nx = 1\n\n", &[set("a", "k", "v")]), "[b]\nx = 1\n\n[a]\nk = v\n");
        // A missing final newline is added when lines are appended.
        assert_eq!(run("[b]", &[set("a", "k", "v")]), "[b]\n\n[a]\nk = v\n");
        assert_eq!(run("# only a comment", &[set("a", "k", "v")]), "# only a comment\n\n[a]\nk = v\n");
    }

    #[test]
    fn new_lines_follow_crlf_files() {
        let out = run("[b]\r\nx = 1\r\n", &[set("b", "k", "v"), set("a", "k", "v")]);
        assert_eq!(out, "[b]\r\nx = 1\r\nk = v\r\n\r\n[a]\r\nk = v\r\n");
    }

    #[test]
    fn appending_after_a_dangling_continuation_does_not_join_it() {
        let out = run("[b]\nx = 1\\", &[set("b", "k", "v"), set("a", "k", "v")]);
        assert_eq!(out, "[b]\nx = 1\\\n\nk = v\n\n[a]\nk = v\n");
        let sem = ConfDoc::parse(&out).unwrap().semantic();
        assert_eq!(sem["b"]["x"], "1\\");
        assert_eq!(sem["b"]["k"], "v");
        let out = run("[b]\nx = 1\\", &[Op::AddStanza { stanza: "a".into() }]);
        assert_eq!(out, "[b]\nx = 1\\\n\n[a]\n");
    }

    #[test]
    fn delete_key_removes_every_occurrence_with_continuations() {
        let text = "[a]\nk = 1\\\n  more\nj = 2\n[b]\nk = 3\n[a]\nk = 4\n";
        assert_eq!(run(text, &[del("a", "k")]), "[a]\nj = 2\n[b]\nk = 3\n[a]\n");
        let mut doc = ConfDoc::parse(text).unwrap();
        assert!(!doc.apply(&del("a", "absent")).unwrap());
        assert!(!doc.apply(&del("absent", "k")).unwrap());
        assert_eq!(doc.render(), text);
    }

    #[test]
    fn add_stanza_creates_an_empty_section_once() {
        let out = run("[a]\nk = 1\n", &[Op::AddStanza { stanza: "b".into() }]);
        assert_eq!(out, "[a]\nk = 1\n\n[b]\n");
        let mut doc = ConfDoc::parse(&out).unwrap();
        assert!(!doc.apply(&Op::AddStanza { stanza: "a".into() }).unwrap());
        assert!(!doc.apply(&Op::AddStanza { stanza: "b".into() }).unwrap());
        assert_eq!(doc.render(), out);
        assert!(doc.semantic()["b"].is_empty());
    }

    #[test]
    fn remove_stanza_removes_all_sections_of_that_name() {
        let text = "# head\n[a]\nk = 1\n\n[b]\nj = 2\n\n[a]\nx = 3\n";
        assert_eq!(run(text, &[Op::RemoveStanza { stanza: "a".into() }]), "# head\n[b]\nj = 2\n\n");
        let mut doc = ConfDoc::parse(text).unwrap();
        assert!(!doc.apply(&Op::RemoveStanza { stanza: "zz".into() }).unwrap());
    }

    #[test]
    fn every_op_is_idempotent() {
        let ops = [
            set("a", "k", "1"),
            set("n", "k", "2"),
            del("a", "j"),
            Op::AddStanza { stanza: "e".into() },
            Op::RemoveStanza { stanza: "b".into() },
        ];
        for op in &ops {
            let mut doc = ConfDoc::parse("[a]\nj = 0\n[b]\nx = 1\n").unwrap();
            doc.apply(op).unwrap();
            let once = doc.render();
            assert!(!doc.apply(op).unwrap(), "{op:?}");
            assert_eq!(doc.render(), once, "{op:?}");
        }
    }

    #[test]
    fn preamble_keys_are_not_addressable() {
        let out = run("k = global\n", &[set("s", "k", "v")]);
        assert_eq!(out, "k = global\n\n[s]\nk = v\n");
        let mut doc = ConfDoc::parse("k = global\n").unwrap();
        assert!(matches!(doc.apply(&del("", "k")), Err(ConfError::Stanza { .. })));
    }

    #[test]
    fn file_ops_and_bad_fields_are_refused() {
        let mut doc = ConfDoc::default();
        assert!(matches!(doc.apply(&Op::DeleteFile), Err(ConfError::OpTarget { .. })));
        assert!(matches!(doc.apply(&set("a", "k", "1\n[x]")), Err(ConfError::Value { .. })));
        assert!(doc.is_empty());
    }
}
