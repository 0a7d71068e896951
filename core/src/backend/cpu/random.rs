//! The threefry-2x32 block cipher (Salmon et al., "Parallel random numbers: as easy as
//! 1, 2, 3"), bit-for-bit the same as JAX's `threefry2x32` (20 rounds, key injections
//! every 4 rounds), which [`crate::random`] builds on.

use super::PAR_THRESHOLD;
use super::elementwise::CHUNK;
use crate::backend::Storage;
use rayon::prelude::*;

/// Rotation amounts of rounds `4i..4i+4`, alternating between the two sets.
const ROTATIONS: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];

/// One threefry-2x32 block: key `(k0, k1)`, counter `(x0, x1)`.
#[inline(always)]
fn block(k0: u32, k1: u32, x0: u32, x1: u32) -> (u32, u32) {
    let ks = [k0, k1, k0 ^ k1 ^ 0x1BD1_1BDA];
    let (mut a, mut b) = (x0.wrapping_add(ks[0]), x1.wrapping_add(ks[1]));
    for i in 0..5 {
        for &r in &ROTATIONS[i % 2] {
            a = a.wrapping_add(b);
            b = b.rotate_left(r) ^ a;
        }
        a = a.wrapping_add(ks[(i + 1) % 3]);
        b = b.wrapping_add(ks[(i + 2) % 3]).wrapping_add(i as u32 + 1);
    }
    (a, b)
}

fn blocks(k0: &[u32], k1: &[u32], x0: &[u32], x1: &[u32], y0: &mut [u32], y1: &mut [u32]) {
    let n = y0.len();
    let (k0, k1, x0, x1, y1) = (&k0[..n], &k1[..n], &x0[..n], &x1[..n], &mut y1[..n]);
    for i in 0..n {
        (y0[i], y1[i]) = block(k0[i], k1[i], x0[i], x1[i]);
    }
}

fn u32s<'a>(s: &'a Storage, what: &str) -> &'a [u32] {
    s.as_slice::<u32>()
        .unwrap_or_else(|| panic!("threefry2x32: {what} must be u32, got {}", s.dtype()))
}

/// Elementwise threefry-2x32 with key `(k0, k1)` and counter `(x0, x1)` (all `u32`, one
/// length); returns `vec![y0, y1]`, matching JAX's `threefry2x32_p` bit for bit.
pub fn threefry2x32(k0: &Storage, k1: &Storage, x0: &Storage, x1: &Storage) -> Vec<Storage> {
    let (k0, k1) = (u32s(k0, "k0"), u32s(k1, "k1"));
    let (x0, x1) = (u32s(x0, "x0"), u32s(x1, "x1"));
    let n = x0.len();
    assert!(
        k0.len() == n && k1.len() == n && x1.len() == n,
        "threefry2x32: operands must have one length"
    );
    let mut y0 = vec![0u32; n];
    let mut y1 = vec![0u32; n];
    if n >= PAR_THRESHOLD {
        y0.par_chunks_mut(CHUNK).zip(y1.par_chunks_mut(CHUNK)).enumerate().for_each(
            |(c, (a, b))| {
                let s = c * CHUNK;
                let e = s + a.len();
                blocks(&k0[s..e], &k1[s..e], &x0[s..e], &x1[s..e], a, b);
            },
        );
    } else {
        blocks(k0, k1, x0, x1, &mut y0, &mut y1);
    }
    vec![Storage::U32(y0), Storage::U32(y1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(k: (u32, u32), x: (u32, u32)) -> (u32, u32) {
        let out = threefry2x32(
            &Storage::U32(vec![k.0]),
            &Storage::U32(vec![k.1]),
            &Storage::U32(vec![x.0]),
            &Storage::U32(vec![x.1]),
        );
        (out[0].as_slice::<u32>().unwrap()[0], out[1].as_slice::<u32>().unwrap()[0])
    }

    #[test]
    fn known_answers() {
        // JAX tests/random_test.py::testThreefry2x32 (the Random123 known-answer vectors).
        assert_eq!(run((0, 0), (0, 0)), (0x6b20_0159, 0x99ba_4efe));
        assert_eq!(run((u32::MAX, u32::MAX), (u32::MAX, u32::MAX)), (0x1cb9_96fc, 0xbb00_2be7));
        assert_eq!(
            run((0x1319_8a2e, 0x0370_7344), (0x243f_6a88, 0x85a3_08d3)),
            (0xc492_3a9c, 0x483d_f7a0)
        );
    }

    #[test]
    fn parallel_matches_serial() {
        let n = PAR_THRESHOLD + 777;
        let k0: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        let k1: Vec<u32> = (0..n as u32).map(|i| i ^ 0xdead_beef).collect();
        let x0: Vec<u32> = (0..n as u32).collect();
        let x1: Vec<u32> = (0..n as u32).rev().collect();
        let out = threefry2x32(
            &Storage::U32(k0.clone()),
            &Storage::U32(k1.clone()),
            &Storage::U32(x0.clone()),
            &Storage::U32(x1.clone()),
        );
        let (y0, y1) = (out[0].as_slice::<u32>().unwrap(), out[1].as_slice::<u32>().unwrap());
        assert_eq!(y0.len(), n);
        for i in (0..n).step_by(997).chain([n - 1]) {
            assert_eq!((y0[i], y1[i]), block(k0[i], k1[i], x0[i], x1[i]), "{i}");
        }
        let empty = Storage::U32(vec![]);
        let out = threefry2x32(&empty, &empty, &empty, &empty);
        assert_eq!(out, vec![empty.clone(), empty]);
    }
}
