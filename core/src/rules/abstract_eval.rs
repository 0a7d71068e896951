//! Abstract evaluation: the output shapes and dtypes of every primitive, with the checks
//! that make a bad call a clear error instead of a wrong answer.

use crate::aval::Aval;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::prim::Prim;

fn arity(prim: &Prim, ins: &[Aval], n: usize) -> Result<()> {
    if ins.len() != n {
        return Err(Error::Arity { op: prim.name().into(), expected: n, got: ins.len() });
    }
    Ok(())
}

fn same_shape_dtype(prim: &Prim, ins: &[Aval]) -> Result<()> {
    let first = &ins[0];
    for a in &ins[1..] {
        if a.shape != first.shape {
            return Err(Error::shape(prim.name(), "operands must have the same shape", ins));
        }
        if a.dtype != first.dtype {
            return Err(Error::dtype(prim.name(), "operands must have the same dtype", ins));
        }
    }
    Ok(())
}

fn want(prim: &Prim, ins: &[Aval], ok: bool, what: &str) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::dtype(prim.name(), what, ins)) }
}

fn check_axes(prim: &Prim, ins: &[Aval], axes: &[usize], ndim: usize) -> Result<()> {
    for (i, &a) in axes.iter().enumerate() {
        if a >= ndim {
            return Err(Error::shape(
                prim.name(),
                format!("axis {a} out of range for rank {ndim}"),
                ins,
            ));
        }
        if axes[..i].contains(&a) {
            return Err(Error::shape(prim.name(), format!("axis {a} repeated"), ins));
        }
    }
    Ok(())
}

fn remove_axes(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
}

/// Output size of a windowed dim: `floor((padded - dilated_window) / stride) + 1`.
pub(crate) fn window_out_size(
    input: usize,
    lhs_dil: usize,
    pad: (i64, i64),
    window: usize,
    rhs_dil: usize,
    stride: usize,
) -> Option<usize> {
    let dilated_in = if input == 0 { 0 } else { (input - 1) * lhs_dil + 1 } as i64;
    let padded = dilated_in + pad.0 + pad.1;
    let dilated_w = if window == 0 { 0 } else { (window - 1) * rhs_dil + 1 } as i64;
    if padded < dilated_w || stride == 0 {
        return if padded >= 0 && stride > 0 && dilated_w > padded { Some(0) } else { None };
    }
    Some(((padded - dilated_w) / stride as i64 + 1) as usize)
}

fn window_shape(
    prim: &Prim,
    ins: &[Aval],
    shape: &[usize],
    window: &[usize],
    strides: &[usize],
    padding: &[(i64, i64)],
) -> Result<Vec<usize>> {
    let n = shape.len();
    if window.len() != n || strides.len() != n || padding.len() != n {
        return Err(Error::shape(
            prim.name(),
            format!("window, strides and padding need one entry per dim ({n})"),
            ins,
        ));
    }
    (0..n)
        .map(|i| {
            window_out_size(shape[i], 1, padding[i], window[i], 1, strides[i]).ok_or_else(|| {
                Error::shape(prim.name(), format!("bad window/stride/padding on dim {i}"), ins)
            })
        })
        .collect()
}

/// The output avals of `prim` applied to operands of types `ins`.
pub fn abstract_eval(prim: &Prim, ins: &[Aval]) -> Result<Vec<Aval>> {
    use Prim::*;
    let name = prim.name();
    let one = |a: Aval| Ok(vec![a]);
    match prim {
        // ---- unary ----
        Neg | Abs | Sign => {
            arity(prim, ins, 1)?;
            want(prim, ins, ins[0].dtype != DType::Bool, "needs a numeric operand")?;
            one(ins[0].clone())
        }
        Exp
        | Log
        | Log1p
        | Expm1
        | Sin
        | Cos
        | Tanh
        | Logistic
        | Sqrt
        | Rsqrt
        | Floor
        | Ceil
        | Round
        | Erf
        | ErfInv
        | Gelu { .. }
        | GeluGrad { .. } => {
            arity(prim, ins, 1)?;
            want(prim, ins, ins[0].dtype.is_float(), "needs a floating-point operand")?;
            one(ins[0].clone())
        }
        IsFinite => {
            arity(prim, ins, 1)?;
            want(prim, ins, ins[0].dtype.is_float(), "needs a floating-point operand")?;
            one(ins[0].with_dtype(DType::Bool))
        }
        Not => {
            arity(prim, ins, 1)?;
            want(prim, ins, !ins[0].dtype.is_float(), "needs a bool or integer operand")?;
            one(ins[0].clone())
        }
        IntegerPow { .. } => {
            arity(prim, ins, 1)?;
            want(prim, ins, ins[0].dtype != DType::Bool, "needs a numeric operand")?;
            one(ins[0].clone())
        }
        ConvertElementType { dtype } => {
            arity(prim, ins, 1)?;
            one(ins[0].with_dtype(*dtype))
        }
        BitcastConvertType { dtype } => {
            arity(prim, ins, 1)?;
            want(
                prim,
                ins,
                dtype.size_in_bytes() == ins[0].dtype.size_in_bytes()
                    && *dtype != DType::Bool
                    && ins[0].dtype != DType::Bool,
                "bitcast needs numeric types of the same width",
            )?;
            one(ins[0].with_dtype(*dtype))
        }
        StopGradient => {
            arity(prim, ins, 1)?;
            one(ins[0].clone())
        }
        // ---- binary ----
        Add | Sub | Mul | Div | Rem | Max | Min => {
            arity(prim, ins, 2)?;
            same_shape_dtype(prim, ins)?;
            want(
                prim,
                ins,
                ins[0].dtype != DType::Bool || matches!(prim, Max | Min | Add | Mul),
                "needs numeric operands",
            )?;
            one(ins[0].clone())
        }
        Pow | Atan2 => {
            arity(prim, ins, 2)?;
            same_shape_dtype(prim, ins)?;
            want(prim, ins, ins[0].dtype.is_float(), "needs floating-point operands")?;
            one(ins[0].clone())
        }
        And | Or | Xor => {
            arity(prim, ins, 2)?;
            same_shape_dtype(prim, ins)?;
            want(prim, ins, !ins[0].dtype.is_float(), "needs bool or integer operands")?;
            one(ins[0].clone())
        }
        ShiftLeft | ShiftRightLogical | ShiftRightArithmetic => {
            arity(prim, ins, 2)?;
            same_shape_dtype(prim, ins)?;
            want(prim, ins, ins[0].dtype.is_int(), "needs integer operands")?;
            one(ins[0].clone())
        }
        Eq | Ne | Lt | Le | Gt | Ge => {
            arity(prim, ins, 2)?;
            same_shape_dtype(prim, ins)?;
            one(ins[0].with_dtype(DType::Bool))
        }
        Select => {
            arity(prim, ins, 3)?;
            want(prim, ins, ins[0].dtype == DType::Bool, "predicate must be bool")?;
            if ins[0].shape != ins[1].shape {
                return Err(Error::shape(name, "predicate and branches must have one shape", ins));
            }
            same_shape_dtype(prim, &ins[1..])
                .map_err(|_| Error::shape(name, "branches must have the same type", ins))?;
            one(ins[1].clone())
        }
        Clamp => {
            arity(prim, ins, 3)?;
            same_shape_dtype(prim, ins)?;
            one(ins[1].clone())
        }
        // ---- shape ----
        BroadcastInDim { shape, dims } => {
            arity(prim, ins, 1)?;
            let a = &ins[0];
            if dims.len() != a.ndim() {
                return Err(Error::shape(
                    name,
                    format!("broadcast_dimensions {dims:?} needs one entry per operand dim"),
                    ins,
                ));
            }
            for (i, &d) in dims.iter().enumerate() {
                let ok = d < shape.len()
                    && (a.shape[i] == shape[d] || a.shape[i] == 1)
                    && (i == 0 || dims[i - 1] < d);
                if !ok {
                    return Err(Error::shape(
                        name,
                        format!(
                            "cannot broadcast into {shape:?} with broadcast_dimensions {dims:?}"
                        ),
                        ins,
                    ));
                }
            }
            one(Aval::new(shape.clone(), a.dtype))
        }
        Reshape { shape } => {
            arity(prim, ins, 1)?;
            if shape.iter().product::<usize>() != ins[0].size() {
                return Err(Error::shape(
                    name,
                    format!("cannot reshape into {shape:?}: element counts differ"),
                    ins,
                ));
            }
            one(Aval::new(shape.clone(), ins[0].dtype))
        }
        Transpose { perm } => {
            arity(prim, ins, 1)?;
            let n = ins[0].ndim();
            let mut seen = vec![false; n];
            let ok = perm.len() == n
                && perm.iter().all(|&p| p < n && !std::mem::replace(&mut seen[p], true));
            if !ok {
                return Err(Error::shape(name, format!("{perm:?} is not a permutation"), ins));
            }
            one(Aval::new(perm.iter().map(|&p| ins[0].shape[p]).collect::<Vec<_>>(), ins[0].dtype))
        }
        Rev { axes } => {
            arity(prim, ins, 1)?;
            check_axes(prim, ins, axes, ins[0].ndim())?;
            one(ins[0].clone())
        }
        Squeeze { axes } => {
            arity(prim, ins, 1)?;
            check_axes(prim, ins, axes, ins[0].ndim())?;
            if axes.iter().any(|&a| ins[0].shape[a] != 1) {
                return Err(Error::shape(name, format!("axes {axes:?} must have size 1"), ins));
            }
            one(Aval::new(remove_axes(&ins[0].shape, axes), ins[0].dtype))
        }
        ExpandDims { axes } => {
            arity(prim, ins, 1)?;
            let n = ins[0].ndim() + axes.len();
            check_axes(prim, ins, axes, n)?;
            let mut it = ins[0].shape.iter();
            let shape: Vec<usize> =
                (0..n).map(|i| if axes.contains(&i) { 1 } else { *it.next().unwrap() }).collect();
            one(Aval::new(shape, ins[0].dtype))
        }
        // ---- reductions ----
        ReduceSum { axes } | ReduceMax { axes } | ReduceMin { axes } | ReduceProd { axes } => {
            arity(prim, ins, 1)?;
            check_axes(prim, ins, axes, ins[0].ndim())?;
            one(Aval::new(remove_axes(&ins[0].shape, axes), ins[0].dtype))
        }
        ArgMax { axis, index_dtype } | ArgMin { axis, index_dtype } => {
            arity(prim, ins, 1)?;
            check_axes(prim, ins, &[*axis], ins[0].ndim())?;
            if ins[0].shape[*axis] == 0 {
                return Err(Error::shape(name, "cannot take argmax/argmin of an empty axis", ins));
            }
            want(prim, ins, index_dtype.is_int(), "index_dtype must be an integer type")?;
            one(Aval::new(remove_axes(&ins[0].shape, &[*axis]), *index_dtype))
        }
        Cumsum { axis, .. } => {
            arity(prim, ins, 1)?;
            check_axes(prim, ins, &[*axis], ins[0].ndim())?;
            want(prim, ins, ins[0].dtype != DType::Bool, "needs a numeric operand")?;
            one(ins[0].clone())
        }
        // ---- contractions ----
        DotGeneral { lhs_contract, rhs_contract, lhs_batch, rhs_batch } => {
            arity(prim, ins, 2)?;
            let (l, r) = (&ins[0], &ins[1]);
            if l.dtype != r.dtype {
                return Err(Error::dtype(name, "operands must have the same dtype", ins));
            }
            want(prim, ins, l.dtype != DType::Bool, "needs numeric operands")?;
            if lhs_contract.len() != rhs_contract.len() || lhs_batch.len() != rhs_batch.len() {
                return Err(Error::shape(name, "dimension numbers must pair up", ins));
            }
            let mut lall = lhs_contract.clone();
            lall.extend(lhs_batch);
            let mut rall = rhs_contract.clone();
            rall.extend(rhs_batch);
            check_axes(prim, ins, &lall, l.ndim())?;
            check_axes(prim, ins, &rall, r.ndim())?;
            for (&a, &b) in
                lhs_contract.iter().zip(rhs_contract).chain(lhs_batch.iter().zip(rhs_batch))
            {
                if l.shape[a] != r.shape[b] {
                    return Err(Error::shape(
                        name,
                        format!(
                            "lhs dim {a} (size {}) and rhs dim {b} (size {}) must match",
                            l.shape[a], r.shape[b]
                        ),
                        ins,
                    ));
                }
            }
            let mut shape: Vec<usize> = lhs_batch.iter().map(|&d| l.shape[d]).collect();
            shape.extend(remove_axes(&l.shape, &lall));
            shape.extend(remove_axes(&r.shape, &rall));
            one(Aval::new(shape, l.dtype))
        }
        Conv { strides, padding, lhs_dilation, rhs_dilation, feature_group_count } => {
            arity(prim, ins, 2)?;
            let (l, r) = (&ins[0], &ins[1]);
            if l.dtype != r.dtype || !l.dtype.is_float() {
                return Err(Error::dtype(name, "operands must be floats of one dtype", ins));
            }
            let nd = l.ndim();
            if nd < 3 || r.ndim() != nd {
                return Err(Error::shape(
                    name,
                    "lhs must be [N, spatial.., C_in] and rhs [spatial.., C_in/groups, C_out]",
                    ins,
                ));
            }
            let ns = nd - 2;
            if strides.len() != ns
                || padding.len() != ns
                || lhs_dilation.len() != ns
                || rhs_dilation.len() != ns
            {
                return Err(Error::shape(
                    name,
                    format!("strides, padding and dilations need {ns} entries"),
                    ins,
                ));
            }
            let g = *feature_group_count;
            let (cin, cout) = (l.shape[nd - 1], r.shape[nd - 1]);
            if g == 0 || cin % g != 0 || cout % g != 0 || r.shape[nd - 2] * g != cin {
                return Err(Error::shape(
                    name,
                    format!(
                        "channels: lhs has {cin}, rhs expects {} x {g} groups, out {cout}",
                        r.shape[nd - 2]
                    ),
                    ins,
                ));
            }
            let mut shape = vec![l.shape[0]];
            for i in 0..ns {
                let o = window_out_size(
                    l.shape[1 + i],
                    lhs_dilation[i],
                    padding[i],
                    r.shape[i],
                    rhs_dilation[i],
                    strides[i],
                )
                .ok_or_else(|| Error::shape(name, format!("bad window on spatial dim {i}"), ins))?;
                shape.push(o);
            }
            shape.push(cout);
            one(Aval::new(shape, l.dtype))
        }
        // ---- windows ----
        ReduceWindow { window, strides, padding, .. } => {
            arity(prim, ins, 1)?;
            let shape = window_shape(prim, ins, &ins[0].shape, window, strides, padding)?;
            one(Aval::new(shape, ins[0].dtype))
        }
        SelectAndGatherAdd { window, strides, padding } => {
            arity(prim, ins, 2)?;
            same_shape_dtype(prim, ins)?;
            let shape = window_shape(prim, ins, &ins[1].shape, window, strides, padding)?;
            one(Aval::new(shape, ins[0].dtype))
        }
        SelectAndScatterAdd { window, strides, padding } => {
            arity(prim, ins, 2)?;
            let shape = window_shape(prim, ins, &ins[1].shape, window, strides, padding)?;
            if ins[0].shape != shape || ins[0].dtype != ins[1].dtype {
                return Err(Error::shape(name, "source must have the pooled shape", ins));
            }
            one(ins[1].clone())
        }
        // ---- slicing ----
        Slice { start, limit, strides } => {
            arity(prim, ins, 1)?;
            let a = &ins[0];
            let n = a.ndim();
            if start.len() != n || limit.len() != n || strides.len() != n {
                return Err(Error::shape(name, "start/limit/strides need one entry per dim", ins));
            }
            let mut shape = Vec::with_capacity(n);
            for i in 0..n {
                if start[i] > limit[i] || limit[i] > a.shape[i] || strides[i] == 0 {
                    return Err(Error::shape(
                        name,
                        format!(
                            "dim {i}: slice {}:{}:{} out of bounds for size {}",
                            start[i], limit[i], strides[i], a.shape[i]
                        ),
                        ins,
                    ));
                }
                shape.push((limit[i] - start[i]).div_ceil(strides[i]));
            }
            one(Aval::new(shape, a.dtype))
        }
        DynamicSlice { sizes } => {
            let a = &ins[0];
            arity(prim, ins, 1 + a.ndim())?;
            if sizes.len() != a.ndim() || sizes.iter().zip(&a.shape).any(|(s, d)| s > d) {
                return Err(Error::shape(name, format!("slice sizes {sizes:?} do not fit"), ins));
            }
            want(
                prim,
                ins,
                ins[1..].iter().all(|i| i.dtype.is_int() && i.ndim() == 0),
                "start indices must be integer scalars",
            )?;
            one(Aval::new(sizes.clone(), a.dtype))
        }
        DynamicUpdateSlice => {
            if ins.len() < 2 {
                return Err(Error::Arity { op: name.into(), expected: 2, got: ins.len() });
            }
            let (a, u) = (&ins[0], &ins[1]);
            arity(prim, ins, 2 + a.ndim())?;
            if u.ndim() != a.ndim() || u.shape.iter().zip(&a.shape).any(|(s, d)| s > d) {
                return Err(Error::shape(name, "update must fit inside the operand", ins));
            }
            if u.dtype != a.dtype {
                return Err(Error::dtype(name, "update must have the operand's dtype", ins));
            }
            want(
                prim,
                ins,
                ins[2..].iter().all(|i| i.dtype.is_int() && i.ndim() == 0),
                "start indices must be integer scalars",
            )?;
            one(a.clone())
        }
        Concatenate { axis } => {
            if ins.is_empty() {
                return Err(Error::Arity { op: name.into(), expected: 1, got: 0 });
            }
            let f = &ins[0];
            check_axes(prim, ins, &[*axis], f.ndim())?;
            let mut total = 0;
            for a in ins {
                let ok = a.dtype == f.dtype
                    && a.ndim() == f.ndim()
                    && (0..f.ndim()).all(|d| d == *axis || a.shape[d] == f.shape[d]);
                if !ok {
                    return Err(Error::shape(
                        name,
                        format!("operands must agree in dtype and in every dim but {axis}"),
                        ins,
                    ));
                }
                total += a.shape[*axis];
            }
            let mut shape = f.shape.clone();
            shape[*axis] = total;
            one(Aval::new(shape, f.dtype))
        }
        Pad { lo, hi, interior } => {
            arity(prim, ins, 2)?;
            let a = &ins[0];
            let n = a.ndim();
            if ins[1].ndim() != 0 || ins[1].dtype != a.dtype {
                return Err(Error::shape(name, "padding value must be a scalar of the dtype", ins));
            }
            if lo.len() != n || hi.len() != n || interior.len() != n {
                return Err(Error::shape(name, "padding config needs one entry per dim", ins));
            }
            let mut shape = Vec::with_capacity(n);
            for i in 0..n {
                let d = a.shape[i] as i64;
                let s = lo[i] + hi[i] + d + (d - 1).max(0) * interior[i] as i64;
                if s < 0 {
                    return Err(Error::shape(
                        name,
                        format!("dim {i} padded to negative size"),
                        ins,
                    ));
                }
                shape.push(s as usize);
            }
            one(Aval::new(shape, a.dtype))
        }
        Gather { axis, batch_dims } => {
            arity(prim, ins, 2)?;
            let shape = gather_shape(prim, ins, *axis, *batch_dims)?;
            one(Aval::new(shape, ins[0].dtype))
        }
        ScatterAdd { axis, batch_dims } | Scatter { axis, batch_dims } => {
            arity(prim, ins, 3)?;
            let shape = gather_shape(prim, &ins[..2], *axis, *batch_dims)?;
            if ins[2].shape != shape || ins[2].dtype != ins[0].dtype {
                return Err(Error::shape(
                    name,
                    format!("updates must have shape {shape:?} and the operand's dtype"),
                    ins,
                ));
            }
            one(ins[0].clone())
        }
        Iota { dtype, shape, dim } => {
            arity(prim, ins, 0)?;
            if *dim >= shape.len() {
                return Err(Error::shape(name, format!("dimension {dim} out of range"), ins));
            }
            one(Aval::new(shape.clone(), *dtype))
        }
        Sort { axis, num_keys } => {
            if ins.is_empty() || *num_keys == 0 || *num_keys > ins.len() {
                return Err(Error::shape(name, "needs at least num_keys >= 1 operands", ins));
            }
            check_axes(prim, ins, &[*axis], ins[0].ndim())?;
            if ins.iter().any(|a| a.shape != ins[0].shape) {
                return Err(Error::shape(name, "operands must have one shape", ins));
            }
            Ok(ins.to_vec())
        }
        Threefry2x32 => {
            arity(prim, ins, 4)?;
            same_shape_dtype(prim, ins)?;
            want(prim, ins, ins[0].dtype == DType::U32, "operands must be u32")?;
            Ok(vec![ins[0].clone(), ins[0].clone()])
        }
        Call { callee } => {
            let want = callee.jaxpr().in_avals();
            arity(prim, ins, want.len())?;
            if let Some(i) = (0..ins.len()).find(|&i| ins[i] != want[i]) {
                return Err(Error::shape(
                    name,
                    format!("operand {i} is {} but the program expects {}", ins[i], want[i]),
                    ins,
                ));
            }
            Ok(callee.jaxpr().out_avals())
        }
    }
}

fn gather_shape(prim: &Prim, ins: &[Aval], axis: usize, b: usize) -> Result<Vec<usize>> {
    let (op, idx) = (&ins[0], &ins[1]);
    if !idx.dtype.is_int() {
        return Err(Error::dtype(prim.name(), "indices must be integers", ins));
    }
    if axis >= op.ndim() || b > axis || b > idx.ndim() || op.shape[..b] != idx.shape[..b] {
        return Err(Error::shape(
            prim.name(),
            format!("axis {axis} / batch_dims {b} do not fit the operand and indices"),
            ins,
        ));
    }
    let mut shape = op.shape[..axis].to_vec();
    shape.extend_from_slice(&idx.shape[b..]);
    shape.extend_from_slice(&op.shape[axis + 1..]);
    Ok(shape)
}
