//! A register-blocked AVX-512 `f32` kernel for the small products of attention.
//!
//! Attention multiplies many small matrices (per batch item and head: `probs @ v`, and in
//! the backward pass `ds @ k`, `ds^T @ q`, `probs^T @ dout`, each `[64, 64] x [64, 32]` in
//! the benchmark transformer), where `gemm`'s packing of both operands and its set-up
//! cost weigh on every product. When the right operand's rows are contiguous and the
//! output is at most 64 columns wide, no packing is needed: the kernel keeps a block of up
//! to 12 output rows by 32 columns in 24 vector registers, loads each row of the right
//! operand once per step of the contraction and broadcasts the left operand's elements
//! from wherever its strides put them. Measured here against `gemm` in one process (the
//! two alternated, 2000 calls each, 2 threads): 128 products `[64, 64] x [64, 32]` 323 ->
//! 263 us, with the left operand transposed 353 -> 286 us.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output rows per register block.
const MR: usize = 12;

/// Largest product (multiply-adds) the kernel takes: products of attention's size; larger
/// ones amortize `gemm`'s packing.
const MAX_WORK: usize = 64 * 64 * 128;

/// Whether [`matmul`] takes an `m x k` by `k x n` product whose right operand has column
/// stride `b_cs` and output column stride `d_cs`, on this CPU.
pub(super) fn fits((m, n, k): (usize, usize, usize), b_cs: usize, d_cs: usize) -> bool {
    cfg!(target_arch = "x86_64")
        && super::simd() == super::Simd::Avx512
        && n % 16 == 0
        && n <= 64
        && k > 0
        && m * n * k <= MAX_WORK
        && b_cs == 1
        && d_cs == 1
}

/// `dst[i * rsd + j] (+)= sum_p a[i * rsa + p * csa] * b[p * rsb + j]` for an `m x k` by
/// `k x n` product: with `accumulate` the product is added to `dst`, else it overwrites it.
///
/// # Safety
/// [`fits`] must hold for the shape and strides (it checks that this CPU has AVX-512);
/// every element of the three views must lie inside its allocation, and no other thread
/// may access the output view meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // three strided operands plus sizes
pub(super) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    rsd: usize,
    accumulate: bool,
    a: *const f32,
    (rsa, csa): (usize, usize),
    b: *const f32,
    rsb: usize,
) {
    let mut i = 0;
    while i < m {
        let rows = MR.min(m - i);
        let next_rows = MR.min(m - i - rows);
        let mut j = 0;
        while j < n {
            // Two vectors (32 columns) per block, one for a last 16.
            let wide = n - j >= 32;
            // SAFETY: rows `i..i + rows` and columns `j..j + 16 or 32` lie inside the
            // caller's views.
            unsafe {
                let (a, b, d) = (a.add(i * rsa), b.add(j), dst.add(i * rsd + j));
                // The first column block fetches the next row block's left operand while
                // it computes, and the first row block the right operand's rows ahead:
                // each is then read from the L1 cache (their first reads were waiting
                // on memory: 27% of the kernel's samples in the transformer step). With
                // and without, alternated in one process (20 times, 2 threads): 128
                // products `[64, 64] x [64, 32]` 286 -> 259 us (faster in 17), with the
                // left operand transposed 274 -> 261 us (faster in 11).
                let ahead = Ahead {
                    a: if j == 0 { a.wrapping_add(rows * rsa) } else { a },
                    a_rows: if j == 0 { next_rows } else { 0 },
                    b: i == 0,
                };
                let v = View { k, a, rsa, csa, b, rsb, d, rsd, accumulate, ahead };
                macro_rules! dispatch {
                    ($($r:literal)*) => {
                        match (rows, wide) {
                            $(($r, true) => block::<$r, 2>(v), ($r, false) => block::<$r, 1>(v),)*
                            _ => unreachable!("a block has 1 to {MR} rows"),
                        }
                    };
                }
                dispatch!(1 2 3 4 5 6 7 8 9 10 11 12);
            }
            j += if wide { 32 } else { 16 };
        }
        i += rows;
    }
}

/// One register block: operands already offset to the block's first row and column.
#[derive(Clone, Copy)]
struct View {
    k: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    d: *mut f32,
    rsd: usize,
    accumulate: bool,
    ahead: Ahead,
}

/// What a register block prefetches while it computes.
#[derive(Clone, Copy)]
struct Ahead {
    /// The next row block's left operand (first row), with `a_rows` rows (0: none).
    a: *const f32,
    a_rows: usize,
    /// The right operand's rows a few steps ahead.
    b: bool,
}

/// Steps of the contraction by which the right operand's rows are fetched ahead.
const B_AHEAD: usize = 8;

/// Asks the cache for the line holding `p` (never faults, whatever the address).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(p: *const f32) {
    // SAFETY: a prefetch has no architectural effect.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) };
}

/// `R` rows by `16 * V` columns of the output, summed over the whole contraction in
/// registers and written once.
///
/// # Safety
/// Every element of the block's views must lie inside its allocation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block<const R: usize, const V: usize>(v: View) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    let ah = v.ahead;
    for p in 0..v.k {
        if ah.b && p + B_AHEAD < v.k {
            let bp = v.b.wrapping_add((p + B_AHEAD) * v.rsb);
            prefetch(bp);
            prefetch(bp.wrapping_add(16 * V - 1));
        }
        if ah.a_rows > 0 {
            if v.csa == 1 {
                // Rows of the left operand are contiguous: a new line every 16 steps.
                if p % 16 == 0 {
                    for r in 0..ah.a_rows {
                        prefetch(ah.a.wrapping_add(r * v.rsa + p));
                    }
                }
            } else if v.rsa == 1 {
                // Columns are contiguous: step `p` reads one or two lines.
                let ap = ah.a.wrapping_add(p * v.csa);
                prefetch(ap);
                prefetch(ap.wrapping_add(ah.a_rows - 1));
            }
        }
        // SAFETY: row `p` of the right operand and column `p` of the left one are inside
        // the views (the caller's contract).
        unsafe {
            let bp = v.b.add(p * v.rsb);
            let bv: [__m512; V] = std::array::from_fn(|c| _mm512_loadu_ps(bp.add(16 * c)));
            let ap = v.a.add(p * v.csa);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*ap.add(r * v.rsa));
                for (acc, &bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(x, bv, *acc);
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (c, &x) in acc.iter().enumerate() {
            // SAFETY: output row `r`, columns `16 c .. 16 c + 16` are inside the view.
            unsafe {
                let d = v.d.add(r * v.rsd + 16 * c);
                let x = if v.accumulate { _mm512_add_ps(x, _mm512_loadu_ps(d)) } else { x };
                _mm512_storeu_ps(d, x);
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_triple_loop() {
        if super::super::simd() != super::super::Simd::Avx512 {
            return; // nothing to test on this CPU
        }
        let val = |i: usize| ((i * 7919) % 1000) as f32 / 500.0 - 1.0;
        // (m, n, k, left operand transposed, accumulate)
        for (m, n, k, ta, acc) in [
            (64, 32, 64, false, false),
            (64, 32, 64, true, false),
            (64, 64, 32, false, true),
            (13, 48, 7, false, false),
            (1, 16, 1, true, true),
            (25, 64, 100, true, false),
        ] {
            assert!(fits((m, n, k), 1, 1));
            // The right operand's rows are padded (row stride n + 5), as heads of a
            // `[seq, heads, dim]` array are.
            let (rsb, rsd) = (n + 5, n + 3);
            let (rsa, csa) = if ta { (1, m + 2) } else { (k + 2, 1) };
            let a: Vec<f32> = (0..(m + 2) * (k + 2)).map(val).collect();
            let b: Vec<f32> = (0..k * rsb).map(|i| val(i + 31)).collect();
            let mut d: Vec<f32> = (0..m * rsd).map(|i| val(i + 77)).collect();
            let before = d.clone();
            // SAFETY: the views above cover `m x k`, `k x n` and `m x n` in bounds.
            unsafe {
                matmul((m, n, k), d.as_mut_ptr(), rsd, acc, a.as_ptr(), (rsa, csa), b.as_ptr(), rsb)
            };
            for i in 0..m {
                for j in 0..rsd {
                    let got = d[i * rsd + j];
                    if j >= n {
                        assert_eq!(got, before[i * rsd + j], "padding ({i}, {j}) was written");
                        continue;
                    }
                    let mut want: f64 =
                        (0..k).map(|p| a[i * rsa + p * csa] as f64 * b[p * rsb + j] as f64).sum();
                    if acc {
                        want += before[i * rsd + j] as f64;
                    }
                    let tol = 1e-5 * (1.0 + want.abs()) * (k as f64).sqrt();
                    assert!(
                        (got as f64 - want).abs() <= tol,
                        "{m}x{n}x{k} ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
