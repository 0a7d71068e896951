//! Reduction kernels: `reduce_{sum,max,min,prod}` over any set of axes, `argmax`/`argmin`
//! and `cumsum`.
//!
//! A reduction first simplifies the operand's shape (size-1 dims dropped, neighbouring
//! dims that are both kept or both reduced merged), which leaves one of a few layouts:
//! everything reduced (`[R]`), rows (`[K, R]`: reduce the contiguous last axis), columns
//! (`[R, K]`: reduce the leading axes, vectorized across the kept axis) or a middle axis
//! (`[K1, R, K2]`: columns per slab); anything else is transposed to rows first.
//!
//! Sums are pairwise: contiguous runs use eight independent accumulators (which
//! vectorize) on blocks of at most 1024 elements combined as a binary tree; column sums
//! combine blocks of rows the same way. `f16`/`bf16` accumulate in `f32`. Large inputs
//! are split with `rayon::join` at positions that depend only on the sizes, so results
//! do not depend on the number of threads. Float max/min propagate NaN; bool max/sum are
//! `or` and min/prod are `and`; integer sums and products wrap.

use super::elementwise::{Int, Real, max_nan, min_nan, unsupported};
use super::layout::transpose;
use super::{Operand, PAR_THRESHOLD, Simd, simd, simd_dispatch};
use crate::backend::Storage;
use crate::dtype::DType;
use crate::prim::Prim;
use half::{bf16, f16};
use rayon::prelude::*;
use std::marker::PhantomData;

/// Largest contiguous run summed with plain lane accumulators before splitting pairwise.
const BLOCK: usize = 1024;

/// Columns per rayon task when a column reduction is split across columns.
const COL_BLOCK: usize = 1024;

/// An associative reduction over storage elements `S` with accumulator `A`.
trait Monoid: Copy + Send + Sync {
    type S: Copy + Send + Sync;
    type A: Copy + Send + Sync;
    fn id(&self) -> Self::A;
    fn load(&self, s: Self::S) -> Self::A;
    fn comb(&self, a: Self::A, b: Self::A) -> Self::A;
    fn store(&self, a: Self::A) -> Self::S;
}

/// A [`Monoid`] built from an identity and three closures.
struct Mon<S, A, L, C, W> {
    id: A,
    load: L,
    comb: C,
    store: W,
    _s: PhantomData<fn(S) -> S>,
}

impl<S, A: Copy, L: Copy, C: Copy, W: Copy> Clone for Mon<S, A, L, C, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, A: Copy, L: Copy, C: Copy, W: Copy> Copy for Mon<S, A, L, C, W> {}

impl<S, A, L, C, W> Monoid for Mon<S, A, L, C, W>
where
    S: Copy + Send + Sync,
    A: Copy + Send + Sync,
    L: Fn(S) -> A + Copy + Send + Sync,
    C: Fn(A, A) -> A + Copy + Send + Sync,
    W: Fn(A) -> S + Copy + Send + Sync,
{
    type S = S;
    type A = A;
    #[inline(always)]
    fn id(&self) -> A {
        self.id
    }
    #[inline(always)]
    fn load(&self, s: S) -> A {
        (self.load)(s)
    }
    #[inline(always)]
    fn comb(&self, a: A, b: A) -> A {
        (self.comb)(a, b)
    }
    #[inline(always)]
    fn store(&self, a: A) -> S {
        (self.store)(a)
    }
}

fn mon<S, A, L, C, W>(id: A, load: L, comb: C, store: W) -> Mon<S, A, L, C, W> {
    Mon { id, load, comb, store, _s: PhantomData }
}

// ---- layouts -----------------------------------------------------------------------------

/// The simplified layout of a reduction.
#[derive(Clone, Debug, PartialEq)]
enum Plan {
    /// Nothing (of size > 1) is reduced: the output is the input.
    Copy,
    /// Everything is reduced: `[r]`.
    All(usize),
    /// `[k, r]`: reduce each contiguous row.
    Rows(usize),
    /// `[r, k]`: reduce the leading axis.
    Cols(usize, usize),
    /// `[k1, r, k2]`.
    Mid(usize, usize, usize),
    /// Transpose by the permutation (kept dims first), then `Rows(r)`.
    General(Vec<usize>, usize),
}

fn plan(shape: &[usize], axes: &[usize]) -> Plan {
    let mut groups: Vec<(usize, bool)> = Vec::new();
    for (d, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let red = axes.contains(&d);
        match groups.last_mut() {
            Some((m, r)) if *r == red => *m *= n,
            _ => groups.push((n, red)),
        }
    }
    match groups[..] {
        [] | [(_, false)] => Plan::Copy,
        [(r, true)] => Plan::All(r),
        [(_, false), (r, true)] => Plan::Rows(r),
        [(r, true), (k, false)] => Plan::Cols(r, k),
        [(k1, false), (r, true), (k2, false)] => Plan::Mid(k1, r, k2),
        _ => {
            let mut perm: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
            perm.extend((0..shape.len()).filter(|d| axes.contains(d)));
            let r = axes.iter().map(|&a| shape[a]).product();
            Plan::General(perm, r)
        }
    }
}

// ---- kernels -----------------------------------------------------------------------------

/// Reduces `xs` with eight lane accumulators (vectorizable) and a tree over the lanes.
#[inline(always)]
fn lanes<M: Monoid>(m: M, xs: &[M::S]) -> M::A {
    let mut acc = [m.id(); 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] = m.comb(acc[l], m.load(c[l]));
        }
    }
    let mut tail = m.id();
    for &x in chunks.remainder() {
        tail = m.comb(tail, m.load(x));
    }
    let a = m.comb(m.comb(acc[0], acc[1]), m.comb(acc[2], acc[3]));
    let b = m.comb(m.comb(acc[4], acc[5]), m.comb(acc[6], acc[7]));
    m.comb(m.comb(a, b), tail)
}

/// Pairwise reduction of a contiguous run (serial).
fn pairwise<M: Monoid>(m: M, xs: &[M::S]) -> M::A {
    if xs.len() <= BLOCK {
        return lanes(m, xs);
    }
    let mid = (xs.len() / 2).next_multiple_of(8);
    m.comb(pairwise(m, &xs[..mid]), pairwise(m, &xs[mid..]))
}

/// Pairwise reduction of a contiguous run, split across threads when large.
fn contig<M: Monoid>(m: M, xs: &[M::S]) -> M::A {
    if xs.len() < PAR_THRESHOLD {
        return pairwise(m, xs);
    }
    let mid = (xs.len() / 2).next_multiple_of(8);
    let (a, b) = rayon::join(|| contig(m, &xs[..mid]), || contig(m, &xs[mid..]));
    m.comb(a, b)
}

/// Reduces each contiguous row of length `r` (short rows with a plain fold).
fn rows<M: Monoid>(m: M, xs: &[M::S], r: usize) -> Vec<M::S> {
    let short = |row: &[M::S]| m.store(row.iter().fold(m.id(), |a, &x| m.comb(a, m.load(x))));
    match (xs.len() >= PAR_THRESHOLD, r < 16) {
        (true, true) => xs.par_chunks(r).map(short).collect(),
        (true, false) => xs.par_chunks(r).map(|row| m.store(contig(m, row))).collect(),
        (false, true) => xs.chunks_exact(r).map(short).collect(),
        (false, false) => xs.chunks_exact(r).map(|row| m.store(pairwise(m, row))).collect(),
    }
}

/// Lanes of the narrow column reduction.
const NARROW: usize = 64;

/// Column reduction of `[r, k]` for small `k` (`k <= NARROW / 4`): the rows are read as
/// one stream into `k * (NARROW / k)` interleaved accumulators (lane `t` only ever sees
/// column `t % k`), which vectorizes however small `k` is; blocks of at most `2 * BLOCK`
/// elements are combined pairwise (in parallel when large). Returns the `k` results
/// (the rest of the array is padding).
fn narrow<M: Monoid>(m: M, xs: &[M::S], k: usize) -> [M::A; NARROW] {
    let w = k * (NARROW / k);
    let mid = xs.len() / 2 / w * w;
    if xs.len() > 2 * BLOCK && mid > 0 {
        let (l, r) = xs.split_at(mid);
        let (mut a, b) = if xs.len() >= PAR_THRESHOLD {
            rayon::join(|| narrow(m, l, k), || narrow(m, r, k))
        } else {
            (narrow(m, l, k), narrow(m, r, k))
        };
        for (a, &b) in a[..k].iter_mut().zip(&b[..k]) {
            *a = m.comb(*a, b);
        }
        return a;
    }
    let mut acc = [m.id(); NARROW];
    let mut chunks = xs.chunks_exact(w);
    for c in &mut chunks {
        for (a, &x) in acc[..w].iter_mut().zip(c) {
            *a = m.comb(*a, m.load(x));
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a = m.comb(*a, m.load(x));
    }
    let mut out = [m.id(); NARROW];
    for (t, &a) in acc[..w].iter().enumerate() {
        out[t % k] = m.comb(out[t % k], a);
    }
    out
}

/// Rows accumulated sequentially before combining pairwise, for `w` columns.
fn leaf_rows(w: usize) -> usize {
    (4096 / w.max(1)).clamp(16, 128)
}

/// Scratch rows needed by [`cols_serial`] for `r` rows.
fn depth(mut r: usize, leaf: usize) -> usize {
    let mut d = 0;
    while r > leaf {
        r -= r / 2;
        d += 1;
    }
    d
}

/// `out[j] = ⊕_i xs[i * k + c0 + j]` for `i < r` (`r >= 1`), pairwise over blocks of rows;
/// `scratch` holds `out.len() * depth(r, leaf)` accumulators. The blocks run at SIMD
/// `level`.
#[allow(clippy::too_many_arguments)] // a recursive kernel: all of them are loop state
fn cols_serial<M: Monoid>(
    m: M,
    xs: &[M::S],
    (k, c0, r): (usize, usize, usize),
    leaf: usize,
    level: Simd,
    out: &mut [M::A],
    scratch: &mut [M::A],
) {
    let w = out.len();
    if r <= leaf {
        simd_dispatch!(
            level,
            [M: Monoid],
            (m: M, xs: &[M::S], k: usize, c0: usize, r: usize, out: &mut [M::A]),
            {
                let w = out.len();
                for (o, &x) in out.iter_mut().zip(&xs[c0..c0 + w]) {
                    *o = m.load(x);
                }
                for i in 1..r {
                    let row = &xs[i * k + c0..i * k + c0 + w];
                    for (o, &x) in out.iter_mut().zip(row) {
                        *o = m.comb(*o, m.load(x));
                    }
                }
            }
        );
        return;
    }
    let h = r / 2;
    let (tmp, rest) = scratch.split_at_mut(w);
    cols_serial(m, xs, (k, c0, h), leaf, level, out, rest);
    cols_serial(m, &xs[h * k..], (k, c0, r - h), leaf, level, tmp, rest);
    for (o, &t) in out.iter_mut().zip(tmp.iter()) {
        *o = m.comb(*o, t);
    }
}

/// Elements of a column reduction from which its rows are split in halves across threads.
/// Measured (f32 sums, 2 threads, fastest of 300 calls): `[2048, 128]` 17.2 -> 13.7 us and
/// `[2048, 512]` 68 -> 51 us with pieces of at least this size instead of
/// `PAR_THRESHOLD`, whose joins cost more than the sums.
const COLS_SPLIT: usize = 4 * PAR_THRESHOLD;

/// Columns `c0..c0 + out.len()` of the `[r, k]` matrix `xs`, reduced over rows; large
/// problems split the rows across threads.
fn cols_range<M: Monoid>(
    m: M,
    xs: &[M::S],
    (r, k, c0): (usize, usize, usize),
    level: Simd,
    out: &mut [M::A],
) {
    let w = out.len();
    let leaf = leaf_rows(w);
    if r * w >= COLS_SPLIT && r >= 2 * leaf {
        let h = r / 2;
        let mut tmp = vec![m.id(); w];
        rayon::join(
            || cols_range(m, &xs[..h * k], (h, k, c0), level, out),
            || cols_range(m, &xs[h * k..], (r - h, k, c0), level, &mut tmp),
        );
        for (o, t) in out.iter_mut().zip(tmp) {
            *o = m.comb(*o, t);
        }
        return;
    }
    let mut scratch = vec![m.id(); w * depth(r, leaf)];
    cols_serial(m, xs, (k, c0, r), leaf, level, out, &mut scratch);
}

/// Reduces the leading axis of the `[r, k]` matrix `xs` into `out` (length `k`).
fn cols<M: Monoid>(m: M, xs: &[M::S], r: usize, k: usize, out: &mut [M::A]) {
    let level = simd();
    if k <= NARROW / 4 {
        out.copy_from_slice(&narrow(m, xs, k)[..k]);
    } else if xs.len() >= PAR_THRESHOLD && k >= 2 * COL_BLOCK {
        out.par_chunks_mut(COL_BLOCK)
            .enumerate()
            .for_each(|(i, o)| cols_range(m, xs, (r, k, i * COL_BLOCK), level, o));
    } else {
        cols_range(m, xs, (r, k, 0), level, out);
    }
}

/// Runs a (non-general) plan.
fn run<M: Monoid>(m: M, xs: &[M::S], p: &Plan) -> Vec<M::S> {
    match *p {
        Plan::Copy => xs.to_vec(),
        Plan::All(_) => vec![m.store(contig(m, xs))],
        Plan::Rows(r) => rows(m, xs, r),
        Plan::Cols(r, k) => {
            let mut acc = vec![m.id(); k];
            cols(m, xs, r, k, &mut acc);
            acc.into_iter().map(|a| m.store(a)).collect()
        }
        Plan::Mid(k1, r, k2) => {
            let mut out = vec![m.store(m.id()); k1 * k2];
            let slab = |sl: &[M::S], o: &mut [M::S], acc: &mut Vec<M::A>| {
                acc.clear();
                acc.resize(k2, m.id());
                cols(m, sl, r, k2, acc);
                for (o, &a) in o.iter_mut().zip(acc.iter()) {
                    *o = m.store(a);
                }
            };
            if xs.len() >= PAR_THRESHOLD && r * k2 < PAR_THRESHOLD {
                out.par_chunks_mut(k2)
                    .zip(xs.par_chunks(r * k2))
                    .for_each_init(Vec::new, |acc, (o, sl)| slab(sl, o, acc));
            } else {
                let mut acc = Vec::new();
                for (o, sl) in out.chunks_exact_mut(k2).zip(xs.chunks_exact(r * k2)) {
                    slab(sl, o, &mut acc);
                }
            }
            out
        }
        Plan::General(..) => unreachable!("general plans are transposed to rows first"),
    }
}

// ---- reduce ------------------------------------------------------------------------------

/// Reduces `x` over `axes` (removed from the shape) with `prim`, one of `ReduceSum`,
/// `ReduceMax`, `ReduceMin`, `ReduceProd`.
///
/// Float sums are pairwise (`f16`/`bf16` accumulate in `f32`); float max/min propagate
/// NaN (identities `-inf`/`+inf` for empty reductions); integer sums and products wrap;
/// for bool, sum/max are `or` and prod/min are `and`.
pub fn reduce(prim: &Prim, x: Operand<'_>, axes: &[usize]) -> Storage {
    let n: usize = x.shape.iter().product();
    if n == 0 {
        let out: usize = x
            .shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !axes.contains(d))
            .map(|(_, &s)| s)
            .product();
        return reduce_storage(prim, &Storage::zeros(x.data.dtype(), 0), &Plan::Copy, out);
    }
    match plan(x.shape, axes) {
        Plan::General(perm, r) => {
            let t = transpose(x, &perm);
            reduce_storage(prim, &t, &Plan::Rows(r), 0)
        }
        p => reduce_storage(prim, x.data, &p, 0),
    }
}

/// Dispatches on dtype and primitive. With empty `x`, returns `empty_out` identities.
fn reduce_storage(prim: &Prim, x: &Storage, p: &Plan, empty_out: usize) -> Storage {
    match x {
        Storage::F32(v) => Storage::F32(reduce_float(prim, v, |a| a, |a| a, p, empty_out)),
        Storage::F64(v) => Storage::F64(reduce_float(prim, v, |a| a, |a| a, p, empty_out)),
        Storage::F16(v) => {
            Storage::F16(reduce_float(prim, v, f16::to_f32, f16::from_f32, p, empty_out))
        }
        Storage::BF16(v) => {
            Storage::BF16(reduce_float(prim, v, bf16::to_f32, bf16::from_f32, p, empty_out))
        }
        Storage::U8(v) => Storage::U8(reduce_int(prim, v, p, empty_out)),
        Storage::U32(v) => Storage::U32(reduce_int(prim, v, p, empty_out)),
        Storage::I32(v) => Storage::I32(reduce_int(prim, v, p, empty_out)),
        Storage::I64(v) => Storage::I64(reduce_int(prim, v, p, empty_out)),
        Storage::Bool(v) => Storage::Bool(reduce_bool(prim, v, p, empty_out)),
    }
}

/// Runs `m` over `xs`, or gives `empty_out` identities when `xs` is empty.
fn run_or_identity<M: Monoid>(m: M, xs: &[M::S], p: &Plan, empty_out: usize) -> Vec<M::S> {
    if xs.is_empty() { vec![m.store(m.id()); empty_out] } else { run(m, xs, p) }
}

fn reduce_float<S, T, L, W>(prim: &Prim, xs: &[S], ld: L, st: W, p: &Plan, e: usize) -> Vec<S>
where
    S: crate::dtype::Element,
    T: Real,
    L: Fn(S) -> T + Copy + Send + Sync,
    W: Fn(T) -> S + Copy + Send + Sync,
{
    match prim {
        Prim::ReduceSum { .. } => run_or_identity(mon(T::ZERO, ld, |a, b| a + b, st), xs, p, e),
        Prim::ReduceProd { .. } => run_or_identity(mon(T::ONE, ld, |a, b| a * b, st), xs, p, e),
        Prim::ReduceMax { .. } => run_or_identity(mon(T::NEG_INFINITY, ld, max_nan, st), xs, p, e),
        Prim::ReduceMin { .. } => run_or_identity(mon(T::INFINITY, ld, min_nan, st), xs, p, e),
        _ => unsupported(prim, S::DTYPE),
    }
}

fn reduce_int<T: Int>(prim: &Prim, xs: &[T], p: &Plan, e: usize) -> Vec<T> {
    let id = |a: T| a;
    match prim {
        Prim::ReduceSum { .. } => run_or_identity(mon(T::ZERO, id, T::wadd, id), xs, p, e),
        Prim::ReduceProd { .. } => run_or_identity(mon(T::ONE, id, T::wmul, id), xs, p, e),
        Prim::ReduceMax { .. } => run_or_identity(mon(T::MIN, id, Ord::max, id), xs, p, e),
        Prim::ReduceMin { .. } => run_or_identity(mon(T::MAX, id, Ord::min, id), xs, p, e),
        _ => unsupported(prim, T::DTYPE),
    }
}

fn reduce_bool(prim: &Prim, xs: &[bool], p: &Plan, e: usize) -> Vec<bool> {
    let id = |a: bool| a;
    match prim {
        Prim::ReduceSum { .. } | Prim::ReduceMax { .. } => {
            run_or_identity(mon(false, id, |a, b| a | b, id), xs, p, e)
        }
        Prim::ReduceProd { .. } | Prim::ReduceMin { .. } => {
            run_or_identity(mon(true, id, |a, b| a & b, id), xs, p, e)
        }
        _ => unsupported(prim, DType::Bool),
    }
}

// ---- argmax / argmin -----------------------------------------------------------------------

/// A comparable key; floats know their NaNs.
trait Key: PartialOrd + Copy + Send + Sync {
    fn nan(self) -> bool;
}

macro_rules! key_never_nan {
    ($($t:ty),*) => {$(
        impl Key for $t {
            #[inline(always)]
            fn nan(self) -> bool {
                false
            }
        }
    )*};
}
key_never_nan!(bool, u8, u32, i32, i64);

impl Key for f32 {
    #[inline(always)]
    fn nan(self) -> bool {
        self.is_nan()
    }
}

impl Key for f64 {
    #[inline(always)]
    fn nan(self) -> bool {
        self.is_nan()
    }
}

/// `(outer, n, inner)`: the sizes before, at and after `axis`.
fn split3(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// Index along the middle axis of the first max (or min) of every `[outer, n, inner]` line.
/// The first NaN counts as the extreme (JAX semantics); ties keep the first index.
fn arg_lines<S, K, F>(
    xs: &[S],
    (outer, n, inner): (usize, usize, usize),
    key: F,
    is_max: bool,
) -> Vec<usize>
where
    S: Copy + Send + Sync,
    K: Key,
    F: Fn(S) -> K + Copy + Send + Sync,
{
    if outer * inner == 0 || n == 0 {
        return vec![0; outer * inner];
    }
    let better = move |v: K, b: K| if is_max { v > b } else { v < b };
    if inner == 1 {
        // Two passes, both simple loops: the extreme value (NaN if any) with eight
        // vectorizable lanes, then the first position holding it.
        let pick = move |a: K, b: K| if a.nan() || !(b.nan() || better(b, a)) { a } else { b };
        let line = move |r: &[S]| -> usize {
            let mut acc = [key(r[0]); 8];
            let mut chunks = r.chunks_exact(8);
            for c in &mut chunks {
                for l in 0..8 {
                    acc[l] = pick(acc[l], key(c[l]));
                }
            }
            let mut best = acc.into_iter().fold(key(r[0]), pick);
            for &x in chunks.remainder() {
                best = pick(best, key(x));
            }
            let at = if best.nan() {
                r.iter().position(|&x| key(x).nan())
            } else {
                r.iter().position(|&x| key(x) == best)
            };
            at.unwrap_or(0)
        };
        return if xs.len() >= PAR_THRESHOLD {
            xs.par_chunks(n).map(line).collect()
        } else {
            xs.chunks_exact(n).map(line).collect()
        };
    }
    let slab = move |sl: &[S], o: &mut [usize], best: &mut Vec<K>| {
        best.clear();
        best.extend(sl[..inner].iter().map(|&s| key(s)));
        o.fill(0);
        for (i, row) in sl.chunks_exact(inner).enumerate().skip(1) {
            for ((b, bi), &s) in best.iter_mut().zip(o.iter_mut()).zip(row) {
                let v = key(s);
                if !b.nan() && (v.nan() || better(v, *b)) {
                    (*b, *bi) = (v, i);
                }
            }
        }
    };
    let mut out = vec![0usize; outer * inner];
    if xs.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(inner)
            .zip(xs.par_chunks(n * inner))
            .for_each_init(Vec::new, |best, (o, sl)| slab(sl, o, best));
    } else {
        let mut best = Vec::new();
        for (o, sl) in out.chunks_exact_mut(inner).zip(xs.chunks_exact(n * inner)) {
            slab(sl, o, &mut best);
        }
    }
    out
}

/// Index of the first maximum (`is_max`) or minimum along `axis` (removed from the
/// shape), as `index_dtype`. NaN counts as the extreme for both, and the first NaN wins
/// (JAX semantics); among equal values the first index wins.
pub fn arg_reduce(x: Operand<'_>, axis: usize, index_dtype: DType, is_max: bool) -> Storage {
    let dims = split3(x.shape, axis);
    let idx = match x.data {
        Storage::F32(v) => arg_lines(v, dims, |a| a, is_max),
        Storage::F64(v) => arg_lines(v, dims, |a| a, is_max),
        Storage::F16(v) => arg_lines(v, dims, f16::to_f32, is_max),
        Storage::BF16(v) => arg_lines(v, dims, bf16::to_f32, is_max),
        Storage::U8(v) => arg_lines(v, dims, |a| a, is_max),
        Storage::U32(v) => arg_lines(v, dims, |a| a, is_max),
        Storage::I32(v) => arg_lines(v, dims, |a| a, is_max),
        Storage::I64(v) => arg_lines(v, dims, |a| a, is_max),
        Storage::Bool(v) => arg_lines(v, dims, |a| a, is_max),
    };
    match index_dtype {
        DType::I32 => Storage::I32(idx.into_iter().map(|i| i as i32).collect()),
        DType::I64 => Storage::I64(idx.into_iter().map(|i| i as i64).collect()),
        DType::U32 => Storage::U32(idx.into_iter().map(|i| i as u32).collect()),
        DType::U8 => Storage::U8(idx.into_iter().map(|i| i as u8).collect()),
        other => panic!("cpu kernel: argmax/argmin index dtype must be an integer, got {other}"),
    }
}

// ---- cumsum --------------------------------------------------------------------------------

fn scan<M: Monoid>(
    m: M,
    xs: &[M::S],
    (outer, n, inner): (usize, usize, usize),
    reverse: bool,
) -> Vec<M::S> {
    let line = n * inner;
    if line == 0 || outer == 0 {
        return xs.to_vec();
    }
    let slab = move |sl: &[M::S], o: &mut [M::S], acc: &mut Vec<M::A>| {
        if inner == 1 {
            let mut a = m.id();
            if reverse {
                for (o, &x) in o.iter_mut().zip(sl).rev() {
                    a = m.comb(a, m.load(x));
                    *o = m.store(a);
                }
            } else {
                for (o, &x) in o.iter_mut().zip(sl) {
                    a = m.comb(a, m.load(x));
                    *o = m.store(a);
                }
            }
            return;
        }
        acc.clear();
        acc.resize(inner, m.id());
        let mut step = |orow: &mut [M::S], row: &[M::S]| {
            for ((o, a), &x) in orow.iter_mut().zip(acc.iter_mut()).zip(row) {
                *a = m.comb(*a, m.load(x));
                *o = m.store(*a);
            }
        };
        let pairs = o.chunks_exact_mut(inner).zip(sl.chunks_exact(inner));
        if reverse {
            pairs.rev().for_each(|(orow, row)| step(orow, row));
        } else {
            pairs.for_each(|(orow, row)| step(orow, row));
        }
    };
    let mut out = vec![m.store(m.id()); xs.len()];
    if xs.len() >= PAR_THRESHOLD && outer >= 2 {
        out.par_chunks_mut(line)
            .zip(xs.par_chunks(line))
            .for_each_init(Vec::new, |acc, (o, sl)| slab(sl, o, acc));
    } else {
        let mut acc = Vec::new();
        for (o, sl) in out.chunks_exact_mut(line).zip(xs.chunks_exact(line)) {
            slab(sl, o, &mut acc);
        }
    }
    out
}

/// Inclusive cumulative sum along `axis`, from the end when `reverse`. Sequential per
/// line; `f16`/`bf16` accumulate in `f32`, integers wrap.
pub fn cumsum(x: Operand<'_>, axis: usize, reverse: bool) -> Storage {
    let dims = split3(x.shape, axis);
    fn float<S, T, L, W>(xs: &[S], ld: L, st: W, dims: (usize, usize, usize), rev: bool) -> Vec<S>
    where
        S: Copy + Send + Sync,
        T: Real,
        L: Fn(S) -> T + Copy + Send + Sync,
        W: Fn(T) -> S + Copy + Send + Sync,
    {
        scan(mon(T::ZERO, ld, |a, b| a + b, st), xs, dims, rev)
    }
    fn int<T: Int>(xs: &[T], dims: (usize, usize, usize), rev: bool) -> Vec<T> {
        scan(mon(T::ZERO, |a| a, T::wadd, |a| a), xs, dims, rev)
    }
    match x.data {
        Storage::F32(v) => Storage::F32(float(v, |a: f32| a, |a| a, dims, reverse)),
        Storage::F64(v) => Storage::F64(float(v, |a: f64| a, |a| a, dims, reverse)),
        Storage::F16(v) => Storage::F16(float(v, f16::to_f32, f16::from_f32, dims, reverse)),
        Storage::BF16(v) => Storage::BF16(float(v, bf16::to_f32, bf16::from_f32, dims, reverse)),
        Storage::U8(v) => Storage::U8(int(v, dims, reverse)),
        Storage::U32(v) => Storage::U32(int(v, dims, reverse)),
        Storage::I32(v) => Storage::I32(int(v, dims, reverse)),
        Storage::I64(v) => Storage::I64(int(v, dims, reverse)),
        Storage::Bool(_) => unsupported(&Prim::Cumsum { axis, reverse }, DType::Bool),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op<'a>(data: &'a Storage, shape: &'a [usize]) -> Operand<'a> {
        Operand { data, shape }
    }

    fn sum(axes: &[usize]) -> Prim {
        Prim::ReduceSum { axes: axes.to_vec() }
    }

    /// Reference reduction in f64 (sum) over `axes` of a row-major array.
    fn ref_sum(x: &[f64], shape: &[usize], axes: &[usize]) -> Vec<f64> {
        let out_shape: Vec<usize> =
            shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &s)| s).collect();
        let mut out = vec![0.0; out_shape.iter().product()];
        let mut idx = vec![0; shape.len()];
        for &v in x {
            let o = (0..shape.len())
                .filter(|d| !axes.contains(d))
                .fold(0, |acc, d| acc * shape[d] + idx[d]);
            out[o] += v;
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    }

    #[test]
    fn plans() {
        assert_eq!(plan(&[2, 3], &[1]), Plan::Rows(3));
        assert_eq!(plan(&[2, 3], &[0]), Plan::Cols(2, 3));
        assert_eq!(plan(&[2, 3, 4], &[0, 1, 2]), Plan::All(24));
        assert_eq!(plan(&[2, 3, 4], &[1]), Plan::Mid(2, 3, 4));
        assert_eq!(plan(&[2, 1, 4], &[1]), Plan::Copy);
        assert_eq!(plan(&[2, 3, 4, 5], &[2, 3]), Plan::Rows(20));
        assert_eq!(plan(&[2, 3, 4], &[0, 2]), Plan::General(vec![1, 0, 2], 8));
    }

    #[test]
    fn sum_small_all_layouts() {
        let shape = [2, 3, 4];
        let x: Vec<f64> = (0..24).map(|i| i as f64).collect();
        let xs = Storage::F64(x.clone());
        for axes in
            [vec![], vec![0], vec![1], vec![2], vec![0, 1], vec![1, 2], vec![0, 2], vec![0, 1, 2]]
        {
            let got = reduce(&sum(&axes), op(&xs, &shape), &axes);
            assert_eq!(got, Storage::F64(ref_sum(&x, &shape, &axes)), "{axes:?}");
        }
        // Pattern R K R K (general, more than three groups).
        let shape = [2, 3, 4, 5];
        let x: Vec<f64> = (0..120).map(|i| (i * 7 % 13) as f64).collect();
        let got = reduce(&sum(&[0, 2]), op(&Storage::F64(x.clone()), &shape), &[0, 2]);
        assert_eq!(got, Storage::F64(ref_sum(&x, &shape, &[0, 2])));
    }

    #[test]
    fn sum_large_parallel_all_layouts() {
        let shape = [64, 50, 40];
        let n: usize = shape.iter().product();
        let x: Vec<f64> = (0..n).map(|i| ((i * 31) % 97) as f64 - 48.0).collect();
        let xs = Storage::F64(x.clone());
        for axes in [vec![0], vec![1], vec![2], vec![0, 1], vec![1, 2], vec![0, 2], vec![0, 1, 2]] {
            let got = reduce(&sum(&axes), op(&xs, &shape), &axes);
            assert_eq!(got, Storage::F64(ref_sum(&x, &shape, &axes)), "{axes:?}");
        }
        // Many columns: split across columns in parallel.
        let (r, k) = (20, 5000);
        let x: Vec<f64> = (0..r * k).map(|i| (i % 11) as f64).collect();
        let got = reduce(&sum(&[0]), op(&Storage::F64(x.clone()), &[r, k]), &[0]);
        assert_eq!(got, Storage::F64(ref_sum(&x, &[r, k], &[0])));
    }

    #[test]
    fn narrow_columns_and_short_rows() {
        for k in [2, 3, 5, 16, 17] {
            for r in [1, 2, 7, 100, 3000, 40_000] {
                let x: Vec<f64> = (0..r * k).map(|i| ((i * 13) % 29) as f64 - 14.0).collect();
                let xs = Storage::F64(x.clone());
                let got = reduce(&sum(&[0]), op(&xs, &[r, k]), &[0]);
                assert_eq!(got, Storage::F64(ref_sum(&x, &[r, k], &[0])), "cols {r}x{k}");
                let got = reduce(&sum(&[1]), op(&xs, &[k, r]), &[1]);
                assert_eq!(got, Storage::F64(ref_sum(&x, &[k, r], &[1])), "rows {k}x{r}");
                let mx = reduce(&Prim::ReduceMax { axes: vec![0] }, op(&xs, &[r, k]), &[0]);
                let want: Vec<f64> = (0..k)
                    .map(|j| (0..r).map(|i| x[i * k + j]).fold(f64::NEG_INFINITY, f64::max))
                    .collect();
                assert_eq!(mx, Storage::F64(want), "max cols {r}x{k}");
            }
        }
        // NaN in one narrow column only.
        let mut v = vec![1.0f32; 3 * 50_000];
        v[3 * 777 + 1] = f32::NAN;
        let mx =
            reduce(&Prim::ReduceMax { axes: vec![0] }, op(&Storage::F32(v), &[50_000, 3]), &[0]);
        let mx = mx.as_slice::<f32>().unwrap();
        assert!(mx[0] == 1.0 && mx[1].is_nan() && mx[2] == 1.0);
        // Middle axis with a narrow inner dim.
        let x: Vec<f64> = (0..4 * 500 * 3).map(|i| (i % 7) as f64).collect();
        let got = reduce(&sum(&[1]), op(&Storage::F64(x.clone()), &[4, 500, 3]), &[1]);
        assert_eq!(got, Storage::F64(ref_sum(&x, &[4, 500, 3], &[1])));
    }

    #[test]
    fn f32_sum_is_accurate() {
        // Naive sequential f32 summation of 10^6 copies of 0.1 drifts by ~1%; pairwise
        // summation stays within a few ulp of the true sum.
        let n = 1_000_000;
        let x = Storage::F32(vec![0.1; n]);
        let got = reduce(&sum(&[0]), op(&x, &[n]), &[0]).as_slice::<f32>().unwrap()[0];
        let want = 0.1f32 as f64 * n as f64;
        assert!((got as f64 - want).abs() / want < 1e-6, "{got}");
        // Column sums too.
        let (r, k) = (100_000, 3);
        let x = Storage::F32(vec![0.1; r * k]);
        let got = reduce(&sum(&[0]), op(&x, &[r, k]), &[0]);
        for &g in got.as_slice::<f32>().unwrap() {
            let want = 0.1f32 as f64 * r as f64;
            assert!((g as f64 - want).abs() / want < 1e-6, "{g}");
        }
    }

    #[test]
    fn max_min_prod_floats() {
        let x = Storage::F32(vec![1.0, -3.0, 2.0, 0.5, f32::NAN, 4.0]);
        let s = [2, 3];
        let mx = reduce(&Prim::ReduceMax { axes: vec![1] }, op(&x, &s), &[1]);
        let mx = mx.as_slice::<f32>().unwrap();
        assert!(mx[0] == 2.0 && mx[1].is_nan());
        let mn = reduce(&Prim::ReduceMin { axes: vec![0] }, op(&x, &s), &[0]);
        let mn = mn.as_slice::<f32>().unwrap();
        assert!(mn[0] == 0.5 && mn[1].is_nan() && mn[2] == 2.0);
        let pr = reduce(
            &Prim::ReduceProd { axes: vec![0] },
            op(&Storage::F64(vec![1.5, -2.0, 4.0]), &[3]),
            &[0],
        );
        assert_eq!(pr, Storage::F64(vec![-12.0]));
        // NaN anywhere in a large max propagates.
        let mut v = vec![1.0f32; 100_000];
        v[77_777] = f32::NAN;
        let big =
            reduce(&Prim::ReduceMax { axes: vec![0] }, op(&Storage::F32(v), &[100_000]), &[0]);
        assert!(big.as_slice::<f32>().unwrap()[0].is_nan());
    }

    #[test]
    fn empty_reductions_give_identities() {
        let e = Storage::F32(vec![]);
        let s = [0, 3];
        assert_eq!(reduce(&sum(&[0]), op(&e, &s), &[0]), Storage::F32(vec![0.0; 3]));
        assert_eq!(
            reduce(&Prim::ReduceMax { axes: vec![0] }, op(&e, &s), &[0]),
            Storage::F32(vec![f32::NEG_INFINITY; 3])
        );
        assert_eq!(
            reduce(&Prim::ReduceProd { axes: vec![0] }, op(&e, &s), &[0]),
            Storage::F32(vec![1.0; 3])
        );
        assert_eq!(reduce(&sum(&[1]), op(&e, &s), &[1]), Storage::F32(vec![]));
        let ei = Storage::I32(vec![]);
        assert_eq!(
            reduce(&Prim::ReduceMin { axes: vec![0] }, op(&ei, &[0]), &[0]),
            Storage::I32(vec![i32::MAX])
        );
        let eb = Storage::Bool(vec![]);
        assert_eq!(
            reduce(&Prim::ReduceMin { axes: vec![0] }, op(&eb, &[0]), &[0]),
            Storage::Bool(vec![true])
        );
    }

    #[test]
    fn ints_and_bools() {
        let x = Storage::I32(vec![i32::MAX, 1, -5, 7]);
        let s = [2, 2];
        assert_eq!(reduce(&sum(&[1]), op(&x, &s), &[1]), Storage::I32(vec![i32::MIN, 2]));
        assert_eq!(
            reduce(&Prim::ReduceMax { axes: vec![0] }, op(&x, &s), &[0]),
            Storage::I32(vec![i32::MAX, 7])
        );
        assert_eq!(
            reduce(&Prim::ReduceMin { axes: vec![0, 1] }, op(&x, &s), &[0, 1]),
            Storage::I32(vec![-5])
        );
        assert_eq!(
            reduce(&Prim::ReduceProd { axes: vec![0] }, op(&x, &s), &[0]),
            Storage::I32(vec![i32::MAX.wrapping_mul(-5), 7])
        );
        let u = Storage::U8(vec![200, 100]);
        assert_eq!(reduce(&sum(&[0]), op(&u, &[2]), &[0]), Storage::U8(vec![44]));
        let b = Storage::Bool(vec![true, false, false, false]);
        assert_eq!(
            reduce(&Prim::ReduceMax { axes: vec![1] }, op(&b, &s), &[1]),
            Storage::Bool(vec![true, false])
        );
        assert_eq!(
            reduce(&Prim::ReduceMin { axes: vec![1] }, op(&b, &s), &[1]),
            Storage::Bool(vec![false, false])
        );
        assert_eq!(reduce(&sum(&[0]), op(&b, &s), &[0]), Storage::Bool(vec![true, false]));
        assert_eq!(
            reduce(&Prim::ReduceProd { axes: vec![0] }, op(&b, &s), &[0]),
            Storage::Bool(vec![false, false])
        );
        let big = Storage::I64((0..100_000).collect());
        assert_eq!(
            reduce(&sum(&[0]), op(&big, &[100_000]), &[0]),
            Storage::I64(vec![4_999_950_000])
        );
    }

    #[test]
    fn halves_accumulate_in_f32() {
        // 4096 ones: a bf16 accumulator would get stuck at 256.
        let x = Storage::BF16(vec![bf16::ONE; 4096]);
        assert_eq!(
            reduce(&sum(&[0]), op(&x, &[4096]), &[0]),
            Storage::BF16(vec![bf16::from_f32(4096.0)])
        );
        let h = Storage::F16(vec![f16::from_f32(1.5), f16::from_f32(-2.5)]);
        assert_eq!(
            reduce(&Prim::ReduceMin { axes: vec![0] }, op(&h, &[2]), &[0]),
            Storage::F16(vec![f16::from_f32(-2.5)])
        );
    }

    #[test]
    fn argmax_argmin() {
        let x = Storage::F32(vec![1.0, 3.0, 3.0, 0.0, -1.0, 5.0, -1.0, 2.0]);
        let s = [2, 4];
        assert_eq!(arg_reduce(op(&x, &s), 1, DType::I32, true), Storage::I32(vec![1, 1]));
        assert_eq!(arg_reduce(op(&x, &s), 1, DType::I64, false), Storage::I64(vec![3, 0]));
        assert_eq!(arg_reduce(op(&x, &s), 0, DType::U32, true), Storage::U32(vec![0, 1, 0, 1]));
        assert_eq!(arg_reduce(op(&x, &s), 0, DType::U8, false), Storage::U8(vec![1, 0, 1, 0]));
        // NaN wins for both, the first one.
        let y = Storage::F64(vec![1.0, f64::NAN, 5.0, f64::NAN]);
        assert_eq!(arg_reduce(op(&y, &[4]), 0, DType::I32, true), Storage::I32(vec![1]));
        assert_eq!(arg_reduce(op(&y, &[4]), 0, DType::I32, false), Storage::I32(vec![1]));
        let z = Storage::F32(vec![f32::NAN, 1.0, 2.0, f32::NAN, 0.0, 9.0]);
        assert_eq!(arg_reduce(op(&z, &[3, 2]), 0, DType::I32, true), Storage::I32(vec![0, 1]));
        assert_eq!(arg_reduce(op(&z, &[3, 2]), 0, DType::I32, false), Storage::I32(vec![0, 1]));
        let b = Storage::Bool(vec![false, true, true]);
        assert_eq!(arg_reduce(op(&b, &[3]), 0, DType::I32, true), Storage::I32(vec![1]));
        let i = Storage::I64(vec![5, -2, 5, -2]);
        assert_eq!(arg_reduce(op(&i, &[4]), 0, DType::I32, false), Storage::I32(vec![1]));
        let h = Storage::BF16(vec![bf16::ONE, bf16::from_f32(2.0)]);
        assert_eq!(arg_reduce(op(&h, &[2]), 0, DType::I32, true), Storage::I32(vec![1]));
    }

    #[test]
    fn argmax_long_rows_ties_and_nans() {
        // Long enough for the lane pass: first of tied extremes, first NaN.
        let mut v: Vec<f32> = (0..100).map(|i| (i % 10) as f32).collect();
        let s = |v: &Vec<f32>| Storage::F32(v.clone());
        assert_eq!(arg_reduce(op(&s(&v), &[100]), 0, DType::I32, true), Storage::I32(vec![9]));
        assert_eq!(arg_reduce(op(&s(&v), &[100]), 0, DType::I32, false), Storage::I32(vec![0]));
        v[57] = f32::NAN;
        v[83] = f32::NAN;
        assert_eq!(arg_reduce(op(&s(&v), &[100]), 0, DType::I32, true), Storage::I32(vec![57]));
        assert_eq!(arg_reduce(op(&s(&v), &[100]), 0, DType::I32, false), Storage::I32(vec![57]));
        let z = Storage::F64(vec![-0.0, 0.0, -1.0, 0.0, -0.0, -1.0, -1.0, -1.0, -1.0, -1.0]);
        assert_eq!(arg_reduce(op(&z, &[10]), 0, DType::I32, true), Storage::I32(vec![0]));
        assert_eq!(arg_reduce(op(&z, &[10]), 0, DType::I32, false), Storage::I32(vec![2]));
    }

    #[test]
    fn argmax_parallel() {
        let (o, n) = (300, 200);
        let x: Vec<i32> = (0..o * n).map(|i| ((i * 37) % 101) as i32).collect();
        let want: Vec<i32> = x
            .chunks(n)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold((0, r[0]), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                    .0 as i32
            })
            .collect();
        let got = arg_reduce(op(&Storage::I32(x.clone()), &[o, n]), 1, DType::I32, true);
        assert_eq!(got, Storage::I32(want));
        // Along axis 0 (inner > 1).
        let got = arg_reduce(op(&Storage::I32(x.clone()), &[o, n]), 0, DType::I64, false);
        let want: Vec<i64> = (0..n)
            .map(|j| (0..o).fold(0, |b, i| if x[i * n + j] < x[b * n + j] { i } else { b }) as i64)
            .collect();
        assert_eq!(got, Storage::I64(want));
    }

    #[test]
    fn cumsum_forward_reverse() {
        let x = Storage::I32(vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(cumsum(op(&x, &[2, 3]), 1, false), Storage::I32(vec![1, 3, 6, 4, 9, 15]));
        assert_eq!(cumsum(op(&x, &[2, 3]), 1, true), Storage::I32(vec![6, 5, 3, 15, 11, 6]));
        assert_eq!(cumsum(op(&x, &[2, 3]), 0, false), Storage::I32(vec![1, 2, 3, 5, 7, 9]));
        assert_eq!(cumsum(op(&x, &[2, 3]), 0, true), Storage::I32(vec![5, 7, 9, 4, 5, 6]));
        let f = Storage::F32(vec![0.5, 0.25, 0.125]);
        assert_eq!(cumsum(op(&f, &[3]), 0, false), Storage::F32(vec![0.5, 0.75, 0.875]));
        let h = Storage::F16(vec![f16::ONE; 3]);
        assert_eq!(
            cumsum(op(&h, &[3]), 0, true),
            Storage::F16(vec![f16::from_f32(3.0), f16::from_f32(2.0), f16::ONE])
        );
        let u = Storage::U8(vec![200, 100]);
        assert_eq!(cumsum(op(&u, &[2]), 0, false), Storage::U8(vec![200, 44]));
        let e = Storage::F64(vec![]);
        assert_eq!(cumsum(op(&e, &[0, 2]), 1, false), e);
    }

    #[test]
    fn cumsum_parallel() {
        let (o, n) = (400, 100);
        let x: Vec<i64> = (0..(o * n) as i64).collect();
        let got = cumsum(op(&Storage::I64(x.clone()), &[o, n]), 1, true);
        let mut want = x.clone();
        for r in want.chunks_mut(n) {
            for i in (0..n - 1).rev() {
                r[i] += r[i + 1];
            }
        }
        assert_eq!(got, Storage::I64(want));
        let got = cumsum(op(&Storage::I64(x.clone()), &[4, 100, 100]), 1, false);
        let mut want = x;
        for slab in want.chunks_mut(100 * 100) {
            for i in 1..100 {
                for j in 0..100 {
                    slab[i * 100 + j] += slab[(i - 1) * 100 + j];
                }
            }
        }
        assert_eq!(got, Storage::I64(want));
    }
}
