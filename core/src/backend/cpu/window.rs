//! Window kernels: pooling ([`reduce_window`]) and the max-pooling derivatives
//! ([`select_and_gather_add`], [`select_and_scatter_add`]).
//!
//! The trailing dims whose window is 1 with stride 1 and no padding (the channels of NHWC
//! pooling, window `[1, k, k, 1]`) form one contiguous inner block that every kernel
//! processes as a vector: for each output position and window tap the channel loop runs
//! innermost over contiguous memory. The remaining (outer) dims are walked with
//! precomputed tap tables. `f16`/`bf16` compute in `f32` where arithmetic is involved.

use super::{Operand, PAR_THRESHOLD, SharedMut, next_index, simd, simd_dispatch};
use crate::backend::{Storage, StorageElement};
use crate::prim::WindowKind;
use half::{bf16, f16};
use rayon::prelude::*;
use std::ops::Range;

/// Marks an output position whose window lies entirely in the padding.
const NONE: usize = usize::MAX;

/// The geometry of a windowed operation, split into outer dims and a contiguous inner block.
struct WinGeom {
    /// Elements in the inner block (product of the trailing pass-through dims).
    inner: usize,
    /// Element strides in the operand of the outer dims.
    in_st: Vec<usize>,
    /// Window sizes of the outer dims.
    win: Vec<usize>,
    /// Output sizes of the outer dims.
    out_outer: Vec<usize>,
    /// Per outer dim: `taps[d][o * win[d] + k]` is the operand index read by output `o` at
    /// window tap `k`, or -1 in the padding (empty when `rel` is set).
    taps: Vec<Vec<isize>>,
    /// Taps per window (product of `win`).
    wprod: usize,
    /// When no window reaches into the padding (then `taps` is empty): each position's tap
    /// offsets are its origin (`sum(o[d] * origin_st[d])`) plus these, in row-major window
    /// order.
    rel: Option<Vec<usize>>,
    /// Operand distance between consecutive window origins, per outer dim.
    origin_st: Vec<usize>,
}

impl WinGeom {
    fn new(
        shape: &[usize],
        window: &[usize],
        strides: &[usize],
        padding: &[(i64, i64)],
        out_shape: &[usize],
    ) -> Self {
        let nd = shape.len();
        let mut outer = nd;
        while outer > 0
            && window[outer - 1] == 1
            && strides[outer - 1] == 1
            && padding[outer - 1] == (0, 0)
        {
            outer -= 1;
        }
        let inner = shape[outer..].iter().product();
        let mut in_st = vec![inner; outer];
        for d in (0..outer.saturating_sub(1)).rev() {
            in_st[d] = in_st[d + 1] * shape[d + 1];
        }
        let inside = (0..outer).all(|d| {
            padding[d] == (0, 0)
                && (out_shape[d] == 0 || (out_shape[d] - 1) * strides[d] + window[d] <= shape[d])
        });
        let rel = inside.then(|| {
            let mut rel = vec![0usize];
            for d in 0..outer {
                let st = in_st[d];
                rel = rel.iter().flat_map(|&r| (0..window[d]).map(move |k| r + k * st)).collect();
            }
            rel
        });
        // Per-dim tap tables, only needed where a window reaches the padding.
        let taps = if rel.is_some() {
            Vec::new()
        } else {
            (0..outer)
                .map(|d| {
                    let mut t = Vec::with_capacity(out_shape[d] * window[d]);
                    for o in 0..out_shape[d] {
                        for k in 0..window[d] {
                            let p = (o * strides[d] + k) as i64 - padding[d].0;
                            t.push(if p >= 0 && p < shape[d] as i64 { p as isize } else { -1 });
                        }
                    }
                    t
                })
                .collect()
        };
        let origin_st = (0..outer).map(|d| strides[d] * in_st[d]).collect();
        WinGeom {
            inner,
            in_st,
            win: window[..outer].to_vec(),
            out_outer: out_shape[..outer].to_vec(),
            taps,
            wprod: window[..outer].iter().product(),
            rel,
            origin_st,
        }
    }
}

/// A walk over output positions in row-major order that gives the operand offsets of each
/// position's non-padding window taps (in row-major window order).
struct WindowWalk {
    /// Outer coordinates of the current output position.
    o: Vec<usize>,
    /// The current position's tap offsets.
    offs: Vec<usize>,
    /// Scratch for [`WindowWalk::offsets`].
    next: Vec<usize>,
}

impl WindowWalk {
    /// Starts at outer output position `p` (row-major over the outer output dims).
    fn at(g: &WinGeom, mut p: usize) -> Self {
        let nd = g.win.len();
        let mut o = vec![0usize; nd];
        for d in (0..nd).rev() {
            o[d] = p % g.out_outer[d];
            p /= g.out_outer[d];
        }
        let cap = g.wprod.max(1);
        WindowWalk { o, offs: Vec::with_capacity(cap), next: Vec::with_capacity(cap) }
    }

    /// The operand offsets of the current position's non-padding taps, built dim by dim:
    /// each offset so far is extended by the valid taps of the next dim (row-major
    /// window order).
    fn offsets(&mut self, g: &WinGeom) -> &[usize] {
        let (offs, next) = (&mut self.offs, &mut self.next);
        offs.clear();
        if let Some(rel) = &g.rel {
            let origin: usize = self.o.iter().zip(&g.origin_st).map(|(o, s)| o * s).sum();
            offs.extend(rel.iter().map(|r| origin + r));
            return offs;
        }
        offs.push(0);
        for (d, &o) in self.o.iter().enumerate() {
            let row = &g.taps[d][o * g.win[d]..][..g.win[d]];
            let st = g.in_st[d];
            next.clear();
            for &base in offs.iter() {
                next.extend(row.iter().filter(|&&t| t >= 0).map(|&t| base + t as usize * st));
            }
            std::mem::swap(offs, next);
        }
        offs
    }

    /// Moves to the next output position.
    fn advance(&mut self, g: &WinGeom) {
        next_index(&mut self.o, &g.out_outer);
    }
}

/// Output positions per parallel task (about 8K operand elements of work).
fn cells_per_task(g: &WinGeom) -> usize {
    (8192 / (g.inner * g.wprod).max(1)).max(1)
}

/// Calls `f(state, cell, offsets)` for every output position: `cell` is its inner block of
/// `out` and `offsets` the operand offsets of its non-padding window taps in row-major
/// window order. Runs in parallel for large outputs, with one `init()` state per task.
fn for_each_window<O, S>(
    g: &WinGeom,
    out: &mut [O],
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, &mut [O], &[usize]) + Sync + Send,
) where
    O: Send,
{
    let inner = g.inner;
    if out.is_empty() || inner == 0 {
        return;
    }
    let per_task = cells_per_task(g);
    let task = |s: &mut S, ti: usize, chunk: &mut [O]| {
        let mut walk = WindowWalk::at(g, ti * per_task);
        for cell in chunk.chunks_exact_mut(inner) {
            f(s, cell, walk.offsets(g));
            walk.advance(g);
        }
    };
    if out.len() * g.wprod >= PAR_THRESHOLD {
        out.par_chunks_mut(per_task * inner)
            .enumerate()
            .for_each_init(init, |s, (ti, c)| task(s, ti, c));
    } else {
        let mut s = init();
        for (ti, c) in out.chunks_mut(per_task * inner).enumerate() {
            task(&mut s, ti, c);
        }
    }
}

/// Element types the window reductions run on natively (half floats go through `f32`).
trait WinElem: StorageElement + PartialOrd {
    const ZERO: Self;
    const LOWEST: Self;
    const HIGHEST: Self;
    fn wadd(self, o: Self) -> Self;
    fn wmax(self, o: Self) -> Self;
    fn wmin(self, o: Self) -> Self;
}

macro_rules! win_int {
    ($($t:ty),*) => {$(
        impl WinElem for $t {
            const ZERO: Self = 0;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            #[inline]
            fn wadd(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            #[inline]
            fn wmax(self, o: Self) -> Self {
                Ord::max(self, o)
            }
            #[inline]
            fn wmin(self, o: Self) -> Self {
                Ord::min(self, o)
            }
        }
    )*};
}
win_int!(u8, u32, i32, i64);

macro_rules! win_float {
    ($($t:ty),*) => {$(
        impl WinElem for $t {
            const ZERO: Self = 0.0;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            const HIGHEST: Self = <$t>::INFINITY;
            #[inline]
            fn wadd(self, o: Self) -> Self {
                self + o
            }
            // NaN-propagating, like the elementwise `max`/`min`.
            #[inline]
            fn wmax(self, o: Self) -> Self {
                if self > o || self.is_nan() { self } else { o }
            }
            #[inline]
            fn wmin(self, o: Self) -> Self {
                if self < o || self.is_nan() { self } else { o }
            }
        }
    )*};
}
win_float!(f32, f64);

impl WinElem for bool {
    const ZERO: Self = false;
    const LOWEST: Self = false;
    const HIGHEST: Self = true;
    #[inline]
    fn wadd(self, o: Self) -> Self {
        self | o
    }
    #[inline]
    fn wmax(self, o: Self) -> Self {
        self | o
    }
    #[inline]
    fn wmin(self, o: Self) -> Self {
        self & o
    }
}

/// Folds every window of `x` into its output cell with `kind`, the cell loop compiled per
/// [`simd`] level (the NaN-propagating max and min become compares and blends).
fn reduce_typed<T: WinElem>(x: &[T], g: &WinGeom, n: usize, kind: WindowKind) -> Vec<T> {
    let id = match kind {
        WindowKind::Sum => T::ZERO,
        WindowKind::Max => T::LOWEST,
        WindowKind::Min => T::HIGHEST,
    };
    let mut out = vec![id; n];
    let level = simd();
    for_each_window(
        g,
        &mut out,
        || (),
        |_, cell, offs| {
            simd_dispatch!(
                level,
                [T: WinElem],
                (x: &[T], cell: &mut [T], offs: &[usize], kind: WindowKind),
                {
                    let inner = cell.len();
                    for &off in offs {
                        let taps = cell.iter_mut().zip(&x[off..off + inner]);
                        match kind {
                            WindowKind::Sum => taps.for_each(|(o, &v)| *o = o.wadd(v)),
                            WindowKind::Max => taps.for_each(|(o, &v)| *o = o.wmax(v)),
                            WindowKind::Min => taps.for_each(|(o, &v)| *o = o.wmin(v)),
                        }
                    }
                }
            )
        },
    );
    out
}

/// Runs `f` on the storage's elements as a [`WinElem`] type (`f16`/`bf16` through `f32`)
/// and wraps the result in the storage's dtype.
macro_rules! with_win_elem {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            Storage::Bool($v) => Storage::Bool($body),
            Storage::U8($v) => Storage::U8($body),
            Storage::U32($v) => Storage::U32($body),
            Storage::I32($v) => Storage::I32($body),
            Storage::I64($v) => Storage::I64($body),
            Storage::F32($v) => Storage::F32($body),
            Storage::F64($v) => Storage::F64($body),
            Storage::F16(h) => {
                let $v: &[f32] = &h.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
                Storage::F16($body.into_iter().map(f16::from_f32).collect())
            }
            Storage::BF16(h) => {
                let $v: &[f32] = &h.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
                Storage::BF16($body.into_iter().map(bf16::from_f32).collect())
            }
        }
    };
}

/// Reduction over sliding windows (pooling).
///
/// `window`, `strides` and `padding` have one entry per dim of `x`; padded positions hold
/// the reduction's identity (0, -inf / type min, +inf / type max), so they never win.
/// Float max/min propagate NaN; integer sums wrap. `out_shape` is the shape from abstract
/// evaluation.
pub fn reduce_window(
    x: Operand<'_>,
    kind: WindowKind,
    window: &[usize],
    strides: &[usize],
    padding: &[(i64, i64)],
    out_shape: &[usize],
) -> Storage {
    let g = WinGeom::new(x.shape, window, strides, padding, out_shape);
    let n: usize = out_shape.iter().product();
    with_win_elem!(x.data, v => reduce_typed(v, &g, n, kind))
}

/// For every window of `x`, the flat index of its maximum (first one in row-major window
/// order wins ties); [`NONE`] where the window lies entirely in the padding.
fn window_argmax<T: PartialOrd + Copy + Send + Sync>(x: &[T], g: &WinGeom, n: usize) -> Vec<usize> {
    let mut sel = vec![NONE; n];
    let inner = g.inner;
    for_each_window(g, &mut sel, Vec::<T>::new, |best, cell, offs| {
        let Some((&first, rest)) = offs.split_first() else {
            return;
        };
        best.clear();
        best.extend_from_slice(&x[first..first + inner]);
        for (c, s) in cell.iter_mut().enumerate() {
            *s = first + c;
        }
        for &off in rest {
            let xs = &x[off..off + inner];
            for c in 0..inner {
                if xs[c] > best[c] {
                    best[c] = xs[c];
                    cell[c] = off + c;
                }
            }
        }
    });
    sel
}

fn argmax_of(
    x: Operand<'_>,
    window: &[usize],
    strides: &[usize],
    padding: &[(i64, i64)],
    out_shape: &[usize],
) -> Vec<usize> {
    let g = WinGeom::new(x.shape, window, strides, padding, out_shape);
    let n: usize = out_shape.iter().product();
    crate::with_storage!(x.data, v, _T => window_argmax(v, &g, n))
}

fn gather_sel<T: StorageElement>(t: &[T], sel: &[usize]) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let pick = |&s: &usize| if s == NONE { zero } else { t[s] };
    if sel.len() >= PAR_THRESHOLD {
        sel.par_iter().map(pick).collect()
    } else {
        sel.iter().map(pick).collect()
    }
}

/// The JVP of max pooling: for every window of `x` (padded with -inf), the element of `t`
/// at the position of the window's maximum (the first maximum in row-major window order).
///
/// `t` and `x` have one shape; the output has the [`reduce_window`] shape `out_shape`.
/// Windows entirely in the padding give 0.
pub fn select_and_gather_add(
    t: Operand<'_>,
    x: Operand<'_>,
    window: &[usize],
    strides: &[usize],
    padding: &[(i64, i64)],
    out_shape: &[usize],
) -> Storage {
    let sel = argmax_of(x, window, strides, padding, out_shape);
    crate::with_storage!(t.data, v, T => Storage::from_vec::<T>(gather_sel(v, &sel)))
}

/// Adds each `src[i]` at `out[sel[i]]` (an `n`-element zero array). With `groups > 1`,
/// `sel` and `out` split into that many equal parts, part `g` of `sel` pointing only into
/// part `g` of `out` (the batch of a pooling that does not pool over the batch), and the
/// parts run in parallel.
fn scatter_sel<T: WinElem>(src: &[T], sel: &[usize], n: usize, groups: usize) -> Vec<T> {
    let mut out = vec![T::ZERO; n];
    let scatter = |base: usize, out: &mut [T], sel: &[usize], src: &[T]| {
        for (&s, &v) in sel.iter().zip(src) {
            if s != NONE {
                out[s - base] = out[s - base].wadd(v);
            }
        }
    };
    if groups > 1
        && n >= PAR_THRESHOLD
        && n.is_multiple_of(groups)
        && sel.len().is_multiple_of(groups)
    {
        let (per_out, per_sel) = (n / groups, sel.len() / groups);
        out.par_chunks_mut(per_out)
            .zip(sel.par_chunks(per_sel).zip(src.par_chunks(per_sel)))
            .enumerate()
            .for_each(|(g, (out, (sel, src)))| scatter(g * per_out, out, sel, src));
    } else {
        scatter(0, &mut out, sel, src);
    }
    out
}

/// [`select_and_scatter_add`] for windows that never overlap (each window no longer than
/// its stride, the usual `k x k / k` max pool): every operand element lies in one window
/// at most, so a single pass over the windows finds each one's maximum per inner element
/// (branch-free, so it vectorizes) and writes all of its taps, the source value at the
/// maximum and zero elsewhere. No index array and no scattered second pass. With `tiled`
/// (the windows cover the operand exactly: every element lies in one window) the output
/// is not zeroed first, since the pass writes every element.
fn scatter_disjoint<T: WinElem>(src: &[T], x: &[T], g: &WinGeom, n: usize, tiled: bool) -> Vec<T> {
    let inner = g.inner;
    if src.is_empty() || inner == 0 {
        return vec![T::ZERO; n];
    }
    let mut out = if tiled { Vec::with_capacity(n) } else { vec![T::ZERO; n] };
    let cells = src.len() / inner;
    let per_task = cells_per_task(g);
    let dst = SharedMut(out.as_mut_ptr());
    let level = simd();
    let task = |st: &mut Scratch<T>, ti: usize| {
        let cs = ti * per_task..((ti + 1) * per_task).min(cells);
        simd_dispatch!(
            level,
            [T: WinElem],
            (
                g: &WinGeom,
                x: &[T],
                src: &[T],
                cs: Range<usize>,
                dst: SharedMut<T>,
                n: usize,
                st: &mut Scratch<T>
            ),
            { scatter_cells(g, x, src, cs, dst, n, st) }
        )
    };
    let tasks = cells.div_ceil(per_task);
    if n >= PAR_THRESHOLD && tasks > 1 {
        (0..tasks).into_par_iter().for_each_init(Scratch::default, task);
    } else {
        let mut st = Scratch::default();
        (0..tasks).for_each(|ti| task(&mut st, ti));
    }
    if tiled {
        // SAFETY: the windows tile the operand, so the pass wrote each of its `n`
        // elements (every tap of every window).
        unsafe { out.set_len(n) };
    }
    out
}

/// Per-task buffers of [`scatter_cells`]: the running maximum and its tap per element.
struct Scratch<T> {
    best: Vec<T>,
    arg: Vec<u32>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch { best: Vec::new(), arg: Vec::new() }
    }
}

/// The windows `cells` of [`scatter_disjoint`] (output positions over the outer dims),
/// compiled per [`simd`] level: with AVX2/AVX-512 the selects become blends and masked
/// stores.
#[inline(always)]
fn scatter_cells<T: WinElem>(
    g: &WinGeom,
    x: &[T],
    src: &[T],
    cells: Range<usize>,
    dst: SharedMut<T>,
    n: usize,
    st: &mut Scratch<T>,
) {
    let inner = g.inner;
    let Scratch { best, arg } = st;
    let mut walk = WindowWalk::at(g, cells.start);
    for cell in cells {
        let offs = walk.offsets(g);
        if let Some(&first) = offs.first() {
            best.clear();
            best.extend_from_slice(&x[first..first + inner]);
            arg.clear();
            arg.resize(inner, 0);
            for (t, &off) in offs.iter().enumerate().skip(1) {
                let t = t as u32;
                for ((b, a), &v) in best.iter_mut().zip(arg.iter_mut()).zip(&x[off..off + inner]) {
                    // The first maximum in window order wins, as in `window_argmax`.
                    let gt = v > *b;
                    *b = if gt { v } else { *b };
                    *a = if gt { t } else { *a };
                }
            }
            let s = &src[cell * inner..][..inner];
            for (t, &off) in offs.iter().enumerate() {
                assert!(off + inner <= n, "window tap outside the operand");
                // SAFETY: in bounds (checked above); windows never overlap, so the operand
                // elements of this window's taps are written by this cell only, and the
                // output is not otherwise accessed during the pass.
                let o = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(off), inner) };
                for ((o, &a), &v) in o.iter_mut().zip(arg.iter()).zip(s) {
                    *o = if a == t as u32 { T::ZERO.wadd(v) } else { T::ZERO };
                }
            }
        }
        walk.advance(g);
    }
}

/// The gradient of max pooling: an array of `x`'s shape, zero except that each element of
/// `source` (one per window, the [`reduce_window`] shape) is added at the position of its
/// window's maximum in `x` (first maximum in row-major window order). Padding is never
/// selected; a window entirely in the padding drops its source element.
pub fn select_and_scatter_add(
    source: Operand<'_>,
    x: Operand<'_>,
    window: &[usize],
    strides: &[usize],
    padding: &[(i64, i64)],
) -> Storage {
    let n = x.data.len();
    if window.iter().zip(strides).all(|(w, s)| w <= s) {
        let g = WinGeom::new(x.shape, window, strides, padding, source.shape);
        let tiled = (0..x.shape.len()).all(|d| {
            window[d] == strides[d]
                && padding[d] == (0, 0)
                && source.shape[d] * strides[d] == x.shape[d]
        });
        match (source.data, x.data) {
            (Storage::F32(s), Storage::F32(xv)) => {
                return Storage::F32(scatter_disjoint(s, xv, &g, n, tiled));
            }
            (Storage::F64(s), Storage::F64(xv)) => {
                return Storage::F64(scatter_disjoint(s, xv, &g, n, tiled));
            }
            _ => {}
        }
    }
    let sel = argmax_of(x, window, strides, padding, source.shape);
    // Windows that stay inside one index of the leading axis (a batch) scatter into that
    // index only, so the batches run in parallel.
    let per_batch =
        !x.shape.is_empty() && window[0] == 1 && strides[0] == 1 && padding[0] == (0, 0);
    let groups = if per_batch { x.shape[0] } else { 1 };
    with_win_elem!(source.data, v => scatter_sel(v, &sel, n, groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aval::Aval;
    use crate::prim::Prim;
    use crate::rules::abstract_eval;

    fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
        idx
    }

    /// Output shape, and for every output position the flat operand index of each window
    /// tap in row-major window order (`None` in the padding).
    fn ref_windows(
        shape: &[usize],
        window: &[usize],
        strides: &[usize],
        padding: &[(i64, i64)],
    ) -> (Vec<usize>, Vec<Vec<Option<usize>>>) {
        let nd = shape.len();
        let oshape: Vec<usize> = (0..nd)
            .map(|d| {
                let padded = shape[d] as i64 + padding[d].0 + padding[d].1;
                ((padded - window[d] as i64) / strides[d] as i64 + 1) as usize
            })
            .collect();
        // The same shape as abstract evaluation gives.
        let prim = Prim::ReduceWindow {
            kind: WindowKind::Sum,
            window: window.to_vec(),
            strides: strides.to_vec(),
            padding: padding.to_vec(),
        };
        let aval = Aval::new(shape.to_vec(), crate::dtype::DType::F32);
        assert_eq!(abstract_eval(&prim, &[aval]).unwrap()[0].shape, oshape);
        let wprod: usize = window.iter().product();
        let mut all = Vec::new();
        for o in 0..oshape.iter().product() {
            let oi = unravel(o, &oshape);
            let mut taps = Vec::new();
            for k in 0..wprod {
                let ki = unravel(k, window);
                let mut flat = 0usize;
                let mut inside = true;
                for d in 0..nd {
                    let p = (oi[d] * strides[d] + ki[d]) as i64 - padding[d].0;
                    inside &= p >= 0 && p < shape[d] as i64;
                    flat = flat * shape[d] + p.max(0) as usize;
                }
                taps.push(inside.then_some(flat));
            }
            all.push(taps);
        }
        (oshape, all)
    }

    type WinCase = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<(i64, i64)>);

    fn cases() -> Vec<WinCase> {
        let z = (0, 0);
        vec![
            // NHWC 2x2/2 max pool
            (vec![2, 6, 6, 3], vec![1, 2, 2, 1], vec![1, 2, 2, 1], vec![z; 4]),
            // 3x3/2 SAME
            (vec![2, 7, 7, 3], vec![1, 3, 3, 1], vec![1, 2, 2, 1], vec![z, (1, 1), (1, 1), z]),
            // asymmetric padding, overlapping windows
            (vec![1, 5, 6, 2], vec![1, 3, 2, 1], vec![1, 1, 2, 1], vec![z, (0, 1), (1, 0), z]),
            // windows on every dim (no inner block)
            (vec![5, 6], vec![2, 3], vec![1, 2], vec![(1, 0), (0, 2)]),
            // 1-D with windows partly and wholly in the padding
            (vec![10], vec![3], vec![1], vec![(2, 2)]),
            (vec![4], vec![2], vec![1], vec![(3, 1)]),
            // a window over the channel dim too
            (vec![2, 4, 4, 6], vec![1, 2, 2, 2], vec![1, 1, 1, 2], vec![z; 4]),
            // window over the batch dim, pass-through dims in the middle
            (vec![4, 3, 5], vec![2, 1, 1], vec![2, 1, 1], vec![(0, 1), z, z]),
            // large enough for the parallel path
            (vec![4, 32, 32, 16], vec![1, 3, 3, 1], vec![1, 2, 2, 1], vec![z, (1, 1), (1, 1), z]),
            // disjoint windows (the single-pass gradient) with gaps between them and
            // padding, large enough for the parallel path; and wholly in the padding
            (vec![4, 33, 35, 8], vec![1, 2, 3, 1], vec![1, 3, 3, 1], vec![z, (1, 0), (0, 2), z]),
            (vec![4], vec![2], vec![2], vec![(3, 1)]),
            (vec![2, 64, 64, 4], vec![1, 2, 2, 1], vec![1, 2, 2, 1], vec![z; 4]),
            // no padding: windows that stop short of the end (a last row and column in no
            // window, so the gradient must zero them), and overlapping windows
            (vec![2, 7, 7, 3], vec![1, 2, 2, 1], vec![1, 2, 2, 1], vec![z; 4]),
            (vec![1, 6, 5, 2], vec![1, 3, 3, 1], vec![1, 1, 2, 1], vec![z; 4]),
        ]
    }

    /// Values from a small set, so that windows have ties.
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) % 7) as f64 - 3.0
            })
            .collect()
    }

    fn storage<T: StorageElement>(v: &[f64]) -> Storage {
        Storage::from_vec(v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>())
    }

    fn check_reduce<T: StorageElement>() {
        for (shape, window, strides, padding) in cases() {
            let xv = values(shape.iter().product(), 1);
            let x = storage::<T>(&xv);
            let xv = x.to_f64_vec();
            let (oshape, taps) = ref_windows(&shape, &window, &strides, &padding);
            for kind in [WindowKind::Sum, WindowKind::Max, WindowKind::Min] {
                let got = reduce_window(
                    Operand { data: &x, shape: &shape },
                    kind,
                    &window,
                    &strides,
                    &padding,
                    &oshape,
                );
                assert_eq!(got.dtype(), T::DTYPE);
                let got = got.to_f64_vec();
                assert_eq!(got.len(), taps.len());
                for (i, t) in taps.iter().enumerate() {
                    let vals = t.iter().flatten().map(|&j| xv[j]);
                    let want = match kind {
                        WindowKind::Sum => vals.sum::<f64>(),
                        WindowKind::Max => vals.fold(f64::NEG_INFINITY, f64::max),
                        WindowKind::Min => vals.fold(f64::INFINITY, f64::min),
                    };
                    let want = T::from_f64(want).to_f64(); // identity as the type holds it
                    let want = match (kind, T::DTYPE.is_int() || T::DTYPE == crate::DType::Bool) {
                        (WindowKind::Sum, _) | (_, false) => want,
                        // integer identities: the type's min / max
                        (WindowKind::Max, true) if t.iter().all(Option::is_none) => {
                            T::from_f64(f64::MIN).to_f64()
                        }
                        (WindowKind::Min, true) if t.iter().all(Option::is_none) => {
                            T::from_f64(f64::MAX).to_f64()
                        }
                        _ => want,
                    };
                    assert_eq!(got[i], want, "{} {kind:?} {shape:?} {window:?} at {i}", T::DTYPE);
                }
            }
        }
    }

    #[test]
    fn reduce_window_matches_reference() {
        check_reduce::<f32>();
        check_reduce::<f64>();
        check_reduce::<f16>();
        check_reduce::<bf16>();
        check_reduce::<i32>();
        check_reduce::<i64>();
    }

    #[test]
    fn reduce_window_bool_and_unsigned() {
        let x = Storage::Bool(vec![false, true, false, false, true, true]);
        let sh = [6];
        let w = [2];
        let st = [2];
        let p = [(0, 0)];
        let run = |k| reduce_window(Operand { data: &x, shape: &sh }, k, &w, &st, &p, &[3]);
        assert_eq!(run(WindowKind::Max), Storage::Bool(vec![true, false, true]));
        assert_eq!(run(WindowKind::Min), Storage::Bool(vec![false, false, true]));
        assert_eq!(run(WindowKind::Sum), Storage::Bool(vec![true, false, true]));
        let u = Storage::U8(vec![200, 100, 3]);
        let run =
            |k| reduce_window(Operand { data: &u, shape: &[3] }, k, &[2], &[1], &[(1, 0)], &[3]);
        assert_eq!(run(WindowKind::Sum), Storage::U8(vec![200, 44, 103]));
        assert_eq!(run(WindowKind::Min), Storage::U8(vec![200, 100, 3]));
    }

    #[test]
    fn reduce_window_max_propagates_nan() {
        let x = Storage::F32(vec![1.0, f32::NAN, 2.0, 3.0]);
        let got = reduce_window(
            Operand { data: &x, shape: &[4] },
            WindowKind::Max,
            &[2],
            &[2],
            &[(0, 0)],
            &[2],
        );
        let got = got.as_slice::<f32>().unwrap().to_vec();
        assert!(got[0].is_nan());
        assert_eq!(got[1], 3.0);
    }

    /// Reference argmax: first maximum among the non-padding taps.
    fn ref_argmax(taps: &[Option<usize>], x: &[f64]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for &j in taps.iter().flatten() {
            if best.is_none_or(|b| x[j] > x[b]) {
                best = Some(j);
            }
        }
        best
    }

    fn check_select<T: StorageElement>() {
        for (ci, (shape, window, strides, padding)) in cases().into_iter().enumerate() {
            let n: usize = shape.iter().product();
            let x = storage::<T>(&values(n, 7 + ci as u64));
            let t = storage::<T>(&(0..n).map(|i| (i % 50) as f64).collect::<Vec<_>>());
            let (xv, tv) = (x.to_f64_vec(), t.to_f64_vec());
            let (oshape, taps) = ref_windows(&shape, &window, &strides, &padding);
            let got = select_and_gather_add(
                Operand { data: &t, shape: &shape },
                Operand { data: &x, shape: &shape },
                &window,
                &strides,
                &padding,
                &oshape,
            );
            assert_eq!(got.dtype(), T::DTYPE);
            let want: Vec<f64> =
                taps.iter().map(|tp| ref_argmax(tp, &xv).map_or(0.0, |j| tv[j])).collect();
            assert_eq!(got.to_f64_vec(), want, "gather {} {shape:?} {window:?}", T::DTYPE);

            let src = storage::<T>(&values(taps.len(), 99 + ci as u64));
            let sv = src.to_f64_vec();
            let got = select_and_scatter_add(
                Operand { data: &src, shape: &oshape },
                Operand { data: &x, shape: &shape },
                &window,
                &strides,
                &padding,
            );
            assert_eq!(got.dtype(), T::DTYPE);
            let mut want = vec![0.0; n];
            for (i, tp) in taps.iter().enumerate() {
                if let Some(j) = ref_argmax(tp, &xv) {
                    want[j] += sv[i];
                }
            }
            let want: Vec<f64> = want.iter().map(|&v| T::from_f64(v).to_f64()).collect();
            assert_eq!(got.to_f64_vec(), want, "scatter {} {shape:?} {window:?}", T::DTYPE);
        }
    }

    #[test]
    fn select_and_gather_scatter_match_reference() {
        check_select::<f32>();
        check_select::<f64>();
        check_select::<bf16>();
        check_select::<i32>();
        check_select::<i64>();
    }

    #[test]
    fn select_first_max_wins_and_all_padding_drops() {
        // Window 2 over [5, 5, 1] with padding (1, 0): windows (pad, x0), (x0, x1), (x1, x2);
        // the tie (x0, x1) picks x0.
        let x = Storage::F32(vec![5.0, 5.0, 1.0]);
        let s = Storage::F32(vec![1.0, 10.0, 100.0]);
        let got = select_and_scatter_add(
            Operand { data: &s, shape: &[3] },
            Operand { data: &x, shape: &[3] },
            &[2],
            &[1],
            &[(1, 0)],
        );
        assert_eq!(got, Storage::F32(vec![11.0, 100.0, 0.0]));
        // A window wholly in the padding selects nothing.
        let s = Storage::F32(vec![7.0, 1.0]);
        let got = select_and_scatter_add(
            Operand { data: &s, shape: &[2] },
            Operand { data: &x, shape: &[3] },
            &[1],
            &[3],
            &[(1, 0)],
        );
        assert_eq!(got, Storage::F32(vec![0.0, 0.0, 1.0]));
        let t = Storage::F32(vec![3.0, 4.0, 5.0]);
        let got = select_and_gather_add(
            Operand { data: &t, shape: &[3] },
            Operand { data: &x, shape: &[3] },
            &[1],
            &[3],
            &[(1, 0)],
            &[2],
        );
        assert_eq!(got, Storage::F32(vec![0.0, 5.0]));
    }
}
