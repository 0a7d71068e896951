//! Gather and scatter along one axis with shared leading batch dims (`tf.gather` with
//! `batch_dims`, and its transposes `scatter_add` / `scatter`).
//!
//! With `b = batch_dims`, the operand is viewed as `[B, R_before, N, R_after]` and the
//! indices as `[B, I]` (each group of dims flattened), so the gathered array is
//! `[B, R_before, I, R_after]`. Every index moves one contiguous `R_after` row, copied (or
//! added) with slice operations: an embedding lookup is a sequence of `memcpy`s.

use super::{Operand, PAR_THRESHOLD};
use crate::backend::{Storage, StorageElement};
use half::{bf16, f16};
use rayon::prelude::*;

/// The flattened gather layout: operand `[b, rb, n, ra]`, indices `[b, ni]`, gathered
/// `[b, rb, ni, ra]`.
#[derive(Clone, Copy, Debug)]
struct Layout {
    b: usize,
    rb: usize,
    n: usize,
    ra: usize,
    ni: usize,
}

impl Layout {
    fn new(xshape: &[usize], ishape: &[usize], axis: usize, batch_dims: usize) -> Self {
        Layout {
            b: xshape[..batch_dims].iter().product(),
            rb: xshape[batch_dims..axis].iter().product(),
            n: xshape[axis],
            ra: xshape[axis + 1..].iter().product(),
            ni: ishape[batch_dims..].iter().product(),
        }
    }

    /// Elements of the gathered array (and of the scatter updates).
    fn gathered_len(&self) -> usize {
        self.b * self.rb * self.ni * self.ra
    }
}

/// The indices widened to `i64` (exact for every integer dtype).
fn indices(idx: &Storage) -> Vec<i64> {
    match idx {
        Storage::U8(v) => v.iter().map(|&i| i as i64).collect(),
        Storage::U32(v) => v.iter().map(|&i| i as i64).collect(),
        Storage::I32(v) => v.iter().map(|&i| i as i64).collect(),
        Storage::I64(v) => v.clone(),
        // Abstract evaluation only admits integer indices; treat anything else numerically.
        other => other.to_f64_vec().into_iter().map(|x| x as i64).collect(),
    }
}

fn gather_typed<T: StorageElement>(x: &[T], idx: &[i64], l: Layout) -> Vec<T> {
    let total = l.gathered_len();
    if total == 0 {
        return Vec::new();
    }
    if l.n == 0 {
        // Nothing to read from: XLA leaves this undefined; give zeros.
        return vec![T::from_f64(0.0); total];
    }
    let hi = l.n as i64 - 1;
    // Row `row` of the output (of `ra` elements) reads operand row `src_row(row)`.
    let src = |row: usize| -> &[T] {
        let (g, i) = (row / l.ni, row % l.ni);
        let j = idx[(g / l.rb) * l.ni + i].clamp(0, hi) as usize;
        &x[(g * l.n + j) * l.ra..][..l.ra]
    };
    let rows = total / l.ra;
    if total >= PAR_THRESHOLD && rows > 1 {
        let per_task = (PAR_THRESHOLD / l.ra).max(1);
        let mut out = vec![T::from_f64(0.0); total];
        out.par_chunks_mut(per_task * l.ra).enumerate().for_each(|(ti, chunk)| {
            for (q, dst) in chunk.chunks_exact_mut(l.ra).enumerate() {
                dst.copy_from_slice(src(ti * per_task + q));
            }
        });
        out
    } else {
        let mut out = Vec::with_capacity(total);
        for row in 0..rows {
            out.extend_from_slice(src(row));
        }
        out
    }
}

/// Gathers along `axis` with `batch_dims` shared leading dims (`Prim::Gather`).
///
/// `x` is `[B.., rest_before.., N, rest_after..]` (N at `axis`) and `idx` `[B.., I..]` of any
/// integer dtype; the output `out_shape` is `[B.., rest_before.., I.., rest_after..]` with
/// `out[b, r, i, a] = x[b, r, clamp(idx[b, i], 0, N - 1), a]`.
pub fn gather(
    x: Operand<'_>,
    idx: Operand<'_>,
    axis: usize,
    batch_dims: usize,
    out_shape: &[usize],
) -> Storage {
    let l = Layout::new(x.shape, idx.shape, axis, batch_dims);
    debug_assert_eq!(out_shape.iter().product::<usize>(), l.gathered_len());
    let ix = indices(idx.data);
    crate::with_storage!(x.data, v, T => Storage::from_vec::<T>(gather_typed(v, &ix, l)))
}

/// Element types that scatter-add can accumulate (integers wrap, bool ors).
trait Accumulate: StorageElement {
    fn acc(self, o: Self) -> Self;
}

macro_rules! accumulate {
    ($($t:ty => |$a:ident, $b:ident| $e:expr),* $(,)?) => {$(
        impl Accumulate for $t {
            #[inline]
            fn acc(self, $b: Self) -> Self {
                let $a = self;
                $e
            }
        }
    )*};
}

accumulate!(
    bool => |a, b| a | b,
    u8 => |a, b| a.wrapping_add(b),
    u32 => |a, b| a.wrapping_add(b),
    i32 => |a, b| a.wrapping_add(b),
    i64 => |a, b| a.wrapping_add(b),
    f16 => |a, b| a + b,
    bf16 => |a, b| a + b,
    f32 => |a, b| a + b,
    f64 => |a, b| a + b,
);

fn scatter_typed<T: Accumulate>(x: &[T], idx: &[i64], upd: &[T], l: Layout, add: bool) -> Vec<T> {
    let mut out = x.to_vec();
    if l.gathered_len() == 0 || out.is_empty() {
        return out;
    }
    let n = l.n as i64;
    // One (batch, rest_before) group owns `n` operand rows and `ni` update rows; groups are
    // disjoint, and inside a group updates apply in index order (so the last write wins).
    let group = |g: usize, dst: &mut [T]| {
        let ib = &idx[(g / l.rb) * l.ni..][..l.ni];
        let ub = &upd[g * l.ni * l.ra..][..l.ni * l.ra];
        for (&j, u) in ib.iter().zip(ub.chunks_exact(l.ra)) {
            if j < 0 || j >= n {
                continue;
            }
            let d = &mut dst[j as usize * l.ra..][..l.ra];
            if add {
                for (o, &v) in d.iter_mut().zip(u) {
                    *o = o.acc(v);
                }
            } else {
                d.copy_from_slice(u);
            }
        }
    };
    let chunk = l.n * l.ra;
    if l.b * l.rb > 1 && l.gathered_len() + out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(chunk).enumerate().for_each(|(g, d)| group(g, d));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(g, d)| group(g, d));
    }
    out
}

/// Scatters `upd` into a copy of `x` along `axis` (`Prim::ScatterAdd` with `add`, else
/// `Prim::Scatter`): the transpose of [`gather`], with `upd` of the gather output shape.
///
/// `x[b, r, idx[b, i], a]` receives `upd[b, r, i, a]`: added (duplicates accumulate) or
/// overwritten (duplicates: the last update in index order wins). Out-of-range indices are
/// dropped. The result has `x`'s shape and dtype.
pub fn scatter(
    x: Operand<'_>,
    idx: Operand<'_>,
    upd: Operand<'_>,
    axis: usize,
    batch_dims: usize,
    add: bool,
) -> Storage {
    let l = Layout::new(x.shape, idx.shape, axis, batch_dims);
    let ix = indices(idx.data);
    match (x.data, upd.data) {
        (Storage::Bool(a), Storage::Bool(u)) => Storage::Bool(scatter_typed(a, &ix, u, l, add)),
        (Storage::U8(a), Storage::U8(u)) => Storage::U8(scatter_typed(a, &ix, u, l, add)),
        (Storage::U32(a), Storage::U32(u)) => Storage::U32(scatter_typed(a, &ix, u, l, add)),
        (Storage::I32(a), Storage::I32(u)) => Storage::I32(scatter_typed(a, &ix, u, l, add)),
        (Storage::I64(a), Storage::I64(u)) => Storage::I64(scatter_typed(a, &ix, u, l, add)),
        (Storage::F16(a), Storage::F16(u)) => Storage::F16(scatter_typed(a, &ix, u, l, add)),
        (Storage::BF16(a), Storage::BF16(u)) => Storage::BF16(scatter_typed(a, &ix, u, l, add)),
        (Storage::F32(a), Storage::F32(u)) => Storage::F32(scatter_typed(a, &ix, u, l, add)),
        (Storage::F64(a), Storage::F64(u)) => Storage::F64(scatter_typed(a, &ix, u, l, add)),
        (a, u) => unreachable!(
            "scatter: operand {} and updates {} differ (checked by abstract_eval)",
            a.dtype(),
            u.dtype()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

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

    struct Case {
        x: Vec<usize>,
        idx: Vec<usize>,
        axis: usize,
        b: usize,
    }

    fn case(x: &[usize], idx: &[usize], axis: usize, b: usize) -> Case {
        Case { x: x.to_vec(), idx: idx.to_vec(), axis, b }
    }

    fn cases() -> Vec<Case> {
        vec![
            // embedding lookup, flat and 2-D indices
            case(&[10, 4], &[6], 0, 0),
            case(&[10, 4], &[2, 3], 0, 0),
            // middle axis, last axis
            case(&[3, 5, 4], &[4], 1, 0),
            case(&[4, 7], &[3], 1, 0),
            // one batch dim, gathered axis right after it and further in
            case(&[3, 5, 4], &[3, 2], 1, 1),
            case(&[2, 3, 6, 2], &[2, 4], 2, 1),
            case(&[2, 3, 6, 2], &[2, 2, 2], 2, 1),
            // empty indices
            case(&[3, 4], &[0], 0, 0),
            // large enough for the parallel paths
            case(&[1000, 64], &[2000], 0, 0),
            case(&[8, 100, 64], &[8, 300], 1, 1),
        ]
    }

    /// The operand's gathered shape and, for every gathered element, the operand position
    /// it reads (`None` if the index is out of range) and the clamped position.
    fn ref_positions(c: &Case, ix: &[i64]) -> (Vec<usize>, Vec<(Option<usize>, usize)>) {
        let mut oshape = c.x[..c.axis].to_vec();
        oshape.extend(&c.idx[c.b..]);
        oshape.extend(&c.x[c.axis + 1..]);
        let ni_nd = c.idx.len() - c.b;
        let n = c.x[c.axis] as i64;
        let mut pos = Vec::new();
        for o in 0..oshape.iter().product() {
            let oi = unravel(o, &oshape);
            let mut ii = oi[..c.b].to_vec();
            ii.extend(&oi[c.axis..c.axis + ni_nd]);
            let j = ix[ravel(&ii, &c.idx)];
            let mut xi = oi[..c.axis].to_vec();
            xi.push(j.clamp(0, n - 1) as usize);
            xi.extend(&oi[c.axis + ni_nd..]);
            let clamped = ravel(&xi, &c.x);
            pos.push(((0..n).contains(&j).then_some(clamped), clamped));
        }
        (oshape, pos)
    }

    fn index_storage(ix: &[i64], dtype: DType) -> Storage {
        match dtype {
            DType::U8 => Storage::U8(ix.iter().map(|&i| i as u8).collect()),
            DType::U32 => Storage::U32(ix.iter().map(|&i| i as u32).collect()),
            DType::I32 => Storage::I32(ix.iter().map(|&i| i as i32).collect()),
            _ => Storage::I64(ix.to_vec()),
        }
    }

    fn run_cases<T: StorageElement>(idx_dtype: DType, seed: u64) {
        let mut s = seed;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            s >> 33
        };
        for c in cases() {
            let n = c.x[c.axis] as i64;
            let signed = !idx_dtype.is_unsigned();
            // Mostly in range, with duplicates; some out of range on both sides.
            let ix: Vec<i64> = (0..c.idx.iter().product())
                .map(|_| match next() % 10 {
                    0 if signed => -1 - (next() % 3) as i64,
                    1 => n + (next() % 3) as i64,
                    _ => (next() % n as u64) as i64,
                })
                .collect();
            let idx = index_storage(&ix, idx_dtype);
            let xs = c.x.iter().product();
            let xv: Vec<f64> = (0..xs).map(|_| (next() % 5) as f64).collect();
            let x = Storage::from_vec(xv.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>());
            let xv = x.to_f64_vec();
            let (oshape, pos) = ref_positions(&c, &ix);

            let got = gather(
                Operand { data: &x, shape: &c.x },
                Operand { data: &idx, shape: &c.idx },
                c.axis,
                c.b,
                &oshape,
            );
            let want: Vec<f64> = pos.iter().map(|&(_, p)| xv[p]).collect();
            assert_eq!(got.dtype(), T::DTYPE);
            assert_eq!(got.to_f64_vec(), want, "gather {} {:?} {:?}", T::DTYPE, c.x, c.idx);

            let uv: Vec<f64> = (0..pos.len()).map(|_| (next() % 4) as f64).collect();
            let upd = Storage::from_vec(uv.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>());
            let uv = upd.to_f64_vec();
            for add in [true, false] {
                let got = scatter(
                    Operand { data: &x, shape: &c.x },
                    Operand { data: &idx, shape: &c.idx },
                    Operand { data: &upd, shape: &oshape },
                    c.axis,
                    c.b,
                    add,
                );
                let mut want = xv.clone();
                for (&(p, _), &u) in pos.iter().zip(&uv) {
                    if let Some(p) = p {
                        want[p] = if add { want[p] + u } else { u };
                    }
                }
                let want: Vec<f64> = want.iter().map(|&v| T::from_f64(v).to_f64()).collect();
                assert_eq!(got.dtype(), T::DTYPE);
                assert_eq!(
                    got.to_f64_vec(),
                    want,
                    "scatter add={add} {} {:?} {:?}",
                    T::DTYPE,
                    c.x,
                    c.idx
                );
            }
        }
    }

    #[test]
    fn gather_scatter_match_reference() {
        run_cases::<f32>(DType::I32, 1);
        run_cases::<f64>(DType::I64, 2);
        run_cases::<i32>(DType::I32, 3);
        run_cases::<i64>(DType::U32, 4);
        run_cases::<f16>(DType::I32, 5);
        run_cases::<bf16>(DType::I64, 6);
        run_cases::<u32>(DType::I32, 7);
    }

    #[test]
    fn gather_u8_indices_and_bool_data() {
        let x = Storage::Bool(vec![true, false, false, true, true, true]);
        let idx = Storage::U8(vec![2, 0, 200]);
        let got = gather(
            Operand { data: &x, shape: &[3, 2] },
            Operand { data: &idx, shape: &[3] },
            0,
            0,
            &[3, 2],
        );
        assert_eq!(got, Storage::Bool(vec![true, true, true, false, true, true]));
        let upd = Storage::Bool(vec![false, false, true, false, true, true]);
        let got = scatter(
            Operand { data: &x, shape: &[3, 2] },
            Operand { data: &idx, shape: &[3] },
            Operand { data: &upd, shape: &[3, 2] },
            0,
            0,
            false,
        );
        assert_eq!(got, Storage::Bool(vec![true, false, false, true, false, false]));
    }

    #[test]
    fn scatter_duplicates_last_wins_and_accumulate() {
        let x = Storage::F32(vec![0.0; 3]);
        let idx = Storage::I32(vec![1, 1, 5, -1, 1]);
        let upd = Storage::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let run = |add| {
            scatter(
                Operand { data: &x, shape: &[3] },
                Operand { data: &idx, shape: &[5] },
                Operand { data: &upd, shape: &[5] },
                0,
                0,
                add,
            )
        };
        assert_eq!(run(true), Storage::F32(vec![0.0, 8.0, 0.0]));
        assert_eq!(run(false), Storage::F32(vec![0.0, 5.0, 0.0]));
    }
}
