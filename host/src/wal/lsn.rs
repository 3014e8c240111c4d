//! The WAL vocabulary the client and the archive share: [`Lsn`] in PostgreSQL's `X/X` text
//! form, timeline ids, the WAL segment size ([`WalSegmentSize`]) with the LSN <-> segment math,
//! and the names PostgreSQL gives WAL files: segments `TTTTTTTTXXXXXXXXYYYYYYYY`, a segment
//! still being written `<segment>.partial` (`pg_receivewal`'s name) and timeline history files
//! `TTTTTTTT.history`, in upper-case hex as `XLogFileName` and `TLHistoryFileName` write them.
//!
//! Owns: pure value types, no I/O. Must never: panic on text or numbers a server sent (parsing
//! returns errors; arithmetic that could overflow is checked or saturates).

use std::fmt;
use std::str::FromStr;

/// A timeline id. PostgreSQL's `TimeLineID` is an unsigned 32-bit integer; timelines start at
/// 1 and 0 means "none".
pub type TimeLineId = u32;

/// A segment number: LSN / segment size (PostgreSQL's `XLogSegNo`).
pub type SegNo = u64;

/// A position in the WAL: a byte offset into the (conceptually endless) WAL stream
/// (PostgreSQL's `XLogRecPtr`). Shown and parsed as PostgreSQL does: `16/B374D848`, the high
/// and low 32 bits in upper-case hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// PostgreSQL's `InvalidXLogRecPtr`: "no position" (what an empty archive reports flushed).
    pub const INVALID: Lsn = Lsn(0);

    /// Whether this is a position at all (not [`Lsn::INVALID`]).
    pub fn is_valid(self) -> bool {
        self != Self::INVALID
    }

    /// `self + bytes`, or `None` past the end of the WAL address space (a peer can send such
    /// values).
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// Bytes from `earlier` to `self`; zero when `earlier` is not earlier.
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 as u32)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

/// Text that is not an LSN in `X/X` form (the text is kept, cut to 40 characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hex numbers of at most 8 digits, as in 16/B374D848")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    /// Parses PostgreSQL's `%X/%X` form: two hex numbers of 1 to 8 digits each.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseLsnError(s.chars().take(40).collect());
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

/// The smallest segment size PostgreSQL allows (initdb's `--wal-segsize`).
pub const MIN_WAL_SEGMENT_SIZE: u64 = 1 << 20;
/// The largest segment size PostgreSQL allows.
pub const MAX_WAL_SEGMENT_SIZE: u64 = 1 << 30;
/// The segment size of a cluster initialised with initdb's defaults.
pub const DEFAULT_WAL_SEGMENT_SIZE: u64 = 16 << 20;
/// Suffix of a segment still being written (`pg_receivewal`'s name for it).
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Suffix of a timeline history file.
pub const HISTORY_SUFFIX: &str = ".history";
/// The hex digits PostgreSQL's WAL file names spend on each of their three parts.
const NAME_PART_DIGITS: usize = 8;
/// WAL file names count segments in "xlogids" of 4 GiB each (the high half of an LSN).
const XLOGID_BYTES: u64 = 1 << 32;

/// The size of one WAL segment file: a power of two from 1 MiB to 1 GiB, 16 MiB unless the
/// cluster was initialised otherwise. Owns the LSN <-> (segment number, offset) math and the
/// segment file names, which all depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WalSegmentSize(u64);

/// A segment size or `wal_segment_size` setting that PostgreSQL would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL segment size {0:?}: must be a power of two from 1MB to 1GB")]
pub struct SegmentSizeError(String);

impl WalSegmentSize {
    /// 16 MiB, initdb's default.
    pub const DEFAULT: WalSegmentSize = WalSegmentSize(DEFAULT_WAL_SEGMENT_SIZE);

    /// Validates `bytes`: a power of two in `MIN_WAL_SEGMENT_SIZE..=MAX_WAL_SEGMENT_SIZE`.
    pub fn new(bytes: u64) -> Result<Self, SegmentSizeError> {
        if bytes.is_power_of_two() && (MIN_WAL_SEGMENT_SIZE..=MAX_WAL_SEGMENT_SIZE).contains(&bytes) {
            Ok(Self(bytes))
        } else {
            Err(SegmentSizeError(bytes.to_string()))
        }
    }

    /// The size in bytes.
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

    /// The segment holding the byte at `lsn`.
    pub fn segno(self, lsn: Lsn) -> SegNo {
        lsn.0 / self.0
    }

    /// Where `lsn` falls inside its segment.
    pub fn offset(self, lsn: Lsn) -> u64 {
        lsn.0 % self.0
    }

    /// First LSN of segment `segno` (saturating at the end of the LSN space).
    pub fn start(self, segno: SegNo) -> Lsn {
        Lsn(segno.saturating_mul(self.0))
    }

    /// LSN just past segment `segno` (saturating at the end of the LSN space).
    pub fn end(self, segno: SegNo) -> Lsn {
        Lsn(segno.saturating_add(1).saturating_mul(self.0))
    }

    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: the file name of segment `segno` of `timeline`
    /// (`XLogFileName`).
    pub fn file_name(self, timeline: TimeLineId, segno: SegNo) -> String {
        let per = self.segments_per_xlogid();
        format!("{timeline:08X}{:08X}{:08X}", segno / per, segno % per)
    }

    /// The `.partial` name of segment `segno` of `timeline`.
    pub fn partial_name(self, timeline: TimeLineId, segno: SegNo) -> String {
        format!("{}{PARTIAL_SUFFIX}", self.file_name(timeline, segno))
    }

    /// What `name` is in a WAL folder with this segment size; `None` for anything else
    /// (backup labels, compressed or temporary files, lower-case hex, timeline 0, junk).
    pub fn parse_name(self, name: &str) -> Option<WalFileName> {
        if let Some(tli) = name.strip_suffix(HISTORY_SUFFIX) {
            let timeline = hex_u32(tli)?;
            return (timeline != 0).then_some(WalFileName::History { timeline });
        }
        let (base, partial) = match name.strip_suffix(PARTIAL_SUFFIX) {
            Some(base) => (base, true),
            None => (name, false),
        };
        if base.len() != 3 * NAME_PART_DIGITS || !base.is_ascii() {
            return None;
        }
        let part = |i: usize| hex_u32(&base[i * NAME_PART_DIGITS..(i + 1) * NAME_PART_DIGITS]);
        let (timeline, hi, lo) = (part(0)?, u64::from(part(1)?), u64::from(part(2)?));
        let per = self.segments_per_xlogid();
        if timeline == 0 || lo >= per {
            return None;
        }
        Some(WalFileName::Segment { timeline, segno: hi * per + lo, partial })
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

/// The name of timeline `timeline`'s history file (`TLHistoryFileName`).
pub fn history_file_name(timeline: TimeLineId) -> String {
    format!("{timeline:08X}{HISTORY_SUFFIX}")
}

/// A WAL file recognised by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalFileName {
    /// A WAL segment, complete or still `.partial`.
    Segment {
        /// Its timeline.
        timeline: TimeLineId,
        /// Its segment number.
        segno: SegNo,
        /// Named `<segment>.partial`.
        partial: bool,
    },
    /// A timeline history file.
    History {
        /// Its timeline.
        timeline: TimeLineId,
    },
}

/// Exactly eight upper-case hex digits, as PostgreSQL's `IsXLogFileName` accepts.
fn hex_u32(s: &str) -> Option<u32> {
    let ok =
        s.len() == NAME_PART_DIGITS && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    if ok { u32::from_str_radix(s, 16).ok() } else { None }
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
        assert_eq!("16/b374d848".parse::<Lsn>(), Ok(Lsn(0x16_B374_D848)));
        assert_eq!(format!("{:?}", Lsn(0x16_B374_D848)), "Lsn(16/B374D848)");
        for bad in ["", "0", "/", "1/", "/1", "1/2/3", "G/0", "123456789/0", "+1/0", " 1/0", "0/-1"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn lsn_arithmetic_saturates_or_reports_overflow() {
        assert_eq!(Lsn(10).checked_add(5), Some(Lsn(15)));
        assert_eq!(Lsn(u64::MAX).checked_add(1), None);
        assert_eq!(Lsn(10).bytes_since(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_since(Lsn(10)), 0);
        assert!(!Lsn::INVALID.is_valid() && Lsn(1).is_valid());
    }

    #[test]
    fn segment_sizes_are_validated() {
        for good in [1 << 20, 16 << 20, 1 << 30] {
            assert_eq!(WalSegmentSize::new(good).unwrap().bytes(), good);
        }
        for bad in [0, 512 << 10, 2 << 30, (16 << 20) + 1, 3 << 20] {
            assert!(WalSegmentSize::new(bad).is_err(), "{bad} accepted");
        }
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

    #[test]
    fn segment_math_matches_postgres() {
        let size = WalSegmentSize::DEFAULT;
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(size.segno(lsn), 0x16B3);
        assert_eq!(size.offset(lsn), 0x74D848);
        assert_eq!(size.start(0x16B3), Lsn(0x16_B300_0000));
        assert_eq!(size.end(0x16B3), Lsn(0x16_B400_0000));
        assert_eq!(size.end(u64::MAX), Lsn(u64::MAX));
    }

    #[test]
    fn file_names_match_postgres() {
        let size = WalSegmentSize::DEFAULT;
        // pg_walfile_name('16/B374D848') on timeline 1 with 16 MiB segments.
        assert_eq!(size.file_name(1, 0x16B3), "0000000100000016000000B3");
        // 256 segments of 16 MiB per xlogid: segment 0x1FF is the last of xlogid 1.
        assert_eq!(size.file_name(2, 0x1FF), "0000000200000001000000FF");
        assert_eq!(size.partial_name(2, 1), "000000020000000000000001.partial");
        // 1 GiB segments: 4 per xlogid.
        let one_gib = WalSegmentSize::new(1 << 30).unwrap();
        assert_eq!(one_gib.file_name(1, 5), "000000010000000100000001");
        assert_eq!(history_file_name(2), "00000002.history");
        assert_eq!(history_file_name(0x1A), "0000001A.history");
    }

    #[test]
    fn file_names_parse_back() {
        let size = WalSegmentSize::DEFAULT;
        assert_eq!(
            size.parse_name("0000000100000016000000B3"),
            Some(WalFileName::Segment { timeline: 1, segno: 0x16B3, partial: false })
        );
        assert_eq!(
            size.parse_name("0000000200000001000000FF"),
            Some(WalFileName::Segment { timeline: 2, segno: 0x1FF, partial: false })
        );
        assert_eq!(
            size.parse_name("000000020000000000000001.partial"),
            Some(WalFileName::Segment { timeline: 2, segno: 1, partial: true })
        );
        assert_eq!(size.parse_name("0000000A.history"), Some(WalFileName::History { timeline: 10 }));
        for other in [
            "0000000100000016000000b3", // lower case
            "000000010000001600000100", // low part past 0xFF for 16 MiB segments
            "000000000000000000000001", // timeline 0
            "00000001000000000000001",  // short
            "000000010000000000000001.gz",
            "00000000.history",
            "tandem-wal-archive.state",
            "000000010000000000000001.partial.tmp",
            "0000000é000000000000001", // 24 bytes; slicing at byte 8 would split the 'é'
        ] {
            assert_eq!(size.parse_name(other), None, "{other}");
        }
    }
}
