//! Contraction kernels: [`dot_general`] (batched matrix products on the `gemm` crate) and
//! [`conv`] (N-d convolution by im2col + `gemm`, with a direct kernel for grouped and
//! depthwise convolutions).
//!
//! Both reduce to a strided matrix product `dst[m, n] = lhs[m, k] @ rhs[k, n]`. Operands
//! are passed to `gemm` as strided views whenever each product's rows and columns merge
//! into one stride each without a copy (transposed layouts included; batch dims may have
//! any strides, so the heads of `[batch, seq, heads, dim]` are read in place); only
//! layouts that cannot be expressed so are copied first. A product's output can also be
//! written transposed ([`dot_general_transposed`]). `f16`/`bf16` run through `f32`;
//! integer dtypes use a plain wrapping triple loop. Small `f32` products whose right
//! operand has contiguous rows and whose output is at most 64 columns wide (attention's
//! `probs @ v` and its gradients) skip `gemm` for [`small_gemm`](super::small_gemm).

use super::{Block, Epilogue, Operand, PAR_THRESHOLD, SharedMut, next_index};
use crate::backend::{Storage, StorageElement};
use gemm::Parallelism;
use half::{bf16, f16};
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::{Add, Mul};

/// Multiply-adds (`m * n * k`) from which a single matrix product is split across threads
/// (measured on 16 cores: single-threaded `gemm` is as fast up to about 96^3, and
/// multithreaded is 1.7x faster at 128^3).
const GEMM_PAR_MIN: usize = 96 * 96 * 96;

/// Multiply-adds from which loops of independent small products (batches, output rows)
/// are split across threads.
const LOOP_PAR_MIN: usize = 1 << 16;

/// Multiply-adds per matrix below which a batched product parallelizes over the batch
/// instead of inside each product (unless the batch alone fills every thread).
const BATCH_PAR_MAX: usize = 128 * 128 * 128;

/// Shortest slice of the contraction one thread sums on its own when a product is split
/// along `k` (measured here: halves of 512 lose to `gemm`'s own threading, halves of
/// 1024 win).
const SPLIT_K_MIN: usize = 512;

/// Outputs (elements) from which a product with an epilogue runs in row blocks.
const ROWS_EPI_MIN: usize = 1 << 18;

/// Target size (elements) of one row block of [`matmul_rows`] (256 KB of f32: the block
/// stays in L2 for its epilogue).
const ROWS_EPI_BLOCK: usize = 1 << 16;

/// Target size (elements) of one im2col block: big enough for efficient `gemm` calls, small
/// enough to stay in cache and to give every thread several blocks.
const IM2COL_BLOCK: usize = 1 << 18;

/// The float types `gemm` runs natively.
trait GemmFloat: StorageElement + Add<Output = Self> + Mul<Output = Self> {
    const ZERO: Self;
    const ONE: Self;
    /// The callback of an [`Epilogue`] for this type.
    fn epilogue(e: Epilogue<'_>) -> Epi<'_, Self>;

    /// Runs a product on kiln's own [`small_gemm`](super::small_gemm) kernel and returns
    /// true if it takes this type, shape and layout; else returns false untouched.
    ///
    /// # Safety
    /// As [`gemm_unchecked`] (each operand is its pointer and view).
    unsafe fn small_matmul(
        _mnk: (usize, usize, usize),
        _dst: (*mut Self, MatRef),
        _accumulate: bool,
        _a: (*const Self, MatRef),
        _b: (*const Self, MatRef),
    ) -> bool {
        false
    }
}

/// The typed callback of an [`Epilogue`].
type Epi<'a, T> = Option<&'a (dyn Fn(Block<T>) + Sync)>;

impl GemmFloat for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn epilogue(e: Epilogue<'_>) -> Epi<'_, Self> {
        match e {
            Epilogue::F32(f) => Some(f),
            Epilogue::F64(_) => unreachable!("an f64 epilogue on an f32 product"),
        }
    }

    unsafe fn small_matmul(
        mnk: (usize, usize, usize),
        (dst, d): (*mut Self, MatRef),
        accumulate: bool,
        (a, am): (*const Self, MatRef),
        (b, bm): (*const Self, MatRef),
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if super::small_gemm::fits(mnk, bm.cs, d.cs) {
            // SAFETY: `fits` holds (AVX-512 included) and the caller bounds the views.
            unsafe {
                super::small_gemm::matmul(
                    mnk,
                    dst.add(d.off),
                    d.rs,
                    accumulate,
                    a.add(am.off),
                    (am.rs, am.cs),
                    b.add(bm.off),
                    bm.rs,
                )
            };
            return true;
        }
        let _ = (mnk, dst, d, accumulate, a, am, b, bm);
        false
    }
}

impl GemmFloat for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn epilogue(e: Epilogue<'_>) -> Epi<'_, Self> {
        match e {
            Epilogue::F64(f) => Some(f),
            Epilogue::F32(_) => unreachable!("an f32 epilogue on an f64 product"),
        }
    }
}

/// Hands `out` (flat indices `base..`) to `epi` in pieces, in parallel when it is large.
fn finish<T: GemmFloat>(out: &mut [T], base: usize, epi: Epi<'_, T>) {
    let Some(f) = epi else { return };
    const PIECE: usize = 1 << 14;
    let piece = |(c, p): (usize, &mut [T])| {
        f(Block { ptr: p.as_mut_ptr(), start: base + c * PIECE, len: p.len(), stride: 0, count: 1 })
    };
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(PIECE).enumerate().for_each(piece);
    } else {
        out.chunks_mut(PIECE).enumerate().for_each(piece);
    }
}

/// A strided matrix inside a slice: element `(i, j)` lives at `off + i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
struct MatRef {
    off: usize,
    rs: usize,
    cs: usize,
}

impl MatRef {
    fn new(off: usize, rs: usize, cs: usize) -> Self {
        MatRef { off, rs, cs }
    }

    /// True if every element of a `rows x cols` matrix lies inside a slice of `len`.
    fn fits(self, len: usize, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || self.off + (rows - 1) * self.rs + (cols - 1) * self.cs < len
    }
}

/// `dst[d] = a[am] @ b[bm]` for an `m x k` by `k x n` product (dst is overwritten).
#[allow(clippy::too_many_arguments)] // three strided operands plus sizes and threading
fn matmul<T: GemmFloat>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    d: MatRef,
    a: &[T],
    am: MatRef,
    b: &[T],
    bm: MatRef,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        d.fits(dst.len(), m, n) && am.fits(a.len(), m, k) && bm.fits(b.len(), k, n),
        "matmul view out of bounds"
    );
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                dst[d.off + i * d.rs + j * d.cs] = T::ZERO;
            }
        }
        return;
    }
    // SAFETY: the assert above keeps every element gemm reads or writes inside `dst`, `a`
    // and `b`; `dst` is a unique borrow, so it aliases neither input.
    unsafe { matmul_unchecked((m, n, k), dst.as_mut_ptr(), d, a.as_ptr(), am, b.as_ptr(), bm, par) }
}

/// [`matmul`] on raw pointers, without its checks.
///
/// # Safety
/// Every element of the `m x k`, `k x n` and `m x n` views must lie inside the allocations
/// behind `a`, `b` and `dst`, `k > 0`, and no other thread may read or write the elements
/// of the `dst` view meanwhile.
#[allow(clippy::too_many_arguments)] // three strided operands plus sizes and threading
unsafe fn matmul_unchecked<T: GemmFloat>(
    mnk: (usize, usize, usize),
    dst: *mut T,
    d: MatRef,
    a: *const T,
    am: MatRef,
    b: *const T,
    bm: MatRef,
    par: Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe { gemm_unchecked(mnk, dst, d, false, a, am, b, bm, par) }
}

/// `dst[d] (+)= a[am] @ b[bm]`: with `accumulate` the product is added to `dst`'s
/// elements (which must be initialized), else it overwrites them.
///
/// # Safety
/// As [`matmul_unchecked`].
#[allow(clippy::too_many_arguments)] // three strided operands plus sizes and threading
unsafe fn gemm_unchecked<T: GemmFloat>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    d: MatRef,
    accumulate: bool,
    a: *const T,
    am: MatRef,
    b: *const T,
    bm: MatRef,
    par: Parallelism,
) {
    // SAFETY: the caller's contract, which `small_matmul` shares.
    if unsafe { T::small_matmul((m, n, k), (dst, d), accumulate, (a, am), (b, bm)) } {
        return;
    }
    // SAFETY: guaranteed by the caller; `T` is f32 or f64, which gemm supports. gemm
    // computes `dst = 1 * a @ b`, or `dst = 1 * dst + 1 * a @ b` when reading `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.add(d.off),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            a.add(am.off),
            am.cs as isize,
            am.rs as isize,
            b.add(bm.off),
            bm.cs as isize,
            bm.rs as isize,
            if accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// A row-major `m x n` product split into one block of columns per thread, each a
/// single-threaded `gemm`. For short, wide products (the `m = batch` rows of a layer)
/// this beats `gemm`'s own threading, which splits the few rows: measured here on
/// `[128, 512] x [512, 512]^T` (a backward pass) 1.3-1.6x, on the forward products
/// about 1.1x.
///
/// # Safety
/// `dst` must be valid for writes of `m * n` elements that no other thread accesses
/// meanwhile (they need not be initialized: every one is overwritten).
unsafe fn matmul_cols<T: GemmFloat>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    (a, am): (&[T], MatRef),
    (b, bm): (&[T], MatRef),
    threads: usize,
) {
    assert!(k > 0 && am.fits(a.len(), m, k) && bm.fits(b.len(), k, n), "matmul view out of bounds");
    // Blocks are whole multiples of 16 columns (an AVX-512 register of f32).
    let w = n.div_ceil(threads).next_multiple_of(16);
    let out = SharedMut(dst);
    (0..n.div_ceil(w)).into_par_iter().for_each(|j| {
        let (c0, c1) = (j * w, ((j + 1) * w).min(n));
        // SAFETY: the assert above bounds the input views and the caller the `m x n`
        // output; block `j` writes only columns `c0..c1` of `dst`, which no other block
        // touches, and reads the shared inputs.
        unsafe {
            matmul_unchecked(
                (m, c1 - c0, k),
                out.ptr(),
                MatRef::new(c0, n, 1),
                a.as_ptr(),
                am,
                b.as_ptr(),
                MatRef::new(bm.off + c0 * bm.cs, bm.rs, bm.cs),
                Parallelism::None,
            )
        }
    });
}

/// A row-major `m x n` product split along the contraction: each of `parts` threads sums
/// its own slice of `k` with a single-threaded `gemm` (the first into `dst`, the others
/// into scratch), then the partial sums are added, each piece handed to the epilogue as
/// soon as it is summed. For the long, thin products of weight
/// gradients (`x^T @ dy`, `k` = tokens much larger than `m` and `n`) `gemm`'s threading
/// can only split the few output tiles; measured here with 2 threads, `[128, 2048] x
/// [2048, 128]` 117 -> 188 GFLOP/s, `[512, 2048] x [2048, 128]` 159 -> 188.
///
/// # Safety
/// `dst` must be valid for writes of `m * n` elements that no other thread accesses
/// meanwhile (they need not be initialized: every one is overwritten).
unsafe fn matmul_split_k<T: GemmFloat>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    (a, am): (&[T], MatRef),
    (b, bm): (&[T], MatRef),
    parts: usize,
    epi: Epi<'_, T>,
) {
    assert!(
        parts > 1 && k >= parts && am.fits(a.len(), m, k) && bm.fits(b.len(), k, n),
        "matmul view out of bounds"
    );
    let len = m * n;
    let mut scratch: Vec<T> = Vec::with_capacity((parts - 1) * len);
    let (out, tmp) = (SharedMut(dst), SharedMut(scratch.as_mut_ptr()));
    (0..parts).into_par_iter().for_each(|p| {
        let (k0, k1) = (p * k / parts, (p + 1) * k / parts);
        // SAFETY: the assert above bounds the input views (slice `k0..k1` of the
        // contraction lies inside them) and the caller the `m x n` output; part 0 writes
        // only `dst`, part `p > 0` only its own `len` elements of the scratch capacity.
        unsafe {
            let d = if p == 0 { out.ptr() } else { tmp.ptr().add((p - 1) * len) };
            matmul_unchecked(
                (m, n, k1 - k0),
                d,
                MatRef::new(0, n, 1),
                a.as_ptr(),
                MatRef::new(am.off + k0 * am.cs, am.rs, am.cs),
                b.as_ptr(),
                MatRef::new(bm.off + k0 * bm.rs, bm.rs, bm.cs),
                Parallelism::None,
            )
        }
    });
    // SAFETY: every part wrote its whole block above.
    unsafe { scratch.set_len((parts - 1) * len) };
    const PIECE: usize = 1 << 12;
    (0..len.div_ceil(PIECE)).into_par_iter().for_each(|c| {
        let (i0, i1) = (c * PIECE, ((c + 1) * PIECE).min(len));
        // SAFETY: piece `c` is the only writer of `dst[i0..i1]`, which part 0 initialized.
        let d = unsafe { std::slice::from_raw_parts_mut(out.ptr().add(i0), i1 - i0) };
        for s in scratch.chunks_exact(len) {
            d.iter_mut().zip(&s[i0..i1]).for_each(|(d, &s)| *d = *d + s);
        }
        // The piece is final and in cache: its epilogue runs now.
        if let Some(f) = epi {
            f(Block { ptr: d.as_mut_ptr(), start: i0, len: d.len(), stride: 0, count: 1 });
        }
    });
}

/// A row-major `m x n` product with an epilogue, split into blocks of `rows` rows: each
/// block is one single-threaded `gemm` followed at once by the epilogue on that block,
/// while it is still in the thread's cache (after a whole multi-megabyte product the
/// epilogue would read it back from L3).
///
/// # Safety
/// `dst` must be valid for writes of `m * n` elements that no other thread accesses
/// meanwhile (they need not be initialized: every one is overwritten).
unsafe fn matmul_rows<T: GemmFloat>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    (a, am): (&[T], MatRef),
    (b, bm): (&[T], MatRef),
    rows: usize,
    epi: Epi<'_, T>,
) {
    assert!(k > 0 && am.fits(a.len(), m, k) && bm.fits(b.len(), k, n), "matmul view out of bounds");
    let out = SharedMut(dst);
    (0..m.div_ceil(rows)).into_par_iter().for_each(|i| {
        let (r0, r1) = (i * rows, ((i + 1) * rows).min(m));
        // SAFETY: the assert above bounds the input views and the caller the `m x n`
        // output; block `i` writes only rows `r0..r1` of `dst`, which no other block
        // touches, and the slice is formed after they are all written.
        unsafe {
            let d = out.ptr().add(r0 * n);
            matmul_unchecked(
                (r1 - r0, n, k),
                d,
                MatRef::new(0, n, 1),
                a.as_ptr(),
                MatRef::new(am.off + r0 * am.rs, am.rs, am.cs),
                b.as_ptr(),
                bm,
                Parallelism::None,
            );
            if let Some(f) = epi {
                f(Block { ptr: d, start: r0 * n, len: (r1 - r0) * n, stride: 0, count: 1 });
            }
        }
    });
}

// ---- dot_general ------------------------------------------------------------------------

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        st[i] = st[i + 1] * shape[i + 1];
    }
    st
}

/// The single stride with which `dims` (in this order) can be walked as one flattened dim,
/// or `None` if they are not laid out contiguously relative to each other.
fn merged_stride(dims: &[usize], shape: &[usize], st: &[usize]) -> Option<usize> {
    let live: Vec<usize> = dims.iter().copied().filter(|&d| shape[d] != 1).collect();
    let Some(&last) = live.last() else {
        return Some(1);
    };
    for w in live.windows(2) {
        if st[w[0]] != st[w[1]] * shape[w[1]] {
            return None;
        }
    }
    Some(st[last])
}

/// Strides of the merged matrix groups (`groups[1]` and `groups[2]`: the rows and the
/// columns of each product), or `None` if one of them needs a copy. The batch dims
/// (`groups[0]`) may have any strides: see [`batch_offsets`].
fn group_strides(groups: &[Vec<usize>; 3], shape: &[usize]) -> Option<[usize; 2]> {
    let st = row_major_strides(shape);
    Some([merged_stride(&groups[1], shape, &st)?, merged_stride(&groups[2], shape, &st)?])
}

/// The offset of each product's matrix in a row-major operand of `shape`: one per index of
/// the batch dims `dims`, in row-major order over them. The dims need not be contiguous
/// (the heads of `[batch, seq, heads, dim]` queries read in place).
fn batch_offsets(dims: &[usize], shape: &[usize]) -> Vec<usize> {
    strided_offsets(dims, shape, &row_major_strides(shape))
}

/// `Σ i_d · st[d]` for every index `i` of the dims `dims` (row-major over them).
fn strided_offsets(dims: &[usize], shape: &[usize], st: &[usize]) -> Vec<usize> {
    let mut offs = vec![0];
    for &d in dims {
        let (n, sd) = (shape[d], st[d]);
        offs = offs.iter().flat_map(|&o| (0..n).map(move |i| o + i * sd)).collect();
    }
    offs
}

/// An operand as `b` strided matrices: product `i` reads `mat(i)`.
struct Layout {
    /// Offset of each product's matrix.
    batch: Vec<usize>,
    /// Row and column strides of every matrix.
    rs: usize,
    cs: usize,
}

impl Layout {
    fn mat(&self, bi: usize) -> MatRef {
        MatRef::new(self.batch[bi], self.rs, self.cs)
    }
}

/// Copies `src` (row-major `shape`) into row-major order of the dims `perm`, mapping each
/// element through `f`.
fn permute_copy<S: Copy, D>(
    src: &[S],
    shape: &[usize],
    perm: &[usize],
    f: impl Fn(S) -> D,
) -> Vec<D> {
    let total: usize = shape.iter().product();
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return out;
    }
    if perm.is_empty() {
        out.push(f(src[0]));
        return out;
    }
    let st = row_major_strides(shape);
    let dims: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let pst: Vec<usize> = perm.iter().map(|&p| st[p]).collect();
    let last = dims.len() - 1;
    let (inner, inner_st) = (dims[last], pst[last]);
    let mut idx = vec![0usize; last];
    let mut base = 0usize;
    loop {
        if inner_st == 1 {
            out.extend(src[base..base + inner].iter().map(|&v| f(v)));
        } else {
            out.extend((0..inner).map(|j| f(src[base + j * inner_st])));
        }
        // Advance the odometer over the outer dims.
        let mut d = last;
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            base += pst[d];
            if idx[d] < dims[d] {
                break;
            }
            base -= pst[d] * dims[d];
            idx[d] = 0;
        }
    }
}

/// A `dot_general` reduced to `b` products of `[m, k] x [k, n]`.
struct DotSpec {
    b: usize,
    m: usize,
    k: usize,
    n: usize,
    lshape: Vec<usize>,
    rshape: Vec<usize>,
    /// lhs dims grouped as (batch, free, contracting).
    lgroups: [Vec<usize>; 3],
    /// rhs dims grouped as (batch, contracting, free).
    rgroups: [Vec<usize>; 3],
}

impl DotSpec {
    fn new(
        l: &[usize],
        r: &[usize],
        lc: &[usize],
        rc: &[usize],
        lb: &[usize],
        rb: &[usize],
    ) -> Self {
        let free = |shape: &[usize], c: &[usize], b: &[usize]| -> Vec<usize> {
            (0..shape.len()).filter(|d| !c.contains(d) && !b.contains(d)).collect()
        };
        let lfree = free(l, lc, lb);
        let rfree = free(r, rc, rb);
        let prod =
            |shape: &[usize], dims: &[usize]| dims.iter().map(|&d| shape[d]).product::<usize>();
        let build = |order: &[usize]| {
            let lcs: Vec<usize> = order.iter().map(|&i| lc[i]).collect();
            let rcs: Vec<usize> = order.iter().map(|&i| rc[i]).collect();
            let lg = [lb.to_vec(), lfree.clone(), lcs];
            let rg = [rb.to_vec(), rcs, rfree.clone()];
            let score =
                group_strides(&lg, l).is_some() as u8 + group_strides(&rg, r).is_some() as u8;
            (score, lg, rg)
        };
        let nc = lc.len();
        let mut best = build(&(0..nc).collect::<Vec<_>>());
        if nc > 1 && best.0 < 2 {
            // The contraction pairs may be summed in any order: try the lhs and the rhs
            // memory orders, keeping one that lets more operands be used in place.
            for key in [lc, rc] {
                let mut order: Vec<usize> = (0..nc).collect();
                order.sort_by_key(|&i| key[i]);
                let cand = build(&order);
                if cand.0 > best.0 {
                    best = cand;
                }
            }
        }
        let (_, lgroups, rgroups) = best;
        DotSpec {
            b: prod(l, lb),
            m: prod(l, &lfree),
            k: prod(l, lc),
            n: prod(r, &rfree),
            lshape: l.to_vec(),
            rshape: r.to_vec(),
            lgroups,
            rgroups,
        }
    }
}

/// The operand as strided matrices over `groups` (batch, rows, columns): in place if the
/// row and the column groups each merge into one stride, else a packed row-major copy.
fn prep<'a, T: Copy + Send + Sync>(
    data: &'a [T],
    shape: &[usize],
    groups: &[Vec<usize>; 3],
) -> (Cow<'a, [T]>, Layout) {
    if let Some([rs, cs]) = group_strides(groups, shape) {
        return (Cow::Borrowed(data), Layout { batch: batch_offsets(&groups[0], shape), rs, cs });
    }
    let perm: Vec<usize> = groups.iter().flatten().copied().collect();
    let size = |g: &Vec<usize>| g.iter().map(|&d| shape[d]).product::<usize>();
    let (s0, s1, s2) = (size(&groups[0]), size(&groups[1]), size(&groups[2]));
    let batch = (0..s0).map(|bi| bi * s1 * s2).collect();
    (Cow::Owned(permute_copy(data, shape, &perm, |v| v)), Layout { batch, rs: s2, cs: 1 })
}

/// Both operands of `s` as strided matrices ([`prep`]), every product's views checked to
/// lie inside their data.
#[allow(clippy::type_complexity)] // two (data, layout) pairs
fn views<'a, T: Copy + Send + Sync>(
    a: &'a [T],
    b: &'a [T],
    s: &DotSpec,
) -> ((Cow<'a, [T]>, Layout), (Cow<'a, [T]>, Layout)) {
    let (la, ll) = prep(a, &s.lshape, &s.lgroups);
    let (rb, rl) = prep(b, &s.rshape, &s.rgroups);
    assert!(
        (0..s.b)
            .all(|bi| ll.mat(bi).fits(la.len(), s.m, s.k) && rl.mat(bi).fits(rb.len(), s.k, s.n)),
        "matmul view out of bounds"
    );
    ((la, ll), (rb, rl))
}

fn dot_float<T: GemmFloat>(a: &[T], b: &[T], s: &DotSpec, epi: Epi<'_, T>) -> Vec<T> {
    let (nb, m, k, n) = (s.b, s.m, s.k, s.n);
    let len = nb * m * n;
    if len == 0 || k == 0 {
        let mut out = vec![T::ZERO; len];
        finish(&mut out, 0, epi);
        return out;
    }
    let ((la, ll), (rb, rl)) = views(a, b, s);
    let (lm, rm) = (|bi: usize| ll.mat(bi), |bi: usize| rl.mat(bi));
    // Not zero-filled: every product overwrites its whole block (a 4 MB output's memset
    // was 3% of a transformer step).
    let mut out: Vec<T> = Vec::with_capacity(len);
    let dst = SharedMut(out.as_mut_ptr());
    let per = m * n * k;
    // Writes product `bi` into its block and hands the block to the epilogue.
    let run = |bi: usize, par: Parallelism| {
        // SAFETY: the assert above bounds both input views; block `bi` (`m * n` elements
        // from `bi * m * n`, inside the capacity) is written by this call only, and it is
        // fully initialized when the slice is formed.
        unsafe {
            let d = dst.ptr().add(bi * m * n);
            matmul_unchecked(
                (m, n, k),
                d,
                MatRef::new(0, n, 1),
                la.as_ptr(),
                lm(bi),
                rb.as_ptr(),
                rm(bi),
                par,
            );
            finish(std::slice::from_raw_parts_mut(d, m * n), bi * m * n, epi);
        }
    };
    let threads = rayon::current_num_threads();
    let split_k = (k / SPLIT_K_MIN).min(threads);
    // Every branch writes all `len` outputs; it returns whether it also ran the epilogue.
    let epi_done = if nb > 1 && (per < BATCH_PAR_MAX || nb >= threads) && nb * per >= LOOP_PAR_MIN {
        (0..nb).into_par_iter().for_each(|bi| run(bi, Parallelism::None));
        true
    } else if nb == 1 && threads > 1 && per >= GEMM_PAR_MIN && 2 * m <= n {
        // SAFETY: `dst` has capacity for the `m * n` outputs, all overwritten.
        unsafe { matmul_cols((m, n, k), dst.ptr(), (&la, lm(0)), (&rb, rm(0)), threads) };
        // Not inside the column blocks: their rows are short runs, and the epilogue's
        // per-run overhead made it 5-10% slower (measured on [128, 512] x [512, 512]).
        false
    } else if nb == 1
        && threads > 1
        && epi.is_some()
        && m * n >= ROWS_EPI_MIN
        && k <= 4 * n
        && m >= 4 * threads * 32
    {
        // Tall products whose output is large (it would leave L2 before the epilogue
        // reads it) and whose rhs is cheap to repack per block (`k <= 4 n`); at least two
        // blocks per thread, each of whole rows, at least 32 and about ROWS_EPI_BLOCK
        // elements.
        let rows = (ROWS_EPI_BLOCK / n).max(32).min(m.div_ceil(2 * threads));
        // SAFETY: `dst` has capacity for the `m * n` outputs, all overwritten.
        unsafe { matmul_rows((m, n, k), dst.ptr(), (&la, lm(0)), (&rb, rm(0)), rows, epi) };
        true
    } else if nb == 1 && split_k > 1 && per >= GEMM_PAR_MIN && k >= 2 * m.max(n) {
        // SAFETY: `dst` has capacity for the `m * n` outputs, all overwritten.
        unsafe { matmul_split_k((m, n, k), dst.ptr(), (&la, lm(0)), (&rb, rm(0)), split_k, epi) };
        true
    } else {
        let par = if per >= GEMM_PAR_MIN { Parallelism::Rayon(0) } else { Parallelism::None };
        (0..nb).for_each(|bi| run(bi, par));
        true
    };
    // SAFETY: every branch above wrote all `len` elements.
    unsafe { out.set_len(len) };
    if !epi_done {
        finish(&mut out, 0, epi);
    }
    out
}

/// [`dot_float`] writing product `i` to `dst.mat(i)` of a fresh `b * m * n` output (the
/// products' matrices cover it exactly once), without an epilogue.
fn dot_float_into<T: GemmFloat>(a: &[T], b: &[T], s: &DotSpec, dst: &Layout) -> Vec<T> {
    let (nb, m, k, n) = (s.b, s.m, s.k, s.n);
    let len = nb * m * n;
    if len == 0 || k == 0 {
        return vec![T::ZERO; len];
    }
    let ((la, ll), (rb, rl)) = views(a, b, s);
    assert!((0..nb).all(|bi| dst.mat(bi).fits(len, m, n)), "matmul output view out of bounds");
    let mut out: Vec<T> = Vec::with_capacity(len);
    let d = SharedMut(out.as_mut_ptr());
    let per = m * n * k;
    let run = |bi: usize, par: Parallelism| {
        // SAFETY: `views` and the assert above bound all three views; the caller's layout
        // gives the products disjoint output matrices, so block `bi` is written by this
        // call only.
        unsafe {
            matmul_unchecked(
                (m, n, k),
                d.ptr(),
                dst.mat(bi),
                la.as_ptr(),
                ll.mat(bi),
                rb.as_ptr(),
                rl.mat(bi),
                par,
            )
        }
    };
    if nb > 1
        && nb * per >= LOOP_PAR_MIN
        && (per < BATCH_PAR_MAX || nb >= rayon::current_num_threads())
    {
        (0..nb).into_par_iter().for_each(|bi| run(bi, Parallelism::None));
    } else {
        let par = if per >= GEMM_PAR_MIN { Parallelism::Rayon(0) } else { Parallelism::None };
        (0..nb).for_each(|bi| run(bi, par));
    }
    // SAFETY: the products' matrices cover all `len` elements (the caller's layout).
    unsafe { out.set_len(len) };
    out
}

/// Where each product of a `dot_general` lands when its output (natural order: `nb` batch,
/// `nl` lhs free, `nr` rhs free dims of `shape`) is transposed by `perm`, or `None` if
/// the lhs free dims or the rhs free dims do not stay contiguous relative to each other.
fn transposed_out_layout(
    shape: &[usize],
    (nb, nl): (usize, usize),
    perm: &[usize],
) -> Option<Layout> {
    let tshape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let tst = row_major_strides(&tshape);
    // Stride of natural dim d in the transposed output.
    let mut st = vec![0; shape.len()];
    for (i, &p) in perm.iter().enumerate() {
        st[p] = tst[i];
    }
    let r = shape.len();
    let rows: Vec<usize> = (nb..nb + nl).collect();
    let cols: Vec<usize> = (nb + nl..r).collect();
    let rs = merged_stride(&rows, shape, &st)?;
    let cs = merged_stride(&cols, shape, &st)?;
    let batch = strided_offsets(&(0..nb).collect::<Vec<_>>(), shape, &st);
    Some(Layout { batch, rs, cs })
}

/// Whether [`dot_general_transposed`] can write a `dot_general`'s output transposed by
/// `perm` in place: a float product with batch dims whose free dims of each side stay
/// contiguous in the transposed output.
pub fn dot_writes_transposed(
    out_shape: &[usize],
    (nb, nl): (usize, usize),
    perm: &[usize],
) -> bool {
    nb > 0 && transposed_out_layout(out_shape, (nb, nl), perm).is_some()
}

/// `transpose(dot_general(l, r, ..), perm)` in one pass: each product is written straight
/// to its place in the transposed output (the attention heads' outputs, written back
/// between the sequence and the features). `out_shape` is the untransposed output's
/// shape; the layout must pass [`dot_writes_transposed`].
#[allow(clippy::too_many_arguments)] // mirrors the primitive's parameters
pub fn dot_general_transposed(
    l: Operand<'_>,
    r: Operand<'_>,
    lhs_contract: &[usize],
    rhs_contract: &[usize],
    lhs_batch: &[usize],
    rhs_batch: &[usize],
    out_shape: &[usize],
    perm: &[usize],
) -> Storage {
    let s = DotSpec::new(l.shape, r.shape, lhs_contract, rhs_contract, lhs_batch, rhs_batch);
    let nl = l.shape.len() - lhs_contract.len() - lhs_batch.len();
    let dl = transposed_out_layout(out_shape, (lhs_batch.len(), nl), perm)
        .expect("dot_general_transposed: the layout was checked by dot_writes_transposed");
    match (l.data, r.data) {
        (Storage::F32(a), Storage::F32(b)) => Storage::F32(dot_float_into(a, b, &s, &dl)),
        (Storage::F64(a), Storage::F64(b)) => Storage::F64(dot_float_into(a, b, &s, &dl)),
        (a, b) => unreachable!("dot_general_transposed on {} and {}", a.dtype(), b.dtype()),
    }
}

/// Element types contracted by the plain triple loop (wrapping arithmetic).
trait IntDot: StorageElement {
    const ZERO: Self;
    fn mul_add(self, a: Self, b: Self) -> Self;
}

macro_rules! int_dot {
    ($($t:ty),*) => {$(
        impl IntDot for $t {
            const ZERO: Self = 0;
            #[inline]
            fn mul_add(self, a: Self, b: Self) -> Self {
                self.wrapping_add(a.wrapping_mul(b))
            }
        }
    )*};
}
int_dot!(u8, u32, i32, i64);

impl IntDot for bool {
    const ZERO: Self = false;
    #[inline]
    fn mul_add(self, a: Self, b: Self) -> Self {
        self | (a & b)
    }
}

fn dot_int<T: IntDot>(a: &[T], b: &[T], s: &DotSpec) -> Vec<T> {
    let (nb, m, k, n) = (s.b, s.m, s.k, s.n);
    let mut out = vec![T::ZERO; nb * m * n];
    if out.is_empty() || k == 0 {
        return out;
    }
    let (la, ll) = prep(a, &s.lshape, &s.lgroups);
    let (rb, rl) = prep(b, &s.rshape, &s.rgroups);
    let row = |r: usize, dst: &mut [T]| {
        let (bi, i) = (r / m, r % m);
        let lbase = ll.batch[bi] + i * ll.rs;
        let rbase = rl.batch[bi];
        for p in 0..k {
            let x = la[lbase + p * ll.cs];
            let rrow = rbase + p * rl.rs;
            for (j, o) in dst.iter_mut().enumerate() {
                *o = o.mul_add(x, rb[rrow + j * rl.cs]);
            }
        }
    };
    if nb * m * n * k >= LOOP_PAR_MIN {
        out.par_chunks_mut(n).enumerate().for_each(|(r, dst)| row(r, dst));
    } else {
        out.chunks_mut(n).enumerate().for_each(|(r, dst)| row(r, dst));
    }
    out
}

/// Whether [`dot_general`] reads each operand in place (as strided matrices) rather than
/// copying it first, for operands of shapes `l` and `r` with these dimension numbers.
pub fn dot_reads_in_place(
    l: &[usize],
    r: &[usize],
    (lc, rc): (&[usize], &[usize]),
    (lb, rb): (&[usize], &[usize]),
) -> [bool; 2] {
    let s = DotSpec::new(l, r, lc, rc, lb, rb);
    [group_strides(&s.lgroups, l).is_some(), group_strides(&s.rgroups, r).is_some()]
}

fn to_f32<T: Copy>(v: &[T], f: impl Fn(T) -> f32) -> Vec<f32> {
    v.iter().map(|&x| f(x)).collect()
}

/// General tensor contraction (`lax.dot_general`).
///
/// Output dims are the batch dims, then the lhs free dims, then the rhs free dims (each in
/// operand order). Floats run on `gemm` (`f16`/`bf16` accumulate in `f32`); integers use
/// wrapping arithmetic. `out_shape` is the shape from abstract evaluation. `epi` (f32 and
/// f64 only) runs on each part of the output as soon as it is final.
#[allow(clippy::too_many_arguments)] // mirrors the primitive's parameters
pub fn dot_general(
    l: Operand<'_>,
    r: Operand<'_>,
    lhs_contract: &[usize],
    rhs_contract: &[usize],
    lhs_batch: &[usize],
    rhs_batch: &[usize],
    out_shape: &[usize],
    epi: Option<Epilogue<'_>>,
) -> Storage {
    let s = DotSpec::new(l.shape, r.shape, lhs_contract, rhs_contract, lhs_batch, rhs_batch);
    debug_assert_eq!(out_shape.iter().product::<usize>(), s.b * s.m * s.n);
    assert!(
        epi.is_none() || matches!(l.data, Storage::F32(_) | Storage::F64(_)),
        "epilogues run on f32 and f64 products"
    );
    match (l.data, r.data) {
        (Storage::F32(a), Storage::F32(b)) => {
            Storage::F32(dot_float(a, b, &s, epi.and_then(f32::epilogue)))
        }
        (Storage::F64(a), Storage::F64(b)) => {
            Storage::F64(dot_float(a, b, &s, epi.and_then(f64::epilogue)))
        }
        (Storage::F16(a), Storage::F16(b)) => {
            let out = dot_float(&to_f32(a, f16::to_f32), &to_f32(b, f16::to_f32), &s, None);
            Storage::F16(out.into_iter().map(f16::from_f32).collect())
        }
        (Storage::BF16(a), Storage::BF16(b)) => {
            let out = dot_float(&to_f32(a, bf16::to_f32), &to_f32(b, bf16::to_f32), &s, None);
            Storage::BF16(out.into_iter().map(bf16::from_f32).collect())
        }
        (Storage::U8(a), Storage::U8(b)) => Storage::U8(dot_int(a, b, &s)),
        (Storage::U32(a), Storage::U32(b)) => Storage::U32(dot_int(a, b, &s)),
        (Storage::I32(a), Storage::I32(b)) => Storage::I32(dot_int(a, b, &s)),
        (Storage::I64(a), Storage::I64(b)) => Storage::I64(dot_int(a, b, &s)),
        (Storage::Bool(a), Storage::Bool(b)) => Storage::Bool(dot_int(a, b, &s)),
        (a, b) => unreachable!(
            "dot_general: dtypes {} and {} differ (checked by abstract_eval)",
            a.dtype(),
            b.dtype()
        ),
    }
}

// ---- conv -------------------------------------------------------------------------------

/// The geometry of one convolution, with the input index of every (output, tap) pair.
struct ConvGeom {
    n: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    k_sp: Vec<usize>,
    out_sp: Vec<usize>,
    /// Element strides of the spatial dims of the lhs.
    in_st: Vec<usize>,
    /// Element stride of the batch dim of the lhs.
    in_n_st: usize,
    /// Per spatial dim: `taps[i][o * k_sp[i] + k]` is the input index read by output `o`
    /// at kernel tap `k`, or -1 where it falls on padding or between dilated inputs.
    taps: Vec<Vec<isize>>,
    kprod: usize,
    oprod: usize,
}

impl ConvGeom {
    #[allow(clippy::too_many_arguments)] // mirrors the primitive's parameters
    fn new(
        lshape: &[usize],
        rshape: &[usize],
        strides: &[usize],
        padding: &[(i64, i64)],
        lhs_dil: &[usize],
        rhs_dil: &[usize],
        groups: usize,
        out_shape: &[usize],
    ) -> Self {
        let nd = lshape.len();
        let ns = nd - 2;
        let in_sp = lshape[1..nd - 1].to_vec();
        let k_sp = rshape[..ns].to_vec();
        let out_sp = out_shape[1..nd - 1].to_vec();
        let (cin, cout) = (lshape[nd - 1], rshape[nd - 1]);
        let st = row_major_strides(lshape);
        let taps = (0..ns)
            .map(|i| {
                let mut t = Vec::with_capacity(out_sp[i] * k_sp[i]);
                for o in 0..out_sp[i] {
                    for k in 0..k_sp[i] {
                        let p = (o * strides[i] + k * rhs_dil[i]) as i64 - padding[i].0;
                        let ld = lhs_dil[i] as i64;
                        let ok = p >= 0 && p % ld == 0 && p / ld < in_sp[i] as i64;
                        t.push(if ok { (p / ld) as isize } else { -1 });
                    }
                }
                t
            })
            .collect();
        ConvGeom {
            n: lshape[0],
            cin,
            cout,
            groups,
            cin_g: cin / groups,
            cout_g: cout / groups,
            kprod: k_sp.iter().product(),
            oprod: out_sp.iter().product(),
            k_sp,
            out_sp,
            in_st: st[1..nd - 1].to_vec(),
            in_n_st: st[0],
            taps,
        }
    }

    /// Output rows (`N * prod(out spatial)`).
    fn rows(&self) -> usize {
        self.n * self.oprod
    }
}

/// Walks consecutive output rows `(n, o...)` and the input offsets of their kernel taps.
struct RowCursor {
    n: usize,
    o: Vec<usize>,
    k: Vec<usize>,
}

impl RowCursor {
    fn new(g: &ConvGeom, row: usize) -> Self {
        let mut rest = row % g.oprod.max(1);
        let mut o = vec![0; g.out_sp.len()];
        for i in (0..o.len()).rev() {
            o[i] = rest % g.out_sp[i];
            rest /= g.out_sp[i];
        }
        RowCursor { n: row / g.oprod.max(1), o, k: vec![0; g.k_sp.len()] }
    }

    fn advance(&mut self, g: &ConvGeom) {
        if next_index(&mut self.o, &g.out_sp) {
            self.n += 1;
        }
    }

    /// With two spatial dims: the input index read by each kernel tap of the current row
    /// along each dim (-1 for padding) and the two dims' element strides.
    #[inline]
    fn taps2<'g>(&self, g: &'g ConvGeom) -> Option<([&'g [isize]; 2], [isize; 2])> {
        let ([t0, t1], [k0, k1], [o0, o1], [s0, s1]) =
            (&g.taps[..], &g.k_sp[..], &self.o[..], &g.in_st[..])
        else {
            return None;
        };
        Some(([&t0[o0 * k0..][..*k0], &t1[o1 * k1..][..*k1]], [*s0 as isize, *s1 as isize]))
    }

    /// Calls `f(tap, len, offset)` for runs of `len` consecutive kernel taps of the current
    /// row (row-major order) that read consecutive input positions along the last spatial
    /// dim (`len * C_in` contiguous elements from `offset`), or that all fall on padding
    /// (`None`). Runs are found for two spatial dims; other ranks give single taps.
    #[inline]
    fn for_each_run(&mut self, g: &ConvGeom, mut f: impl FnMut(usize, usize, Option<usize>)) {
        let base = (self.n * g.in_n_st) as isize;
        let Some(([r0, r1], [s0, s1])) = self.taps2(g) else {
            return self.for_each_tap(g, |tap, off| f(tap, 1, off));
        };
        let k1 = r1.len();
        for (i, &a) in r0.iter().enumerate() {
            let mut j = 0;
            while j < r1.len() {
                let mut e = j + 1;
                if a < 0 || r1[j] < 0 {
                    while e < r1.len() && (a < 0 || r1[e] < 0) {
                        e += 1;
                    }
                    f(i * k1 + j, e - j, None);
                } else {
                    while e < r1.len() && r1[e] >= 0 && r1[e] == r1[e - 1] + 1 {
                        e += 1;
                    }
                    let off = base + a * s0 + r1[j] * s1;
                    f(i * k1 + j, e - j, Some(off as usize));
                }
                j = e;
            }
        }
    }

    /// Calls `f(tap, offset)` for every kernel tap of the current row in row-major order;
    /// `offset` is the lhs element offset of channel 0, `None` for a padding tap.
    #[inline]
    fn for_each_tap(&mut self, g: &ConvGeom, mut f: impl FnMut(usize, Option<usize>)) {
        let base = (self.n * g.in_n_st) as isize;
        if let Some(([r0, r1], [s0, s1])) = self.taps2(g) {
            // Two spatial dims (the common case) as two plain loops.
            for (i, &a) in r0.iter().enumerate() {
                for (j, &b) in r1.iter().enumerate() {
                    let off = base + a * s0 + b * s1;
                    f(i * r1.len() + j, (a >= 0 && b >= 0).then_some(off as usize));
                }
            }
            return;
        }
        self.k.fill(0);
        for tap in 0..g.kprod {
            let mut off = base;
            let mut valid = true;
            for i in 0..self.k.len() {
                let t = g.taps[i][self.o[i] * g.k_sp[i] + self.k[i]];
                if t < 0 {
                    valid = false;
                    break;
                }
                off += t * g.in_st[i] as isize;
            }
            f(tap, valid.then_some(off as usize));
            next_index(&mut self.k, &g.k_sp);
        }
    }
}

/// Fills `buf` with the im2col matrix of output rows `r0..r0 + rows`: one row per output
/// position laid out `[group, tap, C_in / groups]`.
fn im2col<T: GemmFloat>(x: &[T], g: &ConvGeom, r0: usize, rows: usize, buf: &mut Vec<T>) {
    let kc = g.kprod * g.cin;
    let kg = g.kprod * g.cin_g;
    buf.resize(rows * kc, T::ZERO);
    if g.cin == 1 && g.taps.len() == 2 {
        im2col_line_c1(x, g, r0, rows, &mut buf[..rows * kc]);
        return;
    }
    let mut cur = RowCursor::new(g, r0);
    if g.cin_g == 1 && g.groups == 1 {
        // One element per tap (a first layer): plain loads, not a `memcpy` call each.
        for row in buf[..rows * kc].chunks_exact_mut(kc) {
            cur.for_each_tap(g, |tap, off| row[tap] = off.map_or(T::ZERO, |off| x[off]));
            cur.advance(g);
        }
        return;
    }
    if g.groups == 1 {
        // Runs of taps along the last spatial dim are one contiguous copy each (a row of
        // a 3x3 stride-1 kernel: 3 * C_in elements).
        let cin = g.cin;
        for row in buf[..rows * kc].chunks_exact_mut(kc) {
            cur.for_each_run(g, |tap, len, off| {
                let dst = &mut row[tap * cin..(tap + len) * cin];
                match off {
                    Some(off) => dst.copy_from_slice(&x[off..off + dst.len()]),
                    None => dst.fill(T::ZERO),
                }
            });
            cur.advance(g);
        }
        return;
    }
    for row in buf[..rows * kc].chunks_exact_mut(kc) {
        cur.for_each_tap(g, |tap, off| {
            for gi in 0..g.groups {
                let dst = &mut row[gi * kg + tap * g.cin_g..][..g.cin_g];
                match off {
                    Some(off) => dst.copy_from_slice(&x[off + gi * g.cin_g..][..g.cin_g]),
                    None => dst.fill(T::ZERO),
                }
            }
        });
        cur.advance(g);
    }
}

/// [`im2col`] for one input channel and two spatial dims, a line of outputs (fixed batch
/// and first spatial index) at a time: per kernel tap one pass along the line, so the tap
/// tables are read once per line, not once per output row (a first layer's 9 taps per row
/// left the per-row walk dominating).
fn im2col_line_c1<T: GemmFloat>(x: &[T], g: &ConvGeom, r0: usize, rows: usize, buf: &mut [T]) {
    let (kc, (o1n, k0, k1)) = (g.kprod, (g.out_sp[1], g.k_sp[0], g.k_sp[1]));
    let (s0, s1) = (g.in_st[0] as isize, g.in_st[1] as isize);
    let mut r = r0;
    while r < r0 + rows {
        let (n, rem) = (r / g.oprod, r % g.oprod);
        let (o0, o1s) = (rem / o1n, rem % o1n);
        let o1e = o1n.min(o1s + (r0 + rows - r));
        let base = (n * g.in_n_st) as isize;
        let line = &mut buf[(r - r0) * kc..(r - r0 + o1e - o1s) * kc];
        let rows0 = &g.taps[0][o0 * k0..][..k0];
        for (out, o1) in line.chunks_exact_mut(kc).zip(o1s..o1e) {
            let t1 = &g.taps[1][o1 * k1..][..k1];
            for (dst, &a) in out.chunks_exact_mut(k1).zip(rows0) {
                let row = base + a * s0;
                for (v, &b) in dst.iter_mut().zip(t1) {
                    *v = if a < 0 || b < 0 { T::ZERO } else { x[(row + b * s1) as usize] };
                }
            }
        }
        r += o1e - o1s;
    }
}

/// im2col + one `gemm` per group, over blocks of output rows. Returns the output, every
/// element written by a `gemm` (the buffer is not zeroed first: that pass cost a tenth of
/// a first layer's forward convolution).
fn conv_im2col<T: GemmFloat>(x: &[T], w: &[T], g: &ConvGeom, epi: Epi<'_, T>) -> Vec<T> {
    let rows = g.rows();
    let kc = g.kprod * g.cin;
    let kg = g.kprod * g.cin_g;
    assert!(
        rows > 0 && g.cout > 0 && kg > 0 && w.len() >= kg * g.cout,
        "conv_im2col: an empty product or short kernel"
    );
    let threads = rayon::current_num_threads();
    let mut rb = (IM2COL_BLOCK / kc.max(1)).clamp(64, 4096);
    if rows.div_ceil(rb) < 2 * threads {
        rb = rows.div_ceil(2 * threads).max(32);
    }
    // Whole rounds of blocks: 5 blocks on 2 threads would leave one idle for a fifth of
    // the work (the weight gradient of a 3x3 convolution has few, long rows).
    let rounds = rows.div_ceil(rb).div_ceil(threads);
    if rounds > 1 && rounds < 8 {
        rb = rows.div_ceil(rounds * threads);
    }
    let rb = rb.min(rows);
    let nblocks = rows.div_ceil(rb);
    let len = rows * g.cout;
    let mut out: Vec<T> = Vec::with_capacity(len);
    let base = SharedMut(out.as_mut_ptr());
    let block = |buf: &mut Vec<T>, bi: usize, par: Parallelism| {
        let r0 = bi * rb;
        let nr = rb.min(rows - r0);
        im2col(x, g, r0, nr, buf);
        // SAFETY: block `bi` covers output rows `r0..r0 + nr` (inside the capacity), which
        // no other block touches; each group's `gemm` writes its `cout_g` columns of them
        // (`kg > 0`, so it overwrites), and the groups together cover every column. The
        // im2col buffer holds `nr x kc` elements and `w` at least `kg x cout`.
        let dst = unsafe {
            let dst = base.ptr().add(r0 * g.cout);
            for gi in 0..g.groups {
                matmul_unchecked(
                    (nr, g.cout_g, kg),
                    dst,
                    MatRef::new(gi * g.cout_g, g.cout, 1),
                    buf.as_ptr(),
                    MatRef::new(gi * kg, kc, 1),
                    w.as_ptr(),
                    MatRef::new(gi * g.cout_g, g.cout, 1),
                    par,
                );
            }
            std::slice::from_raw_parts_mut(dst, nr * g.cout)
        };
        finish(dst, r0 * g.cout, epi);
    };
    if nblocks >= threads && threads > 1 {
        (0..nblocks)
            .into_par_iter()
            .for_each_init(Vec::new, |buf, bi| block(buf, bi, Parallelism::None));
    } else {
        let par = if rb * kg * g.cout_g >= GEMM_PAR_MIN {
            Parallelism::Rayon(0)
        } else {
            Parallelism::None
        };
        let mut buf = Vec::new();
        for bi in 0..nblocks {
            block(&mut buf, bi, par);
        }
    }
    // SAFETY: the blocks cover rows `0..rows`, all of whose elements were written above.
    unsafe { out.set_len(len) };
    out
}

/// Direct accumulation for grouped convolutions with few channels per group (depthwise),
/// where per-group matrix products would be too thin for `gemm`.
fn conv_direct<T: GemmFloat>(x: &[T], w: &[T], g: &ConvGeom, out: &mut [T]) {
    let (cin, cout, cin_g, cout_g) = (g.cin, g.cout, g.cin_g, g.cout_g);
    let rows_per_task = (4096 / (cout * g.kprod).max(1)).max(1);
    let task = |ti: usize, dst: &mut [T]| {
        let mut cur = RowCursor::new(g, ti * rows_per_task);
        for orow in dst.chunks_exact_mut(cout) {
            cur.for_each_tap(g, |tap, off| {
                let Some(off) = off else { return };
                let xin = &x[off..off + cin];
                let wk = &w[tap * cin_g * cout..][..cin_g * cout];
                if cin_g == 1 && cout_g == 1 {
                    for ((o, &a), &b) in orow.iter_mut().zip(xin).zip(wk) {
                        *o = *o + a * b;
                    }
                } else {
                    for gi in 0..g.groups {
                        let og = &mut orow[gi * cout_g..][..cout_g];
                        for ci in 0..cin_g {
                            let a = xin[gi * cin_g + ci];
                            let wrow = &wk[ci * cout + gi * cout_g..][..cout_g];
                            for (o, &b) in og.iter_mut().zip(wrow) {
                                *o = *o + a * b;
                            }
                        }
                    }
                }
            });
            cur.advance(g);
        }
    };
    let work = out.len() * g.kprod * cin_g;
    if work >= LOOP_PAR_MIN {
        out.par_chunks_mut(rows_per_task * cout).enumerate().for_each(|(ti, d)| task(ti, d));
    } else {
        out.chunks_mut(rows_per_task * cout).enumerate().for_each(|(ti, d)| task(ti, d));
    }
}

#[allow(clippy::too_many_arguments)] // mirrors the primitive's parameters
fn conv_float<T: GemmFloat>(
    x: &[T],
    w: &[T],
    lshape: &[usize],
    rshape: &[usize],
    strides: &[usize],
    padding: &[(i64, i64)],
    lhs_dil: &[usize],
    rhs_dil: &[usize],
    groups: usize,
    out_shape: &[usize],
    epi: Epi<'_, T>,
) -> Vec<T> {
    let g = ConvGeom::new(lshape, rshape, strides, padding, lhs_dil, rhs_dil, groups, out_shape);
    if g.rows() * g.cout == 0 || g.kprod * g.cin_g == 0 {
        return vec![T::ZERO; g.rows() * g.cout];
    }
    let ns = g.k_sp.len();
    let pointwise = g.kprod == 1
        && (0..ns).all(|i| {
            strides[i] == 1
                && padding[i] == (0, 0)
                && lhs_dil[i] == 1
                && g.out_sp[i] == lshape[1 + i]
        });
    let thin_groups = g.groups > 1 && g.cin_g * g.cout_g < 256;
    if !thin_groups && !pointwise {
        return conv_im2col(x, w, &g, epi);
    }
    let mut out = vec![T::ZERO; g.rows() * g.cout];
    if thin_groups {
        conv_direct(x, w, &g, &mut out);
        finish(&mut out, 0, epi);
    } else {
        // A 1x1 convolution is a plain product [N * spatial, C_in] x [C_in, C_out] per group.
        let rows = g.rows();
        let par = if rows * g.cin_g * g.cout_g >= GEMM_PAR_MIN {
            Parallelism::Rayon(0)
        } else {
            Parallelism::None
        };
        for gi in 0..g.groups {
            matmul(
                (rows, g.cout_g, g.cin_g),
                &mut out,
                MatRef::new(gi * g.cout_g, g.cout, 1),
                x,
                MatRef::new(gi * g.cin_g, g.cin, 1),
                w,
                MatRef::new(gi * g.cout_g, g.cout, 1),
                par,
            );
        }
        finish(&mut out, 0, epi);
    }
    out
}

/// N-d convolution (`lax.conv_general_dilated`, cross-correlation) in channels-last layout.
///
/// lhs `[N, spatial.., C_in]`, rhs `[spatial.., C_in / groups, C_out]`, output
/// `[N, out spatial.., C_out]` (`out_shape`, from abstract evaluation). `padding` may be
/// negative (crops); `lhs_dilation` inserts `d - 1` zeros between input elements and
/// `rhs_dilation` spreads the kernel taps. Runs im2col + `gemm` (a single `gemm` for 1x1
/// kernels, a direct kernel for depthwise-like grouped convolutions); `f16`/`bf16` compute
/// in `f32`. `epi` (f32 and f64 only) runs on each part of the output as soon as it is
/// final.
#[allow(clippy::too_many_arguments)] // mirrors the primitive's parameters
pub fn conv(
    l: Operand<'_>,
    r: Operand<'_>,
    strides: &[usize],
    padding: &[(i64, i64)],
    lhs_dilation: &[usize],
    rhs_dilation: &[usize],
    feature_group_count: usize,
    out_shape: &[usize],
    epi: Option<Epilogue<'_>>,
) -> Storage {
    assert!(
        epi.is_none() || matches!(l.data, Storage::F32(_) | Storage::F64(_)),
        "epilogues run on f32 and f64 convolutions"
    );
    let run = |x: &[f32], w: &[f32], epi| {
        conv_float(
            x,
            w,
            l.shape,
            r.shape,
            strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            feature_group_count,
            out_shape,
            epi,
        )
    };
    match (l.data, r.data) {
        (Storage::F32(x), Storage::F32(w)) => Storage::F32(run(x, w, epi.and_then(f32::epilogue))),
        (Storage::F64(x), Storage::F64(w)) => Storage::F64(conv_float(
            x,
            w,
            l.shape,
            r.shape,
            strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            feature_group_count,
            out_shape,
            epi.and_then(f64::epilogue),
        )),
        (Storage::F16(x), Storage::F16(w)) => {
            let out = run(&to_f32(x, f16::to_f32), &to_f32(w, f16::to_f32), None);
            Storage::F16(out.into_iter().map(f16::from_f32).collect())
        }
        (Storage::BF16(x), Storage::BF16(w)) => {
            let out = run(&to_f32(x, bf16::to_f32), &to_f32(w, bf16::to_f32), None);
            Storage::BF16(out.into_iter().map(bf16::from_f32).collect())
        }
        (a, b) => unreachable!(
            "conv: operands must be floats of one dtype, got {} and {} (checked by abstract_eval)",
            a.dtype(),
            b.dtype()
        ),
    }
}

/// The gradient of a convolution with respect to its kernel, from the forward input `x`
/// `[N, spatial.., C]` and the output gradient `g` `[N, out spatial.., O]`: the kernel-shaped
/// `[k_sp.., C, O]` sum over `n` and output positions `p` of
/// `x[n, p * strides + t * rhs_dilation - padding_low, c] * g[n, p, o]` for each tap `t`
/// (zero outside `x`). This is what the transpose rule's
/// `transpose(conv(transpose(x), transpose(g)))` computes (with that convolution's window
/// strides as `rhs_dilation` here and its kernel dilation as `strides`), as one product
/// `im2col(x)^T @ g` over the forward im2col, with no transposed copies. The rows of the
/// im2col (the sum) are split across threads, each accumulating its own partial kernel.
pub fn conv_filter_grad(
    x: Operand<'_>,
    g: Operand<'_>,
    strides: &[usize],
    padding: &[(i64, i64)],
    rhs_dilation: &[usize],
    k_sp: &[usize],
) -> Storage {
    let nd = x.shape.len();
    let (cin, cout) = (x.shape[nd - 1], g.shape[nd - 1]);
    let rshape: Vec<usize> = k_sp.iter().copied().chain([cin, cout]).collect();
    let ones = vec![1; nd - 2];
    let geom = ConvGeom::new(x.shape, &rshape, strides, padding, &ones, rhs_dilation, 1, g.shape);
    match (x.data, g.data) {
        (Storage::F32(x), Storage::F32(g)) => Storage::F32(filter_grad(x, g, &geom)),
        (Storage::F64(x), Storage::F64(g)) => Storage::F64(filter_grad(x, g, &geom)),
        (a, b) => unreachable!(
            "conv_filter_grad: f32 or f64 operands of one dtype, got {} and {}",
            a.dtype(),
            b.dtype()
        ),
    }
}

fn filter_grad<T: GemmFloat>(x: &[T], g: &[T], geom: &ConvGeom) -> Vec<T> {
    let (rows, kc, cout) = (geom.rows(), geom.kprod * geom.cin, geom.cout);
    assert_eq!(g.len(), rows * cout, "conv_filter_grad: output gradient of the wrong size");
    if rows == 0 || kc * cout == 0 {
        return vec![T::ZERO; kc * cout];
    }
    let rb = (IM2COL_BLOCK / kc).clamp(64, 4096).min(rows);
    let tasks = rayon::current_num_threads().min(rows.div_ceil(rb)).max(1);
    let per = rows.div_ceil(tasks);
    // Each task sums the rows `t * per ..` into its own `[kc, cout]` partial.
    let partial = |t: usize| {
        let mut acc = vec![T::ZERO; kc * cout];
        let mut buf = Vec::new();
        let (start, end) = (t * per, ((t + 1) * per).min(rows));
        let mut r0 = start;
        while r0 < end {
            let nr = rb.min(end - r0);
            im2col(x, geom, r0, nr, &mut buf);
            // SAFETY: `buf` holds `nr x kc` elements, read transposed (`kc x nr`); `g` rows
            // `r0..r0 + nr` are inside it (`g.len() == rows * cout`); `acc` is this task's
            // own initialized `kc x cout` buffer; `nr > 0`.
            unsafe {
                gemm_unchecked(
                    (kc, cout, nr),
                    acc.as_mut_ptr(),
                    MatRef::new(0, cout, 1),
                    true,
                    buf.as_ptr(),
                    MatRef::new(0, 1, kc),
                    g.as_ptr(),
                    MatRef::new(r0 * cout, cout, 1),
                    Parallelism::None,
                )
            };
            r0 += nr;
        }
        acc
    };
    let parts: Vec<Vec<T>> = (0..tasks).into_par_iter().map(partial).collect();
    let mut parts = parts.into_iter();
    let mut out = parts.next().expect("at least one task");
    for p in parts {
        for (o, v) in out.iter_mut().zip(p) {
            *o = *o + v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aval::Aval;
    use crate::prim::Prim;
    use crate::rules::abstract_eval;

    /// A small deterministic generator (xorshift) for test inputs.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in [-1, 1).
        fn float(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
        fn floats(&mut self, n: usize) -> Vec<f64> {
            (0..n).map(|_| self.float()).collect()
        }
        fn ints(&mut self, n: usize, lo: i64, hi: i64) -> Vec<f64> {
            (0..n).map(|_| (lo + (self.next_u64() % (hi - lo) as u64) as i64) as f64).collect()
        }
    }

    fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
        idx
    }

    fn ravel(idx: &[usize], shape: &[usize]) -> usize {
        idx.iter().zip(shape).fold(0, |acc, (&i, &s)| acc * s + i)
    }

    fn storage<T: StorageElement>(v: &[f64]) -> Storage {
        Storage::from_vec(v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>())
    }

    /// Naive dot_general: every output element sums over every contraction index.
    #[allow(clippy::too_many_arguments)] // mirrors the primitive's parameters
    fn ref_dot<T: Copy>(
        a: &[T],
        ash: &[usize],
        b: &[T],
        bsh: &[usize],
        lc: &[usize],
        rc: &[usize],
        lb: &[usize],
        rb: &[usize],
        zero: T,
        mul_add: impl Fn(T, T, T) -> T,
    ) -> (Vec<T>, Vec<usize>) {
        let lfree: Vec<usize> =
            (0..ash.len()).filter(|d| !lc.contains(d) && !lb.contains(d)).collect();
        let rfree: Vec<usize> =
            (0..bsh.len()).filter(|d| !rc.contains(d) && !rb.contains(d)).collect();
        let mut oshape: Vec<usize> = lb.iter().map(|&d| ash[d]).collect();
        oshape.extend(lfree.iter().map(|&d| ash[d]));
        oshape.extend(rfree.iter().map(|&d| bsh[d]));
        let cshape: Vec<usize> = lc.iter().map(|&d| ash[d]).collect();
        let (ast, bst) = (row_major_strides(ash), row_major_strides(bsh));
        // Offsets of every contraction index in each operand.
        let coffs: Vec<(usize, usize)> = (0..cshape.iter().product())
            .map(|c| {
                let ci = unravel(c, &cshape);
                (0..lc.len())
                    .fold((0, 0), |(x, y), t| (x + ci[t] * ast[lc[t]], y + ci[t] * bst[rc[t]]))
            })
            .collect();
        let osize: usize = oshape.iter().product();
        let mut out = Vec::with_capacity(osize);
        for o in 0..osize {
            let oi = unravel(o, &oshape);
            let (mut la, mut rb_) = (0, 0);
            for t in 0..lb.len() {
                la += oi[t] * ast[lb[t]];
                rb_ += oi[t] * bst[rb[t]];
            }
            for (t, &d) in lfree.iter().enumerate() {
                la += oi[lb.len() + t] * ast[d];
            }
            for (t, &d) in rfree.iter().enumerate() {
                rb_ += oi[lb.len() + lfree.len() + t] * bst[d];
            }
            let mut acc = zero;
            for &(x, y) in &coffs {
                acc = mul_add(acc, a[la + x], b[rb_ + y]);
            }
            out.push(acc);
        }
        (out, oshape)
    }

    type DotCase = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>);

    fn dot_cases() -> Vec<DotCase> {
        let v = |x: &[usize]| x.to_vec();
        vec![
            // plain matmul
            (v(&[5, 7]), v(&[7, 3]), v(&[1]), v(&[0]), v(&[]), v(&[])),
            // both transposed
            (v(&[7, 5]), v(&[3, 7]), v(&[0]), v(&[1]), v(&[]), v(&[])),
            // leading batch
            (v(&[2, 4, 6]), v(&[2, 6, 3]), v(&[2]), v(&[1]), v(&[0]), v(&[0])),
            // batch dims in the middle / at the end
            (v(&[4, 2, 6]), v(&[6, 3, 2]), v(&[2]), v(&[0]), v(&[1]), v(&[2])),
            // two contracting dims in crossed order (needs a copy for one side)
            (v(&[3, 4, 5]), v(&[5, 6, 3]), v(&[0, 2]), v(&[2, 0]), v(&[]), v(&[])),
            // two contracting dims in the same order
            (v(&[4, 3, 5]), v(&[3, 5, 2]), v(&[1, 2]), v(&[0, 1]), v(&[]), v(&[])),
            // two batch dims
            (v(&[2, 3, 4, 5]), v(&[2, 3, 5, 6]), v(&[3]), v(&[2]), v(&[0, 1]), v(&[0, 1])),
            // non-contiguous free dims (lhs needs a copy)
            (v(&[3, 2, 4, 5]), v(&[5, 2, 3]), v(&[3]), v(&[0]), v(&[1]), v(&[1])),
            // outer product
            (v(&[3]), v(&[4]), v(&[]), v(&[]), v(&[]), v(&[])),
            // vector dot
            (v(&[7]), v(&[7]), v(&[0]), v(&[0]), v(&[]), v(&[])),
            // matrix-vector, vector-matrix
            (v(&[6, 9]), v(&[9]), v(&[1]), v(&[0]), v(&[]), v(&[])),
            (v(&[9]), v(&[9, 6]), v(&[0]), v(&[0]), v(&[]), v(&[])),
            // size-1 and empty dims, k = 0
            (v(&[1, 5, 1]), v(&[1, 5, 3]), v(&[1]), v(&[1]), v(&[0]), v(&[0])),
            (v(&[0, 3]), v(&[3, 4]), v(&[1]), v(&[0]), v(&[]), v(&[])),
            (v(&[2, 0]), v(&[0, 3]), v(&[1]), v(&[0]), v(&[]), v(&[])),
            // big enough for the batch-parallel path
            (v(&[16, 32, 40]), v(&[16, 40, 24]), v(&[2]), v(&[1]), v(&[0]), v(&[0])),
            // big enough for a multithreaded gemm (rhs transposed)
            (v(&[100, 80]), v(&[90, 80]), v(&[1]), v(&[1]), v(&[]), v(&[])),
            // short and wide: split into column blocks (ragged last block), plain and
            // with either operand transposed
            (v(&[8, 400]), v(&[400, 300]), v(&[1]), v(&[0]), v(&[]), v(&[])),
            (v(&[12, 300]), v(&[330, 300]), v(&[1]), v(&[1]), v(&[]), v(&[])),
            (v(&[300, 12]), v(&[300, 330]), v(&[0]), v(&[0]), v(&[]), v(&[])),
            // long and thin (a weight gradient `x^T @ dy`): split along the contraction,
            // unevenly when three or more threads share k = 1537
            (v(&[1537, 40]), v(&[1537, 30]), v(&[0]), v(&[0]), v(&[]), v(&[])),
        ]
    }

    fn check_float_dot<T: StorageElement>(tol: f64) {
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for (ash, bsh, lc, rc, lb, rb) in dot_cases() {
            let a = storage::<T>(&rng.floats(ash.iter().product()));
            let b = storage::<T>(&rng.floats(bsh.iter().product()));
            let (af, bf) = (a.to_f64_vec(), b.to_f64_vec());
            let (want, oshape) =
                ref_dot(&af, &ash, &bf, &bsh, &lc, &rc, &lb, &rb, 0.0, |s, x, y| s + x * y);
            let (scale, _) =
                ref_dot(&af, &ash, &bf, &bsh, &lc, &rc, &lb, &rb, 0.0, |s, x, y| s + (x * y).abs());
            let got = dot_general(
                Operand { data: &a, shape: &ash },
                Operand { data: &b, shape: &bsh },
                &lc,
                &rc,
                &lb,
                &rb,
                &oshape,
                None,
            );
            assert_eq!(got.dtype(), T::DTYPE);
            let got = got.to_f64_vec();
            assert_eq!(got.len(), want.len(), "{ash:?} x {bsh:?}");
            for i in 0..want.len() {
                assert!(
                    (got[i] - want[i]).abs() <= tol * (scale[i] + 1e-3),
                    "{} {ash:?} x {bsh:?} lc={lc:?} rc={rc:?} lb={lb:?} rb={rb:?} at {i}: {} vs {}",
                    T::DTYPE,
                    got[i],
                    want[i]
                );
            }
        }
    }

    fn check_int_dot<T: IntDot>(lo: i64, hi: i64) {
        let mut rng = Rng(12345);
        for (ash, bsh, lc, rc, lb, rb) in dot_cases() {
            let a = storage::<T>(&rng.ints(ash.iter().product(), lo, hi));
            let b = storage::<T>(&rng.ints(bsh.iter().product(), lo, hi));
            let (av, bv) = (a.as_slice::<T>().unwrap(), b.as_slice::<T>().unwrap());
            let (want, oshape) =
                ref_dot(av, &ash, bv, &bsh, &lc, &rc, &lb, &rb, T::ZERO, T::mul_add);
            let got = dot_general(
                Operand { data: &a, shape: &ash },
                Operand { data: &b, shape: &bsh },
                &lc,
                &rc,
                &lb,
                &rb,
                &oshape,
                None,
            );
            assert_eq!(got.as_slice::<T>().unwrap(), &want[..], "{} {ash:?} x {bsh:?}", T::DTYPE);
        }
    }

    #[test]
    fn dot_general_floats() {
        check_float_dot::<f32>(1e-5);
        check_float_dot::<f64>(1e-12);
        check_float_dot::<f16>(2e-2);
        check_float_dot::<bf16>(2e-2);
    }

    #[test]
    fn dot_general_ints() {
        check_int_dot::<i32>(-1000, 1000);
        check_int_dot::<i64>(-1000, 1000);
        check_int_dot::<u8>(0, 256); // overflows: checks wrapping
        check_int_dot::<u32>(0, 100_000);
    }

    #[test]
    fn dot_general_i32_wraps() {
        let a = Storage::I32(vec![i32::MAX, 2]);
        let b = Storage::I32(vec![2, 1]);
        let got = dot_general(
            Operand { data: &a, shape: &[2] },
            Operand { data: &b, shape: &[2] },
            &[0],
            &[0],
            &[],
            &[],
            &[],
            None,
        );
        assert_eq!(got, Storage::I32(vec![i32::MAX.wrapping_mul(2).wrapping_add(2)]));
    }

    #[test]
    fn permute_copy_matches_transpose() {
        let src: Vec<i32> = (0..24).collect();
        let got = permute_copy(&src, &[2, 3, 4], &[2, 0, 1], |v| v);
        let mut want = Vec::new();
        for k in 0..4 {
            for i in 0..2 {
                for j in 0..3 {
                    want.push(src[i * 12 + j * 4 + k]);
                }
            }
        }
        assert_eq!(got, want);
    }

    /// One convolution test case in the primitive's parameters.
    struct ConvCase {
        x: Vec<usize>,
        w: Vec<usize>,
        strides: Vec<usize>,
        padding: Vec<(i64, i64)>,
        lhs_dil: Vec<usize>,
        rhs_dil: Vec<usize>,
        groups: usize,
    }

    fn case(x: &[usize], w: &[usize], strides: &[usize], padding: &[(i64, i64)]) -> ConvCase {
        let ns = x.len() - 2;
        ConvCase {
            x: x.to_vec(),
            w: w.to_vec(),
            strides: strides.to_vec(),
            padding: padding.to_vec(),
            lhs_dil: vec![1; ns],
            rhs_dil: vec![1; ns],
            groups: 1,
        }
    }

    impl ConvCase {
        fn dil(mut self, lhs: &[usize], rhs: &[usize]) -> Self {
            self.lhs_dil = lhs.to_vec();
            self.rhs_dil = rhs.to_vec();
            self
        }
        fn groups(mut self, g: usize) -> Self {
            self.groups = g;
            self
        }
    }

    /// Naive convolution: explicitly dilates and pads the input, then correlates.
    fn ref_conv(c: &ConvCase, x: &[f64], w: &[f64]) -> (Vec<f64>, Vec<usize>) {
        let ns = c.x.len() - 2;
        let (n, cin, cout) = (c.x[0], c.x[ns + 1], c.w[ns + 1]);
        let sp = &c.x[1..=ns];
        // Dilate.
        let dsp: Vec<usize> =
            (0..ns).map(|i| if sp[i] == 0 { 0 } else { (sp[i] - 1) * c.lhs_dil[i] + 1 }).collect();
        let mut dshape = vec![n];
        dshape.extend(&dsp);
        dshape.push(cin);
        let mut dil = vec![0.0; dshape.iter().product()];
        for (i, &v) in x.iter().enumerate() {
            let mut idx = unravel(i, &c.x);
            for d in 0..ns {
                idx[1 + d] *= c.lhs_dil[d];
            }
            dil[ravel(&idx, &dshape)] = v;
        }
        // Pad (negative padding crops).
        let psp: Vec<usize> =
            (0..ns).map(|i| (dsp[i] as i64 + c.padding[i].0 + c.padding[i].1) as usize).collect();
        let mut pshape = vec![n];
        pshape.extend(&psp);
        pshape.push(cin);
        let mut pad = vec![0.0; pshape.iter().product()];
        for (i, p) in pad.iter_mut().enumerate() {
            let idx = unravel(i, &pshape);
            let mut src = idx.clone();
            let mut inside = true;
            for d in 0..ns {
                let q = idx[1 + d] as i64 - c.padding[d].0;
                inside &= q >= 0 && q < dsp[d] as i64;
                src[1 + d] = q.max(0) as usize;
            }
            if inside {
                *p = dil[ravel(&src, &dshape)];
            }
        }
        // Correlate.
        let ksp = &c.w[..ns];
        let osp: Vec<usize> = (0..ns)
            .map(|i| {
                let span = (ksp[i] - 1) * c.rhs_dil[i] + 1;
                if psp[i] < span { 0 } else { (psp[i] - span) / c.strides[i] + 1 }
            })
            .collect();
        let mut oshape = vec![n];
        oshape.extend(&osp);
        oshape.push(cout);
        let (cin_g, cout_g) = (cin / c.groups, cout / c.groups);
        let kprod: usize = ksp.iter().product();
        let mut out = vec![0.0; oshape.iter().product()];
        for (i, o) in out.iter_mut().enumerate() {
            let oi = unravel(i, &oshape);
            let co = oi[ns + 1];
            let g = co / cout_g;
            for kf in 0..kprod {
                let ki = unravel(kf, ksp);
                let mut pi = vec![oi[0]];
                pi.extend((0..ns).map(|d| oi[1 + d] * c.strides[d] + ki[d] * c.rhs_dil[d]));
                pi.push(g * cin_g);
                let mut wi = ki.clone();
                wi.push(0);
                wi.push(co);
                let (p0, w0) = (ravel(&pi, &pshape), ravel(&wi, &c.w));
                for ci in 0..cin_g {
                    *o += pad[p0 + ci] * w[w0 + ci * cout];
                }
            }
        }
        (out, oshape)
    }

    fn conv_cases() -> Vec<ConvCase> {
        vec![
            // 1-D valid, stride 2 with padding and kernel dilation
            case(&[2, 9, 3], &[3, 3, 4], &[1], &[(0, 0)]),
            case(&[2, 9, 3], &[3, 3, 4], &[2], &[(1, 1)]).dil(&[1], &[2]),
            // 2-D SAME with stride 2
            case(&[2, 7, 6, 3], &[3, 3, 3, 5], &[2, 2], &[(1, 1), (1, 1)]),
            // negative padding
            case(&[2, 7, 6, 3], &[3, 2, 3, 5], &[1, 1], &[(-1, 1), (0, -2)]),
            // lhs dilation (transposed convolution) and rhs dilation
            case(&[1, 4, 5, 2], &[3, 3, 2, 3], &[1, 1], &[(2, 2), (2, 1)]).dil(&[2, 2], &[1, 1]),
            case(&[2, 9, 8, 3], &[2, 3, 3, 4], &[1, 2], &[(1, 0), (2, 2)]).dil(&[1, 1], &[2, 3]),
            case(&[1, 5, 5, 2], &[2, 2, 2, 2], &[2, 1], &[(0, 1), (-1, 0)]).dil(&[3, 2], &[2, 1]),
            // grouped (direct kernel), depthwise, depthwise with multiplier 2
            case(&[2, 6, 6, 4], &[3, 3, 2, 6], &[1, 1], &[(1, 1), (1, 1)]).groups(2),
            case(&[2, 6, 5, 5], &[3, 3, 1, 5], &[2, 1], &[(1, 1), (1, 1)]).groups(5),
            case(&[2, 6, 5, 5], &[3, 3, 1, 10], &[1, 1], &[(1, 1), (0, 0)]).groups(5),
            case(&[2, 11, 3], &[3, 1, 3], &[1], &[(1, 1)]).groups(3),
            // grouped with wide groups (im2col per group)
            case(&[2, 5, 5, 32], &[3, 3, 16, 32], &[1, 1], &[(1, 1), (1, 1)]).groups(2),
            // 1x1 kernels: plain gemm, grouped gemm, and strided (im2col)
            case(&[2, 5, 5, 8], &[1, 1, 8, 6], &[1, 1], &[(0, 0), (0, 0)]),
            case(&[2, 5, 5, 32], &[1, 1, 16, 32], &[1, 1], &[(0, 0), (0, 0)]).groups(2),
            case(&[2, 5, 5, 8], &[1, 1, 8, 6], &[2, 2], &[(0, 0), (0, 0)]),
            // 3-D
            case(&[1, 4, 5, 3, 2], &[2, 2, 2, 2, 3], &[1, 2, 1], &[(0, 0), (1, 1), (1, 0)]),
            // empty output
            case(&[1, 2, 3], &[3, 3, 2], &[1], &[(0, 0)]),
            // big enough for parallel im2col blocks
            case(&[4, 16, 16, 16], &[3, 3, 16, 32], &[1, 1], &[(1, 1), (1, 1)]),
            // long rows (a weight gradient's shape): blocks rebalanced into whole rounds
            case(&[5, 8, 8, 512], &[3, 3, 512, 2], &[1, 1], &[(1, 1), (1, 1)]),
            // one input channel (a first layer: one element per tap), with strides,
            // dilations and cropping, and large enough for the parallel blocks
            case(&[3, 9, 8, 1], &[3, 3, 1, 4], &[1, 1], &[(1, 1), (1, 1)]),
            case(&[2, 7, 6, 1], &[2, 3, 1, 3], &[2, 1], &[(1, 0), (-1, 2)]).dil(&[1, 2], &[2, 1]),
            case(&[8, 28, 28, 1], &[3, 3, 1, 8], &[1, 1], &[(1, 1), (1, 1)]),
            case(&[6, 30, 31, 1], &[3, 2, 1, 5], &[1, 2], &[(2, 0), (1, 1)]).dil(&[2, 1], &[1, 2]),
            case(&[2, 12, 12, 8], &[3, 3, 1, 8], &[1, 1], &[(1, 1), (1, 1)]).groups(8),
        ]
    }

    fn check_conv<T: StorageElement>(tol: f64, cases: &[ConvCase]) {
        let mut rng = Rng(777);
        for c in cases {
            let x = storage::<T>(&rng.floats(c.x.iter().product()));
            let w = storage::<T>(&rng.floats(c.w.iter().product()));
            let (want, oshape) = ref_conv(c, &x.to_f64_vec(), &w.to_f64_vec());
            let ns = c.x.len() - 2;
            // The reference's output shape agrees with abstract evaluation.
            let prim = Prim::Conv {
                strides: c.strides.clone(),
                padding: c.padding.clone(),
                lhs_dilation: c.lhs_dil.clone(),
                rhs_dilation: c.rhs_dil.clone(),
                feature_group_count: c.groups,
            };
            let avals = [Aval::new(c.x.clone(), T::DTYPE), Aval::new(c.w.clone(), T::DTYPE)];
            assert_eq!(abstract_eval(&prim, &avals).unwrap()[0].shape, oshape);
            let got = conv(
                Operand { data: &x, shape: &c.x },
                Operand { data: &w, shape: &c.w },
                &c.strides,
                &c.padding,
                &c.lhs_dil,
                &c.rhs_dil,
                c.groups,
                &oshape,
                None,
            );
            assert_eq!(got.dtype(), T::DTYPE);
            let got = got.to_f64_vec();
            assert_eq!(got.len(), want.len());
            let kc = (c.w[..ns].iter().product::<usize>() * c.w[ns]) as f64;
            for i in 0..want.len() {
                assert!(
                    (got[i] - want[i]).abs() <= tol * kc.sqrt().max(1.0) * (want[i].abs() + 1.0),
                    "{} x={:?} w={:?} at {i}: {} vs {}",
                    T::DTYPE,
                    c.x,
                    c.w,
                    got[i],
                    want[i]
                );
            }
        }
    }

    #[test]
    fn conv_f32_all_cases() {
        check_conv::<f32>(1e-5, &conv_cases());
    }

    /// `conv_filter_grad` against a direct sum, on every ungrouped case without input
    /// dilation (strides, padding, cropping, kernel dilation, 1 to 3 spatial dims, one
    /// input channel, parallel tasks).
    #[test]
    fn conv_filter_grad_matches_a_direct_sum() {
        let mut rng = Rng(4242);
        let mut checked = 0;
        for c in conv_cases() {
            if c.groups != 1 || c.lhs_dil.iter().any(|&d| d != 1) {
                continue;
            }
            let x = rng.floats(c.x.iter().product());
            let (_, oshape) = ref_conv(&c, &x, &rng.floats(c.w.iter().product()));
            let g = rng.floats(oshape.iter().product());
            let ns = c.x.len() - 2;
            let (cin, cout) = (c.x[ns + 1], c.w[ns + 1]);
            let (ksp, osp, isp) = (&c.w[..ns], &oshape[1..=ns], &c.x[1..=ns]);
            let (kprod, oprod) = (ksp.iter().product::<usize>(), osp.iter().product::<usize>());
            let unflat = |mut i: usize, dims: &[usize]| {
                let mut v = vec![0; dims.len()];
                for d in (0..dims.len()).rev() {
                    v[d] = i % dims[d];
                    i /= dims[d];
                }
                v
            };
            let mut want = vec![0.0; kprod * cin * cout];
            for n in 0..c.x[0] {
                for p in 0..oprod {
                    let pv = unflat(p, osp);
                    for t in 0..kprod {
                        let tv = unflat(t, ksp);
                        let mut xi = n;
                        let mut inside = true;
                        for d in 0..ns {
                            let q = (pv[d] * c.strides[d] + tv[d] * c.rhs_dil[d]) as i64
                                - c.padding[d].0;
                            inside &= q >= 0 && q < isp[d] as i64;
                            xi = xi * isp[d] + q.max(0) as usize;
                        }
                        if !inside {
                            continue;
                        }
                        for ci in 0..cin {
                            for o in 0..cout {
                                want[(t * cin + ci) * cout + o] +=
                                    x[xi * cin + ci] * g[(n * oprod + p) * cout + o];
                            }
                        }
                    }
                }
            }
            for (tol, xs, gs) in [
                (1e-5, storage::<f32>(&x), storage::<f32>(&g)),
                (1e-12, storage::<f64>(&x), storage::<f64>(&g)),
            ] {
                let got = conv_filter_grad(
                    Operand { data: &xs, shape: &c.x },
                    Operand { data: &gs, shape: &oshape },
                    &c.strides,
                    &c.padding,
                    &c.rhs_dil,
                    ksp,
                )
                .to_f64_vec();
                assert_eq!(got.len(), want.len());
                let terms = ((c.x[0] * oprod) as f64).sqrt();
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= tol * terms * (b.abs() + 1.0),
                        "x={:?} w={:?} at {i}: {a} vs {b}",
                        c.x,
                        c.w
                    );
                }
            }
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} cases");
    }

    #[test]
    fn conv_other_floats() {
        let cases = conv_cases();
        check_conv::<f64>(1e-12, &cases);
        check_conv::<f16>(1e-2, &cases[..8]);
        check_conv::<bf16>(2e-2, &cases[..8]);
    }
}
