//! Data-movement kernels: broadcasting, transposition, reversal, (dynamic) slicing,
//! dynamic update, concatenation, padding and iota.
//!
//! Broadcast, transpose, rev and the slices are all one operation: copying a strided view
//! `src[base + Σ i_d · stride_d]` of the operand into a fresh row-major array. The view is
//! first simplified (size-1 dims dropped, mergeable neighbours merged) and then copied row
//! by row (contiguous copy, fill, reversed copy or strided gather), or, when the output's
//! last dim is strided in the source but another dim is contiguous there (a transpose), in
//! 32×32 tiles so that both reads and writes stay in cache. Large outputs are split into
//! chunks of whole rows that rayon copies in parallel.

use super::Operand;
use super::elementwise::{CHUNK, build, convert};
use crate::backend::{Storage, StorageElement};
use crate::dtype::DType;
use crate::with_storage;
use std::mem::MaybeUninit;

/// Tile edge of the blocked transpose.
const TILE: usize = 32;

/// Row-major strides of `shape`.
pub(super) fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1] * shape[d + 1];
    }
    st
}

/// Drops size-1 dims and merges each dim into its outer neighbour when the neighbour's
/// stride is exactly one step over the whole dim, so that inner loops run as long as
/// possible. The element set and order are unchanged.
fn simplify(shape: &[usize], strides: &[isize]) -> (Vec<usize>, Vec<isize>) {
    let mut sh: Vec<usize> = Vec::with_capacity(shape.len());
    let mut st: Vec<isize> = Vec::with_capacity(shape.len());
    for (&n, &s) in shape.iter().zip(strides) {
        if n == 1 {
            continue;
        }
        if let (Some(ln), Some(ls)) = (sh.last_mut(), st.last_mut())
            && *ls == s * n as isize
        {
            *ln *= n;
            *ls = s;
            continue;
        }
        sh.push(n);
        st.push(s);
    }
    (sh, st)
}

/// Writes `src[off + i * s]` for `i in 0..o.len()` into `o`.
#[inline(always)]
fn write_row<T: Copy>(o: &mut [MaybeUninit<T>], src: &[T], off: isize, s: isize) {
    let len = o.len();
    match s {
        1 => {
            let r = &src[off as usize..off as usize + len];
            for (d, &v) in o.iter_mut().zip(r) {
                d.write(v);
            }
        }
        0 => {
            let v = src[off as usize];
            for d in o.iter_mut() {
                d.write(v);
            }
        }
        -1 => {
            let r = &src[off as usize + 1 - len..=off as usize];
            for (d, &v) in o.iter_mut().zip(r.iter().rev()) {
                d.write(v);
            }
        }
        _ => {
            for (i, d) in o.iter_mut().enumerate() {
                d.write(src[(off + i as isize * s) as usize]);
            }
        }
    }
}

/// Advances the multi-index `idx` over `shape` by one (last dim fastest), keeping
/// `off = Σ idx_d · strides_d` up to date. Wraps to all zeros after the last index.
#[inline(always)]
fn step(idx: &mut [usize], shape: &[usize], strides: &[isize], off: &mut isize) {
    for d in (0..idx.len()).rev() {
        idx[d] += 1;
        *off += strides[d];
        if idx[d] < shape[d] {
            return;
        }
        *off -= strides[d] * shape[d] as isize;
        idx[d] = 0;
    }
}

/// Sets `idx` to the multi-index of flat position `flat` over `shape` and returns
/// `Σ idx_d · strides_d`.
fn unravel(flat: usize, shape: &[usize], strides: &[isize], idx: &mut [usize]) -> isize {
    let mut rem = flat;
    let mut off = 0;
    for d in (0..shape.len()).rev() {
        idx[d] = rem % shape[d];
        rem /= shape[d];
        off += idx[d] as isize * strides[d];
    }
    off
}

/// Copies the strided view `src[base + Σ i_d · strides_d]`, `i` over `shape`, into a new
/// row-major vector.
fn strided_copy<T: Copy + Send + Sync>(
    src: &[T],
    base: isize,
    shape: &[usize],
    strides: &[isize],
) -> Vec<T> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Vec::new();
    }
    let (sh, st) = simplify(shape, strides);
    if sh.is_empty() {
        return vec![src[base as usize]];
    }
    let nd = sh.len();
    if nd >= 2
        && st[nd - 1].abs() > 1
        && let Some(k) = st[..nd - 1].iter().position(|&s| s == 1)
    {
        return blocked_copy(src, base, &sh, &st, k);
    }
    copy_rows(src, base, &sh, &st, n)
}

/// Row-by-row copy of a simplified view (see [`strided_copy`]).
fn copy_rows<T: Copy + Send + Sync>(
    src: &[T],
    base: isize,
    sh: &[usize],
    st: &[isize],
    n: usize,
) -> Vec<T> {
    let nd = sh.len();
    let (len, s) = (sh[nd - 1], st[nd - 1]);
    let (osh, ost) = (&sh[..nd - 1], &st[..nd - 1]);
    let chunk = (CHUNK / len).max(1) * len;
    // SAFETY: `chunk` and `n` are multiples of `len`, so every chunk is a whole number of
    // rows, and the loop below writes every element of every row in the chunk.
    unsafe {
        build(n, chunk, |start, out: &mut [MaybeUninit<T>]| {
            let mut idx = vec![0; nd - 1];
            let mut off = base + unravel(start / len, osh, ost, &mut idx);
            for row in out.chunks_exact_mut(len) {
                write_row(row, src, off, s);
                step(&mut idx, osh, ost, &mut off);
            }
        })
    }
}

/// Tiled copy of a simplified view whose last dim is strided in the source while dim `k`
/// is contiguous there (a transpose).
///
/// The output splits into "k-rows" (one index of every dim up to `k`, `sub` elements
/// each); segments of up to [`TILE`] consecutive k-rows are copied tile by tile over
/// (dim `k`, last dim), for every index of the dims in between.
fn blocked_copy<T: Copy + Send + Sync>(
    src: &[T],
    base: isize,
    sh: &[usize],
    st: &[isize],
    k: usize,
) -> Vec<T> {
    let nd = sh.len();
    let n: usize = sh.iter().product();
    let sub: usize = sh[k + 1..].iter().product();
    let kn = sh[k];
    let (psh, pst) = (&sh[..k], &st[..k]);
    let (msh, mst) = (&sh[k + 1..nd - 1], &st[k + 1..nd - 1]);
    let (l, sl) = (sh[nd - 1], st[nd - 1]);
    // SAFETY: chunks are whole k-rows (`n` and the chunk size are multiples of `sub`);
    // every k-row of the chunk is covered by exactly one segment, and for each k-row of a
    // segment the loops write all `sub` elements (every middle index times every tile of
    // the last dim).
    unsafe {
        build(n, sub * TILE, |start, out: &mut [MaybeUninit<T>]| {
            let g0 = start / sub;
            let g1 = g0 + out.len() / sub;
            let mut pidx = vec![0; k];
            let mut midx = vec![0; msh.len()];
            let mut g = g0;
            while g < g1 {
                let (p, ik0) = (g / kn, g % kn);
                let ik1 = (ik0 + TILE).min(kn).min(ik0 + (g1 - g));
                let poff = base + unravel(p, psh, pst, &mut pidx);
                let seg = &mut out[(g - g0) * sub..(g - g0 + ik1 - ik0) * sub];
                midx.fill(0);
                let mut moff = 0;
                for m in 0..sub / l {
                    for il0 in (0..l).step_by(TILE) {
                        let w = TILE.min(l - il0);
                        for ik in ik0..ik1 {
                            let o = &mut seg[(ik - ik0) * sub + m * l + il0..][..w];
                            let s0 = poff + ik as isize + moff + il0 as isize * sl;
                            for (j, d) in o.iter_mut().enumerate() {
                                d.write(src[(s0 + j as isize * sl) as usize]);
                            }
                        }
                    }
                    step(&mut midx, msh, mst, &mut moff);
                }
                g += ik1 - ik0;
            }
        })
    }
}

/// Broadcasts `x` into `shape`: operand dim `i` becomes output dim `dims[i]` (whose size
/// equals the operand's or the operand's is 1); the other output dims repeat the data.
pub fn broadcast_in_dim(x: Operand<'_>, shape: &[usize], dims: &[usize]) -> Storage {
    let ist = row_major_strides(x.shape);
    let mut st = vec![0isize; shape.len()];
    for (i, &d) in dims.iter().enumerate() {
        if x.shape[i] != 1 {
            st[d] = ist[i] as isize;
        }
    }
    with_storage!(x.data, v, T => T::into_storage(strided_copy(v, 0, shape, &st)))
}

/// Permutes the dims of `x`: output dim `i` is operand dim `perm[i]`. Transposes that move
/// the last dim are copied in cache-sized tiles.
pub fn transpose(x: Operand<'_>, perm: &[usize]) -> Storage {
    let ist = row_major_strides(x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let st: Vec<isize> = perm.iter().map(|&p| ist[p] as isize).collect();
    with_storage!(x.data, v, T => T::into_storage(strided_copy(v, 0, &shape, &st)))
}

/// Reverses the order of the elements of `x` along each of `axes`.
pub fn rev(x: Operand<'_>, axes: &[usize]) -> Storage {
    let ist = row_major_strides(x.shape);
    let mut st: Vec<isize> = ist.iter().map(|&s| s as isize).collect();
    let mut base = 0isize;
    for &a in axes {
        base += x.shape[a].saturating_sub(1) as isize * st[a];
        st[a] = -st[a];
    }
    with_storage!(x.data, v, T => T::into_storage(strided_copy(v, base, x.shape, &st)))
}

/// The static strided slice of `x` starting at `start` with step `strides`, of shape
/// `out_shape` (`ceil((limit - start) / stride)` per dim).
pub fn slice(x: Operand<'_>, start: &[usize], strides: &[usize], out_shape: &[usize]) -> Storage {
    let ist = row_major_strides(x.shape);
    let base: usize = start.iter().zip(&ist).map(|(a, b)| a * b).sum();
    let st: Vec<isize> = strides.iter().zip(&ist).map(|(&s, &i)| (s * i) as isize).collect();
    with_storage!(x.data, v, T => T::into_storage(strided_copy(v, base as isize, out_shape, &st)))
}

/// The value of a scalar integer operand, widened to `i64`.
fn scalar_index(s: &Storage) -> i64 {
    match s {
        Storage::U8(v) => v[0] as i64,
        Storage::U32(v) => v[0] as i64,
        Storage::I32(v) => v[0] as i64,
        Storage::I64(v) => v[0],
        other => other.get_f64(0) as i64,
    }
}

/// Reads the scalar start indices and clamps each into `[0, dim - size]` like XLA.
fn clamped_starts(shape: &[usize], starts: &[Operand<'_>], sizes: &[usize]) -> Vec<usize> {
    starts
        .iter()
        .zip(shape.iter().zip(sizes))
        .map(|(s, (&d, &z))| scalar_index(s.data).clamp(0, d.saturating_sub(z) as i64) as usize)
        .collect()
}

/// The slice of `x` of shape `sizes` at the (scalar, any integer dtype) `starts`, each
/// clamped into `[0, dim - size]` so that the slice stays in bounds (as XLA does).
pub fn dynamic_slice(x: Operand<'_>, starts: &[Operand<'_>], sizes: &[usize]) -> Storage {
    let start = clamped_starts(x.shape, starts, sizes);
    slice(x, &start, &vec![1; sizes.len()], sizes)
}

/// `x` with `update` written at `starts` (scalar integers, clamped into
/// `[0, dim - update_dim]` like XLA).
pub fn dynamic_update_slice(
    x: Operand<'_>,
    update: Operand<'_>,
    starts: &[Operand<'_>],
) -> Storage {
    let start = clamped_starts(x.shape, starts, update.shape);
    with_storage!(x.data, v, T => {
        let u = <T as StorageElement>::slice(update.data)
            .expect("dynamic_update_slice: update must have the operand's dtype");
        T::into_storage(update_slice(v, x.shape, u, update.shape, &start))
    })
}

fn update_slice<T: Copy>(
    v: &[T],
    shape: &[usize],
    u: &[T],
    ushape: &[usize],
    start: &[usize],
) -> Vec<T> {
    let mut out = v.to_vec();
    if u.is_empty() {
        return out;
    }
    let nd = shape.len();
    if nd == 0 {
        out[0] = u[0];
        return out;
    }
    let ost: Vec<isize> = row_major_strides(shape).iter().map(|&s| s as isize).collect();
    let l = ushape[nd - 1];
    let mut off: isize = start.iter().zip(&ost).map(|(&a, &b)| a as isize * b).sum();
    let mut idx = vec![0; nd - 1];
    for row in u.chunks_exact(l) {
        out[off as usize..off as usize + l].copy_from_slice(row);
        step(&mut idx, &ushape[..nd - 1], &ost[..nd - 1], &mut off);
    }
    out
}

/// Joins `xs` (one dtype, equal in every dim but `axis`) along `axis` into `out_shape`.
pub fn concatenate(xs: &[Operand<'_>], axis: usize, out_shape: &[usize]) -> Storage {
    let outer: usize = out_shape[..axis].iter().product();
    let inner: usize = out_shape[axis + 1..].iter().product();
    let blocks: Vec<usize> = xs.iter().map(|x| x.shape[axis] * inner).collect();
    with_storage!(xs[0].data, _first, T => {
        let parts: Vec<&[T]> = xs
            .iter()
            .map(|x| {
                <T as StorageElement>::slice(x.data).expect("concatenate operands must have one dtype")
            })
            .collect();
        T::into_storage(concat_rows(&parts, &blocks, outer))
    })
}

/// Row `r` of the output is block `r` of every part, in order.
fn concat_rows<T: Copy + Send + Sync>(parts: &[&[T]], blocks: &[usize], outer: usize) -> Vec<T> {
    let row: usize = blocks.iter().sum();
    let n = row * outer;
    if n == 0 {
        return Vec::new();
    }
    // SAFETY: chunks are whole rows (`n` and the chunk size are multiples of `row`), and
    // each row is written block after block, the blocks summing to `row`.
    unsafe {
        build(n, (CHUNK / row).max(1) * row, |start, out: &mut [MaybeUninit<T>]| {
            let r0 = start / row;
            for (ri, o) in out.chunks_exact_mut(row).enumerate() {
                let r = r0 + ri;
                let mut pos = 0;
                for (p, &b) in parts.iter().zip(blocks) {
                    for (d, &v) in o[pos..pos + b].iter_mut().zip(&p[r * b..(r + 1) * b]) {
                        d.write(v);
                    }
                    pos += b;
                }
            }
        })
    }
}

/// Pads `x` with the scalar `value`: `lo[d]` elements before (negative crops), `interior[d]`
/// between neighbours, and whatever remains of `out_shape[d]` after (the high padding,
/// possibly negative).
pub fn pad(
    x: Operand<'_>,
    value: &Storage,
    lo: &[i64],
    interior: &[usize],
    out_shape: &[usize],
) -> Storage {
    with_storage!(x.data, v, T => {
        let fill = <T as StorageElement>::slice(value).expect("pad value must have the operand's dtype")[0];
        T::into_storage(pad_impl(v, x.shape, fill, lo, interior, out_shape))
    })
}

fn pad_impl<T: Copy>(
    v: &[T],
    shape: &[usize],
    fill: T,
    lo: &[i64],
    interior: &[usize],
    out_shape: &[usize],
) -> Vec<T> {
    let n: usize = out_shape.iter().product();
    let mut out = vec![fill; n];
    let nd = shape.len();
    if nd == 0 {
        out[0] = v[0];
        return out;
    }
    if v.is_empty() || n == 0 {
        return out;
    }
    // Per dim: the input indices `first..end` that land inside the output, their output
    // position `lo + i * stride` (`stride = interior + 1`).
    let mut first = vec![0usize; nd];
    let mut end = vec![0usize; nd];
    let mut ostep = vec![0isize; nd];
    let ost = row_major_strides(out_shape);
    let ist = row_major_strides(shape);
    let mut ooff = 0isize;
    for d in 0..nd {
        let s = interior[d] as i64 + 1;
        let (l, od) = (lo[d], out_shape[d] as i64);
        let f = if l >= 0 { 0 } else { (-l + s - 1) / s };
        let e = if od - 1 - l < 0 { 0 } else { (od - 1 - l) / s + 1 };
        let (f, e) = (f.min(shape[d] as i64), e.min(shape[d] as i64));
        if f >= e {
            return out;
        }
        (first[d], end[d]) = (f as usize, e as usize);
        ostep[d] = (s * ost[d] as i64) as isize;
        ooff += ((l + f * s) * ost[d] as i64) as isize;
    }
    let ioff: isize = (0..nd).map(|d| (first[d] * ist[d]) as isize).sum();
    let box_shape: Vec<usize> = (0..nd).map(|d| end[d] - first[d]).collect();
    let istep: Vec<isize> = ist.iter().map(|&s| s as isize).collect();
    let last = nd - 1;
    let (bl, os) = (box_shape[last], ostep[last]);
    let mut idx = vec![0; last];
    let (mut io, mut oo) = (ioff, ooff);
    let rows: usize = box_shape[..last].iter().product();
    for _ in 0..rows {
        let src = &v[io as usize..io as usize + bl];
        if os == 1 {
            out[oo as usize..oo as usize + bl].copy_from_slice(src);
        } else {
            for (j, &x) in src.iter().enumerate() {
                out[(oo + j as isize * os) as usize] = x;
            }
        }
        // Advance input and output offsets together over the box.
        for d in (0..last).rev() {
            idx[d] += 1;
            io += istep[d];
            oo += ostep[d];
            if idx[d] < box_shape[d] {
                break;
            }
            io -= istep[d] * box_shape[d] as isize;
            oo -= ostep[d] * box_shape[d] as isize;
            idx[d] = 0;
        }
    }
    out
}

/// `0, 1, 2, ...` along `dim` of `shape`, repeated along every other dim, in `dtype`
/// (the index converted like `ConvertElementType`: integers wrap, floats round).
pub fn iota(dtype: DType, shape: &[usize], dim: usize) -> Storage {
    fn go<T: Copy>(shape: &[usize], dim: usize, f: impl Fn(usize) -> T) -> Vec<T> {
        let outer: usize = shape[..dim].iter().product();
        let inner: usize = shape[dim + 1..].iter().product();
        let mut v = Vec::with_capacity(outer * shape[dim] * inner);
        for _ in 0..outer {
            for i in 0..shape[dim] {
                v.extend(std::iter::repeat_n(f(i), inner));
            }
        }
        v
    }
    match dtype {
        DType::Bool => Storage::Bool(go(shape, dim, |i| i != 0)),
        DType::U8 => Storage::U8(go(shape, dim, |i| i as u8)),
        DType::U32 => Storage::U32(go(shape, dim, |i| i as u32)),
        DType::I32 => Storage::I32(go(shape, dim, |i| i as i32)),
        DType::I64 => Storage::I64(go(shape, dim, |i| i as i64)),
        DType::F32 => Storage::F32(go(shape, dim, |i| i as f32)),
        DType::F64 => Storage::F64(go(shape, dim, |i| i as f64)),
        DType::F16 | DType::BF16 => convert(&iota(DType::I64, shape, dim), dtype),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn op<'a>(data: &'a Storage, shape: &'a [usize]) -> Operand<'a> {
        Operand { data, shape }
    }

    fn iota_f32(n: usize) -> Storage {
        Storage::F32((0..n).map(|i| i as f32).collect())
    }

    /// Reference: element at multi-index `i` of `shape` is `f(i)`.
    fn reference<T>(shape: &[usize], f: impl Fn(&[usize]) -> T) -> Vec<T> {
        let n: usize = shape.iter().product();
        let mut idx = vec![0; shape.len()];
        (0..n)
            .map(|flat| {
                let mut r = flat;
                for d in (0..shape.len()).rev() {
                    idx[d] = r % shape[d];
                    r /= shape[d];
                }
                f(&idx)
            })
            .collect()
    }

    fn flat(idx: &[usize], shape: &[usize]) -> usize {
        idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
    }

    #[test]
    fn broadcast_small() {
        let x = Storage::I32(vec![1, 2, 3]);
        assert_eq!(
            broadcast_in_dim(op(&x, &[3]), &[2, 3], &[1]),
            Storage::I32(vec![1, 2, 3, 1, 2, 3])
        );
        assert_eq!(
            broadcast_in_dim(op(&x, &[3]), &[3, 2], &[0]),
            Storage::I32(vec![1, 1, 2, 2, 3, 3])
        );
        let s = Storage::Bool(vec![true]);
        assert_eq!(broadcast_in_dim(op(&s, &[]), &[2, 2], &[]), Storage::Bool(vec![true; 4]));
        let y = Storage::F64(vec![1.0, 2.0]);
        assert_eq!(
            broadcast_in_dim(op(&y, &[2, 1]), &[2, 1, 3], &[0, 1]),
            Storage::F64(vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
        );
        assert_eq!(broadcast_in_dim(op(&y, &[2]), &[0, 2], &[1]), Storage::F64(vec![]));
    }

    #[test]
    fn broadcast_large_parallel() {
        let x = iota_f32(300);
        let out = broadcast_in_dim(op(&x, &[300]), &[200, 300], &[1]);
        let out = out.as_slice::<f32>().unwrap();
        assert_eq!(out.len(), 60_000);
        assert!(out.iter().enumerate().all(|(i, &v)| v == (i % 300) as f32));
        let col = broadcast_in_dim(op(&x, &[300, 1]), &[300, 7, 30], &[0, 2]);
        let col = col.as_slice::<f32>().unwrap();
        assert!(col.iter().enumerate().all(|(i, &v)| v == (i / 210) as f32));
    }

    #[test]
    fn transpose_2d_and_3d() {
        let x = Storage::U8((0..6).collect());
        assert_eq!(transpose(op(&x, &[2, 3]), &[1, 0]), Storage::U8(vec![0, 3, 1, 4, 2, 5]));
        let y = Storage::I64((0..24).collect());
        let shape = [2, 3, 4];
        for perm in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let want = reference(&out_shape, |i| {
                let mut src = [0; 3];
                for (o, &p) in perm.iter().enumerate() {
                    src[p] = i[o];
                }
                flat(&src, &shape) as i64
            });
            assert_eq!(transpose(op(&y, &shape), &perm), Storage::I64(want), "{perm:?}");
        }
    }

    #[test]
    fn transpose_large_blocked_and_parallel() {
        // 2-D, non-multiple-of-tile sizes, parallel path.
        let (m, n) = (301, 257);
        let x = iota_f32(m * n);
        let out = transpose(op(&x, &[m, n]), &[1, 0]);
        let want = reference(&[n, m], |i| (i[1] * n + i[0]) as f32);
        assert_eq!(out, Storage::F32(want));
        // 4-D with a middle dim between the contiguous dim and the last: [a,b,c,d] -> [d,b,c,a]
        // has no mergeable neighbours; also batched [b, m, n] -> [b, n, m].
        let shape = [37, 5, 3, 70];
        let x = Storage::I32((0..shape.iter().product::<usize>() as i32).collect());
        for perm in [[3, 1, 2, 0], [0, 3, 2, 1], [2, 0, 3, 1], [0, 1, 3, 2]] {
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let want = reference(&out_shape, |i| {
                let mut src = [0; 4];
                for (o, &p) in perm.iter().enumerate() {
                    src[p] = i[o];
                }
                flat(&src, &shape) as i32
            });
            assert_eq!(transpose(op(&x, &shape), &perm), Storage::I32(want), "{perm:?}");
        }
    }

    #[test]
    fn rev_axes() {
        let x = Storage::F32((0..6).map(|i| i as f32).collect());
        assert_eq!(rev(op(&x, &[2, 3]), &[1]), Storage::F32(vec![2.0, 1.0, 0.0, 5.0, 4.0, 3.0]));
        assert_eq!(rev(op(&x, &[2, 3]), &[0]), Storage::F32(vec![3.0, 4.0, 5.0, 0.0, 1.0, 2.0]));
        assert_eq!(rev(op(&x, &[2, 3]), &[0, 1]), Storage::F32(vec![5.0, 4.0, 3.0, 2.0, 1.0, 0.0]));
        assert_eq!(rev(op(&x, &[6]), &[]), x);
        let e = Storage::I32(vec![]);
        assert_eq!(rev(op(&e, &[0, 3]), &[0, 1]), e);
        let big = Storage::I64((0..40_000).collect());
        let r = rev(op(&big, &[200, 200]), &[1]);
        let want = reference(&[200, 200], |i| (i[0] * 200 + 199 - i[1]) as i64);
        assert_eq!(r, Storage::I64(want));
    }

    #[test]
    fn slice_strided() {
        let x = Storage::I32((0..20).collect());
        // rows 1..4 step 2, cols 0..5 step 2 of a 4x5
        assert_eq!(
            slice(op(&x, &[4, 5]), &[1, 0], &[2, 2], &[2, 3]),
            Storage::I32(vec![5, 7, 9, 15, 17, 19])
        );
        assert_eq!(
            slice(op(&x, &[4, 5]), &[2, 1], &[1, 1], &[2, 3]),
            Storage::I32(vec![11, 12, 13, 16, 17, 18])
        );
        assert_eq!(slice(op(&x, &[20]), &[20], &[1], &[0]), Storage::I32(vec![]));
        let b = Storage::BF16(vec![bf16::ONE, bf16::ZERO]);
        assert_eq!(slice(op(&b, &[2]), &[1], &[1], &[1]), Storage::BF16(vec![bf16::ZERO]));
    }

    #[test]
    fn dynamic_slice_clamps() {
        let x = Storage::F32((0..12).map(|i| i as f32).collect());
        let (a, b) = (Storage::I32(vec![1]), Storage::I64(vec![5]));
        let out = dynamic_slice(op(&x, &[3, 4]), &[op(&a, &[]), op(&b, &[])], &[2, 2]);
        assert_eq!(out, Storage::F32(vec![6.0, 7.0, 10.0, 11.0]));
        let (a, b) = (Storage::U32(vec![7]), Storage::I32(vec![-3]));
        let out = dynamic_slice(op(&x, &[3, 4]), &[op(&a, &[]), op(&b, &[])], &[1, 3]);
        assert_eq!(out, Storage::F32(vec![8.0, 9.0, 10.0]));
        let z = Storage::U8(vec![0]);
        let out = dynamic_slice(op(&x, &[12]), &[op(&z, &[])], &[12]);
        assert_eq!(out, x);
    }

    #[test]
    fn dynamic_update_slice_clamps() {
        let x = Storage::I32(vec![0; 12]);
        let u = Storage::I32(vec![1, 2, 3, 4]);
        let (a, b) = (Storage::I32(vec![2]), Storage::I64(vec![-1]));
        let out =
            dynamic_update_slice(op(&x, &[3, 4]), op(&u, &[2, 2]), &[op(&a, &[]), op(&b, &[])]);
        assert_eq!(out, Storage::I32(vec![0, 0, 0, 0, 1, 2, 0, 0, 3, 4, 0, 0]));
        let (a, b) = (Storage::U8(vec![0]), Storage::U32(vec![100]));
        let out =
            dynamic_update_slice(op(&x, &[3, 4]), op(&u, &[1, 4]), &[op(&a, &[]), op(&b, &[])]);
        assert_eq!(out, Storage::I32(vec![1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]));
        let s = Storage::Bool(vec![false]);
        let t = Storage::Bool(vec![true]);
        assert_eq!(dynamic_update_slice(op(&s, &[]), op(&t, &[]), &[]), t);
    }

    #[test]
    fn concatenate_axes() {
        let a = Storage::I32(vec![1, 2, 3, 4]);
        let b = Storage::I32(vec![5, 6]);
        assert_eq!(
            concatenate(&[op(&a, &[2, 2]), op(&b, &[2, 1])], 1, &[2, 3]),
            Storage::I32(vec![1, 2, 5, 3, 4, 6])
        );
        assert_eq!(
            concatenate(&[op(&a, &[2, 2]), op(&b, &[1, 2])], 0, &[3, 2]),
            Storage::I32(vec![1, 2, 3, 4, 5, 6])
        );
        let e = Storage::I32(vec![]);
        assert_eq!(
            concatenate(&[op(&e, &[2, 0]), op(&a, &[2, 2])], 1, &[2, 2]),
            Storage::I32(vec![1, 2, 3, 4])
        );
        // Large: parallel path.
        let x = iota_f32(30_000);
        let y = iota_f32(10_000);
        let out = concatenate(&[op(&x, &[100, 300]), op(&y, &[100, 100])], 1, &[100, 400]);
        let want = reference(&[100, 400], |i| {
            if i[1] < 300 { (i[0] * 300 + i[1]) as f32 } else { (i[0] * 100 + i[1] - 300) as f32 }
        });
        assert_eq!(out, Storage::F32(want));
    }

    #[test]
    fn pad_lo_hi_interior_and_crop() {
        let x = Storage::I32(vec![1, 2, 3]);
        let v = Storage::I32(vec![0]);
        assert_eq!(pad(op(&x, &[3]), &v, &[1], &[0], &[6]), Storage::I32(vec![0, 1, 2, 3, 0, 0]));
        assert_eq!(pad(op(&x, &[3]), &v, &[0], &[1], &[5]), Storage::I32(vec![1, 0, 2, 0, 3]));
        // lo = -1 crops the first element, hi = -1 the last; with interior 2:
        // full = [1 0 0 2 0 0 3], cropped = [0 0 2 0 0].
        assert_eq!(pad(op(&x, &[3]), &v, &[-1], &[2], &[5]), Storage::I32(vec![0, 0, 2, 0, 0]));
        assert_eq!(pad(op(&x, &[3]), &v, &[-3], &[0], &[0]), Storage::I32(vec![]));
        let m = Storage::F32(vec![1.0, 2.0, 3.0, 4.0]);
        let nine = Storage::F32(vec![9.0]);
        assert_eq!(
            pad(op(&m, &[2, 2]), &nine, &[1, 0], &[0, 1], &[3, 3]),
            Storage::F32(vec![9.0, 9.0, 9.0, 1.0, 9.0, 2.0, 3.0, 9.0, 4.0])
        );
        assert_eq!(
            pad(op(&m, &[2, 2]), &nine, &[-1, 1], &[0, 0], &[1, 3]),
            Storage::F32(vec![9.0, 3.0, 4.0])
        );
        let s = Storage::Bool(vec![true]);
        assert_eq!(pad(op(&s, &[]), &Storage::Bool(vec![false]), &[], &[], &[]), s);
    }

    #[test]
    fn iota_dtypes() {
        assert_eq!(iota(DType::I32, &[2, 3], 1), Storage::I32(vec![0, 1, 2, 0, 1, 2]));
        assert_eq!(iota(DType::F32, &[2, 2], 0), Storage::F32(vec![0.0, 0.0, 1.0, 1.0]));
        assert_eq!(iota(DType::U8, &[3], 0), Storage::U8(vec![0, 1, 2]));
        assert_eq!(iota(DType::BF16, &[2], 0), Storage::BF16(vec![bf16::ZERO, bf16::ONE]));
        assert_eq!(iota(DType::I64, &[0, 4], 1), Storage::I64(vec![]));
        assert_eq!(iota(DType::U8, &[258], 0).as_slice::<u8>().unwrap()[256..], [0, 1]);
        assert_eq!(iota(DType::Bool, &[3], 0), Storage::Bool(vec![false, true, true]));
        let h = iota(DType::F16, &[2049], 0);
        assert_eq!(h.as_slice::<f16>().unwrap()[2048], f16::from_f32(2048.0));
    }

    #[test]
    fn simplify_merges() {
        assert_eq!(simplify(&[2, 3, 4], &[12, 4, 1]), (vec![24], vec![1]));
        assert_eq!(simplify(&[2, 1, 4], &[4, 99, 1]), (vec![8], vec![1]));
        assert_eq!(simplify(&[3, 4], &[1, 3]), (vec![3, 4], vec![1, 3]));
        assert_eq!(simplify(&[5, 6], &[0, 0]), (vec![30], vec![0]));
        assert_eq!(simplify(&[2, 3], &[-3, -1]), (vec![6], vec![-1]));
    }
}
