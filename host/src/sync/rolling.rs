//! The weak rolling checksum that finds candidate block matches at every byte offset.
//!
//! rsync's two 16-bit sums: `a` is the byte sum, `b` the sum of the prefix sums, so sliding the
//! window by one byte is O(1). It is only a filter; a match is always confirmed by the strong
//! hash, so collisions cost time, never correctness.

/// The rolling checksum of one window of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    a: u32,
    b: u32,
    /// Window length, kept wrapped: only `len * out` mod 2^16 matters to `b`.
    len: u32,
}

impl Rolling {
    /// The checksum of `window`.
    pub fn new(window: &[u8]) -> Self {
        // Sums wrap freely: the digest keeps only the low 16 bits of each, and mod-2^16
        // arithmetic commutes with wrapping u32 arithmetic.
        let (mut a, mut b) = (0u32, 0u32);
        for &x in window {
            a = a.wrapping_add(u32::from(x));
            b = b.wrapping_add(a);
        }
        Self { a, b, len: window.len() as u32 }
    }

    /// Slides the window one byte: `out` leaves at the front, `inp` enters at the back.
    #[inline]
    pub fn roll(&mut self, out: u8, inp: u8) {
        let (out, inp) = (u32::from(out), u32::from(inp));
        self.a = self.a.wrapping_sub(out).wrapping_add(inp);
        self.b = self.b.wrapping_sub(self.len.wrapping_mul(out)).wrapping_add(self.a);
    }

    /// The 32-bit weak digest: `b` in the high half, `a` in the low half.
    #[inline]
    pub fn digest(&self) -> u32 {
        (self.b << 16) | (self.a & 0xffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_equals_fresh_sum_at_every_offset() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for window in [1usize, 7, 64, 1000] {
            let mut r = Rolling::new(&data[..window]);
            for start in 1..=data.len() - window {
                r.roll(data[start - 1], data[start + window - 1]);
                assert_eq!(
                    r.digest(),
                    Rolling::new(&data[start..start + window]).digest(),
                    "w={window} at {start}"
                );
            }
        }
    }

    #[test]
    fn empty_window_digest_is_zero() {
        assert_eq!(Rolling::new(&[]).digest(), 0);
    }

    #[test]
    fn digest_depends_on_order() {
        assert_ne!(Rolling::new(b"ab").digest(), Rolling::new(b"ba").digest());
    }
}
