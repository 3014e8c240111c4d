//! The `.conf` document model: parse Splunk `.conf` text into a `ConfDoc` that keeps every
//! original line, render it back, and read its meaning (`semantic`). Pure: no I/O.
//!
//! Rendering an unmodified doc gives back the input bytes exactly (comments, blank lines,
//! spacing, CRLF line ends, a UTF-8 BOM, a missing final newline), so ops change only the lines
//! they name and members' files stay diffable.

use std::collections::BTreeMap;

use crate::conf::error::ConfError;

/// A parsed `.conf` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfDoc {
    /// The file started with a UTF-8 byte order mark.
    pub(crate) bom: bool,
    /// Lines end in CRLF: lines added by ops do too.
    pub(crate) crlf: bool,
    /// Lines before the first stanza header (Splunk's implicit global section).
    pub(crate) preamble: Vec<Item>,
    pub(crate) sections: Vec<Section>,
    /// The last line ends with a line break.
    pub(crate) final_newline: bool,
}

/// A stanza header and the lines up to the next header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Section {
    /// The header line as written (untouched by ops).
    pub(crate) header: String,
    pub(crate) name: String,
    pub(crate) items: Vec<Item>,
}

/// One logical line of a section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// A blank or comment line, kept verbatim.
    Other(String),
    Entry(Entry),
}

/// A `key = value` line plus its backslash continuation lines, kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) lines: Vec<String>,
}

/// A raw line without the `\r` of a CRLF ending.
fn text(raw: &str) -> &str {
    raw.strip_suffix('\r').unwrap_or(raw)
}

impl Entry {
    /// The next line continues this entry's value.
    pub(crate) fn continues(&self) -> bool {
        self.lines.last().is_some_and(|l| text(l).ends_with('\\'))
    }

    /// The value as Splunk reads it: everything after the first `=`, continuation lines joined
    /// with `\n` as written (backslashes kept), trimmed.
    pub(crate) fn value(&self) -> String {
        let mut lines = self.lines.iter().map(|l| text(l));
        let first = lines.next().unwrap_or_default();
        let mut value = first.split_once('=').map(|(_, v)| v).unwrap_or_default().to_owned();
        for line in lines {
            value.push('\n');
            value.push_str(line);
        }
        value.trim().to_owned()
    }
}

impl Item {
    pub(crate) fn is_blank(&self) -> bool {
        matches!(self, Item::Other(line) if line.trim().is_empty())
    }

    fn lines(&self) -> &[String] {
        match self {
            Item::Other(line) => std::slice::from_ref(line),
            Item::Entry(entry) => &entry.lines,
        }
    }
}

impl ConfDoc {
    /// Parses `.conf` text. A line that is not blank, a comment (`#`), a header (`[name]`) or
    /// a `key = value` line is an error naming its 1-based number.
    pub fn parse(input: &str) -> Result<ConfDoc, ConfError> {
        let mut doc = ConfDoc::default();
        let body = match input.strip_prefix('\u{feff}') {
            Some(rest) => {
                doc.bom = true;
                rest
            }
            None => input,
        };
        if body.is_empty() {
            return Ok(doc);
        }
        let mut lines: Vec<&str> = body.split('\n').collect();
        if body.ends_with('\n') {
            lines.pop();
            doc.final_newline = true;
        }
        // The first line's ending decides the style of lines ops add.
        doc.crlf = lines.first().is_some_and(|l| l.ends_with('\r')) && (lines.len() > 1 || doc.final_newline);
        for (i, raw) in lines.into_iter().enumerate() {
            let items = match doc.sections.last_mut() {
                Some(section) => &mut section.items,
                None => &mut doc.preamble,
            };
            if let Some(Item::Entry(entry)) = items.last_mut()
                && entry.continues()
            {
                entry.lines.push(raw.to_owned());
                continue;
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                items.push(Item::Other(raw.to_owned()));
            } else if trimmed.starts_with('[') && trimmed.ends_with(']') {
                let name = trimmed[1..trimmed.len() - 1].to_owned();
                doc.sections.push(Section { header: raw.to_owned(), name, items: Vec::new() });
            } else if let Some((key, _)) = trimmed.split_once('=') {
                items.push(Item::Entry(Entry { key: key.trim().to_owned(), lines: vec![raw.to_owned()] }));
            } else {
                return Err(ConfError::Parse { line_no: i + 1, line: raw.to_owned() });
            }
        }
        Ok(doc)
    }

    /// Every line, first to last, without line breaks.
    fn all_lines(&self) -> impl Iterator<Item = &String> {
        let sections = self
            .sections
            .iter()
            .flat_map(|s| std::iter::once(&s.header).chain(s.items.iter().flat_map(Item::lines)));
        self.preamble.iter().flat_map(Item::lines).chain(sections)
    }

    /// The doc has no line at all.
    pub fn is_empty(&self) -> bool {
        self.all_lines().next().is_none()
    }

    /// The `.conf` text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.bom {
            out.push('\u{feff}');
        }
        let mut any = false;
        for line in self.all_lines() {
            if any {
                out.push('\n');
            }
            out.push_str(line);
            any = true;
        }
        if any && self.final_newline {
            out.push('\n');
        }
        out
    }

    /// What the doc means: stanza -> key -> value, duplicate stanzas merged and the last
    /// occurrence of a key winning, as Splunk reads it. Empty stanzas are present with an
    /// empty map; keys before the first header sit under `""`.
    pub fn semantic(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let entries = |items: &[Item]| {
            items
                .iter()
                .filter_map(|i| match i {
                    Item::Entry(e) => Some((e.key.clone(), e.value())),
                    Item::Other(_) => None,
                })
                .collect::<Vec<_>>()
        };
        let preamble = entries(&self.preamble);
        if !preamble.is_empty() {
            out.entry(String::new()).or_default().extend(preamble);
        }
        for section in &self.sections {
            out.entry(section.name.clone()).or_default().extend(entries(&section.items));
        }
        out
    }

    /// The stanza names in file order, duplicates included.
    pub fn stanza_names(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|s| s.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# global settings
serverName = sh1

[my search]
search = index=main | stats count
cron_schedule=*/5 * * * *
  # indented comment

[other]
description = first line \\
  second line \\
third
[my search]
cron_schedule = 0 * * * *
";

    fn round_trip(text: &str) {
        let doc = ConfDoc::parse(text).unwrap();
        assert_eq!(doc.render(), text, "{doc:#?}");
    }

    #[test]
    fn unmodified_doc_renders_the_input_bytes() {
        round_trip(SAMPLE);
        round_trip(SAMPLE.trim_end());
        round_trip(&SAMPLE.replace('\n', "\r\n"));
        round_trip(&format!("\u{feff}{SAMPLE}"));
        for text in ["", "\n", "\n\n", "[a]", "[a]\n", "  [a]  \n k=v", "k = v\\", "k = v\\\n"] {
            round_trip(text);
        }
    }

    #[test]
    fn semantic_merges_duplicates_last_wins() {
        let sem = ConfDoc::parse(SAMPLE).unwrap().semantic();
        assert_eq!(sem[""]["serverName"], "sh1");
        assert_eq!(sem["my search"]["search"], "index=main | stats count");
        assert_eq!(sem["my search"]["cron_schedule"], "0 * * * *");
        assert_eq!(sem["other"]["description"], "first line \\\n  second line \\\nthird");
        assert_eq!(sem.len(), 3);
    }

    #[test]
    fn empty_stanzas_are_present() {
        let sem = ConfDoc::parse("# c\n[a]\n\n[b]\nk=\n").unwrap().semantic();
        assert!(sem["a"].is_empty());
        assert_eq!(sem["b"]["k"], "");
        assert!(!sem.contains_key(""), "a comment-only preamble has no keys");
    }

    #[test]
    fn continuation_swallows_the_next_line_whatever_it_is() {
        let sem = ConfDoc::parse("[a]\nk = x\\\n[b]\nj = y\n").unwrap().semantic();
        assert_eq!(sem["a"]["k"], "x\\\n[b]");
        assert_eq!(sem["a"]["j"], "y");
        assert!(!sem.contains_key("b"));
    }

    #[test]
    fn header_names_are_not_trimmed_inside_the_brackets() {
        let doc = ConfDoc::parse("  [ spaced ]  \n").unwrap();
        assert_eq!(doc.stanza_names().collect::<Vec<_>>(), [" spaced "]);
    }

    #[test]
    fn garbage_line_is_an_error_with_its_number() {
        let err = ConfDoc::parse("[a]\nk = v\nthis is not conf\n").unwrap_err();
        match err {
            ConfError::Parse { line_no, line } => {
                assert_eq!(line_no, 3);
                assert_eq!(line, "this is not conf");
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn crlf_is_detected() {
        assert!(ConfDoc::parse("[a]\r\nk=v\r\n").unwrap().crlf);
        assert!(ConfDoc::parse("[a]\r\n").unwrap().crlf);
        assert!(!ConfDoc::parse("[a]\r").unwrap().crlf);
        assert!(!ConfDoc::parse("[a]\nk=v\r\n").unwrap().crlf);
    }
}
