//! An error and its causes on one line, each said once, and a check's verdict as monitoring
//! reads it. anyhow's `{:#}` joins every cause in
//! the chain, and most of our error types already print their source in their own message
//! (`API token: {0}`), so a cause came out two or three times over.
//!
//! Must never: drop a cause whose words are not already on the line.

use std::process::ExitCode;

use crate::nagios::{Level, Verdict};

/// A check's one line on stdout and its level as the exit status; a check that could not be
/// made (the daemon does not answer) is CRITICAL.
pub fn nagios(judged: anyhow::Result<Verdict>) -> ExitCode {
    let (level, line) = match judged {
        Ok(v) => (v.level(), v.line()),
        Err(e) => (Level::Critical, format!("CRITICAL: cannot ask the tandem daemon: {}", one_line(&e))),
    };
    println!("{line}");
    ExitCode::from(level as u8)
}

/// `outer: cause: cause`, skipping a cause whose text the line already holds.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("API token: {0}")]
    struct Token(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "api.token: No such file or directory");
        let e = anyhow::Error::new(Token(io)).context("reading the API token");
        assert_eq!(format!("{e:#}").matches("No such file").count(), 2, "anyhow repeats it");
        assert_eq!(one_line(&e), "reading the API token: API token: api.token: No such file or directory");
    }

    #[test]
    fn a_cause_not_yet_said_is_kept() {
        let e = anyhow::anyhow!("connection reset").context("pushing the change");
        assert_eq!(one_line(&e), "pushing the change: connection reset");
    }
}
