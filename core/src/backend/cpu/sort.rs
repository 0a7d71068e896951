//! The sort kernel: a stable, multi-operand sort along one axis.
//!
//! Every key operand is first mapped to `i64` sort keys whose integer order is the wanted
//! order. Floats sort like JAX's `lax.sort` (which canonicalizes before comparing):
//! `-inf < ... < -0.0 == +0.0 < ... < +inf < NaN`, with every NaN equal to every other, so
//! zeros and NaNs keep their input order (verified against JAX 0.10.2). Each line along the axis is then sorted as a permutation, by
//! `(key_0, ..., key_{k-1}, original index)` so that an unstable sort gives the stable
//! result, and every operand is gathered through that permutation. A sort along a
//! non-last axis transposes that axis to the end and back. Lines run in parallel on
//! rayon; a single long line uses rayon's parallel sort.

use super::elementwise::{CHUNK, build, map1};
use super::layout::transpose;
use super::{Operand, PAR_THRESHOLD};
use crate::backend::{Storage, StorageElement};
use crate::with_storage;
use rayon::prelude::*;
use std::cmp::Ordering;
use std::mem::MaybeUninit;

/// Sort key of an `f32`: integer order is numeric order, `-0.0` and `+0.0` are equal,
/// and every NaN (of either sign) is equal to every other and sorts last.
#[inline(always)]
fn f32_key(x: f32) -> i64 {
    if x.is_nan() {
        return i64::MAX;
    }
    if x == 0.0 {
        return 0;
    }
    let b = x.to_bits() as i32;
    (if b < 0 { b ^ i32::MAX } else { b }) as i64
}

/// Sort key of an `f64` (see [`f32_key`]).
#[inline(always)]
fn f64_key(x: f64) -> i64 {
    if x.is_nan() {
        return i64::MAX;
    }
    if x == 0.0 {
        return 0;
    }
    let b = x.to_bits() as i64;
    if b < 0 { b ^ i64::MAX } else { b }
}

fn sort_keys(s: &Storage) -> Vec<i64> {
    match s {
        Storage::Bool(v) => map1(v, |b| b as i64),
        Storage::U8(v) => map1(v, |x| x as i64),
        Storage::U32(v) => map1(v, |x| x as i64),
        Storage::I32(v) => map1(v, |x| x as i64),
        Storage::I64(v) => v.clone(),
        Storage::F16(v) => map1(v, |h| f32_key(h.to_f32())),
        Storage::BF16(v) => map1(v, |h| f32_key(h.to_f32())),
        Storage::F32(v) => map1(v, f32_key),
        Storage::F64(v) => map1(v, f64_key),
    }
}

/// Sorts all operands (one shape) along `axis`, stably and ascending, by the
/// lexicographic order of the first `num_keys` operands. Floats sort numerically with NaNs
/// last, like JAX: `-0.0` equals `+0.0` and all NaNs are equal, so those keep their input
/// order.
/// Returns one storage per operand.
pub fn sort(xs: &[Operand<'_>], axis: usize, num_keys: usize) -> Vec<Storage> {
    let shape = xs[0].shape;
    let n = shape[axis];
    let total: usize = shape.iter().product();
    if total == 0 || n <= 1 {
        return xs.iter().map(|x| x.data.clone()).collect();
    }
    let inner: usize = shape[axis + 1..].iter().product();
    if inner == 1 {
        return sort_last(xs, n, num_keys);
    }
    let nd = shape.len();
    let perm: Vec<usize> = (0..nd).filter(|&d| d != axis).chain([axis]).collect();
    let mut inv = vec![0; nd];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let mshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let moved: Vec<Storage> = xs.iter().map(|x| transpose(*x, &perm)).collect();
    let ops: Vec<Operand<'_>> = moved.iter().map(|d| Operand { data: d, shape: &mshape }).collect();
    sort_last(&ops, n, num_keys)
        .iter()
        .map(|s| transpose(Operand { data: s, shape: &mshape }, &inv))
        .collect()
}

/// Sorts contiguous lines of length `n` (`n >= 2`).
fn sort_last(xs: &[Operand<'_>], n: usize, num_keys: usize) -> Vec<Storage> {
    assert!(n <= u32::MAX as usize, "sort: axis longer than 2^32 elements");
    let total = xs[0].data.len();
    let lines = total / n;
    let keys: Vec<Vec<i64>> = xs[..num_keys].iter().map(|x| sort_keys(x.data)).collect();
    let one_line = lines == 1 && n >= PAR_THRESHOLD;
    let sort_line = |base: usize, p: &mut [u32], pairs: &mut Vec<(i64, u32)>| {
        if let [k] = &keys[..] {
            pairs.clear();
            pairs.extend(k[base..base + n].iter().enumerate().map(|(i, &v)| (v, i as u32)));
            if one_line {
                pairs.par_sort_unstable();
            } else {
                pairs.sort_unstable();
            }
            for (d, &(_, i)) in p.iter_mut().zip(pairs.iter()) {
                *d = i;
            }
        } else {
            for (i, d) in p.iter_mut().enumerate() {
                *d = i as u32;
            }
            let cmp = |a: &u32, b: &u32| {
                let (a, b) = (base + *a as usize, base + *b as usize);
                keys.iter()
                    .map(|k| k[a].cmp(&k[b]))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
                    .then(a.cmp(&b))
            };
            if one_line {
                p.par_sort_unstable_by(cmp);
            } else {
                p.sort_unstable_by(cmp);
            }
        }
    };
    let mut perm = vec![0u32; total];
    if total >= PAR_THRESHOLD && lines > 1 {
        perm.par_chunks_mut(n)
            .enumerate()
            .for_each_init(Vec::new, |pairs, (r, p)| sort_line(r * n, p, pairs));
    } else {
        let mut pairs = Vec::new();
        for (r, p) in perm.chunks_mut(n).enumerate() {
            sort_line(r * n, p, &mut pairs);
        }
    }
    xs.iter()
        .map(|x| with_storage!(x.data, v, T => T::into_storage(permute_lines(v, &perm, n))))
        .collect()
}

/// `out[r * n + i] = v[r * n + perm[r * n + i]]`.
fn permute_lines<T: Copy + Send + Sync>(v: &[T], perm: &[u32], n: usize) -> Vec<T> {
    // SAFETY: chunks are whole lines (the chunk size and `v.len()` are multiples of `n`),
    // and every element of each line is written from its permutation entry.
    unsafe {
        build(v.len(), (CHUNK / n).max(1) * n, |start, out: &mut [MaybeUninit<T>]| {
            let p = &perm[start..start + out.len()];
            for ((o, p), line) in
                out.chunks_exact_mut(n).zip(p.chunks_exact(n)).zip(v[start..].chunks_exact(n))
            {
                for (d, &j) in o.iter_mut().zip(p) {
                    d.write(line[j as usize]);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn op<'a>(data: &'a Storage, shape: &'a [usize]) -> Operand<'a> {
        Operand { data, shape }
    }

    fn bits(s: &Storage) -> Vec<u32> {
        s.as_slice::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn float_total_order() {
        let x =
            Storage::F32(vec![3.0, f32::NAN, 0.0, -0.0, f32::NEG_INFINITY, 1.0, -f32::NAN, -2.5]);
        let out = sort(&[op(&x, &[8])], 0, 1);
        // Zeros compare equal (input order: +0.0 then -0.0), as in JAX.
        let want = [-f32::INFINITY, -2.5, 0.0, -0.0, 1.0, 3.0];
        let got = out[0].as_slice::<f32>().unwrap();
        assert_eq!(bits(&out[0])[..6], want.map(f32::to_bits));
        assert!(got[6].is_nan() && got[7].is_nan());
        // NaNs compare equal, so the stable sort keeps their input order (+NaN, then -NaN).
        assert!(got[6].is_sign_positive() && got[7].is_sign_negative());
        let y = Storage::F64(vec![0.5, -0.0, f64::NAN, -1.0, 0.0]);
        let out = sort(&[op(&y, &[5])], 0, 1);
        let got = out[0].as_slice::<f64>().unwrap();
        assert_eq!(got[..4], [-1.0, -0.0, 0.0, 0.5]);
        assert!(got[1].is_sign_negative() && got[2].is_sign_positive() && got[4].is_nan());
        // Like JAX: signed zeros and NaNs are ties, so a payload keeps its order.
        let z = Storage::F32(vec![0.0, -0.0, 0.0, -0.0, f32::NAN, -f32::NAN]);
        let p = Storage::I32(vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(sort(&[op(&z, &[6]), op(&p, &[6])], 0, 1)[1], p);
        let h = Storage::BF16(vec![bf16::from_f32(2.0), bf16::NAN, bf16::from_f32(-1.0)]);
        let out = sort(&[op(&h, &[3])], 0, 1);
        let got = out[0].as_slice::<bf16>().unwrap();
        assert!(got[0] == bf16::from_f32(-1.0) && got[1] == bf16::from_f32(2.0) && got[2].is_nan());
        let h = Storage::F16(vec![f16::from_f32(2.0), f16::from_f32(-3.0)]);
        assert_eq!(
            sort(&[op(&h, &[2])], 0, 1)[0],
            Storage::F16(vec![f16::from_f32(-3.0), f16::from_f32(2.0)])
        );
    }

    #[test]
    fn ints_bools_and_stability_with_payload() {
        let k = Storage::I32(vec![3, 1, 2, 1, 3, 1]);
        let v = Storage::U8(vec![0, 1, 2, 3, 4, 5]);
        let out = sort(&[op(&k, &[6]), op(&v, &[6])], 0, 1);
        assert_eq!(out[0], Storage::I32(vec![1, 1, 1, 2, 3, 3]));
        assert_eq!(out[1], Storage::U8(vec![1, 3, 5, 2, 0, 4]));
        let b = Storage::Bool(vec![true, false, true, false]);
        assert_eq!(sort(&[op(&b, &[4])], 0, 1)[0], Storage::Bool(vec![false, false, true, true]));
        let u = Storage::U32(vec![u32::MAX, 0, 7]);
        assert_eq!(sort(&[op(&u, &[3])], 0, 1)[0], Storage::U32(vec![0, 7, u32::MAX]));
        let l = Storage::I64(vec![i64::MAX, i64::MIN, 0]);
        assert_eq!(sort(&[op(&l, &[3])], 0, 1)[0], Storage::I64(vec![i64::MIN, 0, i64::MAX]));
    }

    #[test]
    fn multiple_keys() {
        let a = Storage::I32(vec![2, 1, 2, 1, 2]);
        let b = Storage::F32(vec![0.5, 9.0, -1.0, 3.0, 0.5]);
        let p = Storage::I64(vec![10, 11, 12, 13, 14]);
        let out = sort(&[op(&a, &[5]), op(&b, &[5]), op(&p, &[5])], 0, 2);
        assert_eq!(out[0], Storage::I32(vec![1, 1, 2, 2, 2]));
        assert_eq!(out[1], Storage::F32(vec![3.0, 9.0, -1.0, 0.5, 0.5]));
        assert_eq!(out[2], Storage::I64(vec![13, 11, 12, 10, 14]));
        // Only the first key counts with num_keys = 1.
        let out = sort(&[op(&a, &[5]), op(&b, &[5])], 0, 1);
        assert_eq!(out[1], Storage::F32(vec![9.0, 3.0, 0.5, -1.0, 0.5]));
    }

    #[test]
    fn along_axes() {
        let x = Storage::I32(vec![3, 1, 2, 9, 8, 7]);
        assert_eq!(sort(&[op(&x, &[2, 3])], 1, 1)[0], Storage::I32(vec![1, 2, 3, 7, 8, 9]));
        let y = Storage::I32(vec![5, 1, 0, 7, 2, 3]);
        assert_eq!(sort(&[op(&y, &[3, 2])], 0, 1)[0], Storage::I32(vec![0, 1, 2, 3, 5, 7]));
        let z = Storage::F32((0..24).map(|i| ((i * 7) % 24) as f32).collect());
        let out = sort(&[op(&z, &[2, 3, 4])], 1, 1);
        let src = z.as_slice::<f32>().unwrap();
        let got = out[0].as_slice::<f32>().unwrap();
        for a in 0..2 {
            for c in 0..4 {
                let mut col: Vec<f32> = (0..3).map(|b| src[a * 12 + b * 4 + c]).collect();
                col.sort_by(f32::total_cmp);
                let g: Vec<f32> = (0..3).map(|b| got[a * 12 + b * 4 + c]).collect();
                assert_eq!(g, col);
            }
        }
        let e = Storage::I32(vec![]);
        assert_eq!(sort(&[op(&e, &[0, 3])], 1, 1)[0], e);
        let s = Storage::I32(vec![4, 2]);
        assert_eq!(sort(&[op(&s, &[2, 1])], 1, 1)[0], s);
    }

    #[test]
    fn large_parallel() {
        // Many lines.
        let (lines, n) = (300, 200);
        let x: Vec<f32> = (0..lines * n).map(|i| ((i * 7919) % 1000) as f32 - 500.0).collect();
        let idx: Vec<i32> = (0..(lines * n) as i32).collect();
        let out = sort(
            &[op(&Storage::F32(x.clone()), &[lines, n]), op(&Storage::I32(idx), &[lines, n])],
            1,
            1,
        );
        let (sx, si) = (out[0].as_slice::<f32>().unwrap(), out[1].as_slice::<i32>().unwrap());
        for r in 0..lines {
            let mut want: Vec<(f32, i32)> =
                (0..n).map(|i| (x[r * n + i], (r * n + i) as i32)).collect();
            want.sort_by(|a, b| a.0.total_cmp(&b.0));
            let got: Vec<(f32, i32)> = (0..n).map(|i| (sx[r * n + i], si[r * n + i])).collect();
            assert_eq!(got, want);
        }
        // One long line, two keys.
        let n = PAR_THRESHOLD * 2;
        let a: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        let b: Vec<i64> = (0..n as i64).map(|i| -(i % 1000)).collect();
        let out =
            sort(&[op(&Storage::U8(a.clone()), &[n]), op(&Storage::I64(b.clone()), &[n])], 0, 2);
        let mut want: Vec<(u8, i64)> = a.into_iter().zip(b).collect();
        want.sort();
        let got: Vec<(u8, i64)> = out[0]
            .as_slice::<u8>()
            .unwrap()
            .iter()
            .copied()
            .zip(out[1].as_slice::<i64>().unwrap().iter().copied())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn keys_order() {
        let xs =
            [f32::NEG_INFINITY, -1.0, -f32::MIN_POSITIVE, -1e-45, 0.0, 1e-45, 1.0, f32::INFINITY];
        for w in xs.windows(2) {
            assert!(f32_key(w[0]) < f32_key(w[1]), "{w:?}");
            assert!(f64_key(w[0] as f64) < f64_key(w[1] as f64), "{w:?}");
        }
        assert!(f32_key(f32::INFINITY) < f32_key(f32::NAN));
        assert_eq!(f32_key(f32::NAN), f32_key(-f32::NAN));
        assert_eq!(f32_key(-0.0), f32_key(0.0));
        assert_eq!(f64_key(-0.0), f64_key(0.0));
        assert!(f64_key(f64::INFINITY) < f64_key(-f64::NAN));
    }
}
