//! Indexing: numpy-style [`Idx`] tuples ([`Array::index`]), slices along one axis,
//! gathers (`take`, `take_along_axis`), functional updates (`at_set`, `at_add`) and the
//! dynamic-slice wrappers.
//!
//! Basic indices (integers, ranges with any step, new axes, ellipsis) become one
//! `lax::rev` + `lax::slice` (+ squeeze/expand). Integer-array indices become a
//! `lax::gather`. As in JAX, out-of-range array indices are clamped when reading and
//! dropped when updating; negative indices count from the end.

use super::ops::{ArrayLike, ArrayOrScalar, broadcast_shape_of, broadcast_to_shape};
use super::{IntoIsize, IntoIsizes, dtype_err, index_dtype, norm_axis, ok, rename, shape_err};
use crate::array::Array;
use crate::aval::broadcast_shapes;
use crate::dtype::DType;
use crate::error::Result;
use crate::lax;
use std::borrow::Borrow;

/// One entry of a numpy-style index tuple (see [`Array::index`] and the [`idx!`] macro).
///
/// Integers, ranges and arrays convert with `From`: `Idx::from(-1)`, `(1..3).into()`,
/// `(..).into()`, `Idx::from(&indices)`.
///
/// [`idx!`]: crate::idx
#[derive(Clone, Debug)]
pub enum Idx {
    /// A single position (negative counts from the end); removes the dim.
    At(isize),
    /// `start:stop:step` with numpy semantics: negative bounds count from the end, bounds
    /// are clipped, `None` means the natural end for the step's sign, a negative step walks
    /// backwards.
    Range {
        /// First position (inclusive).
        start: Option<isize>,
        /// End position (exclusive).
        stop: Option<isize>,
        /// Stride (non-zero).
        step: isize,
    },
    /// The whole dim (`:`).
    Full,
    /// A new size-1 dim (`None` / `np.newaxis`).
    NewAxis,
    /// As many `Full` entries as needed (`...`); at most one per index.
    Ellipsis,
    /// An integer array: gathers along the dim (negative values count from the end).
    /// Several arrays broadcast together, as in numpy's advanced indexing.
    Array(Array),
}

impl Idx {
    /// A single position.
    pub fn at(i: impl IntoIsize) -> Idx {
        Idx::At(i.into_isize())
    }

    /// `start:stop` (step 1).
    pub fn range(start: impl IntoIsize, stop: impl IntoIsize) -> Idx {
        Idx::Range { start: Some(start.into_isize()), stop: Some(stop.into_isize()), step: 1 }
    }

    /// `start:stop:step`, any part optional.
    pub fn slice(start: Option<isize>, stop: Option<isize>, step: isize) -> Idx {
        Idx::Range { start, stop, step }
    }

    /// `::step` (the whole dim with a stride; negative walks backwards).
    pub fn step(step: isize) -> Idx {
        Idx::Range { start: None, stop: None, step }
    }

    /// `::-1` (the whole dim reversed).
    pub fn rev() -> Idx {
        Idx::step(-1)
    }
}

macro_rules! idx_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Idx {
            fn from(i: $t) -> Idx {
                Idx::At(i as isize)
            }
        }
        impl From<std::ops::Range<$t>> for Idx {
            fn from(r: std::ops::Range<$t>) -> Idx {
                Idx::Range { start: Some(r.start as isize), stop: Some(r.end as isize), step: 1 }
            }
        }
        impl From<std::ops::RangeFrom<$t>> for Idx {
            fn from(r: std::ops::RangeFrom<$t>) -> Idx {
                Idx::Range { start: Some(r.start as isize), stop: None, step: 1 }
            }
        }
        impl From<std::ops::RangeTo<$t>> for Idx {
            fn from(r: std::ops::RangeTo<$t>) -> Idx {
                Idx::Range { start: None, stop: Some(r.end as isize), step: 1 }
            }
        }
        impl From<std::ops::RangeInclusive<$t>> for Idx {
            fn from(r: std::ops::RangeInclusive<$t>) -> Idx {
                let end = *r.end() as isize;
                let stop = if end == -1 { None } else { Some(end + 1) };
                Idx::Range { start: Some(*r.start() as isize), stop, step: 1 }
            }
        }
        impl From<std::ops::RangeToInclusive<$t>> for Idx {
            fn from(r: std::ops::RangeToInclusive<$t>) -> Idx {
                let end = r.end as isize;
                let stop = if end == -1 { None } else { Some(end + 1) };
                Idx::Range { start: None, stop, step: 1 }
            }
        }
    )*};
}

idx_from_int!(i32, i64, isize, usize);

impl From<std::ops::RangeFull> for Idx {
    fn from(_: std::ops::RangeFull) -> Idx {
        Idx::Full
    }
}

impl From<Array> for Idx {
    fn from(a: Array) -> Idx {
        Idx::Array(a)
    }
}

impl From<&Array> for Idx {
    fn from(a: &Array) -> Idx {
        Idx::Array(a.clone())
    }
}

/// Builds an index tuple (`[Idx; N]`) from integers, ranges, `..`, arrays and [`Idx`]
/// values, for [`Array::index`], [`Array::at_set`] and [`Array::at_add`].
///
/// ```
/// use kiln::{Array, idx, numpy::Idx};
/// let x = Array::arange(0.0, 12.0, 1.0).reshape([3, 4]);
/// assert_eq!(x.index(idx![1, ..]).to_vec::<f32>(), vec![4.0, 5.0, 6.0, 7.0]);
/// assert_eq!(x.index(idx![-1, 1..3]).to_vec::<f32>(), vec![9.0, 10.0]);
/// assert_eq!(x.index(idx![.., Idx::rev()]).shape(), &[3, 4]);
/// assert_eq!(x.index(idx![Idx::NewAxis, Idx::Ellipsis, 0]).shape(), &[1, 3]);
/// ```
#[macro_export]
macro_rules! idx {
    ($($e:expr),* $(,)?) => {
        [$($crate::numpy::Idx::from($e)),*]
    };
}

// ---- normalized index plans --------------------------------------------------------------

/// A normalized entry: what it does to one dim of the operand (`New` to none).
#[derive(Clone, Debug)]
enum Ent {
    /// One position (in range).
    At(usize),
    /// Positions `start + k * step` for `k < len` (all in range when `len > 0`).
    Slice { start: isize, len: usize, step: isize },
    /// A new size-1 output dim.
    New,
    /// An integer index array (negatives wrapped, not yet range-checked).
    Adv(Array),
}

/// Entries with the operand dim each applies to (`None` for new axes).
type Plan = Vec<(Ent, Option<usize>)>;

/// Python's `slice.indices` followed by the length: `(first position, count)`.
fn slice_indices(
    start: Option<isize>,
    stop: Option<isize>,
    step: isize,
    n: usize,
) -> (isize, usize) {
    let n = n as isize;
    if step > 0 {
        let clip = |v: isize| if v < 0 { (v + n).max(0) } else { v.min(n) };
        let s = start.map_or(0, clip);
        let e = stop.map_or(n, clip);
        (s, if e > s { ((e - s + step - 1) / step) as usize } else { 0 })
    } else {
        let clip = |v: isize| if v < 0 { (v + n).max(-1) } else { v.min(n - 1) };
        let s = start.map_or(n - 1, clip);
        let e = stop.map_or(-1, clip);
        (s, if s > e { ((s - e - step - 1) / -step) as usize } else { 0 })
    }
}

/// Adds `n` to the negative entries of an integer index array.
fn wrap_negative(idx: &Array, n: usize) -> Array {
    if idx.dtype().is_unsigned() {
        return idx.clone();
    }
    let zero = lax::zeros_like(idx);
    lax::select(&lax::lt(idx, &zero), &lax::add(idx, &lax::full_like(idx, n as f64)), idx)
}

fn check_index_array(op: &str, x: &Array, a: &Array) -> Result<()> {
    if a.dtype() == DType::Bool {
        return Err(dtype_err(
            op,
            "boolean mask indices are not supported (the result shape would depend on the \
             values); use `where_` or integer indices",
            &[x, a],
        ));
    }
    if !a.dtype().is_int() {
        return Err(dtype_err(
            op,
            format!("index arrays must be integers, got {}", a.dtype()),
            &[x, a],
        ));
    }
    Ok(())
}

fn plan(op: &str, x: &Array, idx: &[Idx]) -> Result<Plan> {
    let nd = x.ndim();
    let n_ell = idx.iter().filter(|i| matches!(i, Idx::Ellipsis)).count();
    if n_ell > 1 {
        return Err(shape_err(op, "an index can only have one ellipsis", &[x]));
    }
    let consumed = idx.iter().filter(|i| !matches!(i, Idx::Ellipsis | Idx::NewAxis)).count();
    if consumed > nd {
        return Err(shape_err(
            op,
            format!("too many indices ({consumed}) for array of shape {:?}", x.shape()),
            &[x],
        ));
    }
    let mut full: Vec<Idx> = Vec::with_capacity(idx.len() + nd);
    for i in idx {
        if matches!(i, Idx::Ellipsis) {
            full.extend(std::iter::repeat_n(Idx::Full, nd - consumed));
        } else {
            full.push(i.clone());
        }
    }
    if n_ell == 0 {
        full.extend(std::iter::repeat_n(Idx::Full, nd - consumed));
    }
    let mut d = 0;
    let mut out = Vec::with_capacity(full.len());
    for i in full {
        if matches!(i, Idx::NewAxis) {
            out.push((Ent::New, None));
            continue;
        }
        let n = x.shape()[d];
        let ent = match i {
            Idx::At(k) => {
                let j = if k < 0 { k + n as isize } else { k };
                if j < 0 || j >= n as isize {
                    return Err(shape_err(
                        op,
                        format!(
                            "index {k} is out of bounds for axis {d} with size {n} (shape {:?})",
                            x.shape()
                        ),
                        &[x],
                    ));
                }
                Ent::At(j as usize)
            }
            Idx::Range { start, stop, step } => {
                if step == 0 {
                    return Err(shape_err(op, "slice step cannot be zero", &[x]));
                }
                let (start, len) = slice_indices(start, stop, step, n);
                Ent::Slice { start, len, step }
            }
            Idx::Full => Ent::Slice { start: 0, len: n, step: 1 },
            Idx::Array(a) => {
                check_index_array(op, x, &a)?;
                Ent::Adv(wrap_negative(&a, n))
            }
            Idx::NewAxis | Idx::Ellipsis => unreachable!("handled above"),
        };
        out.push((ent, Some(d)));
        d += 1;
    }
    if out.iter().any(|(e, _)| matches!(e, Ent::Adv(_))) {
        // With array indices, integers are array indices too (numpy's rule).
        for (e, _) in &mut out {
            if let Ent::At(i) = *e {
                *e = Ent::Adv(Array::scalar(i as i32));
            }
        }
    }
    Ok(out)
}

/// Where each entry's dims land in the result.
struct Layout {
    /// The result shape.
    shape: Vec<usize>,
    /// Output position of each `Slice`/`New` entry.
    pos: Vec<Option<usize>>,
    /// The broadcast shape of the array indices and where it starts in the result.
    adv_shape: Vec<usize>,
    adv_pos: usize,
}

fn layout(op: &str, x: &Array, p: &Plan) -> Result<Layout> {
    let advs: Vec<&Array> =
        p.iter().filter_map(|(e, _)| if let Ent::Adv(a) = e { Some(a) } else { None }).collect();
    let adv_shape = if advs.is_empty() {
        vec![]
    } else {
        let mut all = vec![x];
        all.extend(&advs);
        broadcast_shape_of(op, &advs).map_err(|_| {
            let shapes: Vec<&[usize]> = advs.iter().map(|a| a.shape()).collect();
            shape_err(
                op,
                format!(
                    "cannot broadcast index arrays of shapes {}",
                    super::ops::fmt_shapes(&shapes)
                ),
                &all,
            )
        })?
    };
    let adv_k: Vec<usize> = (0..p.len()).filter(|&k| matches!(p[k].0, Ent::Adv(_))).collect();
    let contiguous = adv_k.windows(2).all(|w| w[1] == w[0] + 1);
    let mut shape = vec![];
    let mut pos = vec![None; p.len()];
    let mut adv_pos = 0;
    if !adv_k.is_empty() && !contiguous {
        shape.extend(&adv_shape);
    }
    for (k, (e, _)) in p.iter().enumerate() {
        match e {
            Ent::At(_) => {}
            Ent::Slice { len, .. } => {
                pos[k] = Some(shape.len());
                shape.push(*len);
            }
            Ent::New => {
                pos[k] = Some(shape.len());
                shape.push(1);
            }
            Ent::Adv(_) => {
                if contiguous && k == adv_k[0] {
                    adv_pos = shape.len();
                    shape.extend(&adv_shape);
                }
            }
        }
    }
    Ok(Layout { shape, pos, adv_shape, adv_pos })
}

/// The flat (row-major) operand position of every result element, shape `lay.shape`.
/// With `drop_out_of_range`, positions of out-of-range array indices become `x.size()`
/// (dropped by scatters); otherwise array indices are clamped into range.
fn flat_positions(x: &Array, p: &Plan, lay: &Layout, drop_out_of_range: bool) -> Array {
    let idt = index_dtype(x.size());
    let strides = crate::aval::strides(x.shape());
    let out = &lay.shape;
    let mut flat = lax::broadcast_in_dim(&Array::scalar_of(0.0, idt), out, &[]);
    let mut oob: Option<Array> = None;
    for (k, (e, d)) in p.iter().enumerate() {
        let Some(d) = *d else { continue };
        let n = x.shape()[d];
        let coord = match e {
            Ent::At(i) => lax::broadcast_in_dim(&Array::scalar_of(*i as f64, idt), out, &[]),
            Ent::Slice { start, len, step } => {
                let c = lax::iota(idt, &[*len], 0);
                let c = lax::add(
                    &lax::mul(&c, &lax::full_like(&c, *step as f64)),
                    &lax::full_like(&c, *start as f64),
                );
                lax::broadcast_in_dim(&c, out, &[lay.pos[k].expect("slice position")])
            }
            Ent::Adv(a) => {
                let a = lax::convert_element_type(a, idt);
                let a = broadcast_to_shape(&a, &lay.adv_shape);
                let (lo, hi) = (lax::zeros_like(&a), lax::full_like(&a, n as f64 - 1.0));
                let a = if drop_out_of_range {
                    let bad = lax::or(&lax::lt(&a, &lo), &lax::gt(&a, &hi));
                    let bad = lax::broadcast_in_dim(
                        &bad,
                        out,
                        &(lay.adv_pos..lay.adv_pos + lay.adv_shape.len()).collect::<Vec<_>>(),
                    );
                    oob = Some(match oob {
                        Some(o) => lax::or(&o, &bad),
                        None => bad,
                    });
                    a
                } else if n == 0 {
                    a
                } else {
                    lax::clamp(&lo, &a, &hi)
                };
                let dims: Vec<usize> = (lay.adv_pos..lay.adv_pos + lay.adv_shape.len()).collect();
                lax::broadcast_in_dim(&a, out, &dims)
            }
            Ent::New => continue,
        };
        flat = lax::add(&flat, &lax::mul(&coord, &lax::full_like(&coord, strides[d] as f64)));
    }
    match oob {
        Some(o) => lax::select(&o, &lax::full_like(&flat, x.size() as f64), &flat),
        None => flat,
    }
}

/// Basic indexing (no array entries): rev + slice + squeeze + expand_dims.
fn basic_index(x: &Array, p: &Plan) -> Array {
    let nd = x.ndim();
    let (mut start, mut limit, mut strides) = (vec![0; nd], x.shape().to_vec(), vec![1; nd]);
    let (mut rev, mut squeeze, mut new) = (vec![], vec![], vec![]);
    let mut pos = 0;
    for (e, d) in p {
        match (e, *d) {
            (Ent::At(i), Some(d)) => {
                (start[d], limit[d]) = (*i, i + 1);
                squeeze.push(d);
            }
            (Ent::Slice { start: s, len, step }, Some(d)) => {
                let n = x.shape()[d] as isize;
                if *len == 0 {
                    (start[d], limit[d]) = (0, 0);
                } else {
                    let (s, st) = if *step > 0 {
                        (*s, *step)
                    } else {
                        rev.push(d);
                        (n - 1 - s, -step)
                    };
                    start[d] = s as usize;
                    limit[d] = (s + (*len as isize - 1) * st + 1) as usize;
                    strides[d] = st as usize;
                }
                pos += 1;
            }
            (Ent::New, _) => {
                new.push(pos);
                pos += 1;
            }
            _ => unreachable!("no array entries in basic indexing"),
        }
    }
    let y = if rev.is_empty() { x.clone() } else { lax::rev(x, &rev) };
    let y = lax::slice(&y, &start, &limit, Some(&strides));
    let y = lax::squeeze(&y, &squeeze);
    lax::expand_dims(&y, &new)
}

impl Array {
    /// numpy-style indexing with a tuple of [`Idx`] (build it with [`idx!`](crate::idx)):
    /// integers remove a dim, ranges slice with any step (negative steps reverse),
    /// `NewAxis` inserts a dim, `Ellipsis` stands for the remaining dims, and integer
    /// arrays gather (several broadcast together, with numpy's placement of the result
    /// dims). Missing trailing entries are `Full`.
    ///
    /// ```
    /// use kiln::{Array, idx, numpy::Idx};
    /// let x = Array::arange(0.0, 6.0, 1.0).reshape([2, 3]);
    /// assert_eq!(x.index(idx![.., Idx::rev()]).to_vec::<f32>(), vec![2.0, 1.0, 0.0, 5.0, 4.0, 3.0]);
    /// let rows = Array::from_vec(vec![1i32, 0, -1], [3]);
    /// assert_eq!(x.index(idx![&rows, 0]).to_vec::<f32>(), vec![3.0, 0.0, 3.0]);
    /// assert_eq!(x.index([Idx::At(0), Idx::step(2)]).to_vec::<f32>(), vec![0.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn index(&self, idx: impl AsRef<[Idx]>) -> Array {
        ok(self.try_index(idx))
    }

    /// Fallible [`Array::index`].
    pub fn try_index(&self, idx: impl AsRef<[Idx]>) -> Result<Array> {
        let p = plan("index", self, idx.as_ref())?;
        let advs: Vec<usize> = (0..p.len()).filter(|&k| matches!(p[k].0, Ent::Adv(_))).collect();
        if advs.is_empty() {
            return Ok(basic_index(self, &p));
        }
        if let [k] = advs[..] {
            // One array index: slice the other dims, then gather along its dim.
            let d = p[k].1.expect("array entries index a dim");
            let n = self.shape()[d];
            let Ent::Adv(a) = &p[k].0 else { unreachable!("array entry") };
            let mut rest = p.clone();
            rest[k].0 = Ent::Slice { start: 0, len: n, step: 1 };
            let no_new: Plan =
                rest.iter().filter(|(e, _)| !matches!(e, Ent::New)).cloned().collect();
            let y = basic_index(self, &no_new);
            let a = if n == 0 {
                a.clone()
            } else {
                lax::clamp(&lax::zeros_like(a), a, &lax::full_like(a, n as f64 - 1.0))
            };
            let y = lax::gather(&y, &a, d, 0);
            let mut new = vec![];
            let mut pos = 0;
            for (e, _) in &p {
                match e {
                    Ent::New => {
                        new.push(pos);
                        pos += 1;
                    }
                    Ent::Slice { .. } => pos += 1,
                    Ent::Adv(a) => pos += a.ndim(),
                    Ent::At(_) => {}
                }
            }
            return Ok(lax::expand_dims(&y, &new));
        }
        let lay = layout("index", self, &p)?;
        let flat = flat_positions(self, &p, &lay, false);
        Ok(lax::gather(&lax::reshape(self, &[self.size()]), &flat, 0, 0))
    }

    /// `self[.., start:stop:step, ..]` on one `axis` (numpy slice semantics; `None` bounds
    /// are the natural ends, negative values count from the end).
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::arange(0.0, 5.0, 1.0);
    /// assert_eq!(x.slice_axis(0, 1, -1, 1).to_vec::<f32>(), vec![1.0, 2.0, 3.0]);
    /// assert_eq!(x.slice_axis(0, None, None, -2).to_vec::<f32>(), vec![4.0, 2.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn slice_axis(
        &self,
        axis: impl IntoIsize,
        start: impl Into<Option<isize>>,
        stop: impl Into<Option<isize>>,
        step: isize,
    ) -> Array {
        ok(self.try_slice_axis(axis, start, stop, step))
    }

    /// Fallible [`Array::slice_axis`].
    pub fn try_slice_axis(
        &self,
        axis: impl IntoIsize,
        start: impl Into<Option<isize>>,
        stop: impl Into<Option<isize>>,
        step: isize,
    ) -> Result<Array> {
        let a = norm_axis("slice_axis", axis.into_isize(), self)?;
        let mut idx = vec![Idx::Full; a];
        idx.push(Idx::Range { start: start.into(), stop: stop.into(), step });
        let p = plan("slice_axis", self, &idx)?;
        Ok(basic_index(self, &p))
    }

    /// Gathers along `axis` with integer `indices` (numpy's `take` with an axis): the
    /// result has shape `shape[..axis] + indices.shape + shape[axis+1..]`. Negative
    /// indices count from the end; out-of-range indices are clamped.
    ///
    /// ```
    /// use kiln::Array;
    /// let table = Array::arange(0.0, 6.0, 1.0).reshape([3, 2]);
    /// let ids = Array::from_vec(vec![2i32, 0], [2]);
    /// assert_eq!(table.take(&ids, 0).to_vec::<f32>(), vec![4.0, 5.0, 0.0, 1.0]);
    /// ```
    #[track_caller]
    pub fn take(&self, indices: &Array, axis: impl IntoIsize) -> Array {
        ok(self.try_take(indices, axis))
    }

    /// Fallible [`Array::take`].
    pub fn try_take(&self, indices: &Array, axis: impl IntoIsize) -> Result<Array> {
        let a = norm_axis("take", axis.into_isize(), self)?;
        check_index_array("take", self, indices)?;
        let n = self.shape()[a];
        let i = wrap_negative(indices, n);
        let i = if n == 0 {
            i
        } else {
            lax::clamp(&lax::zeros_like(&i), &i, &lax::full_like(&i, n as f64 - 1.0))
        };
        Ok(lax::gather(self, &i, a, 0))
    }

    /// numpy's `take_along_axis`: `out[.., j, ..] = self[.., indices[.., j, ..], ..]` along
    /// `axis`; `indices` has the same number of dims, and the other dims broadcast.
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::from_vec(vec![10.0f32, 30.0, 20.0, 5.0, 1.0, 3.0], [2, 3]);
    /// let i = x.argmax(-1).expand_dims(-1);
    /// assert_eq!(x.take_along_axis(&i, -1).to_vec::<f32>(), vec![30.0, 5.0]);
    /// ```
    #[track_caller]
    pub fn take_along_axis(&self, indices: &Array, axis: impl IntoIsize) -> Array {
        ok(self.try_take_along_axis(indices, axis))
    }

    /// Fallible [`Array::take_along_axis`].
    pub fn try_take_along_axis(&self, indices: &Array, axis: impl IntoIsize) -> Result<Array> {
        let op = "take_along_axis";
        let a = norm_axis(op, axis.into_isize(), self)?;
        check_index_array(op, self, indices)?;
        let err = || {
            shape_err(
                op,
                format!(
                    "indices of shape {:?} do not fit array of shape {:?} along axis {a}",
                    indices.shape(),
                    self.shape()
                ),
                &[self, indices],
            )
        };
        if indices.ndim() != self.ndim() {
            return Err(err());
        }
        let mut bx = self.shape().to_vec();
        let mut bi = indices.shape().to_vec();
        for d in (0..self.ndim()).filter(|&d| d != a) {
            let s = broadcast_shapes(&[self.shape()[d]], &[indices.shape()[d]]).ok_or_else(err)?;
            (bx[d], bi[d]) = (s[0], s[0]);
        }
        let all: Vec<usize> = (0..self.ndim()).collect();
        let x = lax::broadcast_in_dim(self, &bx, &all);
        let n = self.shape()[a];
        let i = wrap_negative(&lax::broadcast_in_dim(indices, &bi, &all), n);
        let i = if n == 0 {
            i
        } else {
            lax::clamp(&lax::zeros_like(&i), &i, &lax::full_like(&i, n as f64 - 1.0))
        };
        Ok(crate::rules::take_along_axis(&x, &i, a))
    }

    /// A copy with `self[idx] = value` (JAX's `x.at[idx].set(value)`): `value` is converted
    /// to this dtype and broadcast to the indexed shape. Out-of-range array indices are
    /// dropped; with repeated indices one of the writes wins.
    ///
    /// ```
    /// use kiln::{Array, idx};
    /// let x = Array::zeros([2, 3]);
    /// let y = x.at_set(idx![0, 1..], 5.0);
    /// assert_eq!(y.to_vec::<f32>(), vec![0.0, 5.0, 5.0, 0.0, 0.0, 0.0]);
    /// let z = y.at_add(idx![.., -1], &Array::from_vec(vec![1.0f32, 2.0], [2]));
    /// assert_eq!(z.to_vec::<f32>(), vec![0.0, 5.0, 6.0, 0.0, 0.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn at_set(&self, idx: impl AsRef<[Idx]>, value: impl ArrayLike) -> Array {
        ok(self.try_at_set(idx, value))
    }

    /// Fallible [`Array::at_set`].
    pub fn try_at_set(&self, idx: impl AsRef<[Idx]>, value: impl ArrayLike) -> Result<Array> {
        self.update("at_set", idx.as_ref(), value.into_array_or_scalar(), false)
    }

    /// A copy with `self[idx] += value` (JAX's `x.at[idx].add(value)`); repeated indices
    /// accumulate. Out-of-range array indices are dropped.
    #[track_caller]
    pub fn at_add(&self, idx: impl AsRef<[Idx]>, value: impl ArrayLike) -> Array {
        ok(self.try_at_add(idx, value))
    }

    /// Fallible [`Array::at_add`].
    pub fn try_at_add(&self, idx: impl AsRef<[Idx]>, value: impl ArrayLike) -> Result<Array> {
        self.update("at_add", idx.as_ref(), value.into_array_or_scalar(), true)
    }

    fn update(&self, op: &str, idx: &[Idx], value: ArrayOrScalar, add: bool) -> Result<Array> {
        let p = plan(op, self, idx)?;
        let lay = layout(op, self, &p)?;
        let out = &lay.shape;
        let v = match value {
            ArrayOrScalar::Scalar(s) => s.to_array(self.dtype()),
            ArrayOrScalar::Array(v) => lax::convert_element_type(&v, self.dtype()),
        };
        // Leading size-1 dims of the value beyond the indexed rank are allowed (numpy).
        let extra = v.ndim().saturating_sub(out.len());
        let v = if extra > 0 && v.shape()[..extra].iter().all(|&d| d == 1) {
            lax::reshape(&v, &v.shape()[extra..])
        } else {
            v
        };
        if broadcast_shapes(v.shape(), out).as_deref() != Some(out.as_slice()) {
            return Err(shape_err(
                op,
                format!(
                    "cannot broadcast a value of shape {:?} to the indexed shape {out:?}",
                    v.shape()
                ),
                &[self, &v],
            ));
        }
        let v = broadcast_to_shape(&v, out);
        if out.contains(&0) {
            return Ok(self.clone());
        }
        let simple = p.iter().all(|(e, _)| match e {
            Ent::At(_) | Ent::New => true,
            Ent::Slice { step, .. } => *step == 1,
            Ent::Adv(_) => false,
        });
        if simple {
            // A box: dynamic_update_slice at static starts.
            let nd = self.ndim();
            let (mut start, mut size) = (vec![0usize; nd], self.shape().to_vec());
            for (e, d) in &p {
                match (e, *d) {
                    (Ent::At(i), Some(d)) => (start[d], size[d]) = (*i, 1),
                    (Ent::Slice { start: s, len, .. }, Some(d)) => {
                        (start[d], size[d]) = (*s as usize, *len)
                    }
                    _ => {}
                }
            }
            let vb = lax::reshape(&v, &size);
            let vb = if add {
                let limit: Vec<usize> = (0..nd).map(|d| start[d] + size[d]).collect();
                lax::add(&lax::slice(self, &start, &limit, None), &vb)
            } else {
                vb
            };
            let starts: Vec<Array> = start.iter().map(|&s| Array::scalar(s as i32)).collect();
            return Ok(lax::dynamic_update_slice(self, &vb, &starts));
        }
        let flat = flat_positions(self, &p, &lay, true);
        let m: usize = out.iter().product();
        let xf = lax::reshape(self, &[self.size()]);
        let fi = lax::reshape(&flat, &[m]);
        let fv = lax::reshape(&v, &[m]);
        let r = if add {
            lax::scatter_add(&xf, &fi, &fv, 0, 0)
        } else {
            lax::scatter(&xf, &fi, &fv, 0, 0)
        };
        Ok(lax::reshape(&r, self.shape()))
    }

    /// The slice of `sizes` starting at dynamic (array) positions `starts` (one integer
    /// 0-d array per dim), clamped into bounds like XLA. Works under `jit` with traced
    /// starts.
    ///
    /// ```
    /// use kiln::Array;
    /// let x = Array::arange(0.0, 5.0, 1.0);
    /// let s = x.dynamic_slice(&[Array::scalar(3i32)], [2]);
    /// assert_eq!(s.to_vec::<f32>(), vec![3.0, 4.0]);
    /// ```
    #[track_caller]
    pub fn dynamic_slice<A: Borrow<Array>>(&self, starts: &[A], sizes: impl IntoIsizes) -> Array {
        ok(self.try_dynamic_slice(starts, sizes))
    }

    /// Fallible [`Array::dynamic_slice`].
    pub fn try_dynamic_slice<A: Borrow<Array>>(
        &self,
        starts: &[A],
        sizes: impl IntoIsizes,
    ) -> Result<Array> {
        let op = "dynamic_slice";
        let starts = check_starts(op, self, starts)?;
        let sizes = sizes.into_isizes();
        if sizes.len() != self.ndim()
            || sizes.iter().zip(self.shape()).any(|(&s, &d)| s < 0 || s as usize > d)
        {
            return Err(shape_err(
                op,
                format!("slice sizes {sizes:?} do not fit shape {:?}", self.shape()),
                &[self],
            ));
        }
        let sizes: Vec<usize> = sizes.iter().map(|&s| s as usize).collect();
        Ok(lax::dynamic_slice(self, &starts, &sizes))
    }

    /// A copy with `update` written at dynamic (array) positions `starts` (clamped so the
    /// update fits); `update` is converted to this dtype.
    #[track_caller]
    pub fn dynamic_update_slice<A: Borrow<Array>>(&self, update: &Array, starts: &[A]) -> Array {
        ok(self.try_dynamic_update_slice(update, starts))
    }

    /// Fallible [`Array::dynamic_update_slice`].
    pub fn try_dynamic_update_slice<A: Borrow<Array>>(
        &self,
        update: &Array,
        starts: &[A],
    ) -> Result<Array> {
        let op = "dynamic_update_slice";
        let starts = check_starts(op, self, starts)?;
        if update.ndim() != self.ndim()
            || update.shape().iter().zip(self.shape()).any(|(u, d)| u > d)
        {
            return Err(shape_err(
                op,
                format!(
                    "an update of shape {:?} does not fit shape {:?}",
                    update.shape(),
                    self.shape()
                ),
                &[self, update],
            ));
        }
        let u = lax::convert_element_type(update, self.dtype());
        Ok(lax::dynamic_update_slice(self, &u, &starts))
    }
}

fn check_starts<A: Borrow<Array>>(op: &str, x: &Array, starts: &[A]) -> Result<Vec<Array>> {
    if starts.len() != x.ndim() {
        return Err(shape_err(
            op,
            format!("{} start indices for shape {:?}", starts.len(), x.shape()),
            &[x],
        ));
    }
    starts
        .iter()
        .map(|s| {
            let s = s.borrow();
            if s.ndim() != 0 || !s.dtype().is_int() {
                return Err(rename(
                    dtype_err(op, "start indices must be 0-d integer arrays", &[x, s]),
                    op,
                ));
            }
            Ok(lax::convert_element_type(s, DType::I32))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::slice_indices;

    #[test]
    fn slice_indices_match_python() {
        // Expected values from Python's `range(*slice(a, b, c).indices(n))`.
        assert_eq!(slice_indices(None, None, 1, 5), (0, 5));
        assert_eq!(slice_indices(None, None, -1, 5), (4, 5));
        assert_eq!(slice_indices(Some(-2), None, 1, 5), (3, 2));
        assert_eq!(slice_indices(Some(1), Some(-1), 2, 6), (1, 2));
        assert_eq!(slice_indices(Some(10), None, -2, 5), (4, 3));
        assert_eq!(slice_indices(Some(0), Some(10), 3, 5), (0, 2));
        assert_eq!(slice_indices(Some(3), Some(1), 1, 5), (3, 0));
        assert_eq!(slice_indices(Some(-1), Some(-10), -3, 5), (4, 2));
        assert_eq!(slice_indices(None, None, 1, 0), (0, 0));
        assert_eq!(slice_indices(None, None, -1, 0), (-1, 0));
    }
}
