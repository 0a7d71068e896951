//! Batching (vmap) rules: for every primitive, how to apply it to operands that carry a
//! batch dimension.
//!
//! A rule receives the underlying values and, per operand, the position of its batch
//! dimension (`None`: not batched). It returns the outputs and their batch dimensions. Rules
//! are written with [`crate::lax`] operations, so they run under the enclosing trace and
//! compose with every other transformation. Batch dimensions are moved only when needed:
//! unary elementwise operations keep them, binary ones keep them when all operands agree,
//! and otherwise they are moved to the front (unbatched operands are broadcast).

use crate::array::Array;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::lax;
use crate::prim::Prim;
use crate::trace::bind;

/// Moves axis `from` of `x` to position `to`.
pub(crate) fn moveaxis(x: &Array, from: usize, to: usize) -> Array {
    if from == to {
        return x.clone();
    }
    let mut perm: Vec<usize> = (0..x.ndim()).filter(|&i| i != from).collect();
    perm.insert(to, from);
    lax::transpose(x, &perm)
}

/// `x` with its batch dimension at the front; unbatched values are broadcast to `size`.
pub(crate) fn to_front(x: &Array, bdim: Option<usize>, size: usize) -> Array {
    match bdim {
        Some(d) => moveaxis(x, d, 0),
        None => {
            let mut shape = vec![size];
            shape.extend_from_slice(x.shape());
            let dims: Vec<usize> = (1..=x.ndim()).collect();
            lax::broadcast_in_dim(x, &shape, &dims)
        }
    }
}

/// The batch size, read off the first batched operand.
fn batch_size(args: &[Array], bdims: &[Option<usize>]) -> Option<usize> {
    args.iter().zip(bdims).find_map(|(a, d)| d.map(|d| a.shape()[d]))
}

/// All operands with the batch dimension at the front.
fn all_front(args: &[Array], bdims: &[Option<usize>], size: usize) -> Vec<Array> {
    args.iter().zip(bdims).map(|(a, &d)| to_front(a, d, size)).collect()
}

fn shift(axes: &[usize]) -> Vec<usize> {
    axes.iter().map(|a| a + 1).collect()
}

fn front1<T: Clone>(first: T, rest: &[T]) -> Vec<T> {
    let mut v = vec![first];
    v.extend_from_slice(rest);
    v
}

/// Applies `prim` to the operands moved to the front, all outputs batched at 0.
fn at_front(
    prim: &Prim,
    args: &[Array],
    bdims: &[Option<usize>],
    size: usize,
) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
    let outs = bind(prim, &all_front(args, bdims, size))?;
    let n = outs.len();
    Ok((outs, vec![Some(0); n]))
}

/// The generic rule: a loop over the batch, then a stack. Used where no cheaper rule exists.
fn batch_loop(
    prim: &Prim,
    args: &[Array],
    bdims: &[Option<usize>],
    size: usize,
) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
    let mut per_out: Vec<Vec<Array>> = Vec::new();
    for i in 0..size {
        let slices: Vec<Array> = args
            .iter()
            .zip(bdims)
            .map(|(a, &d)| match d {
                None => a.clone(),
                Some(d) => {
                    let mut start = vec![0; a.ndim()];
                    let mut limit = a.shape().to_vec();
                    start[d] = i;
                    limit[d] = i + 1;
                    lax::squeeze(&lax::slice(a, &start, &limit, None), &[d])
                }
            })
            .collect();
        let outs = bind(prim, &slices)?;
        if per_out.is_empty() {
            per_out = vec![Vec::with_capacity(size); outs.len()];
        }
        for (k, o) in outs.into_iter().enumerate() {
            per_out[k].push(lax::expand_dims(&o, &[0]));
        }
    }
    if size == 0 {
        return Err(Error::Transform {
            transform: "vmap",
            msg: format!("cannot batch `{}` over an axis of size 0", prim.name()),
        });
    }
    let outs: Vec<Array> = per_out.iter().map(|xs| lax::concatenate(xs, 0)).collect();
    let n = outs.len();
    Ok((outs, vec![Some(0); n]))
}

/// The batching rule of `prim`: outputs and their batch dimensions.
pub fn batch(
    prim: &Prim,
    args: &[Array],
    bdims: &[Option<usize>],
) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
    use Prim::*;
    let Some(size) = batch_size(args, bdims) else {
        let outs = bind(prim, args)?;
        let n = outs.len();
        return Ok((outs, vec![None; n]));
    };
    let one = |p: Prim, x: Array| -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((bind(&p, &[x])?, vec![Some(0)]))
    };
    match prim {
        // Unary elementwise: the batch dimension stays where it is.
        p if p.is_unary_elementwise() => Ok((bind(p, args)?, bdims.to_vec())),
        // N-ary elementwise: keep a common batch dim, else move to the front.
        p if p.is_binary_elementwise() => elementwise(p, args, bdims, size),
        Select | Clamp | Threefry2x32 => elementwise(prim, args, bdims, size),
        Call { callee } => crate::vmap::batch_call(callee, args, bdims),
        BroadcastInDim { shape, dims } => {
            let x = to_front(&args[0], bdims[0], size);
            let dims = front1(0, &shift(dims));
            one(BroadcastInDim { shape: front1(size, shape), dims }, x)
        }
        Reshape { shape } => {
            one(Reshape { shape: front1(size, shape) }, to_front(&args[0], bdims[0], size))
        }
        Transpose { perm } => {
            let perm = front1(0, &shift(perm));
            one(Transpose { perm }, to_front(&args[0], bdims[0], size))
        }
        Rev { axes } => one(Rev { axes: shift(axes) }, to_front(&args[0], bdims[0], size)),
        Squeeze { axes } => one(Squeeze { axes: shift(axes) }, to_front(&args[0], bdims[0], size)),
        ExpandDims { axes } => {
            one(ExpandDims { axes: shift(axes) }, to_front(&args[0], bdims[0], size))
        }
        ReduceSum { axes } => {
            one(ReduceSum { axes: shift(axes) }, to_front(&args[0], bdims[0], size))
        }
        ReduceMax { axes } => {
            one(ReduceMax { axes: shift(axes) }, to_front(&args[0], bdims[0], size))
        }
        ReduceMin { axes } => {
            one(ReduceMin { axes: shift(axes) }, to_front(&args[0], bdims[0], size))
        }
        ReduceProd { axes } => {
            one(ReduceProd { axes: shift(axes) }, to_front(&args[0], bdims[0], size))
        }
        ArgMax { axis, index_dtype } => one(
            ArgMax { axis: axis + 1, index_dtype: *index_dtype },
            to_front(&args[0], bdims[0], size),
        ),
        ArgMin { axis, index_dtype } => one(
            ArgMin { axis: axis + 1, index_dtype: *index_dtype },
            to_front(&args[0], bdims[0], size),
        ),
        Cumsum { axis, reverse } => {
            one(Cumsum { axis: axis + 1, reverse: *reverse }, to_front(&args[0], bdims[0], size))
        }
        DotGeneral { lhs_contract, rhs_contract, lhs_batch, rhs_batch } => {
            dot_general(args, bdims, size, (lhs_contract, rhs_contract, lhs_batch, rhs_batch))
        }
        Conv { .. } => {
            if bdims[1].is_none() {
                // Fold the batch into N.
                let x = to_front(&args[0], bdims[0], size);
                let n = x.shape()[1];
                let mut folded = vec![size * n];
                folded.extend_from_slice(&x.shape()[2..]);
                let y = bind(prim, &[lax::reshape(&x, &folded), args[1].clone()])?.remove(0);
                let mut unfolded = vec![size, n];
                unfolded.extend_from_slice(&y.shape()[1..]);
                Ok((vec![lax::reshape(&y, &unfolded)], vec![Some(0)]))
            } else {
                batch_loop(prim, args, bdims, size)
            }
        }
        ReduceWindow { kind, window, strides, padding } => one(
            ReduceWindow {
                kind: *kind,
                window: front1(1, window),
                strides: front1(1, strides),
                padding: front1((0, 0), padding),
            },
            to_front(&args[0], bdims[0], size),
        ),
        SelectAndGatherAdd { window, strides, padding } => {
            let p = SelectAndGatherAdd {
                window: front1(1, window),
                strides: front1(1, strides),
                padding: front1((0, 0), padding),
            };
            at_front(&p, args, bdims, size)
        }
        SelectAndScatterAdd { window, strides, padding } => {
            let p = SelectAndScatterAdd {
                window: front1(1, window),
                strides: front1(1, strides),
                padding: front1((0, 0), padding),
            };
            at_front(&p, args, bdims, size)
        }
        Slice { start, limit, strides } => one(
            Slice {
                start: front1(0, start),
                limit: front1(size, limit),
                strides: front1(1, strides),
            },
            to_front(&args[0], bdims[0], size),
        ),
        DynamicSlice { sizes } if bdims[1..].iter().all(Option::is_none) => {
            let mut ops = vec![to_front(&args[0], bdims[0], size)];
            ops.push(zero_index(args.get(1)));
            ops.extend_from_slice(&args[1..]);
            Ok((bind(&DynamicSlice { sizes: front1(size, sizes) }, &ops)?, vec![Some(0)]))
        }
        DynamicUpdateSlice if bdims[2..].iter().all(Option::is_none) => {
            let mut ops = all_front(&args[..2], &bdims[..2], size);
            ops.push(zero_index(args.get(2)));
            ops.extend_from_slice(&args[2..]);
            Ok((bind(prim, &ops)?, vec![Some(0)]))
        }
        DynamicSlice { .. } | DynamicUpdateSlice => batch_loop(prim, args, bdims, size),
        Concatenate { axis } => at_front(&Concatenate { axis: axis + 1 }, args, bdims, size),
        Pad { lo, hi, interior } if bdims[1].is_none() => {
            let p = Pad { lo: front1(0, lo), hi: front1(0, hi), interior: front1(0, interior) };
            let x = to_front(&args[0], bdims[0], size);
            Ok((bind(&p, &[x, args[1].clone()])?, vec![Some(0)]))
        }
        Pad { .. } => batch_loop(prim, args, bdims, size),
        Gather { axis, batch_dims } => {
            let p = Gather { axis: axis + 1, batch_dims: batch_dims + 1 };
            at_front(&p, args, bdims, size)
        }
        ScatterAdd { axis, batch_dims } => {
            let p = ScatterAdd { axis: axis + 1, batch_dims: batch_dims + 1 };
            at_front(&p, args, bdims, size)
        }
        Scatter { axis, batch_dims } => {
            let p = Scatter { axis: axis + 1, batch_dims: batch_dims + 1 };
            at_front(&p, args, bdims, size)
        }
        // No operands, so never batched; handled by the unbatched case above.
        Iota { .. } => batch_loop(prim, args, bdims, size),
        Sort { axis, num_keys } => {
            at_front(&Sort { axis: axis + 1, num_keys: *num_keys }, args, bdims, size)
        }
        // Every remaining primitive is elementwise and matched by the guards above; the
        // loop keeps this match total without a panic.
        _ => batch_loop(prim, args, bdims, size),
    }
}

/// A zero start index of the same dtype as the existing starts (int32 if there are none).
fn zero_index(like: Option<&Array>) -> Array {
    Array::scalar_of(0.0, like.map_or(DType::I32, Array::dtype))
}

fn elementwise(
    prim: &Prim,
    args: &[Array],
    bdims: &[Option<usize>],
    size: usize,
) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
    if let Some(d) = bdims[0]
        && bdims.iter().all(|b| *b == Some(d))
    {
        let outs = bind(prim, args)?;
        let n = outs.len();
        return Ok((outs, vec![Some(d); n]));
    }
    at_front(prim, args, bdims, size)
}

fn dot_general(
    args: &[Array],
    bdims: &[Option<usize>],
    size: usize,
    dims: (&[usize], &[usize], &[usize], &[usize]),
) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
    let (lc, rc, lb, rb) = dims;
    let (lhs, rhs) = (&args[0], &args[1]);
    let up = |v: &[usize], d: usize| -> Vec<usize> {
        v.iter().map(|&a| if a >= d { a + 1 } else { a }).collect()
    };
    match (bdims[0], bdims[1]) {
        (Some(d), None) => {
            // The batch dim becomes a free lhs dim.
            let p = Prim::DotGeneral {
                lhs_contract: up(lc, d),
                rhs_contract: rc.to_vec(),
                lhs_batch: up(lb, d),
                rhs_batch: rb.to_vec(),
            };
            let free_before = (0..d).filter(|i| !lc.contains(i) && !lb.contains(i)).count();
            let y = bind(&p, &[lhs.clone(), rhs.clone()])?;
            Ok((y, vec![Some(lb.len() + free_before)]))
        }
        (None, Some(d)) => {
            let p = Prim::DotGeneral {
                lhs_contract: lc.to_vec(),
                rhs_contract: up(rc, d),
                lhs_batch: lb.to_vec(),
                rhs_batch: up(rb, d),
            };
            let lhs_free = lhs.ndim() - lc.len() - lb.len();
            let free_before = (0..d).filter(|i| !rc.contains(i) && !rb.contains(i)).count();
            let y = bind(&p, &[lhs.clone(), rhs.clone()])?;
            Ok((y, vec![Some(lb.len() + lhs_free + free_before)]))
        }
        _ => {
            let p = Prim::DotGeneral {
                lhs_contract: shift(lc),
                rhs_contract: shift(rc),
                lhs_batch: front1(0, &shift(lb)),
                rhs_batch: front1(0, &shift(rb)),
            };
            at_front(&p, args, bdims, size)
        }
    }
}
