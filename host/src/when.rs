//! How a time reads to a person in status text: a date as the seed prints it
//! ("Wednesday 2026-11-25 02:02:03 UTC"), a log line's timestamp and an age ("3.0 s ago").
//!
//! Must never: fail on a time out of range (it reads as the epoch).

/// A Unix-ms time as "Wednesday 2026-11-25 01:02:03 UTC".
pub fn date(ms: u64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(ms.min(i64::MAX as u64) as i64).unwrap_or_default();
    at.format("%A %Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A UTC timestamp for log lines, e.g. `2026-11-24T19:02:39.123Z`.
pub fn timestamp(ms: u64) -> String {
    let at = chrono::DateTime::from_timestamp_millis(ms.min(i64::MAX as u64) as i64).unwrap_or_default();
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// How long before `now` the time `ms` was (both Unix ms).
pub fn ago_at(ms: u64, now: u64) -> String {
    format!("{:.1} s ago", now.saturating_sub(ms) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_like_the_seed() {
        assert_eq!(date(0), "Thursday 1970-01-01 00:00:00 UTC");
        // 2026-11-25 was a Wednesday.
        assert_eq!(date(1_795_572_123_000), "Wednesday 2026-11-25 02:02:03 UTC");
        assert_eq!(ago_at(500, 3500), "3.0 s ago");
        assert_eq!(timestamp(1_795_572_123_045), "2026-11-25T02:02:03.045Z");
    }
}
