//! Seeded, deterministic shuffling.
//!
//! [`permutation`] gives the full shuffle used by the [`Loader`](crate::Loader)
//! for random-access datasets: a Fisher–Yates shuffle driven by a stream that
//! is a pure function of `(seed, epoch)`. [`ShuffleBuffer`] is the windowed
//! alternative for streaming iterators whose length is unknown.

use crate::rng::Rng;

/// Domain-separation tag so that shuffling streams never coincide with
/// augmentation streams derived from the same user seed.
const SHUFFLE_STREAM: u64 = 0x5348_5546_464C_4531; // "SHUFFLE1"

/// Shuffles `items` in place with the Fisher–Yates algorithm.
pub fn shuffle_in_place<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.below_usize(i + 1);
        items.swap(i, j);
    }
}

/// A uniformly random permutation of `0..n` that depends only on
/// `(seed, epoch)`.
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::derive(seed, &[SHUFFLE_STREAM, epoch]);
    shuffle_in_place(&mut order, &mut rng);
    order
}

/// A windowed shuffle over a streaming iterator.
///
/// Keeps up to `capacity` items; each output is drawn uniformly from the
/// window, which is then refilled from the source. The output order is a pure
/// function of the seed and the source sequence. A capacity of 1 (or 0)
/// passes items through unchanged.
#[derive(Debug)]
pub struct ShuffleBuffer<I: Iterator> {
    source: I,
    buffer: Vec<I::Item>,
    capacity: usize,
    rng: Rng,
}

impl<I: Iterator> ShuffleBuffer<I> {
    /// Wraps `source` with a shuffle window of `capacity` items.
    pub fn new(source: I, capacity: usize, seed: u64) -> Self {
        ShuffleBuffer {
            source,
            buffer: Vec::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
            rng: Rng::derive(seed, &[SHUFFLE_STREAM]),
        }
    }
}

impl<I: Iterator> Iterator for ShuffleBuffer<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        while self.buffer.len() < self.capacity {
            match self.source.next() {
                Some(item) => self.buffer.push(item),
                None => break,
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let j = self.rng.below_usize(self.buffer.len());
        Some(self.buffer.swap_remove(j))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (lo, hi) = self.source.size_hint();
        let n = self.buffer.len();
        (lo.saturating_add(n), hi.and_then(|h| h.checked_add(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_deterministic_bijection() {
        let p = permutation(1000, 42, 3);
        assert_eq!(p, permutation(1000, 42, 3));
        assert_ne!(p, permutation(1000, 42, 4));
        assert_ne!(p, permutation(1000, 43, 3));
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert!(permutation(0, 1, 1).is_empty());
    }

    #[test]
    fn permutation_positions_are_roughly_uniform() {
        // Where does element 0 land, over many epochs?
        let n = 8;
        let mut counts = [0usize; 8];
        for epoch in 0..8000 {
            let p = permutation(n, 5, epoch);
            counts[p.iter().position(|&x| x == 0).unwrap_or(0)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn shuffle_buffer_is_deterministic_and_complete() {
        let a: Vec<u32> = ShuffleBuffer::new(0..100u32, 10, 9).collect();
        let b: Vec<u32> = ShuffleBuffer::new(0..100u32, 10, 9).collect();
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        let passthrough: Vec<u32> = ShuffleBuffer::new(0..5u32, 1, 9).collect();
        assert_eq!(passthrough, vec![0, 1, 2, 3, 4]);
    }
}
