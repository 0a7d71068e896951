//! Just-in-time compilation on the native CPU backend: [`jit`].
//!
//! `jit(f)` traces `f` once per input signature (tree structure, leaf shapes and dtypes,
//! static values) into a [`Jaxpr`], optimizes it (inlining of nested calls, constant
//! folding, algebraic simplification, common-subexpression and dead-code elimination),
//! fuses chains of elementwise operations (with a trailing reduction) into single passes
//! over memory, plans buffers by liveness, and caches the resulting executable. Later calls
//! with the same signature run the executable directly.
//!
//! A jitted function is a [`Prim::Call`] of the staged program, so it composes with every
//! transformation: `grad(jit(f))`, `jit(grad(f))`, `vmap(jit(f))`, `jit(vmap(f))` and
//! nested `jit` all work. Values `f` closes over become constants of the program;
//! closed-over tracers of enclosing transformations become extra operands.
//!
//! ```
//! use kiln::{Array, jit::Jit};
//! let f = Jit::new(|x: &Array| (x * 2.0 + 1.0).sum());
//! let x = Array::from_vec(vec![1.0f32, 2.0, 3.0], [3]);
//! assert_eq!(f.call(&x).item::<f32>(), 15.0);
//! assert_eq!(f.call(&(x.clone() * 2.0)).item::<f32>(), 27.0); // cache hit: same avals
//! assert_eq!(f.traces(), 1);
//! let compiled = f.lower(&x).compile();
//! assert!(compiled.to_string().contains("fused"));
//! ```

mod exec;
mod passes;

pub(crate) use passes::optimize_closed;

pub use exec::Executable;

use crate::array::Array;
use crate::aval::Aval;
use crate::error::{Error, Result};
use crate::jaxpr::{ClosedJaxpr, Jaxpr};
use crate::prim::Prim;
use crate::staging::trace_to_jaxpr;
use crate::trace::bind;
use crate::tree::{self, Tree, TreeDef};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};

/// The program of a [`Prim::Call`]: a jaxpr without constvars (constants are leading
/// operands) and its compiled executable, built on first execution.
///
/// Two callees are equal only if they are the same object, so a `Prim::Call` can be
/// hashed and compared cheaply.
#[derive(Clone)]
pub struct Callee(Arc<CalleeInner>);

struct CalleeInner {
    name: String,
    jaxpr: Jaxpr,
    compiled: OnceLock<Arc<Executable>>,
    /// Batched versions (see [`crate::vmap`]), by operand batch dims and avals.
    batched: Mutex<HashMap<BatchKey, Batched>>,
}

type BatchKey = (Vec<Option<usize>>, Vec<Aval>);

/// A batched version of a callee: the program, its constants and its output batch dims.
#[derive(Clone)]
pub(crate) struct Batched {
    pub(crate) callee: Callee,
    pub(crate) consts: Vec<Array>,
    pub(crate) out_bdims: Vec<Option<usize>>,
}

impl Callee {
    /// Wraps a jaxpr (which must have no constvars).
    pub fn new(name: impl Into<String>, jaxpr: Jaxpr) -> Callee {
        assert!(jaxpr.constvars.is_empty(), "a callee's constants must be operands");
        Callee(Arc::new(CalleeInner {
            name: name.into(),
            jaxpr,
            compiled: OnceLock::new(),
            batched: Mutex::new(HashMap::new()),
        }))
    }

    /// The called program.
    pub fn jaxpr(&self) -> &Jaxpr {
        &self.0.jaxpr
    }

    /// The name shown in printed jaxprs.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The batched version for operands with these batch dims and avals, built by `make`
    /// on first use.
    pub(crate) fn batched(
        &self,
        key: BatchKey,
        make: impl FnOnce() -> Result<Batched>,
    ) -> Result<Batched> {
        if let Some(b) = self.0.batched.lock().expect("not poisoned").get(&key) {
            return Ok(b.clone());
        }
        let b = make()?;
        if !b.consts.iter().any(Array::is_tracer) {
            self.0.batched.lock().expect("not poisoned").insert(key, b.clone());
        }
        Ok(b)
    }

    /// The compiled executable (compiled on first use).
    pub fn executable(&self) -> &Arc<Executable> {
        self.0.compiled.get_or_init(|| Arc::new(Executable::compile(&self.0.jaxpr)))
    }
}

impl PartialEq for Callee {
    fn eq(&self, other: &Callee) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Callee {}
impl Hash for Callee {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state);
    }
}
impl fmt::Debug for Callee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Callee({})", self.0.name)
    }
}

/// Moves the constants of a closed jaxpr in front of its inputs.
pub(crate) fn close_over_consts(closed: ClosedJaxpr) -> (Jaxpr, Vec<Array>) {
    let ClosedJaxpr { mut jaxpr, consts } = closed;
    let mut ins = std::mem::take(&mut jaxpr.constvars);
    ins.append(&mut jaxpr.in_binders);
    jaxpr.in_binders = ins;
    (jaxpr, consts)
}

/// Calls `callee` on `args` under the current trace.
pub(crate) fn call(callee: &Callee, args: &[Array]) -> Result<Vec<Array>> {
    bind(&Prim::Call { callee: callee.clone() }, args)
}

struct Entry<S, U> {
    static_value: S,
    callee: Callee,
    consts: Vec<Array>,
    /// The traced output (its leaves are dead placeholders; only the structure is used).
    out: U,
}

type Key = (TreeDef, Vec<Aval>, u64);
type StagedFn<T, U, S> = Box<dyn Fn(&T, &S) -> U>;

/// A jitted function with its compilation cache (see the [module docs](self)).
///
/// `S` is the type of the static argument (`()` when there is none): its value is part of
/// the cache key, like `static_argnums` in JAX, so `f` may branch on it.
pub struct Jit<T, U, S = ()> {
    f: StagedFn<T, U, S>,
    name: String,
    cache: RefCell<HashMap<Key, Vec<Entry<S, U>>>>,
    traces: Cell<usize>,
}

impl<T: Tree, U: Tree> Jit<T, U, ()> {
    /// Jits `f`.
    pub fn new(f: impl Fn(&T) -> U + 'static) -> Jit<T, U, ()> {
        Jit::new_static(move |x: &T, _: &()| f(x))
    }

    /// Calls the compiled function (tracing and compiling on a new signature).
    #[track_caller]
    pub fn call(&self, x: &T) -> U {
        crate::lax::ok(self.try_call(x))
    }

    /// Fallible [`Jit::call`].
    pub fn try_call(&self, x: &T) -> Result<U> {
        self.try_call_static(x, &())
    }

    /// Calls with donated inputs: buffers of `x` that nothing else references are reused
    /// for the outputs and intermediates (in-place updates of a train step's parameters).
    /// Same values as [`Jit::call`].
    #[track_caller]
    pub fn call_donated(&self, x: T) -> U {
        crate::lax::ok(self.try_call_donated(x))
    }

    /// Fallible [`Jit::call_donated`].
    pub fn try_call_donated(&self, x: T) -> Result<U> {
        let (callee, mut args, out) = self.lookup(&x, &())?;
        args.extend(tree::leaves(&x));
        // Drop the caller's tree so that the leaves it owned are uniquely referenced.
        drop(x);
        let outs = if args.iter().any(Array::is_tracer) || crate::trace::current().is_some() {
            call(&callee, &args)?
        } else {
            callee.executable().run_arrays(args)?
        };
        Ok(tree::unflatten(&out, outs))
    }

    /// Traces and optimizes `f` at the signature of `x` without running it.
    pub fn lower(&self, x: &T) -> Lowered {
        self.lower_static(x, &())
    }
}

impl<T: Tree, U: Tree, S: Hash + Eq + Clone + 'static> Jit<T, U, S> {
    /// Jits `f` with a static second argument.
    pub fn new_static(f: impl Fn(&T, &S) -> U + 'static) -> Jit<T, U, S> {
        Jit {
            f: Box::new(f),
            name: "jit".into(),
            cache: RefCell::new(HashMap::new()),
            traces: Cell::new(0),
        }
    }

    /// Sets the name shown in printed jaxprs (`call[name=...]`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How many times `f` was traced (one per new signature).
    pub fn traces(&self) -> usize {
        self.traces.get()
    }

    /// Calls with a static argument.
    #[track_caller]
    pub fn call_static(&self, x: &T, s: &S) -> U {
        crate::lax::ok(self.try_call_static(x, s))
    }

    /// Fallible [`Jit::call_static`].
    pub fn try_call_static(&self, x: &T, s: &S) -> Result<U> {
        let (callee, mut args, out) = self.lookup(x, s)?;
        args.extend(tree::leaves(x));
        let outs = call(&callee, &args)?;
        Ok(tree::unflatten(&out, outs))
    }

    /// Traces and optimizes at the signature of `x` and static value `s`.
    pub fn lower_static(&self, x: &T, s: &S) -> Lowered {
        let (closed, _) = trace_to_jaxpr(&|x: &T| (self.f)(x, s), x);
        let (jaxpr, consts) = close_over_consts(closed);
        let (jaxpr, consts) = passes::optimize_closed(&jaxpr, consts);
        Lowered { jaxpr, consts }
    }

    fn lookup(&self, x: &T, s: &S) -> Result<(Callee, Vec<Array>, U)> {
        let def = x.def();
        let avals: Vec<Aval> = tree::leaves(x).iter().map(|l| l.aval().clone()).collect();
        let mut h = DefaultHasher::new();
        s.hash(&mut h);
        let key = (def, avals, h.finish());
        if let Some(entries) = self.cache.borrow().get(&key)
            && let Some(e) = entries.iter().find(|e| &e.static_value == s)
        {
            return Ok((e.callee.clone(), e.consts.clone(), e.out.clone()));
        }
        self.traces.set(self.traces.get() + 1);
        let (closed, out) = trace_to_jaxpr(&|x: &T| (self.f)(x, s), x);
        let (jaxpr, consts) = close_over_consts(closed);
        let (jaxpr, consts) = passes::optimize_closed(&jaxpr, consts);
        jaxpr.typecheck().map_err(|e| Error::Transform {
            transform: "jit",
            msg: format!("internal error: optimized program does not typecheck: {e}"),
        })?;
        let callee = Callee::new(self.name.clone(), jaxpr);
        // Constants that are tracers of an enclosing transformation belong to this call
        // only; caching them would leak the tracer into later calls.
        if !consts.iter().any(Array::is_tracer) {
            self.cache.borrow_mut().entry(key).or_default().push(Entry {
                static_value: s.clone(),
                callee: callee.clone(),
                consts: consts.clone(),
                out: out.clone(),
            });
        }
        Ok((callee, consts, out))
    }
}

/// A traced and optimized program, before compilation (JAX's `jit(f).lower(x)`).
pub struct Lowered {
    /// The optimized program; its first inputs are the constants.
    pub jaxpr: Jaxpr,
    /// The constants `f` closed over, in order.
    pub consts: Vec<Array>,
}

impl Lowered {
    /// Compiles the program for the CPU backend.
    pub fn compile(&self) -> Compiled {
        Compiled { exec: Arc::new(Executable::compile(&self.jaxpr)) }
    }
}

impl fmt::Display for Lowered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.jaxpr)
    }
}

/// A compiled program; `Display` shows its steps (fused groups, kernels) and buffer plan.
pub struct Compiled {
    exec: Arc<Executable>,
}

impl Compiled {
    /// The executable.
    pub fn executable(&self) -> &Executable {
        &self.exec
    }
}

impl fmt::Display for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.exec)
    }
}

/// Compiles `f`: the returned function traces and compiles once per input signature and
/// runs the cached executable afterwards. See the [module docs](self) and [`Jit`] for
/// lowering, static arguments, donation and trace counts.
///
/// ```
/// use kiln::{Array, grad, jit};
/// let f = jit(|x: &Array| (x.sin() * x).sum());
/// let x = Array::from_vec(vec![0.5f64, 1.0], [2]);
/// let g = grad(&f)(&x);
/// let want = grad(|x: &Array| (x.sin() * x).sum())(&x);
/// assert!(g.allclose(&want, 1e-12, 1e-12));
/// ```
pub fn jit<T: Tree, U: Tree>(f: impl Fn(&T) -> U + 'static) -> impl Fn(&T) -> U {
    let j = Rc::new(Jit::new(f));
    move |x: &T| j.call(x)
}

/// [`jit`] with a static second argument (hashed into the cache key).
pub fn jit_static<T: Tree, U: Tree, S: Hash + Eq + Clone + 'static>(
    f: impl Fn(&T, &S) -> U + 'static,
) -> impl Fn(&T, &S) -> U {
    let j = Rc::new(Jit::new_static(f));
    move |x: &T, s: &S| j.call_static(x, s)
}
