//! Trees of arrays (JAX's pytrees): the argument and result types of every transformation.
//!
//! A [`Tree`] is any value with arrays at its leaves: an [`Array`], tuples, `Vec`s, fixed
//! arrays, `Option`s, `BTreeMap<String, _>`, `()`, and structs that `#[derive(Tree)]`.
//! Fields marked `#[tree(static)]` are not leaves: they are part of the structure
//! ([`TreeDef`]) and are copied unchanged. A transformation flattens its input tree to a
//! list of leaves in a canonical order, works on the list, and rebuilds a tree of the same
//! type, so `grad(f)(&model)` returns a value of the model's type.
//!
//! ```
//! use kiln::{Array, Tree, tree};
//! #[derive(Clone, Tree)]
//! struct Layer { weight: Array, bias: Option<Array>, #[tree(static)] name: String }
//! let l = Layer { weight: Array::ones([2, 2]), bias: Some(Array::zeros([2])), name: "l".into() };
//! let paths: Vec<String> = tree::leaves_with_path(&l).into_iter().map(|(p, _)| p.to_string()).collect();
//! assert_eq!(paths, ["weight", "bias"]);
//! let doubled = tree::map(&l, |x| x * 2.0);
//! assert_eq!(doubled.weight.to_vec::<f32>(), vec![2.0; 4]);
//! ```

use crate::array::Array;
use std::collections::BTreeMap;
use std::fmt;

/// One step of a [`KeyPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyEntry {
    /// A struct field.
    Field(&'static str),
    /// A position in a sequence or tuple.
    Index(usize),
    /// A map key.
    Key(String),
}

/// The path from the root of a tree to a leaf, printed `layers.0.weight`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(pub Vec<KeyEntry>);

impl KeyPath {
    /// The empty path (the root).
    pub fn root() -> KeyPath {
        KeyPath(Vec::new())
    }
    /// Runs `f` with `entry` pushed onto the path.
    pub fn with<R>(&mut self, entry: KeyEntry, f: impl FnOnce(&mut KeyPath) -> R) -> R {
        self.0.push(entry);
        let r = f(self);
        self.0.pop();
        r
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match e {
                KeyEntry::Field(s) => f.write_str(s)?,
                KeyEntry::Index(i) => write!(f, "{i}")?,
                KeyEntry::Key(k) => f.write_str(k)?,
            }
        }
        Ok(())
    }
}

/// The structure of a tree without its leaves: node kinds, field names, lengths and
/// static fields. Two trees with equal `TreeDef`s have the same leaf count and layout.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TreeDef {
    /// An array leaf.
    Leaf,
    /// An inner node.
    Node {
        /// The node type (`"tuple"`, `"Vec"`, a struct name, ...).
        kind: &'static str,
        /// Static data (e.g. `#[tree(static)]` fields, printed with `Debug`).
        statics: String,
        /// Children with their keys.
        children: Vec<(KeyEntry, TreeDef)>,
    },
}

impl TreeDef {
    /// Number of leaves.
    pub fn num_leaves(&self) -> usize {
        match self {
            TreeDef::Leaf => 1,
            TreeDef::Node { children, .. } => children.iter().map(|(_, c)| c.num_leaves()).sum(),
        }
    }
}

/// A value with arrays at its leaves. Derive it with `#[derive(Tree)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a kiln `Tree` (a value with arrays at its leaves)",
    note = "derive it with `#[derive(kiln::Tree)]`, or mark a non-array struct field `#[tree(static)]`"
)]
pub trait Tree: Clone {
    /// Calls `f` on every leaf in canonical order, with its path.
    fn visit(&self, path: &mut KeyPath, f: &mut dyn FnMut(&KeyPath, &Array));
    /// A tree of the same structure (and static fields) whose leaves are taken in order
    /// from `leaves`. Panics if `leaves` runs out.
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Array>) -> Self;
    /// The structure of this tree.
    fn def(&self) -> TreeDef;
}

impl Tree for Array {
    fn visit(&self, path: &mut KeyPath, f: &mut dyn FnMut(&KeyPath, &Array)) {
        f(path, self)
    }
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Array>) -> Self {
        leaves.next().expect("with_leaves: too few leaves for the tree structure")
    }
    fn def(&self) -> TreeDef {
        TreeDef::Leaf
    }
}

impl Tree for () {
    fn visit(&self, _: &mut KeyPath, _: &mut dyn FnMut(&KeyPath, &Array)) {}
    fn with_leaves(&self, _: &mut dyn Iterator<Item = Array>) -> Self {}
    fn def(&self) -> TreeDef {
        TreeDef::Node { kind: "()", statics: String::new(), children: vec![] }
    }
}

impl<T: Tree> Tree for Option<T> {
    fn visit(&self, path: &mut KeyPath, f: &mut dyn FnMut(&KeyPath, &Array)) {
        if let Some(x) = self {
            x.visit(path, f)
        }
    }
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Array>) -> Self {
        self.as_ref().map(|x| x.with_leaves(leaves))
    }
    fn def(&self) -> TreeDef {
        match self {
            None => TreeDef::Node { kind: "None", statics: String::new(), children: vec![] },
            Some(x) => TreeDef::Node {
                kind: "Some",
                statics: String::new(),
                children: vec![(KeyEntry::Index(0), x.def())],
            },
        }
    }
}

impl<T: Tree> Tree for Box<T> {
    fn visit(&self, path: &mut KeyPath, f: &mut dyn FnMut(&KeyPath, &Array)) {
        (**self).visit(path, f)
    }
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Array>) -> Self {
        Box::new((**self).with_leaves(leaves))
    }
    fn def(&self) -> TreeDef {
        (**self).def()
    }
}

fn seq_visit<'a, T: Tree + 'a>(
    items: impl Iterator<Item = &'a T>,
    path: &mut KeyPath,
    f: &mut dyn FnMut(&KeyPath, &Array),
) {
    for (i, x) in items.enumerate() {
        path.with(KeyEntry::Index(i), |p| x.visit(p, f));
    }
}

fn seq_def<'a, T: Tree + 'a>(kind: &'static str, items: impl Iterator<Item = &'a T>) -> TreeDef {
    TreeDef::Node {
        kind,
        statics: String::new(),
        children: items.enumerate().map(|(i, x)| (KeyEntry::Index(i), x.def())).collect(),
    }
}

impl<T: Tree> Tree for Vec<T> {
    fn visit(&self, path: &mut KeyPath, f: &mut dyn FnMut(&KeyPath, &Array)) {
        seq_visit(self.iter(), path, f)
    }
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Array>) -> Self {
        self.iter().map(|x| x.with_leaves(leaves)).collect()
    }
    fn def(&self) -> TreeDef {
        seq_def("Vec", self.iter())
    }
}

impl<T: Tree, const N: usize> Tree for [T; N] {
    fn visit(&self, path: &mut KeyPath, f: &mut dyn FnMut(&KeyPath, &Array)) {
        seq_visit(self.iter(), path, f)
    }
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Array>) -> Self {
        std::array::from_fn(|i| self[i].with_leaves(leaves))
    }
    fn def(&self) -> TreeDef {
        seq_def("array", self.iter())
    }
}

impl<T: Tree> Tree for BTreeMap<String, T> {
    fn visit(&self, path: &mut KeyPath, f: &mut dyn FnMut(&KeyPath, &Array)) {
        for (k, x) in self {
            path.with(KeyEntry::Key(k.clone()), |p| x.visit(p, f));
        }
    }
    fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Array>) -> Self {
        self.iter().map(|(k, x)| (k.clone(), x.with_leaves(leaves))).collect()
    }
    fn def(&self) -> TreeDef {
        TreeDef::Node {
            kind: "BTreeMap",
            statics: String::new(),
            children: self.iter().map(|(k, x)| (KeyEntry::Key(k.clone()), x.def())).collect(),
        }
    }
}

macro_rules! tuple_tree {
    ($($T:ident $i:tt),+) => {
        impl<$($T: Tree),+> Tree for ($($T,)+) {
            fn visit(&self, path: &mut KeyPath, f: &mut dyn FnMut(&KeyPath, &Array)) {
                $(path.with(KeyEntry::Index($i), |p| self.$i.visit(p, f));)+
            }
            fn with_leaves(&self, leaves: &mut dyn Iterator<Item = Array>) -> Self {
                ($(self.$i.with_leaves(leaves),)+)
            }
            fn def(&self) -> TreeDef {
                TreeDef::Node {
                    kind: "tuple",
                    statics: String::new(),
                    children: vec![$((KeyEntry::Index($i), self.$i.def())),+],
                }
            }
        }
    };
}

tuple_tree!(A 0);
tuple_tree!(A 0, B 1);
tuple_tree!(A 0, B 1, C 2);
tuple_tree!(A 0, B 1, C 2, D 3);
tuple_tree!(A 0, B 1, C 2, D 3, E 4);
tuple_tree!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_tree!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_tree!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_tree!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_tree!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_tree!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple_tree!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

/// The leaves of a tree in canonical order.
pub fn leaves<T: Tree>(t: &T) -> Vec<Array> {
    let mut out = Vec::new();
    t.visit(&mut KeyPath::root(), &mut |_, a| out.push(a.clone()));
    out
}

/// The leaves of a tree with their key paths.
pub fn leaves_with_path<T: Tree>(t: &T) -> Vec<(KeyPath, Array)> {
    let mut out = Vec::new();
    t.visit(&mut KeyPath::root(), &mut |p, a| out.push((p.clone(), a.clone())));
    out
}

/// A tree shaped like `like` built from `leaves` (which must have exactly the right count).
///
/// Panics if the count is wrong.
#[track_caller]
pub fn unflatten<T: Tree>(like: &T, leaves: Vec<Array>) -> T {
    let n = leaves.len();
    let mut it = leaves.into_iter();
    let t = like.with_leaves(&mut it);
    assert!(it.next().is_none(), "unflatten: {n} leaves given for a tree with fewer leaves");
    t
}

/// Applies `f` to every leaf.
pub fn map<T: Tree>(t: &T, mut f: impl FnMut(&Array) -> Array) -> T {
    let new: Vec<Array> = leaves(t).iter().map(&mut f).collect();
    unflatten(t, new)
}

/// Applies `f` to corresponding leaves of two trees of the same structure.
///
/// Panics if the structures differ.
#[track_caller]
pub fn zip_map<T: Tree>(a: &T, b: &T, mut f: impl FnMut(&Array, &Array) -> Array) -> T {
    let (la, lb) = (leaves(a), leaves(b));
    assert_eq!(la.len(), lb.len(), "zip_map: trees have different numbers of leaves");
    let new: Vec<Array> = la.iter().zip(&lb).map(|(x, y)| f(x, y)).collect();
    unflatten(a, new)
}

/// Applies `f` to corresponding leaves of three trees of the same structure.
#[track_caller]
pub fn zip3_map<T: Tree>(
    a: &T,
    b: &T,
    c: &T,
    mut f: impl FnMut(&Array, &Array, &Array) -> Array,
) -> T {
    let (la, lb, lc) = (leaves(a), leaves(b), leaves(c));
    assert!(la.len() == lb.len() && la.len() == lc.len(), "zip3_map: leaf counts differ");
    let new: Vec<Array> = (0..la.len()).map(|i| f(&la[i], &lb[i], &lc[i])).collect();
    unflatten(a, new)
}

/// Number of leaves.
pub fn num_leaves<T: Tree>(t: &T) -> usize {
    let mut n = 0;
    t.visit(&mut KeyPath::root(), &mut |_, _| n += 1);
    n
}
