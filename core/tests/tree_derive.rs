//! Tests of `#[derive(Tree)]` (the `kiln-macros` crate) through its `kiln::Tree` re-export.

use kiln::tree::{self, KeyEntry, KeyPath, TreeDef};
use kiln::{Array, Tree};
use std::marker::PhantomData;

#[derive(Clone, Tree)]
struct Linear {
    weight: Array,
    bias: Option<Array>,
    #[tree(static)]
    activation: String,
}

#[derive(Clone, Tree)]
struct Mlp {
    layers: Vec<Linear>,
}

#[derive(Clone, Tree)]
struct Model {
    encoder: Mlp,
    #[tree(static)]
    dropout: f32,
    head: Linear,
    #[tree(static)]
    name: &'static str,
}

#[derive(Clone, Tree)]
struct Tuple(Array, #[tree(static)] usize, Vec<Array>);

#[derive(Clone, Tree)]
struct Unit;

#[derive(Clone, Tree)]
struct Pair<T> {
    first: T,
    second: T,
}

/// `C` only appears in a static field, so it need not be a `Tree`; `N` is a const generic.
#[derive(Clone, Tree)]
struct Generic<'a, T, C: Clone + std::fmt::Debug, const N: usize>
where
    T: Clone,
{
    items: [T; N],
    #[tree(static)]
    config: C,
    #[tree(static)]
    label: &'a str,
    #[tree(static)]
    marker: PhantomData<fn() -> T>,
}

#[derive(Clone, Tree)]
enum Layer {
    Dense(Linear),
    Norm {
        scale: Array,
        #[tree(static)]
        eps: f64,
        shift: Array,
    },
    Identity,
}

#[derive(Clone, Tree)]
enum Never {}

/// Raw identifiers are keyed by their name without `r#`.
#[derive(Clone, Tree)]
struct Raw {
    r#type: Array,
}

fn linear(n_in: usize, n_out: usize, bias: bool, activation: &str) -> Linear {
    Linear {
        weight: Array::ones([n_in, n_out]),
        bias: bias.then(|| Array::zeros([n_out])),
        activation: activation.to_string(),
    }
}

fn mlp() -> Mlp {
    Mlp { layers: vec![linear(2, 3, true, "relu"), linear(3, 1, false, "none")] }
}

fn model() -> Model {
    Model { encoder: mlp(), dropout: 0.1, head: linear(1, 4, true, "tanh"), name: "m" }
}

fn paths<T: Tree>(t: &T) -> Vec<String> {
    tree::leaves_with_path(t).into_iter().map(|(p, _)| p.to_string()).collect()
}

fn shapes<T: Tree>(t: &T) -> Vec<Vec<usize>> {
    tree::leaves(t).iter().map(|a| a.shape().to_vec()).collect()
}

fn values<T: Tree>(t: &T) -> Vec<Vec<f32>> {
    tree::leaves(t).iter().map(|a| a.to_vec::<f32>()).collect()
}

/// Leaves `0.0, 1.0, 2.0, ...` (one per element, in leaf order) with the shapes of `t`'s.
fn numbered<T: Tree>(t: &T) -> T {
    let mut next = 0.0f32;
    tree::map(t, |x| {
        let n: usize = x.shape().iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                next += 1.0;
                next - 1.0
            })
            .collect();
        Array::from_vec(data, x.shape())
    })
}

fn assert_round_trip<T: Tree>(t: &T) {
    let back = tree::unflatten(t, tree::leaves(t));
    assert_eq!(values(&back), values(t));
    assert_eq!(shapes(&back), shapes(t));
    assert_eq!(paths(&back), paths(t));
    assert_eq!(back.def(), t.def());
    assert_eq!(t.def().num_leaves(), tree::num_leaves(t));
}

#[test]
fn named_struct_with_static_field() {
    let l = linear(2, 3, true, "relu");
    assert_eq!(paths(&l), ["weight", "bias"]);
    assert_eq!(shapes(&l), [vec![2, 3], vec![3]]);
    assert_eq!(
        l.def(),
        TreeDef::Node {
            kind: "Linear",
            statics: format!("{:?}", ("relu".to_string(),)),
            children: vec![
                (KeyEntry::Field("weight"), TreeDef::Leaf),
                (
                    KeyEntry::Field("bias"),
                    TreeDef::Node {
                        kind: "Some",
                        statics: String::new(),
                        children: vec![(KeyEntry::Index(0), TreeDef::Leaf)],
                    }
                ),
            ],
        }
    );
    assert_eq!(tree::num_leaves(&l), 2);
    assert_round_trip(&l);
}

#[test]
fn static_fields_are_cloned_by_with_leaves() {
    let l = linear(2, 3, true, "relu");
    let z = tree::map(&l, |x| Array::zeros(x.shape()));
    assert_eq!(z.activation, "relu");
    assert_eq!(z.weight.to_vec::<f32>(), vec![0.0; 6]);
    assert_eq!(z.def(), l.def());
}

#[test]
fn option_field_none_and_some() {
    let with = linear(2, 3, true, "relu");
    let without = linear(2, 3, false, "relu");
    assert_eq!(paths(&with), ["weight", "bias"]);
    assert_eq!(paths(&without), ["weight"]);
    assert_ne!(with.def(), without.def());
    assert_round_trip(&without);
    let rebuilt = tree::unflatten(&without, vec![Array::zeros([2, 3])]);
    assert!(rebuilt.bias.is_none());
}

#[test]
fn nested_structs_and_vec_key_paths() {
    let m = mlp();
    assert_eq!(paths(&m), ["layers.0.weight", "layers.0.bias", "layers.1.weight"]);
    let (path, _) = &tree::leaves_with_path(&m)[1];
    assert_eq!(
        path,
        &KeyPath(vec![KeyEntry::Field("layers"), KeyEntry::Index(0), KeyEntry::Field("bias")])
    );
    assert_round_trip(&m);

    let big = model();
    assert_eq!(
        paths(&big),
        [
            "encoder.layers.0.weight",
            "encoder.layers.0.bias",
            "encoder.layers.1.weight",
            "head.weight",
            "head.bias",
        ]
    );
    assert_eq!(shapes(&big), [vec![2, 3], vec![3], vec![3, 1], vec![1, 4], vec![4]]);
    let TreeDef::Node { kind, statics, children } = big.def() else { panic!("not a node") };
    assert_eq!(kind, "Model");
    assert_eq!(statics, format!("{:?}", (0.1f32, "m")));
    let keys: Vec<_> = children.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, [KeyEntry::Field("encoder"), KeyEntry::Field("head")]);
    assert_round_trip(&big);
}

#[test]
fn leaves_unflatten_map_and_zip_map() {
    let m = numbered(&model());
    let leaves = tree::leaves(&m);
    assert_eq!(leaves.len(), 5);
    assert_eq!(leaves[1].to_vec::<f32>(), [6.0, 7.0, 8.0]);
    assert_eq!(m.head.bias.as_ref().unwrap().to_vec::<f32>(), [16.0, 17.0, 18.0, 19.0]);

    // unflatten puts the leaves back in canonical order.
    let mut reversed = leaves.clone();
    reversed.reverse();
    let shapes_reversed: Vec<Array> = reversed.iter().map(|a| Array::zeros(a.shape())).collect();
    let odd = tree::unflatten(&model(), shapes_reversed);
    assert_eq!(odd.encoder.layers[0].weight.shape(), [4]);
    assert_eq!(odd.head.bias.as_ref().unwrap().shape(), [2, 3]);
    assert_eq!(odd.name, "m");

    let ones = tree::map(&m, |x| Array::ones(x.shape()));
    assert_eq!(values(&ones).concat(), vec![1.0; 20]);
    assert_eq!(ones.def(), m.def());

    // zip_map pairs corresponding leaves: keep the larger element.
    let max = tree::zip_map(&m, &ones, |a, b| {
        let v: Vec<f32> =
            a.to_vec::<f32>().iter().zip(b.to_vec::<f32>()).map(|(x, y)| x.max(y)).collect();
        Array::from_vec(v, a.shape())
    });
    let expected: Vec<f32> = (0..20).map(|i| (i as f32).max(1.0)).collect();
    assert_eq!(values(&max).concat(), expected);
    assert_eq!(max.encoder.layers[1].activation, "none");
    assert_eq!(max.dropout, 0.1);
}

#[test]
#[should_panic(expected = "too few leaves")]
fn unflatten_with_too_few_leaves_panics() {
    tree::unflatten(&mlp(), vec![Array::zeros([2, 3])]);
}

#[test]
#[should_panic(expected = "unflatten")]
fn unflatten_with_too_many_leaves_panics() {
    let mut leaves = tree::leaves(&mlp());
    leaves.push(Array::zeros([1]));
    tree::unflatten(&mlp(), leaves);
}

#[test]
fn def_equality_follows_structure_and_statics() {
    assert_eq!(mlp().def(), mlp().def());
    // Leaf values and shapes are not part of the structure.
    assert_eq!(numbered(&mlp()).def(), mlp().def());
    assert_eq!(linear(5, 7, true, "relu").def(), linear(2, 3, true, "relu").def());
    // A different static field is a different structure.
    assert_ne!(linear(2, 3, true, "relu").def(), linear(2, 3, true, "gelu").def());
    let mut other = model();
    other.dropout = 0.2;
    assert_ne!(other.def(), model().def());
    // So is a different number of layers.
    let mut shorter = mlp();
    shorter.layers.pop();
    assert_ne!(shorter.def(), mlp().def());
}

#[test]
fn tuple_struct() {
    let t = Tuple(Array::ones([2]), 7, vec![Array::zeros([3]), Array::ones([1, 1])]);
    assert_eq!(paths(&t), ["0", "2.0", "2.1"]);
    let TreeDef::Node { kind, statics, children } = t.def() else { panic!("not a node") };
    assert_eq!(kind, "Tuple");
    assert_eq!(statics, "(7,)");
    let keys: Vec<_> = children.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [KeyEntry::Index(0), KeyEntry::Index(2)]);
    let z = tree::map(&t, |x| Array::zeros(x.shape()));
    assert_eq!(z.1, 7);
    assert_eq!(values(&z), [vec![0.0; 2], vec![0.0; 3], vec![0.0]]);
    let mut other = t.clone();
    other.1 = 8;
    assert_ne!(other.def(), t.def());
    assert_round_trip(&t);
}

#[test]
fn unit_struct() {
    assert!(tree::leaves(&Unit).is_empty());
    assert_eq!(
        Unit.def(),
        TreeDef::Node { kind: "Unit", statics: String::new(), children: vec![] }
    );
    let _: Unit = tree::unflatten(&Unit, vec![]);
}

#[test]
fn generic_struct() {
    let p = Pair { first: Array::ones([2]), second: Array::zeros([3]) };
    assert_eq!(paths(&p), ["first", "second"]);
    assert_round_trip(&p);

    let nested = Pair { first: mlp(), second: mlp() };
    assert_eq!(nested.def().num_leaves(), 6);
    assert_eq!(paths(&nested)[3], "second.layers.0.weight");
    assert_round_trip(&nested);
    // `Pair<Array>` and `Pair<Mlp>` have different structures.
    assert_ne!(
        p.def(),
        Pair { first: linear(1, 1, false, "a"), second: linear(1, 1, false, "a") }.def()
    );

    let g: Generic<'_, Array, (u8, bool), 2> = Generic {
        items: [Array::ones([1]), Array::ones([2])],
        config: (3, true),
        label: "g",
        marker: PhantomData,
    };
    assert_eq!(paths(&g), ["items.0", "items.1"]);
    let TreeDef::Node { statics, .. } = g.def() else { panic!("not a node") };
    assert_eq!(statics, r#"((3, true), "g", PhantomData<fn() -> kiln::array::Array>)"#);
    let z = tree::map(&g, |x| Array::zeros(x.shape()));
    assert_eq!(z.config, (3, true));
    assert_eq!(z.label, "g");
    assert_round_trip(&g);
}

#[test]
fn enums() {
    let dense = Layer::Dense(linear(2, 2, true, "relu"));
    let norm = Layer::Norm { scale: Array::ones([4]), eps: 1e-5, shift: Array::zeros([4]) };
    let identity = Layer::Identity;

    assert_eq!(paths(&dense), ["0.weight", "0.bias"]);
    assert_eq!(paths(&norm), ["scale", "shift"]);
    assert!(paths(&identity).is_empty());

    let TreeDef::Node { kind, statics, children } = norm.def() else { panic!("not a node") };
    assert_eq!(kind, "Layer::Norm");
    assert_eq!(statics, format!("{:?}", (1e-5f64,)));
    assert_eq!(
        children,
        [(KeyEntry::Field("scale"), TreeDef::Leaf), (KeyEntry::Field("shift"), TreeDef::Leaf)]
    );
    assert_eq!(
        identity.def(),
        TreeDef::Node { kind: "Layer::Identity", statics: String::new(), children: vec![] }
    );
    let TreeDef::Node { kind, .. } = dense.def() else { panic!("not a node") };
    assert_eq!(kind, "Layer::Dense");

    // with_leaves rebuilds the same variant.
    let rebuilt =
        tree::unflatten(&norm, vec![Array::from_vec(vec![2.0f32; 4], [4]), Array::ones([4])]);
    let Layer::Norm { scale, eps, shift } = &rebuilt else { panic!("wrong variant") };
    assert_eq!(scale.to_vec::<f32>(), [2.0; 4]);
    assert_eq!(shift.to_vec::<f32>(), [1.0; 4]);
    assert_eq!(*eps, 1e-5);
    assert!(matches!(tree::unflatten(&identity, vec![]), Layer::Identity));
    let Layer::Dense(l) = tree::map(&dense, |x| Array::zeros(x.shape())) else {
        panic!("wrong variant")
    };
    assert_eq!(l.activation, "relu");

    // Different variants, or different statics, are different structures.
    assert_ne!(dense.def(), norm.def());
    let other_eps = Layer::Norm { scale: Array::ones([4]), eps: 1e-6, shift: Array::zeros([4]) };
    assert_ne!(other_eps.def(), norm.def());

    let layers = vec![dense, norm, identity];
    assert_eq!(paths(&layers), ["0.0.weight", "0.0.bias", "1.scale", "1.shift"]);
    assert_round_trip(&layers);
}

#[test]
fn empty_enum_and_raw_identifiers() {
    let _ = |n: &Never| n.def();
    let r = Raw { r#type: Array::ones([1]) };
    assert_eq!(paths(&r), ["type"]);
    assert_round_trip(&r);
}

/// The example in the `kiln-macros` crate docs, verbatim.
#[test]
fn crate_doc_example() {
    #[derive(Clone, Tree)]
    struct Linear {
        weight: Array,
        bias: Option<Array>,
        #[tree(static)]
        activation: &'static str,
    }

    #[derive(Clone, Tree)]
    struct Mlp {
        layers: Vec<Linear>,
    }

    #[derive(Clone, Tree)]
    enum Head {
        Linear(Linear),
        Identity,
    }

    let mlp = Mlp {
        layers: vec![
            Linear {
                weight: Array::ones([2, 3]),
                bias: Some(Array::zeros([3])),
                activation: "relu",
            },
            Linear { weight: Array::ones([3, 1]), bias: None, activation: "none" },
        ],
    };
    let paths: Vec<String> =
        tree::leaves_with_path(&mlp).into_iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(paths, ["layers.0.weight", "layers.0.bias", "layers.1.weight"]);

    // Rebuild a model of the same type from new leaves.
    let zeros = tree::map(&mlp, |x| Array::zeros(x.shape()));
    assert_eq!(zeros.layers[0].activation, "relu");
    assert_eq!(mlp.def(), zeros.def());

    let head = Head::Identity;
    assert_eq!(tree::leaves(&head).len(), 0);
    let _ = Head::Linear(zeros.layers[1].clone());
}

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
