//! Program optimizations run before compilation: inlining of nested calls, constant
//! folding, algebraic simplification, common-subexpression elimination (all in one
//! forward rewrite) and dead-code elimination.

use crate::array::Array;
use crate::aval::Aval;
use crate::dtype::DType;
use crate::jaxpr::{Atom, Eqn, Jaxpr, Var};
use crate::prim::Prim;
use std::collections::HashMap;

/// Identity of an operand for common-subexpression elimination.
#[derive(Clone, PartialEq, Eq, Hash)]
enum AtomKey {
    Var(usize),
    Lit(DType, Vec<u8>),
}

fn key(a: &Atom) -> AtomKey {
    match a {
        Atom::Var(v) => AtomKey::Var(v.id),
        Atom::Lit(l) => AtomKey::Lit(l.dtype(), l.to_bytes()),
    }
}

/// A simplified equation: `(None, [x])` is just `x`; `(Some(p), args)` is `p(args)`.
type Rewrite = (Option<Prim>, Vec<Atom>);

#[derive(Default)]
struct Rewriter {
    next: usize,
    eqns: Vec<Eqn>,
    /// Equations already emitted, by primitive and operands.
    cse: HashMap<(Prim, Vec<AtomKey>), Vec<Var>>,
    /// The defining primitive and operands of single-output variables.
    defs: HashMap<usize, (Prim, Vec<Atom>)>,
}

/// The scalar value of `a` if it is a literal or a broadcast of one.
fn scalar_value(r: &Rewriter, a: &Atom) -> Option<f64> {
    match r.scalar_lit(a)? {
        Atom::Lit(l) => Some(l.to_f64_vec()[0]),
        Atom::Var(_) => None,
    }
}

impl Rewriter {
    fn fresh(&mut self, aval: Aval) -> Var {
        let v = Var { id: self.next, aval };
        self.next += 1;
        v
    }

    /// Rewrites the body of `j` with its inputs bound to `ins`; returns its outputs.
    fn body(&mut self, j: &Jaxpr, ins: Vec<Atom>) -> Vec<Atom> {
        let mut env: HashMap<usize, Atom> = HashMap::new();
        for (v, a) in j.constvars.iter().chain(&j.in_binders).zip(ins) {
            env.insert(v.id, a);
        }
        let read = |env: &HashMap<usize, Atom>, a: &Atom| match a {
            Atom::Var(v) => env[&v.id].clone(),
            Atom::Lit(_) => a.clone(),
        };
        for eqn in &j.eqns {
            let ins: Vec<Atom> = eqn.inputs.iter().map(|a| read(&env, a)).collect();
            let outs = match &eqn.prim {
                Prim::Call { callee } => self.body(callee.jaxpr(), ins),
                p => {
                    let avals: Vec<Aval> = eqn.outs.iter().map(|v| v.aval.clone()).collect();
                    self.emit(p.clone(), ins, avals)
                }
            };
            for (v, o) in eqn.outs.iter().zip(outs) {
                env.insert(v.id, o);
            }
        }
        j.outs.iter().map(|a| read(&env, a)).collect()
    }

    /// Emits one equation after folding, simplifying and deduplicating it.
    fn emit(&mut self, prim: Prim, ins: Vec<Atom>, avals: Vec<Aval>) -> Vec<Atom> {
        // Constant folding: scalar results of literal operands.
        if !ins.is_empty()
            && avals.iter().all(|a| a.ndim() == 0)
            && let Some(lits) = ins
                .iter()
                .map(|a| match a {
                    Atom::Lit(l) => Some(l.clone()),
                    Atom::Var(_) => None,
                })
                .collect::<Option<Vec<Array>>>()
            && let Ok(outs) = crate::trace::eval_eager(&prim, &lits)
        {
            return outs.into_iter().map(Atom::Lit).collect();
        }
        if let Some(outs) = self.sink_reshape(&prim, &ins, &avals) {
            return outs;
        }
        if avals.len() == 1
            && let Some((p, a)) = self.simplify(&prim, &ins, &avals[0])
        {
            return match p {
                None => vec![a[0].clone()],
                Some(p) => self.emit(p, a, avals),
            };
        }
        let k = (prim.clone(), ins.iter().map(key).collect::<Vec<_>>());
        if let Some(outs) = self.cse.get(&k) {
            return outs.iter().cloned().map(Atom::Var).collect();
        }
        let outs: Vec<Var> = avals.into_iter().map(|a| self.fresh(a)).collect();
        if outs.len() == 1 {
            self.defs.insert(outs[0].id, (prim.clone(), ins.clone()));
        }
        self.cse.insert(k, outs.clone());
        self.eqns.push(Eqn { prim, inputs: ins, outs: outs.clone() });
        outs.into_iter().map(Atom::Var).collect()
    }

    /// `op(reshape(x), c)` for a scalar `c` as `reshape(op(x, c))`: the same elements in
    /// the same order, but the op now directly follows `x`'s producer and fuses into it
    /// (the attention queries' scaling joins the query projection's bias epilogue). Free
    /// even when the reshape has other readers: reshapes share their input's buffer.
    fn sink_reshape(&mut self, prim: &Prim, ins: &[Atom], avals: &[Aval]) -> Option<Vec<Atom>> {
        if !matches!(prim, Prim::Mul | Prim::Div | Prim::Add | Prim::Sub | Prim::Max | Prim::Min)
            || avals.len() != 1
        {
            return None;
        }
        let t = (0..2).find(|&i| {
            matches!(self.def_of(&ins[i]), Some((Prim::Reshape { .. }, _)))
                && self.scalar_lit(&ins[1 - i]).is_some()
        })?;
        let x = self.def_of(&ins[t])?.1[0].clone();
        let lit = self.scalar_lit(&ins[1 - t])?;
        let shape = x.aval().shape.clone();
        let c = if ins[1 - t].aval().ndim() == 0 {
            lit
        } else {
            let aval = Aval::new(shape.clone(), ins[1 - t].aval().dtype);
            let b = Prim::BroadcastInDim { shape: shape.clone(), dims: vec![] };
            self.emit(b, vec![lit], vec![aval]).remove(0)
        };
        let args = if t == 0 { vec![x, c] } else { vec![c, x] };
        let y = self.emit(prim.clone(), args, vec![Aval::new(shape, avals[0].dtype)]);
        Some(self.emit(Prim::Reshape { shape: avals[0].shape.clone() }, y, avals.to_vec()))
    }

    /// The defining primitive and operands of `a`, if it is a single-output variable.
    fn def_of(&self, a: &Atom) -> Option<&(Prim, Vec<Atom>)> {
        match a {
            Atom::Var(v) => self.defs.get(&v.id),
            Atom::Lit(_) => None,
        }
    }

    /// The rank-0 literal `a` is, or is a broadcast of.
    fn scalar_lit(&self, a: &Atom) -> Option<Atom> {
        match a {
            Atom::Lit(l) => (l.ndim() == 0).then(|| a.clone()),
            Atom::Var(_) => match self.def_of(a) {
                Some((Prim::BroadcastInDim { .. }, ins)) => match &ins[0] {
                    Atom::Lit(l) if l.ndim() == 0 => Some(ins[0].clone()),
                    _ => None,
                },
                _ => None,
            },
        }
    }

    /// An algebraic simplification of `prim(ins)`: `(None, [x])` means the result is `x`,
    /// `(Some(p), args)` a cheaper equation.
    fn simplify(&self, prim: &Prim, ins: &[Atom], out: &Aval) -> Option<Rewrite> {
        let same = |a: &Atom| a.aval() == out;
        let def = |a: &Atom| self.def_of(a);
        let is = |a: &Atom, c: f64| scalar_value(self, a) == Some(c);
        match prim {
            Prim::Reshape { .. } | Prim::Squeeze { .. } | Prim::ExpandDims { .. } => {
                if same(&ins[0]) {
                    return Some((None, vec![ins[0].clone()]));
                }
                let reshape = Prim::Reshape { shape: out.shape.clone() };
                if let Some((
                    Prim::Reshape { .. } | Prim::Squeeze { .. } | Prim::ExpandDims { .. },
                    inner,
                )) = def(&ins[0])
                {
                    return Some((Some(reshape), vec![inner[0].clone()]));
                }
                if !matches!(prim, Prim::Reshape { .. }) {
                    return Some((Some(reshape), ins.to_vec()));
                }
                None
            }
            Prim::Transpose { perm } => {
                if perm.iter().enumerate().all(|(i, &p)| i == p) {
                    return Some((None, vec![ins[0].clone()]));
                }
                if let Some((Prim::Transpose { perm: p1 }, inner)) = def(&ins[0]) {
                    let perm: Vec<usize> = perm.iter().map(|&i| p1[i]).collect();
                    return Some((Some(Prim::Transpose { perm }), vec![inner[0].clone()]));
                }
                // (a . b)^T = b^T . a^T: swap the operands instead of moving the result
                // (batch dims stay in front; e.g. per-example weight gradients under vmap).
                if let Some((
                    Prim::DotGeneral { lhs_contract, rhs_contract, lhs_batch, rhs_batch },
                    operands,
                )) = def(&ins[0])
                {
                    let nb = lhs_batch.len();
                    let nl = operands[0].aval().ndim() - lhs_contract.len() - nb;
                    let nr = operands[1].aval().ndim() - rhs_contract.len() - nb;
                    if crate::lax::is_free_dim_swap(perm, nb, nl, nr) {
                        let dot = Prim::DotGeneral {
                            lhs_contract: rhs_contract.clone(),
                            rhs_contract: lhs_contract.clone(),
                            lhs_batch: rhs_batch.clone(),
                            rhs_batch: lhs_batch.clone(),
                        };
                        return Some((Some(dot), vec![operands[1].clone(), operands[0].clone()]));
                    }
                }
                None
            }
            Prim::DotGeneral { lhs_contract, rhs_contract, lhs_batch, rhs_batch } => {
                fold_transposes(&def, ins, [lhs_contract, rhs_contract], [lhs_batch, rhs_batch])
            }
            Prim::BroadcastInDim { .. } | Prim::ConvertElementType { .. } if same(&ins[0]) => {
                Some((None, vec![ins[0].clone()]))
            }
            // x^1 (the derivative of x^2 is 2 * x^1): the same value, no pass over memory.
            Prim::IntegerPow { y: 1 } if same(&ins[0]) => Some((None, vec![ins[0].clone()])),
            Prim::Neg => match def(&ins[0]) {
                Some((Prim::Neg, inner)) => Some((None, vec![inner[0].clone()])),
                _ => None,
            },
            Prim::Mul if is(&ins[1], 1.0) && same(&ins[0]) => Some((None, vec![ins[0].clone()])),
            Prim::Mul if is(&ins[0], 1.0) && same(&ins[1]) => Some((None, vec![ins[1].clone()])),
            Prim::Div if is(&ins[1], 1.0) && same(&ins[0]) => Some((None, vec![ins[0].clone()])),
            Prim::Add | Prim::Sub if is(&ins[1], 0.0) && same(&ins[0]) => {
                Some((None, vec![ins[0].clone()]))
            }
            Prim::Add if is(&ins[0], 0.0) && same(&ins[1]) => Some((None, vec![ins[1].clone()])),
            _ => None,
        }
    }
}

/// `dot_general` of transposed operands as a `dot_general` that reads the operands before
/// their transposes, with its dimension numbers renumbered through the permutations: the
/// transposes (a pass over memory each, e.g. the attention heads moved in front of the
/// sequence) disappear when nothing else reads them.
///
/// An operand folds only if its free dims keep their order through the permutation (they
/// order the output) and the CPU kernel reads the untransposed operand in place (the
/// matrix dims of each product merge into one stride each; batch dims may lie anywhere).
fn fold_transposes<'a>(
    def: &impl Fn(&Atom) -> Option<&'a (Prim, Vec<Atom>)>,
    ins: &[Atom],
    contract: [&Vec<usize>; 2],
    batch: [&Vec<usize>; 2],
) -> Option<Rewrite> {
    let mut ops = [ins[0].clone(), ins[1].clone()];
    let (mut c, mut b) =
        ([contract[0].clone(), contract[1].clone()], [batch[0].clone(), batch[1].clone()]);
    let mut folded = false;
    let in_place = |ops: &[Atom; 2], c: &[Vec<usize>; 2], b: &[Vec<usize>; 2]| {
        let shape = |k: usize| ops[k].aval().shape.clone();
        crate::backend::cpu::dot_reads_in_place(
            &shape(0),
            &shape(1),
            (&c[0], &c[1]),
            (&b[0], &b[1]),
        )
    };
    for side in 0..2 {
        let Some((Prim::Transpose { perm }, inner)) = def(&ins[side]) else { continue };
        let free = (0..perm.len()).filter(|d| !c[side].contains(d) && !b[side].contains(d));
        let free: Vec<usize> = free.map(|d| perm[d]).collect();
        if !free.is_sorted() {
            continue;
        }
        let (mut c2, mut b2) = (c.clone(), b.clone());
        c2[side] = c[side].iter().map(|&d| perm[d]).collect();
        b2[side] = b[side].iter().map(|&d| perm[d]).collect();
        let mut ops2 = ops.clone();
        ops2[side] = inner[0].clone();
        // The contraction order the kernel picks may change: the other operand must not
        // start needing a copy.
        let (before, after) = (in_place(&ops, &c, &b), in_place(&ops2, &c2, &b2));
        if after[side] && after[1 - side] >= before[1 - side] {
            (ops, c, b, folded) = (ops2, c2, b2, true);
        }
    }
    let [lhs_contract, rhs_contract] = c;
    let [lhs_batch, rhs_batch] = b;
    folded.then(|| {
        let dot = Prim::DotGeneral { lhs_contract, rhs_contract, lhs_batch, rhs_batch };
        (Some(dot), ops.to_vec())
    })
}

/// Removes equations whose results are never used.
fn dce(mut j: Jaxpr) -> Jaxpr {
    let live = live_eqns(&j);
    j.eqns = j.eqns.into_iter().zip(live).filter_map(|(e, l)| l.then_some(e)).collect();
    j
}

/// Whether each equation's results are used (by the outputs, directly or through other
/// used equations).
pub(super) fn live_eqns(j: &Jaxpr) -> Vec<bool> {
    let mut live = vec![false; j.num_vars()];
    for a in &j.outs {
        if let Atom::Var(v) = a {
            live[v.id] = true;
        }
    }
    let mut keep = vec![false; j.eqns.len()];
    for (i, eqn) in j.eqns.iter().enumerate().rev() {
        if eqn.outs.iter().any(|v| live[v.id]) {
            for a in &eqn.inputs {
                if let Atom::Var(v) = a {
                    live[v.id] = true;
                }
            }
            keep[i] = true;
        }
    }
    keep
}

/// The value of `x` if it is concrete with all elements equal.
fn uniform_value(x: &Array) -> Option<Array> {
    if x.is_tracer() || x.size() == 0 {
        return None;
    }
    let bytes = x.to_bytes();
    let w = x.dtype().size_in_bytes();
    let first = &bytes[..w];
    bytes
        .chunks_exact(w)
        .all(|c| c == first)
        .then(|| Array::from_bytes(first, [], x.dtype()).ok())?
}

/// Inlines nested calls, folds constants, simplifies, deduplicates and removes dead code,
/// for a program whose first `consts.len()` inputs are the given constants:
/// constants with all elements equal become broadcast literals (so fused code computes
/// them instead of reading them), the others stay leading inputs.
pub(crate) fn optimize_closed(j: &Jaxpr, consts: Vec<Array>) -> (Jaxpr, Vec<Array>) {
    let mut r = Rewriter::default();
    let mut ins = Vec::new();
    let mut in_binders = Vec::new();
    let mut kept = Vec::new();
    for (k, v) in j.constvars.iter().chain(&j.in_binders).enumerate() {
        if k < consts.len()
            && let Some(lit) = uniform_value(&consts[k])
        {
            let atom = if v.aval.ndim() == 0 {
                Atom::Lit(lit)
            } else {
                let prim = Prim::BroadcastInDim { shape: v.aval.shape.clone(), dims: vec![] };
                r.emit(prim, vec![Atom::Lit(lit)], vec![v.aval.clone()]).remove(0)
            };
            ins.push(atom);
            continue;
        }
        if k < consts.len() {
            kept.push(consts[k].clone());
        }
        let nv = r.fresh(v.aval.clone());
        in_binders.push(nv.clone());
        ins.push(Atom::Var(nv));
    }
    let outs = r.body(j, ins);
    (dce(Jaxpr { constvars: vec![], in_binders, eqns: r.eqns, outs }), kept)
}
