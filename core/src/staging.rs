//! The staging trace: records primitive applications into a [`Jaxpr`] instead of running
//! them (JAX's `DynamicJaxprTrace` fused with partial evaluation).
//!
//! Operations that involve at least one of the trace's own tracers ("unknown" values) are
//! recorded as equations. Operations on values it does not own ("known": concrete arrays,
//! or tracers of enclosing transformations) are handed to the parent trace and their
//! results enter the jaxpr as constants. This one rule gives both `make_jaxpr`/`jit`
//! staging (closed-over tracers of outer transforms become constvars, passed in when the
//! jaxpr runs) and linearization (known primal computation runs now, only the tangent
//! computation is staged, with primal values as residual constants).

use crate::array::Array;
use crate::aval::Aval;
use crate::error::Result;
use crate::jaxpr::{Atom, ClosedJaxpr, Eqn, Jaxpr, Var};
use crate::prim::Prim;
use crate::rules::abstract_eval;
use crate::trace::{Trace, TraceTag, TracerData, bind, with_trace};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Default)]
struct Builder {
    next_id: usize,
    in_binders: Vec<Var>,
    eqns: Vec<Eqn>,
    constvars: Vec<Var>,
    consts: Vec<Array>,
    const_index: HashMap<usize, usize>,
}

impl Builder {
    fn fresh(&mut self, aval: Aval) -> Var {
        let v = Var { id: self.next_id, aval };
        self.next_id += 1;
        v
    }
}

/// A trace that builds a jaxpr. See the module docs.
pub(crate) struct StagingTrace {
    tag: TraceTag,
    parent: Option<Rc<dyn Trace>>,
    builder: RefCell<Builder>,
}

impl StagingTrace {
    /// A new staging trace whose parent is the current trace.
    pub(crate) fn new() -> Rc<StagingTrace> {
        Rc::new(StagingTrace {
            tag: TraceTag::fresh(),
            parent: crate::trace::current(),
            builder: RefCell::new(Builder::default()),
        })
    }

    /// A new input of the jaxpr, returned as a tracer.
    pub(crate) fn new_arg(&self, aval: Aval) -> Array {
        let mut b = self.builder.borrow_mut();
        let var = b.fresh(aval.clone());
        b.in_binders.push(var.clone());
        Array::new_tracer(aval, self.tag, TracerData::Staged { var })
    }

    fn own_var(&self, x: &Array) -> Option<Var> {
        match x.tracer() {
            Some(t) if t.tag == self.tag => match &t.data {
                TracerData::Staged { var } => Some(var.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// The atom naming `x`: its var if it is ours, a literal for concrete scalars, or a
    /// constvar for any other known value.
    fn to_atom(&self, x: &Array) -> Atom {
        if let Some(v) = self.own_var(x) {
            return Atom::Var(v);
        }
        if x.ndim() == 0 && !x.is_tracer() {
            return Atom::Lit(x.clone());
        }
        let mut b = self.builder.borrow_mut();
        if let Some(&i) = b.const_index.get(&x.id()) {
            return Atom::Var(b.constvars[i].clone());
        }
        let v = b.fresh(x.aval().clone());
        let i = b.constvars.len();
        b.constvars.push(v.clone());
        b.consts.push(x.clone());
        b.const_index.insert(x.id(), i);
        Atom::Var(v)
    }

    /// The finished program with `outs` as results.
    pub(crate) fn finish(&self, outs: &[Array]) -> ClosedJaxpr {
        let out_atoms: Vec<Atom> = outs.iter().map(|x| self.to_atom(x)).collect();
        let b = std::mem::take(&mut *self.builder.borrow_mut());
        ClosedJaxpr {
            jaxpr: Jaxpr {
                constvars: b.constvars,
                in_binders: b.in_binders,
                eqns: b.eqns,
                outs: out_atoms,
            },
            consts: b.consts,
        }
    }
}

impl Trace for StagingTrace {
    fn process_primitive(&self, prim: &Prim, args: &[Array]) -> Result<Vec<Array>> {
        if args.iter().all(|a| self.own_var(a).is_none()) {
            // Known: compute now, one level down.
            return with_trace(self.parent.clone(), || bind(prim, args));
        }
        let inputs: Vec<Atom> = args.iter().map(|a| self.to_atom(a)).collect();
        let in_avals: Vec<Aval> = inputs.iter().map(|a| a.aval().clone()).collect();
        let out_avals = abstract_eval(prim, &in_avals)?;
        let mut b = self.builder.borrow_mut();
        let outs: Vec<Var> = out_avals.into_iter().map(|a| b.fresh(a)).collect();
        b.eqns.push(Eqn { prim: prim.clone(), inputs, outs: outs.clone() });
        Ok(outs
            .into_iter()
            .map(|var| Array::new_tracer(var.aval.clone(), self.tag, TracerData::Staged { var }))
            .collect())
    }
}

/// Traces `f` on abstract inputs shaped like `x` and returns the jaxpr it stages
/// (JAX's `jax.make_jaxpr`). Values `f` closes over become constants.
///
/// ```
/// use kiln::{Array, make_jaxpr};
/// let x = Array::from_vec(vec![0.5f32, -1.0, 2.0], [3]);
/// let jaxpr = make_jaxpr(|x: &Array| x.tanh().sum())(&x);
/// assert_eq!(
///     jaxpr.to_string(),
///     "{ lambda a:f32[3]. let\n    b:f32[3] = tanh a\n    c:f32[] = reduce_sum[axes=[0]] b\n  in (c,) }"
/// );
/// ```
pub fn make_jaxpr<T: crate::Tree, U: crate::Tree>(
    f: impl Fn(&T) -> U,
) -> impl Fn(&T) -> ClosedJaxpr {
    move |x: &T| trace_to_jaxpr(&f, x).0
}

/// Stages `f` at the avals of `x`'s leaves; returns the closed jaxpr and the output tree
/// (whose leaves are meaningless placeholders, useful only for its structure).
pub(crate) fn trace_to_jaxpr<T: crate::Tree, U: crate::Tree>(
    f: &impl Fn(&T) -> U,
    x: &T,
) -> (ClosedJaxpr, U) {
    let trace = StagingTrace::new();
    let ins: Vec<Array> =
        crate::tree::leaves(x).iter().map(|l| trace.new_arg(l.aval().clone())).collect();
    let x_traced = crate::tree::unflatten(x, ins);
    let out = with_trace(Some(trace.clone() as Rc<dyn Trace>), || f(&x_traced));
    let jaxpr = trace.finish(&crate::tree::leaves(&out));
    (jaxpr, out)
}
