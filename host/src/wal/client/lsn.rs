//! WAL positions and the arithmetic around them: [`Lsn`] in PostgreSQL's `X/X` text form,
//! timeline ids, the WAL segment size, segment numbers and the file names PostgreSQL gives
//! segments (`000000010000000000000003`) and timeline history files (`00000002.history`).
//!
//! Owns: pure value types, no I/O. Must never: panic on text or numbers a server sent (parsing
//! returns errors; arithmetic that could overflow is checked).

use std::fmt;
use std::str::FromStr;

/// A timeline id. PostgreSQL's `TimeLineID` is an unsigned 32-bit integer; 0 means "none".
pub type TimeLineId = u32;

/// A position in the WAL: a byte offset into the (conceptually endless) WAL stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// PostgreSQL's `InvalidXLogRecPtr`: "no position".
    pub const INVALID: Lsn = Lsn(0);

    pub fn is_valid(self) -> bool {
        self != Self::INVALID
    }

    /// `self + bytes`, or `None` past the end of the WAL address space.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// The segment this position falls in.
    pub fn segment(self, size: WalSegmentSize) -> u64 {
        self.0 / size.bytes()
    }

    /// The offset of this position inside its segment.
    pub fn segment_offset(self, size: WalSegmentSize) -> u64 {
        self.0 % size.bytes()
    }

    /// The first position of this position's segment.
    pub fn segment_start(self, size: WalSegmentSize) -> Lsn {
        Lsn(self.0 - self.segment_offset(size))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 as u32)
    }
}

/// Text that is not an LSN in `X/X` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WAL position (expected two hex numbers as X/X): {0:?}")]
pub struct LsnParseError(pub String);

impl FromStr for Lsn {
    type Err = LsnParseError;

    /// Parses PostgreSQL's `%X/%X` form: two hex numbers of 1 to 8 digits each.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LsnParseError(s.chars().take(40).collect());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let half = |part: &str| {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(part, 16).map_err(|_| bad())
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

/// The size of one WAL segment file: a power of two from 1 MiB to 1 GiB (initdb's
/// `--wal-segsize` range), 16 MiB unless the cluster was initialised otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WalSegmentSize(u64);

/// The smallest segment size PostgreSQL allows.
pub const MIN_WAL_SEGMENT_SIZE: u64 = 1 << 20;
/// The largest segment size PostgreSQL allows.
pub const MAX_WAL_SEGMENT_SIZE: u64 = 1 << 30;
/// The segment size of a cluster initialised with initdb's defaults.
pub const DEFAULT_WAL_SEGMENT_SIZE: u64 = 16 << 20;
/// The hex digits PostgreSQL's WAL file names spend on each of their three parts.
const NAME_PART_DIGITS: usize = 8;
/// WAL file names count segments in "xlogids" of 4 GiB each (the high half of an LSN).
const XLOGID_BYTES: u64 = 1 << 32;

/// A segment size or `wal_segment_size` setting that PostgreSQL would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL segment size {0:?}: must be a power of two from 1MB to 1GB")]
pub struct SegmentSizeError(pub String);

impl WalSegmentSize {
    pub const DEFAULT: WalSegmentSize = WalSegmentSize(DEFAULT_WAL_SEGMENT_SIZE);

    pub fn new(bytes: u64) -> Result<Self, SegmentSizeError> {
        if bytes.is_power_of_two() && (MIN_WAL_SEGMENT_SIZE..=MAX_WAL_SEGMENT_SIZE).contains(&bytes) {
            Ok(Self(bytes))
        } else {
            Err(SegmentSizeError(bytes.to_string()))
        }
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses the value `SHOW wal_segment_size` returns: `16MB`, `1GB`, `1024kB` or a plain
    /// byte count.
    pub fn parse_setting(text: &str) -> Result<Self, SegmentSizeError> {
        let bad = || SegmentSizeError(text.chars().take(40).collect());
        let t = text.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = t.split_at(digits);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" => 1 << 10,
            "MB" => 1 << 20,
            "GB" => 1 << 30,
            _ => return Err(bad()),
        };
        let bytes = number.checked_mul(scale).ok_or_else(bad)?;
        Self::new(bytes).map_err(|_| bad())
    }

    /// How many segments one 4 GiB "xlogid" holds.
    fn segments_per_xlogid(self) -> u64 {
        XLOGID_BYTES / self.0
    }
}

impl Default for WalSegmentSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The file name PostgreSQL gives the segment `segno` of timeline `tli` (`XLogFileName`).
pub fn wal_file_name(tli: TimeLineId, segno: u64, size: WalSegmentSize) -> String {
    let per = size.segments_per_xlogid();
    format!("{:08X}{:08X}{:08X}", tli, segno / per, segno % per)
}

/// The file name of the segment holding `lsn` on timeline `tli`.
pub fn wal_file_name_for(tli: TimeLineId, lsn: Lsn, size: WalSegmentSize) -> String {
    wal_file_name(tli, lsn.segment(size), size)
}

/// Reads a WAL segment file name back into (timeline, segment number); `None` for anything
/// else (history files, `.partial` files, backup labels, junk).
pub fn parse_wal_file_name(name: &str, size: WalSegmentSize) -> Option<(TimeLineId, u64)> {
    if name.len() != 3 * NAME_PART_DIGITS || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let part = |i: usize| u32::from_str_radix(&name[i * NAME_PART_DIGITS..(i + 1) * NAME_PART_DIGITS], 16);
    let (tli, log, seg) = (part(0).ok()?, u64::from(part(1).ok()?), u64::from(part(2).ok()?));
    let per = size.segments_per_xlogid();
    if seg >= per {
        return None;
    }
    Some((tli, log.checked_mul(per)?.checked_add(seg)?))
}

/// The name of timeline `tli`'s history file (`TLHistoryFileName`).
pub fn history_file_name(tli: TimeLineId) -> String {
    format!("{tli:08X}.history")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips_in_postgres_form() {
        for (text, value) in
            [("0/0", 0), ("0/16B3748", 0x16B_3748), ("1/0", 1 << 32), ("FFFFFFFF/FFFFFFFF", u64::MAX)]
        {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn, Lsn(value));
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!("a/b".parse::<Lsn>().unwrap(), Lsn(0xA_0000_000B));
        for bad in ["", "/", "1/", "/1", "1", "1/2/3", "G/0", "123456789/0", "+1/0", " 1/0", "0/-1"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn segment_math_matches_postgres() {
        let size = WalSegmentSize::DEFAULT;
        let lsn: Lsn = "0/3000148".parse().unwrap();
        assert_eq!(lsn.segment(size), 3);
        assert_eq!(lsn.segment_offset(size), 0x148);
        assert_eq!(lsn.segment_start(size), Lsn(0x300_0000));
        assert_eq!(wal_file_name_for(1, lsn, size), "000000010000000000000003");
        // 256 segments of 16 MiB per xlogid: segment 0x1FF is the last of xlogid 1.
        assert_eq!(wal_file_name(2, 0x1FF, size), "0000000200000001000000FF");
        assert_eq!(parse_wal_file_name("0000000200000001000000FF", size), Some((2, 0x1FF)));
        assert_eq!(parse_wal_file_name("000000020000000100000100", size), None);
        assert_eq!(parse_wal_file_name("00000002.history", size), None);
        assert_eq!(parse_wal_file_name("000000010000000000000003.partial", size), None);
        let one_gib = WalSegmentSize::new(1 << 30).unwrap();
        assert_eq!(wal_file_name_for(1, Lsn(5 << 30), one_gib), "000000010000000100000001");
        assert_eq!(history_file_name(2), "00000002.history");
        assert_eq!(history_file_name(0x1A), "0000001A.history");
    }

    #[test]
    fn segment_size_settings_parse_like_show_prints_them() {
        assert_eq!(WalSegmentSize::parse_setting("16MB").unwrap(), WalSegmentSize::DEFAULT);
        assert_eq!(WalSegmentSize::parse_setting("1GB").unwrap().bytes(), 1 << 30);
        assert_eq!(WalSegmentSize::parse_setting("1024kB").unwrap().bytes(), 1 << 20);
        assert_eq!(WalSegmentSize::parse_setting("16777216").unwrap(), WalSegmentSize::DEFAULT);
        for bad in ["", "MB", "3MB", "2GB", "512kB", "16 parsecs", "99999999999999999999GB"] {
            assert!(WalSegmentSize::parse_setting(bad).is_err(), "{bad:?} parsed");
        }
    }
}
