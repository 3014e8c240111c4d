//! The Nagios plugin convention monitoring systems read (Icinga, Zabbix, Sensu, a cron job):
//! one line that starts with the level, and the level as the exit status (0 OK, 1 WARNING,
//! 2 CRITICAL). The checks themselves live with what they judge (`standby::check`,
//! `cluster::check`).
//!
//! Must never: print more than one line, or exit 0 with a problem on it.

use std::fmt;

/// How bad, in the convention's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        })
    }
}

/// Problems found, each with its level, and what is fine otherwise.
#[derive(Debug, Default)]
pub struct Verdict {
    problems: Vec<(Level, String)>,
    /// The line when nothing is wrong.
    fine: String,
}

impl Verdict {
    pub fn new(fine: impl Into<String>) -> Self {
        Verdict { problems: Vec::new(), fine: fine.into() }
    }

    /// Notes a problem.
    pub fn add(&mut self, level: Level, what: impl Into<String>) {
        self.problems.push((level, what.into()));
    }

    /// The worst level found.
    pub fn level(&self) -> Level {
        self.problems.iter().map(|(l, _)| *l).max().unwrap_or(Level::Ok)
    }

    /// `LEVEL: problem; problem` (worst first), or `OK: what is fine`.
    pub fn line(&self) -> String {
        if self.problems.is_empty() {
            return format!("OK: {}", self.fine);
        }
        let mut problems = self.problems.clone();
        problems.sort_by_key(|p| std::cmp::Reverse(p.0));
        let said: Vec<String> = problems.into_iter().map(|(_, p)| p.replace('\n', " ")).collect();
        format!("{}: {}", self.level(), said.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_level_leads_and_nothing_wrong_is_ok() {
        assert_eq!(Verdict::new("all well").line(), "OK: all well");
        let mut v = Verdict::new("unused");
        v.add(Level::Warning, "peer silent");
        v.add(Level::Critical, "database down\nfor good");
        assert_eq!(v.level(), Level::Critical);
        assert_eq!(v.line(), "CRITICAL: database down for good; peer silent");
        assert_eq!(v.level() as u8, 2);
    }
}
