//! Vectorizing map ([`vmap`]) and Jacobians ([`jacfwd`], [`jacrev`], [`hessian`], [`hvp`]).
//!
//! `vmap` is an interpreter (`BatchTrace`) whose tracers carry a value and the position of
//! its batch dimension (`None`: the same for every example). Each primitive is applied once
//! to the whole batch by its batching rule ([`crate::rules::batch`]). Like the other
//! transformations it is "stackless": it composes in any order with `grad`, `jvp`, `vjp`
//! and itself, and functions may close over tracers of outer transformations.
//!
//! ```
//! use kiln::{Array, grad, vmap};
//! let xs = Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2]);
//! // One sum of squares per row.
//! let ys = vmap(|x: &Array| (x * x).sum())(&xs);
//! assert_eq!(ys.to_vec::<f32>(), vec![5.0, 25.0, 61.0]);
//! // Per-example gradients.
//! let gs = vmap(grad(|x: &Array| (x * x).sum()))(&xs);
//! assert_eq!(gs.to_vec::<f32>(), vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
//! ```

use crate::ad::jvp;
use crate::array::Array;
use crate::error::{Error, Result};
use crate::lax;
use crate::prim::Prim;
use crate::rules;
use crate::trace::{self, Trace, TraceTag, TracerData, bind, with_trace};
use crate::tree::{self, Tree, TreeDef};
use std::rc::Rc;

/// The batching interpreter.
pub(crate) struct BatchTrace {
    tag: TraceTag,
    parent: Option<Rc<dyn Trace>>,
}

impl BatchTrace {
    pub(crate) fn new() -> Rc<BatchTrace> {
        Rc::new(BatchTrace { tag: TraceTag::fresh(), parent: trace::current() })
    }

    /// A tracer of this trace.
    pub(crate) fn pure(&self, val: Array, bdim: Option<usize>) -> Array {
        let aval = match bdim {
            Some(d) => {
                let mut a = val.aval().clone();
                a.shape.remove(d);
                a
            }
            None => val.aval().clone(),
        };
        Array::new_tracer(aval, self.tag, TracerData::Batch { val, bdim })
    }

    /// The value and batch dimension of `x` as seen by this trace.
    pub(crate) fn unpack(&self, x: &Array) -> (Array, Option<usize>) {
        if let Some(t) = x.tracer()
            && t.tag == self.tag
            && let TracerData::Batch { val, bdim } = &t.data
        {
            return (val.clone(), *bdim);
        }
        (x.clone(), None)
    }
}

impl Trace for BatchTrace {
    fn process_primitive(&self, prim: &Prim, args: &[Array]) -> Result<Vec<Array>> {
        let (vals, bdims): (Vec<Array>, Vec<Option<usize>>) =
            args.iter().map(|a| self.unpack(a)).unzip();
        with_trace(self.parent.clone(), || {
            if bdims.iter().all(Option::is_none) {
                return bind(prim, &vals);
            }
            let (outs, out_bdims) = rules::batch(prim, &vals, &bdims)?;
            Ok(outs.into_iter().zip(out_bdims).map(|(v, d)| self.pure(v, d)).collect())
        })
    }
}

/// Which axis of each leaf is mapped (`None`: the leaf is broadcast, the same for every
/// example). Negative axes count from the end.
///
/// An `Axes` is matched against a tree from the top: a [`Axes::Leaf`] applies to every
/// leaf below it, an [`Axes::Seq`] gives one spec per child of a node (tuple elements,
/// struct fields in declaration order, `Vec` items).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Axes {
    /// One axis for every leaf of the subtree.
    Leaf(Option<isize>),
    /// One spec per child of the node.
    Seq(Vec<Axes>),
}

impl Axes {
    /// One spec per element of a tuple, e.g. `Axes::tuple((None, Some(0)))`.
    pub fn tuple(t: impl IntoAxesSeq) -> Axes {
        Axes::Seq(t.into_axes_seq())
    }

    /// Flattens to one axis per leaf of a tree with structure `def`.
    fn per_leaf(&self, def: &TreeDef, out: &mut Vec<Option<isize>>) -> Result<()> {
        match (self, def) {
            (Axes::Leaf(a), d) => {
                out.extend(std::iter::repeat_n(*a, d.num_leaves()));
                Ok(())
            }
            (Axes::Seq(specs), TreeDef::Node { children, .. }) if specs.len() == children.len() => {
                for (s, (_, c)) in specs.iter().zip(children) {
                    s.per_leaf(c, out)?;
                }
                Ok(())
            }
            (Axes::Seq(specs), d) => Err(Error::Transform {
                transform: "vmap",
                msg: format!(
                    "axes spec with {} entries does not match a tree node with {} children ({d:?})",
                    specs.len(),
                    match d {
                        TreeDef::Node { children, .. } => children.len(),
                        TreeDef::Leaf => 0,
                    }
                ),
            }),
        }
    }
}

impl From<Option<isize>> for Axes {
    fn from(a: Option<isize>) -> Axes {
        Axes::Leaf(a)
    }
}

impl From<isize> for Axes {
    fn from(a: isize) -> Axes {
        Axes::Leaf(Some(a))
    }
}

impl From<Vec<Axes>> for Axes {
    fn from(v: Vec<Axes>) -> Axes {
        Axes::Seq(v)
    }
}

/// Tuples of per-element specs accepted by [`Axes::tuple`].
pub trait IntoAxesSeq {
    /// The specs, one per element.
    fn into_axes_seq(self) -> Vec<Axes>;
}

macro_rules! axes_tuple {
    ($($T:ty, $i:tt);+) => {
        impl IntoAxesSeq for ($(Option<$T>,)+) {
            fn into_axes_seq(self) -> Vec<Axes> {
                vec![$(Axes::Leaf(self.$i)),+]
            }
        }
    };
}

axes_tuple!(isize, 0);
axes_tuple!(isize, 0; isize, 1);
axes_tuple!(isize, 0; isize, 1; isize, 2);
axes_tuple!(isize, 0; isize, 1; isize, 2; isize, 3);

fn norm_axis(axis: isize, ndim: usize, what: &str) -> Result<usize> {
    crate::aval::normalize_axis(axis, ndim).ok_or_else(|| Error::Transform {
        transform: "vmap",
        msg: format!("axis {axis} is out of range for {what} of rank {ndim}"),
    })
}

/// Fallible `vmap` with every option: maps `f` over the axes `in_axes` of the leaves of
/// `x`, and puts the mapped axis of each output leaf at `out_axes` (`None`: the output
/// must not depend on the batch, and is returned unbatched). `axis_size` is required when
/// no input is mapped, and checked otherwise.
pub fn try_vmap<T: Tree, U: Tree>(
    f: impl FnOnce(&T) -> U,
    x: &T,
    in_axes: &Axes,
    out_axes: &Axes,
    axis_size: Option<usize>,
) -> Result<U> {
    let leaves = tree::leaves_with_path(x);
    let mut axes = Vec::new();
    in_axes.per_leaf(&x.def(), &mut axes)?;
    let mut size = axis_size;
    let mut first: Option<String> = None;
    let mut norm = Vec::with_capacity(leaves.len());
    for ((path, leaf), ax) in leaves.iter().zip(&axes) {
        let d = match ax {
            None => None,
            Some(a) => Some(norm_axis(*a, leaf.ndim(), &format!("input leaf `{path}`"))?),
        };
        if let Some(d) = d {
            let n = leaf.shape()[d];
            match size {
                None => {
                    size = Some(n);
                    first = Some(format!("`{path}` (axis {d}) has size {n}"));
                }
                Some(s) if s != n => {
                    let prev = first.clone().unwrap_or_else(|| format!("axis_size is {s}"));
                    return Err(Error::Transform {
                        transform: "vmap",
                        msg: format!(
                            "mapped axes have different sizes: {prev}, but `{path}` (axis {d}) \
                             has size {n}"
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        norm.push(d);
    }
    let Some(size) = size else {
        return Err(Error::Transform {
            transform: "vmap",
            msg: "no input is mapped (all in_axes are None); pass an explicit axis_size".into(),
        });
    };
    let trace = BatchTrace::new();
    let ins: Vec<Array> =
        leaves.iter().zip(&norm).map(|((_, l), d)| trace.pure(l.clone(), *d)).collect();
    let out = with_trace(Some(trace.clone() as Rc<dyn Trace>), || f(&tree::unflatten(x, ins)));
    let out_leaves = tree::leaves_with_path(&out);
    let mut oaxes = Vec::new();
    out_axes.per_leaf(&out.def(), &mut oaxes)?;
    let mut results = Vec::with_capacity(out_leaves.len());
    for ((path, o), ax) in out_leaves.iter().zip(&oaxes) {
        let (val, bdim) = trace.unpack(o);
        let r = match ax {
            None => match bdim {
                None => val,
                Some(_) => {
                    return Err(Error::Transform {
                        transform: "vmap",
                        msg: format!(
                            "output leaf `{path}` has out_axes None but depends on the mapped input"
                        ),
                    });
                }
            },
            Some(a) => {
                let to = norm_axis(
                    *a,
                    val.ndim() + usize::from(bdim.is_none()),
                    &format!("output leaf `{path}`"),
                )?;
                let front = to_front(&val, bdim, size);
                moveaxis(&front, 0, to)
            }
        };
        results.push(r);
    }
    Ok(tree::unflatten(&out, results))
}

/// Vectorizes `f` over axis 0 of every leaf of its argument; outputs are stacked along
/// axis 0. See the [module docs](self).
pub fn vmap<T: Tree, U: Tree>(f: impl Fn(&T) -> U) -> impl Fn(&T) -> U {
    move |x: &T| lax::ok(try_vmap(&f, x, &Axes::Leaf(Some(0)), &Axes::Leaf(Some(0)), None))
}

/// [`vmap`] with per-argument/per-leaf input axes (`None`: broadcast).
///
/// ```
/// use kiln::{Array, vmap::{Axes, vmap_with}};
/// let w = Array::from_vec(vec![1.0f32, 10.0], [2]);
/// let xs = Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]);
/// // Columns of xs, the same w for each.
/// let f = vmap_with(|(w, x): &(Array, Array)| (w * x).sum(), Axes::tuple((None, Some(1))));
/// assert_eq!(f(&(w, xs)).to_vec::<f32>(), vec![31.0, 42.0]);
/// ```
pub fn vmap_with<T: Tree, U: Tree>(
    f: impl Fn(&T) -> U,
    in_axes: impl Into<Axes>,
) -> impl Fn(&T) -> U {
    let in_axes = in_axes.into();
    move |x: &T| lax::ok(try_vmap(&f, x, &in_axes, &Axes::Leaf(Some(0)), None))
}

/// [`vmap`] with input axes, output axes and an optional explicit axis size.
pub fn vmap_full<T: Tree, U: Tree>(
    f: impl Fn(&T) -> U,
    in_axes: impl Into<Axes>,
    out_axes: impl Into<Axes>,
    axis_size: Option<usize>,
) -> impl Fn(&T) -> U {
    let (in_axes, out_axes) = (in_axes.into(), out_axes.into());
    move |x: &T| lax::ok(try_vmap(&f, x, &in_axes, &out_axes, axis_size))
}

/// Moves axis `from` of `x` to position `to`.
fn moveaxis(x: &Array, from: usize, to: usize) -> Array {
    if from == to {
        return x.clone();
    }
    let mut perm: Vec<usize> = (0..x.ndim()).filter(|&i| i != from).collect();
    perm.insert(to, from);
    lax::transpose(x, &perm)
}

/// `x` with its batch dimension at the front; unbatched values are broadcast to `size`.
fn to_front(x: &Array, bdim: Option<usize>, size: usize) -> Array {
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

/// The standard basis of the space of `x`: `[n, *x.shape]` with `n = x.size()`.
fn basis(x: &Array) -> Array {
    let n = x.size();
    let mut shape = vec![n];
    shape.extend_from_slice(x.shape());
    lax::reshape(&Array::eye_of(n, x.dtype()), &shape)
}

/// `[n, *out_shape]` (one row per input element) to `[*out_shape, *in_shape]`.
fn rows_to_jac(rows: &Array, out_shape: &[usize], in_shape: &[usize]) -> Array {
    let n: usize = in_shape.iter().product();
    let m: usize = out_shape.iter().product();
    let t = lax::transpose(&lax::reshape(rows, &[n, m]), &[1, 0]);
    let mut shape = out_shape.to_vec();
    shape.extend_from_slice(in_shape);
    lax::reshape(&t, &shape)
}

/// Forward-mode Jacobian of an array function: shape `[*out_shape, *in_shape]`, built by
/// pushing the standard basis through [`jvp`] under [`vmap`].
pub fn jacfwd(f: impl Fn(&Array) -> Array) -> impl Fn(&Array) -> Array {
    move |x: &Array| {
        let rows = vmap(|t: &Array| jvp(&f, x, t).1)(&basis(x));
        let out_shape = rows.shape()[1..].to_vec();
        rows_to_jac(&rows, &out_shape, x.shape())
    }
}

/// Reverse-mode Jacobian of an array function: shape `[*out_shape, *in_shape]`, built by
/// pulling the standard basis of the output back through a VJP under [`vmap`].
pub fn jacrev(f: impl Fn(&Array) -> Array) -> impl Fn(&Array) -> Array {
    move |x: &Array| {
        let (y, pullback) = crate::ad::vjp_tree(&f, x);
        let rows = vmap(|ct: &Array| pullback(ct))(&basis(&y));
        // rows: [m, *in_shape]; that is already the Jacobian layout after a reshape.
        let mut shape = y.shape().to_vec();
        shape.extend_from_slice(x.shape());
        lax::reshape(&rows, &shape)
    }
}

/// The Hessian of a scalar function: `jacfwd(jacrev(f))`, shape `[*x.shape, *x.shape]`.
pub fn hessian(f: impl Fn(&Array) -> Array) -> impl Fn(&Array) -> Array {
    let g = jacrev(f);
    jacfwd(move |x: &Array| g(x))
}

/// Hessian-vector product of a scalar function at `x` along `v` (forward over reverse),
/// without forming the Hessian.
pub fn hvp(f: impl Fn(&Array) -> Array, x: &Array, v: &Array) -> Array {
    let g = crate::ad::grad(f);
    jvp(g, x, v).1
}
