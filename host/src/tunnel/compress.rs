//! Compression on the tunnel, one direction at a time: a zstd stream whose pieces are flushed
//! chunk by chunk (each ZDATA frame decodes to exactly the bytes the sender read, so nothing
//! waits for more input), and the [`Policy`] that decides, chunk by chunk, whether compressing
//! pays. Raw chunks may come between compressed ones: neither side's zstd history sees them,
//! so both histories stay equal.
//!
//! The policy (pure: it is told sizes and times, it answers yes or no):
//! - compress while the last window saved at least [`MIN_SAVING`] of the bytes;
//! - stop when it did not (random or already compressed data), or when compressing took more
//!   than the CPU budget of one core while the link kept up (the sender never waited for it:
//!   on a fast link the CPU buys nothing);
//! - off for the CPU budget, back on as soon as a window of raw chunks waited for the link
//!   (socket buffers hide a slow link for the first megabytes);
//! - after [`PROBE_AFTER_BYTES`] raw bytes or [`PROBE_AFTER`] of time, try again for a window.

use std::time::{Duration, Instant};

use zstd::stream::raw::{
    CParameter, DParameter, Decoder as ZDecoder, Encoder as ZEncoder, InBuffer, Operation, OutBuffer,
};

use super::config::Compression;

/// The zstd window (log2 bytes): matches reach back 1 MiB; the decoder refuses more, so a
/// peer cannot make it reserve 128 MiB.
const WINDOW_LOG: u32 = 20;
/// Raw bytes judged together.
pub const WINDOW_BYTES: u64 = 1 << 20;
/// Compression must save at least this share of the bytes to stay on.
pub const MIN_SAVING: f64 = 0.10;
/// After stopping, try again after this many raw bytes...
pub const PROBE_AFTER_BYTES: u64 = 64 << 20;
/// ... or this long.
pub const PROBE_AFTER: Duration = Duration::from_secs(10);
/// The link limits the stream when the sender waited for it this share of the window's time.
pub const LINK_BOUND_SHARE: f64 = 0.05;

/// One direction's zstd stream, sending side.
pub struct Encoder {
    z: ZEncoder<'static>,
}

impl Encoder {
    pub fn new(level: i32) -> std::io::Result<Self> {
        let mut z = ZEncoder::new(level)?;
        z.set_parameter(CParameter::WindowLog(WINDOW_LOG))?;
        Ok(Self { z })
    }

    /// Appends `chunk`, compressed and flushed, to `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        out.reserve(zstd::zstd_safe::compress_bound(chunk.len()) + 64);
        let mut input = InBuffer::around(chunk);
        while input.pos() < chunk.len() {
            let start = out.len();
            let mut output = OutBuffer::around_pos(out, start);
            self.z.run(&mut input, &mut output)?;
            if out.capacity() - out.len() < 64 {
                out.reserve(1 << 16);
            }
        }
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(1 << 16);
            }
            let start = out.len();
            let mut output = OutBuffer::around_pos(out, start);
            if self.z.flush(&mut output)? == 0 {
                return Ok(());
            }
        }
    }
}

/// One direction's zstd stream, receiving side.
pub struct Decoder {
    z: ZDecoder<'static>,
}

impl Decoder {
    pub fn new() -> std::io::Result<Self> {
        let mut z = ZDecoder::new()?;
        z.set_parameter(DParameter::WindowLogMax(WINDOW_LOG))?;
        Ok(Self { z })
    }

    /// Appends what `packed` decodes to to `out` (cleared first), refusing more than `max`
    /// bytes: a flushed piece decodes to one chunk, never more.
    pub fn decode(&mut self, packed: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), String> {
        out.clear();
        out.reserve(max + 1);
        let mut input = InBuffer::around(packed);
        loop {
            let (start, taken) = (out.len(), input.pos());
            let mut output = OutBuffer::around_pos(out, start);
            self.z.run(&mut input, &mut output).map_err(|e| format!("does not decode: {e}"))?;
            if out.len() == start && input.pos() == taken && taken < packed.len() {
                return Err("does not decode: the decoder made no progress".into());
            }
            let room = out.len() < out.capacity();
            if out.len() > max {
                return Err(format!("decodes to more than the {max}-byte chunk limit"));
            }
            // All input taken and the output not full: the decoder has nothing more to give.
            if input.pos() == packed.len() && room {
                return Ok(());
            }
            if !room {
                out.reserve(1);
            }
        }
    }
}

/// Why compression is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OffReason {
    /// Configured off.
    Disabled,
    /// The last window saved less than [`MIN_SAVING`].
    NoGain,
    /// Over the CPU budget while the link kept up.
    CpuBudget,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    On,
    Off { why: OffReason, raw_since: u64, since: Instant },
}

/// What one window of compressed chunks cost and saved.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    raw: u64,
    packed: u64,
    cpu: Duration,
    waited: Duration,
    started: Option<Instant>,
}

/// Decides per chunk whether to compress (see the module doc).
#[derive(Debug, Clone)]
pub struct Policy {
    mode: Compression,
    cpu_budget: f64,
    state: State,
    window: Window,
}

impl Policy {
    pub fn new(mode: Compression, cpu_budget_percent: u32, now: Instant) -> Self {
        let state = match mode {
            Compression::Off => State::Off { why: OffReason::Disabled, raw_since: 0, since: now },
            _ => State::On,
        };
        Self { mode, cpu_budget: f64::from(cpu_budget_percent) / 100.0, state, window: Window::default() }
    }

    /// Whether to compress the next chunk.
    pub fn compress(&mut self, now: Instant) -> bool {
        match self.state {
            State::On => true,
            State::Off { why: OffReason::Disabled, .. } => false,
            State::Off { raw_since, since, .. } => {
                if raw_since >= PROBE_AFTER_BYTES || now.duration_since(since) >= PROBE_AFTER {
                    self.state = State::On;
                    self.window = Window { started: Some(now), ..Window::default() };
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Why it is off now; `None` while on.
    pub fn off_reason(&self) -> Option<OffReason> {
        match self.state {
            State::On => None,
            State::Off { why, .. } => Some(why),
        }
    }

    /// A compressed chunk: `raw` bytes became `packed` in `cpu`; handing it to the link took
    /// `waited`.
    pub fn compressed(&mut self, raw: usize, packed: usize, cpu: Duration, waited: Duration, now: Instant) {
        let w = &mut self.window;
        // A window opens when the last one closed; the very first at its first chunk's start.
        w.started.get_or_insert(now.checked_sub(cpu + waited).unwrap_or(now));
        w.raw += raw as u64;
        w.packed += packed as u64;
        w.cpu += cpu;
        w.waited += waited;
        if w.raw < WINDOW_BYTES || self.mode == Compression::Always {
            return;
        }
        let wall = now.duration_since(w.started.unwrap_or(now)).max(cpu).as_secs_f64().max(1e-6);
        let saving = 1.0 - w.packed as f64 / w.raw as f64;
        let cpu_share = w.cpu.as_secs_f64() / wall;
        let link_bound = w.waited.as_secs_f64() / wall >= LINK_BOUND_SHARE;
        let why = if saving < MIN_SAVING {
            Some(OffReason::NoGain)
        } else if cpu_share > self.cpu_budget && !link_bound {
            Some(OffReason::CpuBudget)
        } else {
            None
        };
        self.window = Window { started: Some(now), ..Window::default() };
        if let Some(why) = why {
            tracing::debug!(?why, saving, cpu_share, link_bound, "tunnel compression off for a while");
            self.state = State::Off { why, raw_since: 0, since: now };
        }
    }

    /// A chunk sent as it was; handing it to the link took `waited`. Off for the CPU budget,
    /// a window in which the sender waited for the link turns compression back on: the link
    /// limits the stream now, so what compression saves is time.
    pub fn sent_raw(&mut self, raw: usize, waited: Duration, now: Instant) {
        let State::Off { why, raw_since, .. } = &mut self.state else { return };
        *raw_since += raw as u64;
        if *why != OffReason::CpuBudget {
            return;
        }
        let w = &mut self.window;
        w.started.get_or_insert(now.checked_sub(waited).unwrap_or(now));
        w.raw += raw as u64;
        w.waited += waited;
        if w.raw < WINDOW_BYTES {
            return;
        }
        let wall = now.duration_since(w.started.unwrap_or(now)).as_secs_f64().max(1e-6);
        let link_bound = w.waited.as_secs_f64() / wall >= LINK_BOUND_SHARE;
        self.window = Window { started: Some(now), ..Window::default() };
        if link_bound {
            tracing::debug!("tunnel compression on again: the link limits the stream");
            self.state = State::On;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_like(n: usize, seed: u64) -> Vec<u8> {
        // Records with a repeating structure and some varying fields, as WAL looks.
        let mut out = Vec::with_capacity(n);
        let mut x = seed;
        while out.len() < n {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            out.extend_from_slice(b"INSERT INTO pgbench_history VALUES (");
            out.extend_from_slice(&(x >> 48).to_le_bytes()[..2]);
            out.extend_from_slice(&[0u8; 40]);
        }
        out.truncate(n);
        out
    }

    fn random(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        getrandom::fill(&mut v).unwrap();
        v
    }

    #[test]
    fn chunks_round_trip_with_raw_chunks_between_them() {
        let (mut enc, mut dec) = (Encoder::new(1).unwrap(), Decoder::new().unwrap());
        let mut packed_total = 0;
        let mut out = Vec::new();
        for i in 0..40 {
            let chunk = if i % 7 == 3 { random(5_000) } else { wal_like(1 + i * 3_001, i as u64) };
            if i % 5 == 4 {
                continue; // sent raw: neither history sees it
            }
            let mut packed = Vec::new();
            enc.encode(&chunk, &mut packed).unwrap();
            packed_total += packed.len();
            dec.decode(&packed, &mut out, 1 << 20).unwrap();
            assert_eq!(out, chunk, "chunk {i}");
        }
        assert!(packed_total > 0);
    }

    #[test]
    fn small_flushed_chunks_still_compress_like_a_stream() {
        // WAL arrives in pieces of a few KiB; each is flushed on its own.
        let data = wal_like(4 << 20, 7);
        let mut enc = Encoder::new(1).unwrap();
        let mut packed = 0;
        for chunk in data.chunks(8 << 10) {
            let mut out = Vec::new();
            enc.encode(chunk, &mut out).unwrap();
            packed += out.len();
        }
        let whole = zstd::bulk::compress(&data, 1).unwrap().len();
        eprintln!("8 KiB chunks: {packed} bytes; one stream: {whole} bytes; raw {}", data.len());
        assert!(packed < data.len() / 10, "{packed} of {}", data.len());
    }

    #[test]
    fn a_piece_that_decodes_past_the_limit_is_refused() {
        let mut enc = Encoder::new(1).unwrap();
        let mut packed = Vec::new();
        enc.encode(&vec![7u8; 300_000], &mut packed).unwrap();
        assert!(packed.len() < 1_000, "zeros pack small: {}", packed.len());
        let mut out = Vec::new();
        let e = Decoder::new().unwrap().decode(&packed, &mut out, 128 << 10).unwrap_err();
        assert!(e.contains("limit"), "{e}");
        let e = Decoder::new().unwrap().decode(b"not zstd at all", &mut out, 1 << 10).unwrap_err();
        assert!(e.contains("does not decode"), "{e}");
    }

    #[test]
    fn the_policy_stops_when_it_does_not_pay_and_probes_again() {
        let t0 = Instant::now();
        let mut p = Policy::new(Compression::Auto, 25, t0);
        let ms = Duration::from_millis;
        // Random data: no saving; off after one window.
        assert!(p.compress(t0));
        p.compressed(WINDOW_BYTES as usize, WINDOW_BYTES as usize, ms(1), ms(0), t0 + ms(100));
        assert_eq!(p.off_reason(), Some(OffReason::NoGain));
        assert!(!p.compress(t0 + ms(200)));
        p.sent_raw(PROBE_AFTER_BYTES as usize, Duration::ZERO, t0 + ms(250));
        assert!(p.compress(t0 + ms(300)), "probes again after enough bytes");
        assert!(p.compress(t0 + ms(300)));

        // Compressible, but 50 % of a core while the link never made us wait: off.
        p.compressed(WINDOW_BYTES as usize, 100_000, ms(500), ms(0), t0 + ms(1_300));
        assert_eq!(p.off_reason(), Some(OffReason::CpuBudget));
        // Raw chunks that never wait for the link: it stays off.
        p.sent_raw(WINDOW_BYTES as usize, ms(0), t0 + ms(1_400));
        assert!(!p.compress(t0 + ms(1_400)));
        // Raw chunks that wait for the link (a socket buffer filled up): on again at once.
        p.sent_raw(WINDOW_BYTES as usize, ms(80), t0 + ms(1_500));
        assert!(p.compress(t0 + ms(1_500)), "the link limits the stream: compression pays");
        p.compressed(WINDOW_BYTES as usize, 100_000, ms(500), ms(0), t0 + ms(1_300) + ms(1_000));
        assert_eq!(p.off_reason(), Some(OffReason::CpuBudget));
        assert!(p.compress(t0 + ms(2_300) + PROBE_AFTER), "probes again after a while");
        // The same CPU while the sender waited for the link: it pays, it stays on.
        p.compressed(WINDOW_BYTES as usize, 100_000, ms(500), ms(400), t0 + ms(2_300) + PROBE_AFTER);
        assert_eq!(p.off_reason(), None);
        // Cheap and compressible: on.
        p.compressed(WINDOW_BYTES as usize, 300_000, ms(20), ms(0), t0 + ms(4_000) + PROBE_AFTER);
        assert_eq!(p.off_reason(), None);
    }

    #[test]
    fn off_and_always_are_obeyed() {
        let t0 = Instant::now();
        let mut off = Policy::new(Compression::Off, 25, t0);
        off.sent_raw(usize::MAX / 2, Duration::ZERO, t0);
        assert!(!off.compress(t0 + PROBE_AFTER * 10));
        assert_eq!(off.off_reason(), Some(OffReason::Disabled));
        let mut always = Policy::new(Compression::Always, 25, t0);
        always.compressed(
            WINDOW_BYTES as usize * 2,
            WINDOW_BYTES as usize * 2,
            Duration::from_secs(9),
            Duration::ZERO,
            t0,
        );
        assert!(always.compress(t0));
    }
}
