//! Vectorizing map ([`vmap`]) and Jacobians ([`jacfwd`], [`jacrev`], [`hessian`], [`hvp`];
//! over trees [`jacfwd_tree`], [`jacrev_tree`], [`hessian_tree`], returning a [`Jacobian`]).
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
use crate::rules::{moveaxis, to_front};
use crate::trace::{self, Trace, TraceTag, TracerData, bind, with_trace};
use crate::tree::{self, KeyEntry, KeyPath, Tree, TreeDef};
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

/// The Jacobian of a tree-valued function with respect to a tree argument.
///
/// JAX returns a nested tree: the output's structure with, at each output leaf, the
/// input's structure, whose leaves are arrays of shape `out_leaf.shape ++ in_leaf.shape`.
/// Rust cannot name that type generically, so a `Jacobian` holds the same blocks flattened:
/// one array per (output leaf, input leaf) pair, in the canonical leaf orders of both trees,
/// together with both structures ([`TreeDef`]s) and the leaves' key paths. Blocks are found
/// by position ([`Jacobian::block`]) or by key path (`j[("0", "w")]`, [`Jacobian::get`]; the
/// path of a bare [`Array`] is the empty string `""`); [`Jacobian::row`] rebuilds the
/// input-shaped tree of one output leaf (for a scalar output that is the gradient).
///
/// A `Jacobian` is itself a [`Tree`] (leaf paths: output path followed by input path), so
/// Jacobian-valued functions compose with [`vmap`], [`jvp`] and the Jacobians themselves:
/// [`hessian_tree`] is `jacfwd_tree` of `jacrev_tree`.
///
/// ```
/// use kiln::{Array, hessian_tree, jacfwd_tree, jacrev_tree};
/// use std::collections::BTreeMap;
/// let w = Array::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2]);
/// let b = Array::from_vec(vec![0.5f64, -0.5], [2]);
/// let p = BTreeMap::from([("w".to_string(), w), ("b".to_string(), b)]);
/// let x = Array::from_vec(vec![1.0f64, 0.0, -1.0], [3]);
/// // Two outputs: y = x @ w + b (shape [2]) and the scalar s = sum(y^2).
/// let f = |p: &BTreeMap<String, Array>| {
///     let y = x.matmul(&p["w"]) + &p["b"];
///     let s = y.square().sum();
///     (y, s)
/// };
/// let j = jacrev_tree(f)(&p);
/// assert_eq!(j.out_paths().iter().map(|k| k.to_string()).collect::<Vec<_>>(), ["0", "1"]);
/// assert_eq!(j.in_paths().iter().map(|k| k.to_string()).collect::<Vec<_>>(), ["b", "w"]);
/// // Each block has shape out_leaf.shape ++ in_leaf.shape.
/// assert_eq!(j[("0", "w")].shape(), &[2, 3, 2]); // dy/dw
/// assert_eq!(j[("0", "b")].to_vec::<f64>(), vec![1.0, 0.0, 0.0, 1.0]); // dy/db = I
/// // y = [-3.5, -4.5], so ds/db = 2y.
/// assert_eq!(j[("1", "b")].to_vec::<f64>(), vec![-7.0, -9.0]);
/// // The row of the scalar output, as a tree of the input's type, is the gradient.
/// let g: BTreeMap<String, Array> = j.row(1, &p);
/// assert_eq!(g["w"].shape(), &[3, 2]);
/// // Forward mode gives the same blocks.
/// let jf = jacfwd_tree(f)(&p);
/// assert_eq!(jf[("0", "w")].to_vec::<f64>(), j[("0", "w")].to_vec::<f64>());
/// // The Hessian of a scalar function: one block per pair of input leaves.
/// let h = hessian_tree(|p: &BTreeMap<String, Array>| f(p).1)(&p);
/// assert_eq!(h[("b", "b")].to_vec::<f64>(), vec![2.0, 0.0, 0.0, 2.0]);
/// assert_eq!(h[("w", "b")].shape(), &[3, 2, 2]);
/// ```
#[derive(Clone, Debug)]
pub struct Jacobian {
    out_def: TreeDef,
    in_def: TreeDef,
    out_paths: Vec<KeyPath>,
    in_paths: Vec<KeyPath>,
    /// `blocks[i][j]`: derivative of output leaf `i` with respect to input leaf `j`.
    blocks: Vec<Vec<Array>>,
}

impl Jacobian {
    /// The structure of the function's output.
    pub fn out_def(&self) -> &TreeDef {
        &self.out_def
    }

    /// The structure of the function's input.
    pub fn in_def(&self) -> &TreeDef {
        &self.in_def
    }

    /// Key paths of the output leaves, in canonical order (the row order of the blocks).
    pub fn out_paths(&self) -> &[KeyPath] {
        &self.out_paths
    }

    /// Key paths of the input leaves, in canonical order (the column order of the blocks).
    pub fn in_paths(&self) -> &[KeyPath] {
        &self.in_paths
    }

    /// The block of output leaf `out_leaf` with respect to input leaf `in_leaf` (positions
    /// in canonical leaf order), of shape `out_leaf.shape ++ in_leaf.shape`.
    ///
    /// Panics if either index is out of range.
    #[track_caller]
    pub fn block(&self, out_leaf: usize, in_leaf: usize) -> &Array {
        &self.blocks[out_leaf][in_leaf]
    }

    /// The block for the output leaf at key path `out` and the input leaf at key path `inp`
    /// (paths as printed by [`KeyPath`]'s `Display`, e.g. `"layers.0.weight"`; a bare array's
    /// path is `""`), or `None` if either path is not a leaf.
    pub fn get(&self, out: &str, inp: &str) -> Option<&Array> {
        let i = self.out_paths.iter().position(|p| p.to_string() == out)?;
        let j = self.in_paths.iter().position(|p| p.to_string() == inp)?;
        Some(&self.blocks[i][j])
    }

    /// All blocks with their output and input key paths, output-major.
    pub fn iter(&self) -> impl Iterator<Item = (&KeyPath, &KeyPath, &Array)> {
        self.out_paths
            .iter()
            .zip(&self.blocks)
            .flat_map(move |(o, row)| self.in_paths.iter().zip(row).map(move |(i, b)| (o, i, b)))
    }

    /// The derivatives of output leaf `out_leaf` as a tree of the input's type: `like`'s
    /// structure with leaves of shape `out_leaf.shape ++ in_leaf.shape`. For a scalar output
    /// this is the gradient.
    ///
    /// Panics if `like` does not have the structure of the differentiated input.
    #[track_caller]
    pub fn row<T: Tree>(&self, out_leaf: usize, like: &T) -> T {
        assert_eq!(
            like.def(),
            self.in_def,
            "Jacobian::row: `like` does not have the structure of the differentiated input"
        );
        tree::unflatten(like, self.blocks[out_leaf].clone())
    }

    /// The blocks, `[out_leaf][in_leaf]`.
    pub fn into_blocks(self) -> Vec<Vec<Array>> {
        self.blocks
    }

    /// The only block of the Jacobian of an array function of an array.
    fn into_array(self) -> Array {
        debug_assert!(self.blocks.len() == 1 && self.blocks[0].len() == 1);
        self.blocks.into_iter().next().and_then(|r| r.into_iter().next()).expect("one block")
    }
}

impl std::ops::Index<(&str, &str)> for Jacobian {
    type Output = Array;

    /// `j[(out_path, in_path)]`: see [`Jacobian::get`]. Panics if a path is not a leaf.
    #[track_caller]
    fn index(&self, (out, inp): (&str, &str)) -> &Array {
        self.get(out, inp).unwrap_or_else(|| {
            let show = |ps: &[KeyPath]| {
                ps.iter().map(|p| format!("{:?}", p.to_string())).collect::<Vec<_>>().join(", ")
            };
            panic!(
                "Jacobian has no block ({out:?}, {inp:?}); output leaves: [{}], input leaves: [{}]",
                show(&self.out_paths),
                show(&self.in_paths)
            )
        })
    }
}

impl Tree for Jacobian {
    fn visit(&self, path: &mut KeyPath, f: &mut dyn FnMut(&KeyPath, &Array)) {
        let depth = path.0.len();
        for (o, i, b) in self.iter() {
            path.0.extend(o.0.iter().chain(&i.0).cloned());
            f(path, b);
            path.0.truncate(depth);
        }
    }

    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Array>) -> Self {
        let blocks = self
            .blocks
            .iter()
            .map(|row| {
                row.iter()
                    .map(|_| leaves.next().expect("with_leaves: too few leaves for a Jacobian"))
                    .collect()
            })
            .collect();
        Jacobian { blocks, ..self.clone() }
    }

    fn def(&self) -> TreeDef {
        let row = TreeDef::Node {
            kind: "JacobianRow",
            statics: String::new(),
            children: (0..self.in_paths.len())
                .map(|j| (KeyEntry::Index(j), TreeDef::Leaf))
                .collect(),
        };
        TreeDef::Node {
            kind: "Jacobian",
            statics: format!("out: {:?}; in: {:?}", self.out_def, self.in_def),
            children: (0..self.out_paths.len())
                .map(|i| (KeyEntry::Index(i), row.clone()))
                .collect(),
        }
    }
}

/// Errors unless every leaf is a float array (JAX: Jacobians need real-valued values).
fn check_float(transform: &'static str, what: &str, leaves: &[(KeyPath, Array)]) -> Result<()> {
    match leaves.iter().find(|(_, l)| !l.dtype().is_float()) {
        None => Ok(()),
        Some((path, l)) => Err(Error::Transform {
            transform,
            msg: format!(
                "{transform} needs float {what}s, but {what} leaf `{path}` is {}; convert it \
                 first or close over it instead of differentiating it",
                l.aval()
            ),
        }),
    }
}

/// Start offsets of consecutive blocks of the given sizes, and their total.
fn offsets(leaves: &[(KeyPath, Array)]) -> (Vec<usize>, usize) {
    let mut offs = Vec::with_capacity(leaves.len());
    let mut total = 0;
    for (_, l) in leaves {
        offs.push(total);
        total += l.size();
    }
    (offs, total)
}

/// Columns `[off, off + leaf.size())` of the `total x total` identity, as
/// `[total, *leaf.shape]`: the part of the standard basis of a whole tree that lives in
/// one leaf.
fn basis_block(total: usize, off: usize, leaf: &Array) -> Array {
    let eye = Array::eye_of(total, leaf.dtype());
    let cols = lax::slice(&eye, &[0, off], &[total, off + leaf.size()], None);
    let mut shape = vec![total];
    shape.extend_from_slice(leaf.shape());
    lax::reshape(&cols, &shape)
}

/// Rows `[lo, hi)` (along axis 0) of `x`.
fn row_range(x: &Array, lo: usize, hi: usize) -> Array {
    let mut start = vec![0; x.ndim()];
    let mut limit = x.shape().to_vec();
    start[0] = lo;
    limit[0] = hi;
    lax::slice(x, &start, &limit, None)
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

/// The all-zero Jacobian of `y` with respect to `x` (used when either has no elements).
fn zero_jacobian(out: &[(KeyPath, Array)], ins: &[(KeyPath, Array)]) -> Vec<Vec<Array>> {
    out.iter()
        .map(|(_, o)| {
            ins.iter()
                .map(|(_, i)| {
                    let mut shape = o.shape().to_vec();
                    shape.extend_from_slice(i.shape());
                    lax::broadcast_in_dim(&Array::scalar_of(0.0, o.dtype()), &shape, &[])
                })
                .collect()
        })
        .collect()
}

fn split_paths(leaves: &[(KeyPath, Array)]) -> Vec<KeyPath> {
    leaves.iter().map(|(p, _)| p.clone()).collect()
}

/// Fallible [`jacfwd_tree`] at `x`.
pub fn try_jacfwd_tree<T: Tree, U: Tree>(f: impl Fn(&T) -> U, x: &T) -> Result<Jacobian> {
    let ins = tree::leaves_with_path(x);
    check_float("jacfwd", "input", &ins)?;
    let (offs, total) = offsets(&ins);
    let (out_tree, blocks) = if total == 0 {
        let y = f(x);
        let blocks = zero_jacobian(&tree::leaves_with_path(&y), &ins);
        (y, blocks)
    } else {
        let basis: Vec<Array> =
            ins.iter().zip(&offs).map(|((_, l), &o)| basis_block(total, o, l)).collect();
        let tangents = tree::unflatten(x, basis);
        // One JVP per basis vector, all at once: output leaf i becomes [total, *out_i.shape].
        let rows = try_vmap(
            |t: &T| jvp(&f, x, t).1,
            &tangents,
            &Axes::Leaf(Some(0)),
            &Axes::Leaf(Some(0)),
            None,
        )?;
        let blocks = tree::leaves(&rows)
            .iter()
            .map(|r| {
                let out_shape = &r.shape()[1..];
                ins.iter()
                    .zip(&offs)
                    .map(|((_, l), &o)| {
                        rows_to_jac(&row_range(r, o, o + l.size()), out_shape, l.shape())
                    })
                    .collect()
            })
            .collect();
        (rows, blocks)
    };
    Ok(Jacobian {
        out_def: out_tree.def(),
        in_def: x.def(),
        out_paths: split_paths(&tree::leaves_with_path(&out_tree)),
        in_paths: split_paths(&ins),
        blocks,
    })
}

/// Fallible [`jacrev_tree`] at `x`.
pub fn try_jacrev_tree<T: Tree, U: Tree>(f: impl Fn(&T) -> U, x: &T) -> Result<Jacobian> {
    let ins = tree::leaves_with_path(x);
    check_float("jacrev", "input", &ins)?;
    let (y, pullback) = crate::ad::vjp_tree(&f, x);
    let outs = tree::leaves_with_path(&y);
    check_float("jacrev", "output", &outs)?;
    let (offs, total) = offsets(&outs);
    let blocks = if total == 0 || ins.iter().all(|(_, l)| l.size() == 0) {
        zero_jacobian(&outs, &ins)
    } else {
        let basis: Vec<Array> =
            outs.iter().zip(&offs).map(|((_, o), &k)| basis_block(total, k, o)).collect();
        let cts = tree::unflatten(&y, basis);
        // One pullback per output basis vector: input leaf j becomes [total, *in_j.shape].
        let rows = tree::leaves(&try_vmap(
            |ct: &U| pullback(ct),
            &cts,
            &Axes::Leaf(Some(0)),
            &Axes::Leaf(Some(0)),
            None,
        )?);
        outs.iter()
            .zip(&offs)
            .map(|((_, o), &k)| {
                rows.iter()
                    .zip(&ins)
                    .map(|(r, (_, l))| {
                        let mut shape = o.shape().to_vec();
                        shape.extend_from_slice(l.shape());
                        lax::reshape(&row_range(r, k, k + o.size()), &shape)
                    })
                    .collect()
            })
            .collect()
    };
    Ok(Jacobian {
        out_def: y.def(),
        in_def: x.def(),
        out_paths: split_paths(&outs),
        in_paths: split_paths(&ins),
        blocks,
    })
}

/// Forward-mode Jacobian of a tree function at a tree: JAX's `jacfwd`. Pushes the standard
/// basis of the whole input tree through [`jvp`] under [`vmap`] (one pass per input
/// element, all batched together). See [`Jacobian`] for the layout.
///
/// Panics if an input leaf is not a float array.
pub fn jacfwd_tree<T: Tree, U: Tree>(f: impl Fn(&T) -> U) -> impl Fn(&T) -> Jacobian {
    move |x: &T| lax::ok(try_jacfwd_tree(&f, x))
}

/// Reverse-mode Jacobian of a tree function at a tree: JAX's `jacrev`. Pulls the standard
/// basis of the whole output tree back through one VJP under [`vmap`]. See [`Jacobian`] for
/// the layout.
///
/// Panics if an input or output leaf is not a float array.
pub fn jacrev_tree<T: Tree, U: Tree>(f: impl Fn(&T) -> U) -> impl Fn(&T) -> Jacobian {
    move |x: &T| lax::ok(try_jacrev_tree(&f, x))
}

/// The Hessian of a tree function at a tree: `jacfwd_tree(jacrev_tree(f))`, as in JAX.
///
/// For a scalar `f` (an [`Array`] output) the output paths are the input paths, and the
/// block for input leaves `a`, `b` (`h[(a, b)]`) has shape `a.shape ++ b.shape`: the
/// second derivatives with respect to `a` then `b`. For a tree-valued `f` the output path
/// of a block is the output leaf's path followed by the first input leaf's path.
pub fn hessian_tree<T: Tree, U: Tree>(f: impl Fn(&T) -> U) -> impl Fn(&T) -> Jacobian {
    move |x: &T| lax::ok(try_jacfwd_tree(|x: &T| lax::ok(try_jacrev_tree(&f, x)), x))
}

/// Forward-mode Jacobian of an array function: shape `[*out_shape, *in_shape]`, built by
/// pushing the standard basis through [`jvp`] under [`vmap`]. [`jacfwd_tree`] is the same
/// for trees.
pub fn jacfwd(f: impl Fn(&Array) -> Array) -> impl Fn(&Array) -> Array {
    move |x: &Array| lax::ok(try_jacfwd_tree(&f, x)).into_array()
}

/// Reverse-mode Jacobian of an array function: shape `[*out_shape, *in_shape]`, built by
/// pulling the standard basis of the output back through a VJP under [`vmap`].
/// [`jacrev_tree`] is the same for trees.
pub fn jacrev(f: impl Fn(&Array) -> Array) -> impl Fn(&Array) -> Array {
    move |x: &Array| lax::ok(try_jacrev_tree(&f, x)).into_array()
}

/// The Hessian of an array function: `jacfwd(jacrev(f))`, shape
/// `[*out_shape, *x.shape, *x.shape]` (`[*x.shape, *x.shape]` for a scalar `f`).
/// [`hessian_tree`] is the same for trees.
pub fn hessian(f: impl Fn(&Array) -> Array) -> impl Fn(&Array) -> Array {
    let g = jacrev(f);
    jacfwd(move |x: &Array| g(x))
}

/// Hessian-vector product of a scalar function at `x` along `v` (forward over reverse),
/// without forming the Hessian. `x` and `v` are trees of one structure (e.g. a model and
/// a direction), and so is the result.
///
/// ```
/// use kiln::{Array, hvp};
/// // f(a, b) = sum(a^2 * b): the Hessian-vector product along (1, 0) is (2b, 2a).
/// let f = |(a, b): &(Array, Array)| (a.square() * b).sum();
/// let x = (Array::from_vec(vec![1.0f64, 2.0], [2]), Array::from_vec(vec![3.0f64, 4.0], [2]));
/// let v = (Array::ones_of([2], kiln::DType::F64), Array::zeros_of([2], kiln::DType::F64));
/// let (ha, hb) = hvp(f, &x, &v);
/// assert_eq!(ha.to_vec::<f64>(), vec![6.0, 8.0]);
/// assert_eq!(hb.to_vec::<f64>(), vec![2.0, 4.0]);
/// ```
pub fn hvp<T: Tree>(f: impl Fn(&T) -> Array, x: &T, v: &T) -> T {
    let g = crate::ad::grad(f);
    jvp(g, x, v).1
}

/// The batching rule of [`Prim::Call`]: stages the batched program as a new call (so
/// `vmap(jit(f))` stays compiled), cached on the callee by batch dims and avals. Batched
/// outputs have their batch dimension in front.
pub(crate) fn batch_call(
    callee: &crate::jit::Callee,
    args: &[Array],
    bdims: &[Option<usize>],
) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
    let key = (bdims.to_vec(), args.iter().map(|a| a.aval().clone()).collect());
    let b = callee.batched(key, || {
        let out_bdims = std::cell::RefCell::new(Vec::new());
        let body = |xs: &Vec<Array>| -> Vec<Array> {
            let trace = BatchTrace::new();
            let ins: Vec<Array> =
                xs.iter().zip(bdims).map(|(x, d)| trace.pure(x.clone(), *d)).collect();
            let outs = with_trace(Some(trace.clone() as Rc<dyn Trace>), || {
                lax::ok(callee.jaxpr().eval(&[], &ins))
            });
            let mut ds = Vec::with_capacity(outs.len());
            let res = outs
                .iter()
                .map(|o| {
                    let (v, d) = trace.unpack(o);
                    ds.push(d.map(|_| 0));
                    match d {
                        Some(d) => moveaxis(&v, d, 0),
                        None => v,
                    }
                })
                .collect();
            *out_bdims.borrow_mut() = ds;
            res
        };
        let (closed, _) = crate::staging::trace_to_jaxpr(&body, &args.to_vec());
        let (jaxpr, consts) = crate::jit::close_over_consts(closed);
        let (jaxpr, consts) = crate::jit::optimize_closed(&jaxpr, consts);
        Ok(crate::jit::Batched {
            callee: crate::jit::Callee::new(callee.name(), jaxpr),
            consts,
            out_bdims: out_bdims.into_inner(),
        })
    })?;
    let mut all = b.consts;
    all.extend_from_slice(args);
    let outs = crate::jit::call(&b.callee, &all)?;
    Ok((outs, b.out_bdims))
}
