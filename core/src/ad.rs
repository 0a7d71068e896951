//! Automatic differentiation: forward mode ([`jvp`]), [`linearize`], reverse mode ([`vjp`],
//! [`grad`], [`value_and_grad`]).
//!
//! Forward mode is an interpreter (`JvpTrace`) whose tracers carry a primal and a
//! tangent. Reverse mode is forward mode plus partial evaluation: `linearize` runs the JVP
//! with the tangent inputs as unknowns of a staging trace, so the primal computation runs
//! now and only the (linear) tangent computation is recorded as a jaxpr; `vjp` then
//! transposes that linear jaxpr, running each primitive's transpose rule backwards. Only
//! linear primitives have transpose rules. Zero tangents and cotangents are symbolic.
//!
//! ```
//! use kiln::{Array, grad, jvp, vjp};
//! let x = Array::from_vec(vec![0.5f32, -1.0, 2.0], [3]);
//! let f = |x: &Array| x.tanh().sum();
//! let g = grad(f)(&x); // 1 - tanh(x)^2
//! let expect: Vec<f32> = [0.5f32, -1.0, 2.0].iter().map(|v| 1.0 - v.tanh().powi(2)).collect();
//! for (a, b) in g.to_vec::<f32>().iter().zip(&expect) { assert!((a - b).abs() < 1e-6); }
//! let gg = grad(|x: &Array| grad(f)(x).sum())(&x); // second order
//! assert_eq!(gg.shape(), &[3]);
//! let (_y, y_dot) = jvp(f, &x, &Array::ones([3]));
//! let (_y, pullback) = vjp(f, &x);
//! let x_bar = pullback(&Array::scalar(1.0f32));
//! assert!((y_dot.item::<f32>() - g.sum().item::<f32>()).abs() < 1e-5);
//! assert_eq!(x_bar.to_vec::<f32>(), g.to_vec::<f32>());
//! ```

use crate::array::Array;
use crate::aval::Aval;
use crate::error::{Error, Result};
use crate::jaxpr::{Atom, ClosedJaxpr};
use crate::lax;
use crate::prim::Prim;
use crate::rules;
use crate::staging::StagingTrace;
use crate::trace::{self, Trace, TraceTag, TracerData, bind, with_trace};
use crate::tree::{self, Tree};
use std::rc::Rc;

/// A tangent (or cotangent): a value, or a symbolic zero that costs nothing.
#[derive(Clone, Debug)]
pub enum Tangent {
    /// A zero of this type, never materialized unless needed.
    Zero(Aval),
    /// A real tangent value.
    Value(Array),
}

impl Tangent {
    /// True for the symbolic zero.
    pub fn is_zero(&self) -> bool {
        matches!(self, Tangent::Zero(_))
    }
    /// The value, materializing zeros.
    pub fn instantiate(&self) -> Array {
        match self {
            Tangent::Zero(aval) => {
                lax::broadcast_in_dim(&Array::scalar_of(0.0, aval.dtype), &aval.shape, &[])
            }
            Tangent::Value(x) => x.clone(),
        }
    }
    /// The value if not zero.
    pub fn value(&self) -> Option<&Array> {
        match self {
            Tangent::Zero(_) => None,
            Tangent::Value(x) => Some(x),
        }
    }
    /// Sum of two tangents of one type, keeping zeros symbolic.
    pub fn add(&self, other: &Tangent) -> Tangent {
        match (self, other) {
            (Tangent::Zero(_), t) | (t, Tangent::Zero(_)) => t.clone(),
            (Tangent::Value(a), Tangent::Value(b)) => Tangent::Value(lax::add(a, b)),
        }
    }
    /// Applies a linear function to a non-zero tangent; zero maps to zero of `out_aval`.
    pub fn map(&self, out_aval: &Aval, f: impl FnOnce(&Array) -> Array) -> Tangent {
        match self {
            Tangent::Zero(_) => Tangent::Zero(out_aval.clone()),
            Tangent::Value(x) => Tangent::Value(f(x)),
        }
    }
}

/// The aval of a tangent for a primal of type `aval`: the same for floats. Integer and
/// bool primals have only zero tangents, which we keep in the primal's type.
pub(crate) fn tangent_aval(aval: &Aval) -> Aval {
    aval.clone()
}

/// A boxed linear map between trees (the result of [`linearize`] and [`vjp`]).
pub type BoxedMap<A, B> = Box<dyn Fn(&A) -> B>;

/// Forward-mode AD interpreter.
pub(crate) struct JvpTrace {
    tag: TraceTag,
    parent: Option<Rc<dyn Trace>>,
}

impl JvpTrace {
    pub(crate) fn new() -> Rc<JvpTrace> {
        Rc::new(JvpTrace { tag: TraceTag::fresh(), parent: trace::current() })
    }

    /// A tracer of this trace carrying `primal` and `tangent`.
    pub(crate) fn pure(&self, primal: Array, tangent: Tangent) -> Array {
        let aval = primal.aval().clone();
        let tangent =
            if aval.dtype.is_float() { tangent } else { Tangent::Zero(tangent_aval(&aval)) };
        Array::new_tracer(aval, self.tag, TracerData::Jvp { primal, tangent })
    }

    /// The primal and tangent of `x` as seen by this trace.
    pub(crate) fn unpack(&self, x: &Array) -> (Array, Tangent) {
        if let Some(t) = x.tracer()
            && t.tag == self.tag
            && let TracerData::Jvp { primal, tangent } = &t.data
        {
            return (primal.clone(), tangent.clone());
        }
        (x.clone(), Tangent::Zero(tangent_aval(x.aval())))
    }
}

impl Trace for JvpTrace {
    fn process_primitive(&self, prim: &Prim, args: &[Array]) -> Result<Vec<Array>> {
        let (primals, tangents): (Vec<Array>, Vec<Tangent>) =
            args.iter().map(|a| self.unpack(a)).unzip();
        with_trace(self.parent.clone(), || {
            if tangents.iter().all(Tangent::is_zero) {
                return bind(prim, &primals);
            }
            let (outs, out_tangents) = rules::jvp(prim, &primals, &tangents)?;
            Ok(outs.into_iter().zip(out_tangents).map(|(p, t)| self.pure(p, t)).collect())
        })
    }
}

/// Flat JVP: evaluates `f` at `primals` and pushes `tangents` forward.
pub(crate) fn jvp_flat(
    f: impl FnOnce(&[Array]) -> Vec<Array>,
    primals: &[Array],
    tangents: &[Tangent],
) -> (Vec<Array>, Vec<Tangent>) {
    let trace = JvpTrace::new();
    let ins: Vec<Array> =
        primals.iter().zip(tangents).map(|(p, t)| trace.pure(p.clone(), t.clone())).collect();
    let outs = with_trace(Some(trace.clone() as Rc<dyn Trace>), || f(&ins));
    outs.iter().map(|o| trace.unpack(o)).unzip()
}

/// Forward-mode derivative: `(f(x), df(x)[t])` for trees `x` and `t` of the same structure.
///
/// Outputs whose tangent is (symbolically) zero get materialized zeros.
pub fn jvp<T: Tree, U: Tree>(f: impl Fn(&T) -> U, primals: &T, tangents: &T) -> (U, U) {
    let p = tree::leaves(primals);
    let t: Vec<Tangent> = tree::leaves(tangents).into_iter().map(Tangent::Value).collect();
    assert_eq!(p.len(), t.len(), "jvp: primals and tangents must have the same structure");
    let mut out_tree = None;
    let (outs, out_t) = jvp_flat(
        |xs| {
            let out = f(&tree::unflatten(primals, xs.to_vec()));
            let l = tree::leaves(&out);
            out_tree = Some(out);
            l
        },
        &p,
        &t,
    );
    let like = out_tree.expect("f ran");
    let tangents_out: Vec<Array> = out_t.iter().map(Tangent::instantiate).collect();
    (tree::unflatten(&like, outs), tree::unflatten(&like, tangents_out))
}

/// A linear function recorded by [`linearize`]: the JVP at a fixed point as a jaxpr.
#[derive(Clone, Debug)]
pub struct LinearFn {
    /// The linear jaxpr: inputs are the tangents of the float inputs, outputs the tangents
    /// of the outputs; constants are residuals of the primal computation.
    pub jaxpr: ClosedJaxpr,
    /// For each flat input: its index among the jaxpr's inputs (`None`: not differentiable).
    pub(crate) in_map: Vec<Option<usize>>,
    /// Input avals (all flat inputs).
    pub(crate) in_avals: Vec<Aval>,
    /// Output avals (all flat outputs).
    pub(crate) out_avals: Vec<Aval>,
}

impl LinearFn {
    /// Applies the linear map to flat tangents (one per input).
    pub fn apply(&self, tangents: &[Array]) -> Result<Vec<Array>> {
        let args: Vec<Array> =
            self.in_map.iter().zip(tangents).filter_map(|(m, t)| m.map(|_| t.clone())).collect();
        self.jaxpr.eval(&args)
    }

    /// Applies the transpose: maps output cotangents to input cotangents (zeros for
    /// non-differentiable inputs).
    pub fn transpose(&self, cts: &[Array]) -> Result<Vec<Array>> {
        let cts: Vec<Option<Array>> = cts.iter().cloned().map(Some).collect();
        let in_cts = backward_pass(&self.jaxpr, &cts)?;
        Ok(self
            .in_map
            .iter()
            .zip(&self.in_avals)
            .map(|(m, aval)| match m.and_then(|i| in_cts[i].clone()) {
                Some(ct) => ct,
                None => Tangent::Zero(aval.clone()).instantiate(),
            })
            .collect())
    }
}

/// Flat linearize: evaluates `f` at `primals` and records its JVP as a linear jaxpr.
pub(crate) fn linearize_flat(
    f: impl FnOnce(&[Array]) -> Vec<Array>,
    primals: &[Array],
) -> Result<(Vec<Array>, LinearFn)> {
    let staging = StagingTrace::new();
    let mut in_map = Vec::with_capacity(primals.len());
    let mut n_in = 0;
    let tangents: Vec<Tangent> = primals
        .iter()
        .map(|p| {
            if p.dtype().is_float() {
                in_map.push(Some(n_in));
                n_in += 1;
                Tangent::Value(staging.new_arg(tangent_aval(p.aval())))
            } else {
                in_map.push(None);
                Tangent::Zero(tangent_aval(p.aval()))
            }
        })
        .collect();
    let (outs, out_tangents) =
        with_trace(Some(staging.clone() as Rc<dyn Trace>), || jvp_flat(f, primals, &tangents));
    // Materialize zero output tangents as constants of the jaxpr (outside the staging trace).
    let out_t: Vec<Array> = out_tangents.iter().map(Tangent::instantiate).collect();
    let jaxpr = staging.finish(&out_t);
    let lin = LinearFn {
        jaxpr,
        in_map,
        in_avals: primals.iter().map(|p| p.aval().clone()).collect(),
        out_avals: outs.iter().map(|o| o.aval().clone()).collect(),
    };
    Ok((outs, lin))
}

/// Linearizes `f` at `x`: returns `f(x)` and the JVP at `x` as a reusable linear function
/// (evaluated with [`LinearFn::apply`] or, for trees, the returned closure).
pub fn linearize<T: Tree + 'static, U: Tree + 'static>(
    f: impl Fn(&T) -> U,
    x: &T,
) -> (U, BoxedMap<T, U>) {
    let mut out_tree = None;
    let (outs, lin) = crate::lax::ok(linearize_flat(
        |xs| {
            let out = f(&tree::unflatten(x, xs.to_vec()));
            let l = tree::leaves(&out);
            out_tree = Some(out);
            l
        },
        &tree::leaves(x),
    ));
    let like = out_tree.expect("f ran");
    let y = tree::unflatten(&like, outs);
    let jvp_fn = move |t: &T| {
        let out = crate::lax::ok(lin.apply(&tree::leaves(t)));
        tree::unflatten(&like, out)
    };
    (y, Box::new(jvp_fn))
}

/// Transposes a linear jaxpr: given cotangents of its outputs, returns cotangents of its
/// inputs (`None` where no cotangent flows).
pub(crate) fn backward_pass(
    closed: &ClosedJaxpr,
    cts_out: &[Option<Array>],
) -> Result<Vec<Option<Array>>> {
    let jaxpr = &closed.jaxpr;
    let n = jaxpr.num_vars();
    let mut known: Vec<Option<Array>> = vec![None; n];
    let mut linear = vec![false; n];
    for (v, c) in jaxpr.constvars.iter().zip(&closed.consts) {
        known[v.id] = Some(c.clone());
    }
    for v in &jaxpr.in_binders {
        linear[v.id] = true;
    }
    let is_linear = |linear: &Vec<bool>, a: &Atom| matches!(a, Atom::Var(v) if linear[v.id]);
    // Forward sweep: evaluate equations that do not depend on the linear inputs.
    let mut linear_eqns = Vec::new();
    for (i, eqn) in jaxpr.eqns.iter().enumerate() {
        if eqn.inputs.iter().any(|a| is_linear(&linear, a)) {
            for v in &eqn.outs {
                linear[v.id] = true;
            }
            linear_eqns.push(i);
        } else {
            let ins: Vec<Array> = eqn
                .inputs
                .iter()
                .map(|a| match a {
                    Atom::Var(v) => known[v.id].clone().expect("bound before use"),
                    Atom::Lit(l) => l.clone(),
                })
                .collect();
            for (v, x) in eqn.outs.iter().zip(bind(&eqn.prim, &ins)?) {
                known[v.id] = Some(x);
            }
        }
    }
    let mut ct_env: Vec<Option<Array>> = vec![None; n];
    let accumulate = |env: &mut Vec<Option<Array>>, id: usize, ct: Array| {
        env[id] = Some(match env[id].take() {
            None => ct,
            Some(prev) => lax::add(&prev, &ct),
        });
    };
    for (atom, ct) in jaxpr.outs.iter().zip(cts_out) {
        if let (Atom::Var(v), Some(ct)) = (atom, ct)
            && linear[v.id]
        {
            accumulate(&mut ct_env, v.id, ct.clone());
        }
    }
    for &i in linear_eqns.iter().rev() {
        let eqn = &jaxpr.eqns[i];
        let cts: Vec<Option<Array>> = eqn.outs.iter().map(|v| ct_env[v.id].take()).collect();
        if cts.iter().all(Option::is_none) {
            continue;
        }
        let args: Vec<Option<Array>> = eqn
            .inputs
            .iter()
            .map(|a| match a {
                Atom::Var(v) if linear[v.id] => None,
                Atom::Var(v) => known[v.id].clone(),
                Atom::Lit(l) => Some(l.clone()),
            })
            .collect();
        let in_avals: Vec<Aval> = eqn.inputs.iter().map(|a| a.aval().clone()).collect();
        let out_avals: Vec<Aval> = eqn.outs.iter().map(|v| v.aval.clone()).collect();
        let cts: Vec<Tangent> = cts
            .into_iter()
            .zip(&out_avals)
            .map(|(c, aval)| c.map(Tangent::Value).unwrap_or_else(|| Tangent::Zero(aval.clone())))
            .collect();
        let cts_in = rules::transpose(&eqn.prim, &cts, &args, &in_avals)?;
        for (a, ct) in eqn.inputs.iter().zip(cts_in) {
            if let (Atom::Var(v), Some(ct)) = (a, ct)
                && linear[v.id]
            {
                accumulate(&mut ct_env, v.id, ct);
            }
        }
    }
    Ok(jaxpr.in_binders.iter().map(|v| ct_env[v.id].take()).collect())
}

/// Flat VJP: `f(primals)` and a pullback from output cotangents to input cotangents.
pub(crate) fn vjp_flat(
    f: impl FnOnce(&[Array]) -> Vec<Array>,
    primals: &[Array],
) -> Result<(Vec<Array>, LinearFn)> {
    linearize_flat(f, primals)
}

/// Tree VJP with an unboxed pullback (borrows nothing from `f`).
pub(crate) fn vjp_tree<T: Tree, U: Tree>(
    f: &dyn Fn(&T) -> U,
    x: &T,
) -> (U, impl Fn(&U) -> T + use<T, U>) {
    let mut out_tree = None;
    let (outs, lin) = crate::lax::ok(vjp_flat(
        |xs| {
            let out = f(&tree::unflatten(x, xs.to_vec()));
            let l = tree::leaves(&out);
            out_tree = Some(out);
            l
        },
        &tree::leaves(x),
    ));
    let like = out_tree.expect("f ran");
    let y = tree::unflatten(&like, outs);
    let x_like = x.clone();
    let pullback = move |ct: &U| {
        let cts = crate::lax::ok(lin.transpose(&tree::leaves(ct)));
        tree::unflatten(&x_like, cts)
    };
    (y, pullback)
}

/// Reverse-mode derivative: `f(x)` and a pullback mapping an output cotangent (a tree
/// like `f(x)`) to the input cotangent (a tree like `x`).
pub fn vjp<T: Tree + 'static, U: Tree + 'static>(
    f: impl Fn(&T) -> U,
    x: &T,
) -> (U, BoxedMap<U, T>) {
    let (y, pullback) = vjp_tree(&f, x);
    (y, Box::new(pullback))
}

fn check_scalar_output(transform: &'static str, y: &Array) -> Result<()> {
    if y.ndim() != 0 || !y.dtype().is_float() {
        return Err(Error::Transform {
            transform,
            msg: format!(
                "the function must return a scalar float (a 0-d f16/bf16/f32/f64 array), \
                 but it returned {}; reduce it first (e.g. `.sum()` or `.mean()`), or use \
                 `vjp`/`jacrev` for non-scalar outputs",
                y.aval()
            ),
        });
    }
    Ok(())
}

/// Fallible [`value_and_grad`] with an auxiliary output.
pub fn try_value_and_grad_with_aux<T: Tree, A: Tree>(
    f: impl Fn(&T) -> (Array, A),
    x: &T,
) -> Result<((Array, A), T)> {
    let mut aux = None;
    let mut n_out = 0;
    let (outs, lin) = vjp_flat(
        |xs| {
            let (y, a) = f(&tree::unflatten(x, xs.to_vec()));
            let mut l = vec![y];
            n_out = 1;
            l.extend(tree::leaves(&a));
            aux = Some(a);
            l
        },
        &tree::leaves(x),
    )?;
    let _ = n_out;
    let y = outs[0].clone();
    check_scalar_output("grad", &y)?;
    let aux_like = aux.expect("f ran");
    let aux_val = tree::unflatten(&aux_like, outs[1..].to_vec());
    // Seed the primal output with 1, auxiliary outputs with zero cotangents.
    let mut cts = vec![Array::scalar_of(1.0, y.dtype())];
    cts.extend(lin.out_avals[1..].iter().map(|a| Tangent::Zero(a.clone()).instantiate()));
    let g = lin.transpose(&cts)?;
    Ok(((y, aux_val), tree::unflatten(x, g)))
}

/// Fallible [`value_and_grad`].
pub fn try_value_and_grad<T: Tree>(f: impl Fn(&T) -> Array, x: &T) -> Result<(Array, T)> {
    let ((y, ()), g) = try_value_and_grad_with_aux(|x: &T| (f(x), ()), x)?;
    Ok((y, g))
}

/// `f(x)` and its gradient with respect to every float leaf of `x` (a tree of `x`'s
/// type; non-float leaves get zeros). `f` must return a scalar float.
///
/// Panics with a clear message if `f` returns a non-scalar or non-float value.
pub fn value_and_grad<T: Tree>(f: impl Fn(&T) -> Array) -> impl Fn(&T) -> (Array, T) {
    move |x: &T| crate::lax::ok(try_value_and_grad(&f, x))
}

/// Like [`value_and_grad`] for a function that also returns auxiliary data (JAX's
/// `has_aux=True`): returns `((value, aux), grad)`.
pub fn value_and_grad_with_aux<T: Tree, A: Tree>(
    f: impl Fn(&T) -> (Array, A),
) -> impl Fn(&T) -> ((Array, A), T) {
    move |x: &T| crate::lax::ok(try_value_and_grad_with_aux(&f, x))
}

/// The gradient of a scalar function, as a tree of the argument's type.
///
/// `grad(f)` is a function again, so it composes: `grad(|x| grad(f)(x).sum())` is a second
/// derivative, and `grad` works on functions that close over outer tracers.
pub fn grad<T: Tree>(f: impl Fn(&T) -> Array) -> impl Fn(&T) -> T {
    move |x: &T| crate::lax::ok(try_value_and_grad(&f, x)).1
}

/// Fallible [`grad`].
pub fn try_grad<T: Tree>(f: impl Fn(&T) -> Array, x: &T) -> Result<T> {
    Ok(try_value_and_grad(f, x)?.1)
}
