//! Replication commands, parsed from a simple query's text into [`Command`] (pure). Keywords
//! are case-insensitive, names may be double-quoted, a trailing `;` is allowed, as in
//! PostgreSQL's replication grammar (`repl_gram.y`).
//!
//! Must never: panic on any query text.

use crate::wal::lsn::{Lsn, TimeLineId};

/// One replication command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Nothing but blanks (and `;`).
    Empty,
    /// `IDENTIFY_SYSTEM`
    IdentifySystem,
    /// `SHOW name`
    Show(String),
    /// `TIMELINE_HISTORY tli`
    TimelineHistory(TimeLineId),
    /// `READ_REPLICATION_SLOT name`
    ReadReplicationSlot(String),
    /// `START_REPLICATION [SLOT name] [PHYSICAL] X/X [TIMELINE tli]`; `timeline` is `None`
    /// when omitted (or 0): the current timeline.
    StartReplication {
        /// Accepted and ignored: tandem keeps WAL by its own retention.
        slot: Option<String>,
        /// Where to start.
        start: Lsn,
        /// Which timeline.
        timeline: Option<TimeLineId>,
    },
    /// A command tandem does not implement (named by its first word, upper-cased).
    Unsupported(String),
}

/// Query text that is not a valid command; PostgreSQL answers 42601.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("syntax error: {0}")]
pub struct SyntaxError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word (keyword, name, number or LSN), as written.
    Word(String),
    /// A double-quoted name, unescaped.
    Quoted(String),
}

fn tokenize(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ';' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut name = String::new();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        name.push('"');
                    }
                    Some('"') => break,
                    Some(c) => name.push(c),
                    None => return Err(SyntaxError("unterminated quoted identifier".into())),
                }
            }
            tokens.push(Token::Quoted(name));
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == ';' || c == '"' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(Token::Word(word));
        }
    }
    Ok(tokens)
}

/// Parses one command.
pub fn parse(text: &str) -> Result<Command, SyntaxError> {
    let tokens = tokenize(text)?;
    let mut it = tokens.into_iter().peekable();
    let Some(first) = it.next() else { return Ok(Command::Empty) };
    let Token::Word(first) = first else {
        return Err(SyntaxError("a command cannot start with a quoted name".into()));
    };
    let keyword = first.to_ascii_uppercase();
    let command = match keyword.as_str() {
        "IDENTIFY_SYSTEM" => Command::IdentifySystem,
        "SHOW" => Command::Show(name(it.next(), "SHOW needs a parameter name")?.to_ascii_lowercase()),
        "TIMELINE_HISTORY" => Command::TimelineHistory(timeline(it.next())?),
        "READ_REPLICATION_SLOT" => {
            Command::ReadReplicationSlot(name(it.next(), "READ_REPLICATION_SLOT needs a slot name")?)
        }
        "START_REPLICATION" => {
            let mut slot = None;
            if is_keyword(it.peek(), "SLOT") {
                it.next();
                slot = Some(name(it.next(), "SLOT needs a slot name")?);
            }
            if is_keyword(it.peek(), "LOGICAL") {
                return Ok(Command::Unsupported("START_REPLICATION LOGICAL".into()));
            }
            if is_keyword(it.peek(), "PHYSICAL") {
                it.next();
            }
            let start = match it.next() {
                Some(Token::Word(w)) => w.parse::<Lsn>().map_err(|e| SyntaxError(e.to_string()))?,
                _ => return Err(SyntaxError("START_REPLICATION needs a start position X/X".into())),
            };
            let mut tli = None;
            if is_keyword(it.peek(), "TIMELINE") {
                it.next();
                tli = Some(timeline(it.next())?).filter(|&t| t != 0);
            }
            Command::StartReplication { slot, start, timeline: tli }
        }
        _ => return Ok(Command::Unsupported(keyword)),
    };
    match it.next() {
        None => Ok(command),
        Some(extra) => Err(SyntaxError(format!("unexpected {extra:?} after {keyword}"))),
    }
}

fn is_keyword(token: Option<&Token>, keyword: &str) -> bool {
    matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
}

/// A name: bare words are folded to lower case, quoted ones kept as written.
fn name(token: Option<Token>, missing: &str) -> Result<String, SyntaxError> {
    match token {
        Some(Token::Word(w)) => Ok(w.to_ascii_lowercase()),
        Some(Token::Quoted(q)) => Ok(q),
        None => Err(SyntaxError(missing.into())),
    }
}

fn timeline(token: Option<Token>) -> Result<TimeLineId, SyntaxError> {
    match token {
        Some(Token::Word(w)) => w.parse().map_err(|_| SyntaxError(format!("invalid timeline {w:?}"))),
        _ => Err(SyntaxError("a timeline number is needed".into())),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_commands_walreceiver_and_pg_receivewal_send_parse() {
        assert_eq!(parse("IDENTIFY_SYSTEM").unwrap(), Command::IdentifySystem);
        assert_eq!(parse("identify_system;").unwrap(), Command::IdentifySystem);
        assert_eq!(parse("  ").unwrap(), Command::Empty);
        assert_eq!(parse(";").unwrap(), Command::Empty);
        assert_eq!(parse("SHOW wal_segment_size").unwrap(), Command::Show("wal_segment_size".into()));
        assert_eq!(parse("TIMELINE_HISTORY 2").unwrap(), Command::TimelineHistory(2));
        assert_eq!(
            parse("READ_REPLICATION_SLOT \"My\"\"Slot\"").unwrap(),
            Command::ReadReplicationSlot("My\"Slot".into())
        );
        assert_eq!(
            parse("START_REPLICATION 0/3000000 TIMELINE 1").unwrap(),
            Command::StartReplication { slot: None, start: Lsn(0x300_0000), timeline: Some(1) }
        );
        assert_eq!(
            parse("START_REPLICATION SLOT \"s\" PHYSICAL 1/0").unwrap(),
            Command::StartReplication { slot: Some("s".into()), start: Lsn(1 << 32), timeline: None }
        );
        assert_eq!(parse("BASE_BACKUP").unwrap(), Command::Unsupported("BASE_BACKUP".into()));
        assert_eq!(parse("select 1").unwrap(), Command::Unsupported("SELECT".into()));
        assert!(matches!(parse("START_REPLICATION SLOT s LOGICAL 0/0").unwrap(), Command::Unsupported(_)));
    }

    #[test]
    fn bad_commands_are_syntax_errors() {
        for bad in [
            "TIMELINE_HISTORY",
            "TIMELINE_HISTORY x",
            "START_REPLICATION",
            "START_REPLICATION 0/0 TIMELINE",
            "START_REPLICATION zz",
            "IDENTIFY_SYSTEM extra",
            "\"q\"",
            "SHOW \"unterminated",
            "TIMELINE_HISTORY 99999999999",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_errs(text in ".{0,80}") {
            let _ = parse(&text);
        }
    }
}
