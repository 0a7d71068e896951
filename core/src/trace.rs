//! Interpreters ("traces") and `bind`, the one place every operation goes through.
//!
//! As in JAX's stackless core (and Autodidax), the current trace comes from context: a
//! thread-local slot holds the innermost active trace, each trace remembers the trace that
//! was current when it started (its parent), and each has a unique [`TraceTag`]. `bind`
//! hands a primitive to the current trace; a trace treats tracers carrying its own tag as
//! its own values and anything else as a constant, and runs its rules with its parent as
//! the current trace, so the operations inside a rule are handled by the next interpreter
//! down. With no trace active, primitives run eagerly on the backend.
//!
//! Tags make closures over tracers of outer transformations safe: an inner `grad` never
//! mistakes an outer `grad`'s tracer for its own (no perturbation confusion).

use crate::array::Array;
use crate::aval::Aval;
use crate::backend::cpu::{self, Operand};
use crate::error::{Error, Result};
use crate::prim::Prim;
use crate::rules::abstract_eval;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The identity of one running transformation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceTag(u64);

impl TraceTag {
    /// A tag no other trace has.
    pub(crate) fn fresh() -> TraceTag {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TraceTag(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a tracer carries, by kind of trace.
pub(crate) enum TracerData {
    /// Forward-mode AD: a primal and its tangent.
    Jvp { primal: Array, tangent: crate::ad::Tangent },
    /// Staging into a jaxpr: the variable that names this value.
    Staged { var: crate::jaxpr::Var },
    /// Batching (vmap): the batched value and where its batch dimension is.
    Batch { val: Array, bdim: Option<usize> },
}

impl TracerData {
    /// A short name of the trace kind, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TracerData::Jvp { .. } => "jvp",
            TracerData::Staged { .. } => "jaxpr staging (jit/make_jaxpr/linearize)",
            TracerData::Batch { .. } => "vmap",
        }
    }

    /// The value underneath, if reading it concretely is meaningful (JVP primals are the
    /// values being computed; staged and batched values are not a single array).
    pub(crate) fn concrete_primal(&self) -> Option<&Array> {
        match self {
            TracerData::Jvp { primal, .. } => Some(primal),
            _ => None,
        }
    }
}

/// An interpreter of primitives.
pub(crate) trait Trace {
    /// Interprets one primitive application. Called with this trace current; rules must
    /// run under the trace that was current when this one started (its parent).
    fn process_primitive(&self, prim: &Prim, args: &[Array]) -> Result<Vec<Array>>;
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<dyn Trace>>> = const { RefCell::new(None) };
}

/// The innermost active trace on this thread (`None`: eager evaluation).
pub(crate) fn current() -> Option<Rc<dyn Trace>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Restores the previous current trace when dropped.
pub(crate) struct TraceGuard(Option<Option<Rc<dyn Trace>>>);

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if let Some(prev) = self.0.take() {
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
}

/// Makes `trace` current until the guard is dropped.
pub(crate) fn set_current(trace: Option<Rc<dyn Trace>>) -> TraceGuard {
    let prev = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), trace));
    TraceGuard(Some(prev))
}

/// Applies a primitive to arguments under the current trace.
///
/// This is the single interception point of kiln: every array operation ends here.
pub fn bind(prim: &Prim, args: &[Array]) -> Result<Vec<Array>> {
    match current() {
        None => eval_eager(prim, args),
        Some(trace) => trace.process_primitive(prim, args),
    }
}

/// [`bind`] for single-output primitives.
pub fn bind1(prim: &Prim, args: &[Array]) -> Result<Array> {
    Ok(bind(prim, args)?.swap_remove(0))
}

/// Runs a primitive on concrete arrays with the CPU backend.
pub(crate) fn eval_eager(prim: &Prim, args: &[Array]) -> Result<Vec<Array>> {
    let mut ops: Vec<Operand<'_>> = Vec::with_capacity(args.len());
    for a in args {
        match a.storage() {
            Some(s) => ops.push(Operand { data: s, shape: a.shape() }),
            None => return Err(Error::EscapedTracer { op: prim.name().into() }),
        }
    }
    let in_avals: Vec<Aval> = args.iter().map(|a| a.aval().clone()).collect();
    let out_avals = abstract_eval(prim, &in_avals)?;
    let outs = cpu::execute(prim, &ops, &out_avals);
    Ok(outs
        .into_iter()
        .zip(out_avals)
        .map(|(s, aval)| Array::from_storage(s, aval.shape))
        .collect())
}

/// Runs `f` with `trace` as the current trace.
pub(crate) fn with_trace<R>(trace: Option<Rc<dyn Trace>>, f: impl FnOnce() -> R) -> R {
    let _guard = set_current(trace);
    f()
}
