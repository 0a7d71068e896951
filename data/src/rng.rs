//! A small, self-contained, seedable PRNG (SplitMix64) and seed derivation.
//!
//! Everything random in this crate (shuffling, augmentation) is a pure
//! function of explicit inputs: a stream is derived from a base seed and a
//! few integers (epoch, example index, ...) with [`Rng::derive`], so results
//! never depend on thread scheduling or on how many items were drawn before.

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a strong 64-bit bijective mixer.
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A SplitMix64 generator: tiny, fast and statistically good enough for
/// shuffling and data augmentation (not for cryptography).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// A generator whose stream is a pure function of `seed` and `parts`
    /// (for example `[epoch, index]`). Different `parts` give independent
    /// streams.
    pub fn derive(seed: u64, parts: &[u64]) -> Self {
        let mut h = mix64(seed ^ GOLDEN_GAMMA);
        for &p in parts {
            h = mix64(h ^ mix64(p.wrapping_add(GOLDEN_GAMMA)));
        }
        Rng::new(h)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A uniform integer in `0..n` without modulo bias (Lemire's method);
    /// returns 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// A uniform `usize` in `0..n` (0 when `n` is 0).
    pub fn below_usize(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// A uniform `f64` in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform `f32` in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// `true` with probability `p`.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_is_pure_and_separates_streams() {
        let a = Rng::derive(7, &[1, 2]).next_u64();
        assert_eq!(a, Rng::derive(7, &[1, 2]).next_u64());
        assert_ne!(a, Rng::derive(7, &[2, 1]).next_u64());
        assert_ne!(a, Rng::derive(8, &[1, 2]).next_u64());
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut rng = Rng::new(1);
        let mut counts = [0usize; 6];
        for _ in 0..60_000 {
            counts[rng.below_usize(6)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn floats_are_in_unit_interval() {
        let mut rng = Rng::new(3);
        for _ in 0..10_000 {
            let x = rng.next_f32();
            assert!((0.0..1.0).contains(&x));
            let y = rng.next_f64();
            assert!((0.0..1.0).contains(&y));
        }
    }
}
