//! vmap and Jacobians: every primitive-table row batched equals a loop over slices, composition with AD, per-example gradients, golden Jacobians/Hessians (of arrays and of trees).

use kiln::lax;

use kiln::vmap::{Axes, try_vmap};
use kiln::vmap::{try_jacfwd_tree, try_jacrev_tree};
use kiln::{
    Array, DType, Jacobian, Tree, grad, hessian, hessian_tree, hvp, jacfwd, jacfwd_tree, jacrev,
    jacrev_tree, jvp, tree, vmap, vmap_full, vmap_with,
};
use std::collections::BTreeMap;

mod common;
use common::{Row, data, rows};

/// `b` slightly different copies of `x`, stacked along `axis` (ints are repeated).
fn batched(x: &Array, b: usize, axis: usize) -> (Array, Vec<Array>) {
    let copies: Vec<Array> = (0..b)
        .map(|k| {
            if x.dtype().is_float() {
                lax::mul(x, &lax::full_like(x, 1.0 + 0.05 * k as f64))
            } else {
                x.clone()
            }
        })
        .collect();
    (kiln::stack(&copies, axis as isize), copies)
}

#[track_caller]
fn close(what: &str, got: &Array, want: &Array, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}[{i}]: vmap {g}, loop {w}");
    }
}

/// vmap of the row with the args in `which` batched along `axis` equals a loop + stack.
fn check_vmap(r: &Row, which: &[usize], axis: isize) {
    let b = 3;
    let mut inputs = r.args.clone();
    let mut per: Vec<Vec<Array>> = vec![r.args.clone(); b];
    let mut specs = Vec::new();
    for (i, a) in r.args.iter().enumerate() {
        if which.contains(&i) {
            let ax =
                if axis < 0 { a.ndim() as isize + 1 + axis } else { axis.min(a.ndim() as isize) };
            let (stacked, copies) = batched(a, b, ax as usize);
            inputs[i] = stacked;
            for k in 0..b {
                per[k][i] = copies[k].clone();
            }
            specs.push(Axes::Leaf(Some(if axis < 0 { axis } else { ax })));
        } else {
            specs.push(Axes::Leaf(None));
        }
    }
    let got = try_vmap(
        |a: &Vec<Array>| (r.f)(a),
        &inputs,
        &Axes::Seq(specs),
        &Axes::Leaf(Some(0)),
        Some(b),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", r.name));
    let outs: Vec<Array> = per.iter().map(|a| (r.f)(a)).collect();
    let want = kiln::stack(&outs, 0);
    close(&format!("{} (args {which:?}, axis {axis})", r.name), &got, &want, 1e-9);
}

#[test]
fn every_row_vmap_equals_loop() {
    for r in rows() {
        let n = r.args.len();
        let all: Vec<usize> = (0..n).collect();
        for axis in [0, 1, -1] {
            check_vmap(&r, &all, axis);
        }
        if n > 1 {
            for i in 0..n {
                check_vmap(&r, &[i], 0);
                check_vmap(&r, &[i], -1);
            }
        }
    }
}

#[test]
fn nested_and_composed() {
    let xs = data(&[3, 4, 2], 1, -1.0, 1.0);
    let f = |x: &Array| (x.sin() * x).sum();
    // vmap(vmap)
    let got = vmap(vmap(f))(&xs);
    let want: Vec<f64> = (0..12)
        .map(|i| {
            let v = xs.to_f64_vec();
            (v[2 * i].sin() * v[2 * i]) + (v[2 * i + 1].sin() * v[2 * i + 1])
        })
        .collect();
    close("vmap(vmap)", &got.reshape([-1]), &Array::from_vec(want, [12]), 1e-12);
    // vmap(grad) vs loop
    let x2 = xs.reshape([12, 2]);
    let g = vmap(grad(f))(&x2);
    let rows: Vec<Array> = (0..12).map(|i| grad(f)(&x2.row_i(i))).collect();
    close("vmap(grad)", &g, &kiln::stack(&rows, 0), 1e-12);
    // grad(vmap): gradient of the sum of per-example values is the full gradient
    let gv = grad(|x: &Array| vmap(f)(x).sum())(&x2);
    close("grad(vmap)", &gv, &grad(f)(&x2), 1e-12);
    // jvp(vmap) and vmap(jvp)
    let t = data(&[12, 2], 5, -1.0, 1.0);
    let (_, jt) = jvp(vmap(f), &x2, &t);
    let (_, jt2) = jvp(f, &x2, &t);
    close("jvp(vmap)", &jt.sum(), &jt2, 1e-12);
    let vj = vmap(|(x, t): &(Array, Array)| jvp(f, x, t).1)(&(x2.clone(), t.clone()));
    close("vmap(jvp)", &vj.sum(), &jt2, 1e-12);
    // vmap over a function closing over an outer grad tracer
    let w = data(&[2], 9, -1.0, 1.0);
    let gw = grad(|w: &Array| vmap(|x: &Array| (x * w).sin().sum())(&x2).sum())(&w);
    let gw_want = grad(|w: &Array| (&x2 * w).sin().sum())(&w);
    close("grad closing over vmap", &gw, &gw_want, 1e-12);
}

trait SliceAxis {
    fn row_i(&self, i: usize) -> Array;
}
impl SliceAxis for Array {
    fn row_i(&self, i: usize) -> Array {
        let mut start = vec![0; self.ndim()];
        let mut limit = self.shape().to_vec();
        start[0] = i;
        limit[0] = i + 1;
        lax::squeeze(&lax::slice(self, &start, &limit, None), &[0])
    }
}

#[derive(Clone, kiln::Tree)]
struct Params {
    w1: Array,
    b1: Array,
    w2: Array,
}

fn loss(p: &Params, x: &Array) -> Array {
    let h = (x.matmul(&p.w1) + &p.b1).tanh();
    h.matmul(&p.w2).square().sum()
}

#[test]
fn per_example_mlp_gradients() {
    let p = Params {
        w1: data(&[3, 4], 1, -1.0, 1.0),
        b1: data(&[4], 2, -1.0, 1.0),
        w2: data(&[4, 2], 3, -1.0, 1.0),
    };
    let xs = data(&[5, 3], 4, -1.0, 1.0);
    let per = vmap_with(
        |(p, x): &(Params, Array)| grad(|p: &Params| loss(p, x))(p),
        Axes::tuple((None, Some(0))),
    )(&(p.clone(), xs.clone()));
    for i in 0..5 {
        let xi = xs.row_i(i);
        let gi = grad(|p: &Params| loss(p, &xi))(&p);
        close("w1", &per.w1.row_i(i), &gi.w1, 1e-12);
        close("b1", &per.b1.row_i(i), &gi.b1, 1e-12);
        close("w2", &per.w2.row_i(i), &gi.w2, 1e-12);
    }
    // closure form: vmap over the examples of grad of a closure
    let ex = xs.row_i(0);
    let g0 = vmap(grad(|p: &Params| loss(p, &ex)))(&Params {
        w1: kiln::stack(&[p.w1.clone(), p.w1.clone()], 0),
        b1: kiln::stack(&[p.b1.clone(), p.b1.clone()], 0),
        w2: kiln::stack(&[p.w2.clone(), p.w2.clone()], 0),
    });
    close("closure form", &g0.w1.row_i(1), &per.w1.row_i(0), 1e-12);
}

#[test]
fn axes_options_and_errors() {
    let x = data(&[2, 3], 1, -1.0, 1.0);
    // out_axes 1 transposes the stacking
    let y = vmap_full(|x: &Array| x.sin(), Some(0), Some(1), None)(&x);
    close("out_axes", &y, &lax::transpose(&x.sin(), &[1, 0]), 1e-12);
    // nothing mapped needs axis_size
    let z = vmap_full(|x: &Array| x.sin(), None::<isize>, Some(0), Some(4))(&x);
    assert_eq!(z.shape(), &[4, 2, 3]);
    assert!(
        try_vmap(|x: &Array| x.clone(), &x, &Axes::Leaf(None), &Axes::Leaf(Some(0)), None).is_err()
    );
    // mismatched sizes name the leaves
    let e = try_vmap(
        |(a, b): &(Array, Array)| a + b,
        &(x.clone(), data(&[3, 3], 2, 0.0, 1.0)),
        &Axes::Leaf(Some(0)),
        &Axes::Leaf(Some(0)),
        None,
    )
    .map(|_| ())
    .expect_err("mismatch");
    let msg = e.to_string();
    assert!(
        msg.contains("`0`")
            && msg.contains("`1`")
            && msg.contains("size 2")
            && msg.contains("size 3"),
        "{msg}"
    );
}

fn golden() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/golden/ad.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden file")).expect("json")
}

fn arr(v: &serde_json::Value) -> Array {
    let shape: Vec<usize> =
        v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let vals: Vec<f64> =
        v["values"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap()).collect();
    Array::from_vec(vals, shape)
}

#[test]
fn golden_jacobians_and_hessians() {
    let g = golden();
    for fj in g["vector_functions"].as_array().unwrap() {
        let name = fj["name"].as_str().unwrap();
        let x = arr(&fj["args"][0]);
        let f = |x: &Array| -> Array {
            match name {
                "vec_tanh_mul" => x.tanh() * lax::rev(x, &[0]),
                "vec_softmax" => x.softmax(0),
                "vec_outer" => x.outer(x).reshape([-1]),
                other => panic!("no twin for {other}"),
            }
        };
        close(&format!("{name} jacfwd"), &jacfwd(f)(&x), &arr(&fj["jacfwd"]), 1e-10);
        close(&format!("{name} jacrev"), &jacrev(f)(&x), &arr(&fj["jacrev"]), 1e-10);
    }
    for fj in g["functions"].as_array().unwrap() {
        let name = fj["name"].as_str().unwrap();
        let f = |x: &Array| -> Array {
            match name {
                "tanh_sum" => x.tanh().sum(),
                _ => x.logsumexp(),
            }
        };
        if name != "tanh_sum" && name != "logsumexp" {
            continue;
        }
        let x = arr(&fj["args"][0]);
        close(&format!("{name} hessian"), &hessian(f)(&x), &arr(&fj["extra"]["hessian"]), 1e-10);
        let v = arr(&fj["hvp"]["vectors"]["x"]);
        close(&format!("{name} hvp"), &hvp(f, &x, &v), &arr(&fj["hvp"]["out"]["x"]), 1e-10);
    }
}

// ---------------------------------------------------------------- Jacobians over trees

/// The `tree_mlp` golden's input: `({"b", "w"}, x)`.
type MlpIn = (BTreeMap<String, Array>, Array);

fn tree_mlp(px: &MlpIn) -> (Array, Array) {
    let (p, x) = px;
    let y = (x.matmul(&p["w"]) + &p["b"]).tanh();
    let s = (&y * &y).sum();
    (y, s)
}

/// The `tree_struct` golden's input: `{"a": (2,2), "c": [c0 (3,), c1 ()]}`.
#[derive(Clone, kiln::Tree)]
struct StructIn {
    a: Array,
    c: Vec<Array>,
}

fn tree_struct(p: &StructIn) -> BTreeMap<String, Array> {
    let (a, c0, c1) = (&p.a, &p.c[0], &p.c[1]);
    let u = a.matmul(&lax::slice(c0, &[0], &[2], None)).tanh() * c1;
    let v = (c0 * c1).exp().outer(&a.sin().sum_axes([0], false));
    BTreeMap::from([("u".to_string(), u), ("v".to_string(), v)])
}

fn paths<T: Tree>(t: &T) -> Vec<String> {
    tree::leaves_with_path(t).into_iter().map(|(p, _)| p.to_string()).collect()
}

/// A tree shaped like `like` whose leaves are the golden arrays `by_path[path]`.
fn from_golden<T: Tree>(like: &T, by_path: &serde_json::Value) -> T {
    let obj = by_path.as_object().expect("{path: ARR}");
    let mut want: Vec<&String> = obj.keys().collect();
    let mut have = paths(like);
    want.sort();
    have.sort();
    assert_eq!(have.iter().collect::<Vec<_>>(), want, "tree paths vs golden paths");
    tree::unflatten(like, paths(like).iter().map(|p| arr(&obj[p])).collect())
}

#[track_caller]
fn close_tree<T: Tree>(what: &str, got: &T, want: &T, tol: f64) {
    assert_eq!(paths(got), paths(want), "{what}: paths");
    for ((p, g), w) in tree::leaves_with_path(got).iter().zip(tree::leaves(want)) {
        close(&format!("{what} `{p}`"), g, &w, tol);
    }
}

/// Every block of `j` against the golden `{out_path: {in_path: ARR}}`, and no block missing.
#[track_caller]
fn check_jacobian(what: &str, j: &Jacobian, want: &serde_json::Value) {
    let want = want.as_object().expect("{out: {in: ARR}}");
    assert_eq!(j.out_paths().len(), want.len(), "{what}: output leaves");
    let mut n = 0;
    for (o, i, block) in j.iter() {
        let w = &want[&o.to_string()][i.to_string()];
        assert!(w.is_object(), "{what}: golden has no block d`{o}`/d`{i}`");
        close(&format!("{what} d`{o}`/d`{i}`"), block, &arr(w), 1e-10);
        n += 1;
    }
    let total: usize = want.values().map(|r| r.as_object().unwrap().len()).sum();
    assert_eq!(n, total, "{what}: blocks");
}

fn check_tree_golden<T: Tree, U: Tree>(
    g: &serde_json::Value,
    x: &T,
    f: impl Fn(&T) -> U,
    h: impl Fn(&T) -> Array,
) {
    let name = g["name"].as_str().unwrap();
    let y = f(x);
    close_tree(&format!("{name} value"), &y, &from_golden(&y, &g["value"]), 1e-12);
    let jf = jacfwd_tree(&f)(x);
    let jr = jacrev_tree(&f)(x);
    for j in [&jf, &jr] {
        assert_eq!(j.in_paths().iter().map(|p| p.to_string()).collect::<Vec<_>>(), paths(x));
        assert_eq!(j.out_paths().iter().map(|p| p.to_string()).collect::<Vec<_>>(), paths(&y));
        assert_eq!(j.in_def(), &x.def());
        assert_eq!(j.out_def(), &y.def());
    }
    check_jacobian(&format!("{name} jacfwd"), &jf, &g["jacfwd"]);
    check_jacobian(&format!("{name} jacrev"), &jr, &g["jacrev"]);
    let hs = hessian_tree(&h)(x);
    assert_eq!(hs.out_paths(), hs.in_paths(), "{name}: Hessian of a scalar is input x input");
    check_jacobian(&format!("{name} hessian"), &hs, &g["hessian"]);
    let v = from_golden(x, &g["hvp"]["vectors"]);
    let hv = hvp(&h, x, &v);
    close_tree(&format!("{name} hvp"), &hv, &from_golden(x, &g["hvp"]["out"]), 1e-10);
    // The Hessian-vector product is the Hessian contracted with v, block by block.
    let (hl, vl) = (tree::leaves(&hv), tree::leaves(&v));
    for (a, ha) in hl.iter().enumerate() {
        let mut acc = Array::zeros_of(ha.shape().to_vec(), DType::F64);
        for (b, vb) in vl.iter().enumerate() {
            let blk = hs.block(a, b).reshape([ha.size() as isize, vb.size() as isize]);
            acc += blk.matmul(&vb.reshape([-1])).reshape(ha.shape().to_vec());
        }
        close(&format!("{name} H.v leaf {a}"), &acc, ha, 1e-10);
    }
    // The scalar's row of jacrev, as a tree of the input's type, is the gradient.
    let jh = jacrev_tree(&h)(x);
    close_tree(&format!("{name} jacrev row"), &jh.row(0, x), &grad(&h)(x), 1e-12);
}

#[test]
fn golden_tree_jacobians_and_hessians() {
    let g = golden();
    let tfs = g["tree_functions"].as_array().expect("tree_functions");
    let mut seen = Vec::new();
    for tf in tfs {
        let name = tf["name"].as_str().unwrap();
        match name {
            "tree_mlp" => {
                let like: MlpIn = (
                    BTreeMap::from([
                        ("b".to_string(), Array::zeros([1])),
                        ("w".to_string(), Array::zeros([1])),
                    ]),
                    Array::zeros([1]),
                );
                let x = from_golden(&like, &tf["args"]);
                check_tree_golden(tf, &x, tree_mlp, |px: &MlpIn| tree_mlp(px).1);
            }
            "tree_struct" => {
                let like = StructIn { a: Array::zeros([1]), c: vec![Array::zeros([1]); 2] };
                let x = from_golden(&like, &tf["args"]);
                let h = |p: &StructIn| {
                    let o = tree_struct(p);
                    o["u"].square().sum() + o["v"].sum()
                };
                check_tree_golden(tf, &x, tree_struct, h);
            }
            other => panic!("no twin for tree function {other}"),
        }
        seen.push(name);
    }
    assert_eq!(seen, ["tree_mlp", "tree_struct"]);
}

fn mlp_point() -> MlpIn {
    (
        BTreeMap::from([
            ("b".to_string(), data(&[2], 1, -1.0, 1.0)),
            ("w".to_string(), data(&[3, 2], 2, -1.0, 1.0)),
        ]),
        data(&[4, 3], 3, -1.0, 1.0),
    )
}

#[test]
fn tree_jacobian_api() {
    let x = mlp_point();
    let j = jacrev_tree(tree_mlp)(&x);
    // By path and by position agree; unknown paths are None.
    assert_eq!(j[("0", "0.w")].shape(), &[4, 2, 3, 2]);
    assert_eq!(j[("1", "1")].shape(), &[4, 3]);
    close("get vs block", j.get("0", "0.w").unwrap(), j.block(0, 1), 0.0);
    assert!(j.get("0", "w").is_none() && j.get("2", "1").is_none());
    let missing =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| j[("0", "nope")].clone()))
            .expect_err("panics");
    let msg = missing.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("\"nope\"") && msg.contains("\"0.w\""), "{msg}");
    // A Jacobian is a tree: its leaves are the blocks, paths output ++ input.
    assert_eq!(paths(&j), ["0.0.b", "0.0.w", "0.1", "1.0.b", "1.0.w", "1.1"]);
    let doubled = tree::map(&j, |b| b * 2.0);
    close("tree::map", doubled.block(1, 2), &(j.block(1, 2) * 2.0), 0.0);
    // Array functions: the tree forms have one block, equal to the array forms.
    let v = data(&[3], 4, -1.0, 1.0);
    let f = |v: &Array| v.sin() * v.sum();
    close("jacfwd", jacfwd_tree(f)(&v).block(0, 0), &jacfwd(f)(&v), 1e-14);
    close("jacrev", jacrev_tree(f)(&v).get("", "").unwrap(), &jacrev(f)(&v), 1e-14);
    let s = |v: &Array| (v.sin() * v).sum();
    close("hessian", hessian_tree(s)(&v).block(0, 0), &hessian(s)(&v), 1e-14);
}

#[test]
fn tree_hessian_of_tree_valued_function_nests() {
    // JAX: hessian of (y, s) is ((d2y/dx dx), (d2s/dx dx)); flattened, the output path of
    // a block is the output leaf's path followed by the first input leaf's path.
    let x = mlp_point();
    let hh = hessian_tree(tree_mlp)(&x);
    let hs = hessian_tree(|px: &MlpIn| tree_mlp(px).1)(&x);
    assert_eq!(hh.out_paths().len(), 2 * 3);
    for (i, a) in ["0.b", "0.w", "1"].iter().enumerate() {
        for (jx, b) in ["0.b", "0.w", "1"].iter().enumerate() {
            close(&format!("d2s/d{a}d{b}"), &hh[(&*format!("1.{a}"), *b)], hs.block(i, jx), 1e-12);
        }
    }
    assert_eq!(hh[("0.0.w", "1")].shape(), &[4, 2, 3, 2, 4, 3]);
    // Forward-over-reverse agrees with reverse-over-forward.
    let rf = jacrev_tree(jacfwd_tree(|px: &MlpIn| tree_mlp(px).1))(&x);
    for ((_, _, a), (_, _, b)) in hs.iter().zip(rf.iter()) {
        close("jacrev(jacfwd)", a, b, 1e-12);
    }
}

#[test]
fn per_example_tree_jacobians_under_vmap() {
    // vmap of a Jacobian-valued function: one Jacobian per example, stacked on axis 0.
    let (p, xs) = mlp_point();
    let per = vmap_with(
        |(p, x): &(BTreeMap<String, Array>, Array)| {
            jacfwd_tree(|p: &BTreeMap<String, Array>| (x.matmul(&p["w"]) + &p["b"]).tanh())(p)
        },
        kiln::Axes::tuple((None, Some(0))),
    )(&(p.clone(), xs.clone()));
    assert_eq!(per[("", "w")].shape(), &[4, 2, 3, 2]);
    for i in 0..4 {
        let xi = xs.row_i(i);
        let ji =
            jacrev_tree(|p: &BTreeMap<String, Array>| (xi.matmul(&p["w"]) + &p["b"]).tanh())(&p);
        for (k, (_, _, b)) in ji.iter().enumerate() {
            close("per-example", &tree::leaves(&per)[k].row_i(i), b, 1e-12);
        }
    }
}

#[test]
fn tree_jacobian_edge_cases() {
    // Integer inputs are rejected by name, as in JAX.
    let x = (Array::ones_of([2], DType::F64), Array::from_vec(vec![1i32, 2], [2]));
    let f = |(a, b): &(Array, Array)| a * &lax::convert_element_type(b, DType::F64);
    let e = try_jacfwd_tree(f, &x).map(|_| ()).expect_err("int input");
    assert!(e.to_string().contains("input leaf `1`"), "{e}");
    let e = try_jacrev_tree(f, &x).map(|_| ()).expect_err("int input");
    assert!(e.to_string().contains("input leaf `1`"), "{e}");
    // Empty leaves give empty blocks of the right shapes.
    let x = (Array::ones_of([0, 2], DType::F64), Array::ones_of([3], DType::F64));
    let f = |(a, b): &(Array, Array)| (a.sum() + b.sum(), b * 2.0);
    for j in [jacfwd_tree(f)(&x), jacrev_tree(f)(&x)] {
        assert_eq!(j.block(0, 0).shape(), &[0, 2]);
        assert_eq!(j.block(1, 0).shape(), &[3, 0, 2]);
        close("d(sum b)/db", j.block(0, 1), &Array::ones_of([3], DType::F64), 0.0);
        close("d(2b)/db", j.block(1, 1), &(Array::eye_of(3, DType::F64) * 2.0), 0.0);
    }
    let only_empty = (Array::ones_of([0], DType::F64),);
    let j = jacfwd_tree(|(a,): &(Array,)| a.sum())(&only_empty);
    assert_eq!(j.block(0, 0).shape(), &[0]);
}
