//! The default purge policy, as plain Rust: the oldest entries may go only while BOTH the
//! history holds more than `eligible_count` entries AND each of them is older than
//! `eligible_age` (the seed's `conf_replication_purge.eligible_count` / `eligible_age`).

/// The seed's default: 20,000 changes.
pub const DEFAULT_ELIGIBLE_COUNT: u64 = 20_000;
/// The seed's default: one day.
pub const DEFAULT_ELIGIBLE_AGE_MS: u64 = 24 * 60 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePolicy {
    pub eligible_count: u64,
    pub eligible_age_ms: u64,
}

impl Default for PurgePolicy {
    fn default() -> Self {
        Self { eligible_count: DEFAULT_ELIGIBLE_COUNT, eligible_age_ms: DEFAULT_ELIGIBLE_AGE_MS }
    }
}

impl PurgePolicy {
    /// Settings: `eligible_count = N`, `eligible_age = 86400 | 1d | 12h | 30m | 45s | 500ms`
    /// (a bare number is seconds, as in the seed's server.conf).
    pub fn from_settings<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut policy = Self::default();
        for (key, value) in settings {
            match key {
                "eligible_count" => {
                    policy.eligible_count = value
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{key}`: `{value}` is not a whole number"))?;
                }
                "eligible_age" => policy.eligible_age_ms = parse_duration_ms(key, value)?,
                _ => return Err(format!("unknown setting `{key}`")),
            }
        }
        Ok(policy)
    }

    /// How many of the oldest entries may be purged. `oldest` holds the commit times (Unix ms)
    /// of the oldest entries, oldest first; the answer never exceeds its length.
    pub fn purgeable(&self, count: u64, oldest: &[u64], now_ms: u64) -> u64 {
        let over = count.saturating_sub(self.eligible_count);
        let window = oldest.len().min(usize::try_from(over).unwrap_or(usize::MAX));
        oldest[..window].iter().take_while(|&&at| now_ms.saturating_sub(at) > self.eligible_age_ms).count()
            as u64
    }
}

fn parse_duration_ms(key: &str, value: &str) -> Result<u64, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{key}`: `{value}` is not a duration"))?;
    let scale = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!("`{key}`: unknown unit `{other}` (use ms, s, m, h or d)"));
        }
    };
    n.checked_mul(scale).ok_or_else(|| format!("`{key}`: `{value}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = DEFAULT_ELIGIBLE_AGE_MS;
    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn nothing_below_or_at_the_count_limit() {
        let p = PurgePolicy::default();
        let old = vec![0; 10];
        assert_eq!(p.purgeable(20_000, &old, NOW), 0);
        assert_eq!(p.purgeable(19_000, &old, NOW), 0);
        // one over the limit: exactly one may go
        assert_eq!(p.purgeable(20_001, &old, NOW), 1);
    }

    #[test]
    fn nothing_younger_than_or_exactly_at_the_age_limit() {
        let p = PurgePolicy::default();
        let at_limit = vec![NOW - DAY; 5];
        assert_eq!(p.purgeable(30_000, &at_limit, NOW), 0);
        let just_older = vec![NOW - DAY - 1; 5];
        assert_eq!(p.purgeable(30_000, &just_older, NOW), 5);
    }

    #[test]
    fn both_limits_bind_and_purge_stops_at_the_first_young_entry() {
        let p = PurgePolicy { eligible_count: 3, eligible_age_ms: 1_000 };
        let oldest = [NOW - 5_000, NOW - 4_000, NOW - 500, NOW - 6_000];
        // 10 entries, 7 over the count: age stops it after two.
        assert_eq!(p.purgeable(10, &oldest, NOW), 2);
        // 4 entries, 1 over the count: count stops it after one.
        assert_eq!(p.purgeable(4, &oldest, NOW), 1);
        // never past the window the host sent
        assert_eq!(p.purgeable(100, &[NOW - 5_000], NOW), 1);
        // a clock that went backwards purges nothing
        assert_eq!(p.purgeable(100, &[NOW + 5_000], NOW), 0);
    }

    #[test]
    fn settings_parse_units_and_refuse_garbage() {
        let p = PurgePolicy::from_settings([("eligible_count", "5"), ("eligible_age", "2h")]).unwrap();
        assert_eq!(p, PurgePolicy { eligible_count: 5, eligible_age_ms: 7_200_000 });
        for (v, ms) in [("86400", DAY), ("1d", DAY), ("30m", 1_800_000), ("250ms", 250)] {
            let p = PurgePolicy::from_settings([("eligible_age", v)]).unwrap();
            assert_eq!(p.eligible_age_ms, ms, "{v}");
        }
        assert!(PurgePolicy::from_settings([("eligible_age", "1w")]).is_err());
        assert!(PurgePolicy::from_settings([("eligible_count", "-1")]).is_err());
        assert!(PurgePolicy::from_settings([("eligibile_count", "1")]).is_err());
    }
}
