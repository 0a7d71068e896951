//! Every layer under the transformations, in f64, against eager evaluation:
//!
//! (a) `jit(forward)` equals eager, and a second call with new values of the same shapes
//!     does not retrace;
//! (b) `vmap` of the forward over an extra leading axis of the inputs (the layer broadcast)
//!     equals a loop over the slices, stacked;
//! (c) the gradient of a scalar loss of the outputs with respect to the layer's parameters
//!     and the inputs (integer leaves such as ids and keys get zeros) is the same eagerly,
//!     as `jit(grad(loss))` and as `grad(jit(loss))`.
//!
//! Each layer is one row: a model, a function building inputs from a seed, and the forward.

use kiln::testing::to_f64;
use kiln::{Array, Axes, DType, Jit, Tree, grad, random, stack, tree, vmap_with};
use kiln_nn::*;

/// Relative/absolute tolerance of every comparison (f64 everywhere; jit and vmap may
/// reassociate sums, nothing more).
const TOL: f64 = 1e-10;
/// Slices in the vmap check.
const BATCH: i64 = 3;

fn key(i: i64) -> Array {
    random::key(i)
}

fn normal(seed: i64, shape: &[usize]) -> Array {
    random::normal(&key(1000 + seed), shape, DType::F64)
}

/// Integer ids in `[0, n)` depending on `seed`.
fn ids(seed: i64, len: usize, n: usize) -> Array {
    let v: Vec<i32> = (0..len).map(|i| ((i as i64 * 7 + seed * 3) % n as i64) as i32).collect();
    Array::from_vec(v, [len])
}

#[track_caller]
fn close_tree<T: Tree>(what: &str, got: &T, want: &T) {
    assert_eq!(got.def(), want.def(), "{what}: tree structure");
    let (g, w) = (tree::leaves_with_path(got), tree::leaves_with_path(want));
    for ((path, g), (_, w)) in g.iter().zip(&w) {
        assert_eq!(g.shape(), w.shape(), "{what} at {path}: shape");
        assert_eq!(g.dtype(), w.dtype(), "{what} at {path}: dtype");
        for (i, (a, b)) in g.to_f64_vec().iter().zip(w.to_f64_vec()).enumerate() {
            assert!(
                (a - b).abs() <= TOL * (1.0 + b.abs()),
                "{what} at {path}[{i}]: got {a}, want {b}"
            );
        }
    }
}

/// Stacks trees of one structure leaf by leaf along a new axis 0.
fn stack_trees<T: Tree>(ts: &[T]) -> T {
    let leaves: Vec<Vec<Array>> = ts.iter().map(tree::leaves).collect();
    let stacked =
        (0..leaves[0].len()).map(|j| stack(&leaves.iter().map(|l| &l[j]).collect::<Vec<_>>(), 0));
    tree::unflatten(&ts[0], stacked.collect())
}

/// A scalar loss of every float output leaf: `sum(w * y + y^2 / 4)` with fixed weights `w`
/// (so that the gradient depends on the values, not only on the structure).
fn scalarize<Y: Tree>(y: &Y) -> Array {
    let mut total = Array::scalar(0.0f64);
    for leaf in tree::leaves(y).iter().filter(|l| l.dtype().is_float()) {
        let n = leaf.size();
        let w: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37 + 0.1).sin()).collect();
        let w = Array::from_f64_vec(&w, leaf.shape(), leaf.dtype());
        let term = (leaf * &w).sum() + (leaf * leaf).sum() * 0.25;
        total += term.astype(DType::F64);
    }
    total
}

/// Runs checks (a), (b) and (c) for `forward(model, inputs)`.
fn check<M, X, Y, F>(name: &str, model: &M, make_x: impl Fn(i64) -> X, forward: F)
where
    M: Tree + 'static,
    X: Tree + 'static,
    Y: Tree + 'static,
    F: Fn(&M, &X) -> Y + Clone + 'static,
{
    let m = to_f64(model);

    // (a) jit equals eager; a second signature-equal call reuses the trace.
    let f = forward.clone();
    let jitted = Jit::new(move |(m, x): &(M, X)| f(m, x));
    for seed in [0, 1] {
        let x = make_x(seed);
        let got = jitted.call(&(m.clone(), x.clone()));
        close_tree(&format!("{name}: jit (seed {seed})"), &got, &forward(&m, &x));
    }
    assert_eq!(jitted.traces(), 1, "{name}: the second jit call retraced");

    // (b) vmap over a leading axis of the inputs equals the stacked loop.
    let slices: Vec<X> = (0..BATCH).map(|i| make_x(10 + i)).collect();
    let f = forward.clone();
    let batched = vmap_with(move |(m, x): &(M, X)| f(m, x), Axes::tuple((None, Some(0))));
    let got = batched(&(m.clone(), stack_trees(&slices)));
    let want = stack_trees(&slices.iter().map(|x| forward(&m, x)).collect::<Vec<_>>());
    close_tree(&format!("{name}: vmap vs loop"), &got, &want);

    // (c) grad of a scalar loss: eager, jit(grad), grad(jit).
    let f = forward.clone();
    let loss = move |(m, x): &(M, X)| scalarize(&f(m, x));
    let args = (m.clone(), make_x(2));
    let want = grad(loss.clone())(&args);
    assert!(
        tree::leaves(&want.0).iter().all(|g| g.to_f64_vec().iter().all(|v| v.is_finite())),
        "{name}: eager gradient is not finite"
    );
    let params = tree::leaves(&want.0);
    assert!(
        params.is_empty() || params.iter().any(|g| g.to_f64_vec().iter().any(|&v| v != 0.0)),
        "{name}: the parameter gradient is all zeros, the check would be vacuous"
    );
    let l = loss.clone();
    let jit_of_grad = Jit::new(move |a: &(M, X)| grad(l.clone())(a));
    close_tree(&format!("{name}: jit(grad)"), &jit_of_grad.call(&args), &want);
    let jitted_loss = Jit::new(loss);
    let grad_of_jit = grad(|a: &(M, X)| jitted_loss.call(a))(&args);
    close_tree(&format!("{name}: grad(jit)"), &grad_of_jit, &want);
}

#[test]
#[should_panic(expected = "got 1.0000001")]
fn the_comparison_sees_small_differences() {
    let a = Array::from_vec(vec![1.0f64, 2.0], [2]);
    close_tree("self-test", &(a.clone() + 1e-7), &a);
}

#[test]
fn per_slice_keys_give_per_slice_masks() {
    // The vmap check of "Dropout (key input)" is only meaningful if slices differ.
    let d = Dropout::new(0.5);
    let keys = stack(&[key(1), key(2)], 0);
    let y = vmap_with(move |k: &Array| d.forward(&Array::ones([64]), Some(k)), 0)(&keys);
    let (a, b) = (y.index([kiln::Idx::At(0)]), y.index([kiln::Idx::At(1)]));
    assert_ne!(a.to_vec::<f32>(), b.to_vec::<f32>());
}

#[test]
fn linear_and_embedding() {
    check("Linear", &Linear::new(&key(0), 5, 3), |s| normal(s, &[4, 5]), |l, x| l.forward(x));
    let mut cfg = LinearConfig::new(5, 3);
    cfg.use_bias = false;
    check("Linear (no bias)", &cfg.init(&key(1)), |s| normal(s, &[5]), |l, x| l.forward(x));
    let e = Embedding::new(&key(2), 7, 4);
    check("Embedding", &e, |s| ids(s, 5, 7), |e, ids| e.forward(ids));
    check("Embedding::attend", &e, |s| normal(s, &[3, 4]), |e, x| e.attend(x));
}

#[test]
fn convolutions() {
    let c1 = Conv1d::new(&key(0), 2, 3, [3]);
    check("Conv1d", &c1, |s| normal(s, &[2, 8, 2]), |c, x| c.forward(x));
    let c2 = Conv2d::new(&key(1), 3, 4, [3, 3]);
    check("Conv2d", &c2, |s| normal(s, &[2, 6, 5, 3]), |c, x| c.forward(x));
    let strided = ConvConfig::new(4, 6, [3, 3]).strides([2, 2]).groups(2).init(&key(2));
    check("Conv2d (strided, grouped)", &strided, |s| normal(s, &[7, 7, 4]), |c, x| c.forward(x));
    let t = ConvTranspose2d::new(&key(3), 2, 3, [3, 3], [2, 2]);
    check("ConvTranspose2d", &t, |s| normal(s, &[1, 4, 5, 2]), |c, x| c.forward(x));
}

#[test]
fn pooling() {
    let x2 = |s| normal(s, &[2, 6, 6, 3]);
    let x1 = |s| normal(s, &[2, 9, 3]);
    check("MaxPool2d", &MaxPool2d::new([2, 2]), x2, |p, x| p.forward(x));
    check("AvgPool2d", &AvgPool2d::new([2, 3]), x2, |p, x| p.forward(x));
    let same = MaxPool2d::with([3, 3], [1, 1], Padding::Same);
    check("MaxPool2d (SAME, stride 1)", &same, x2, |p, x| p.forward(x));
    check("MaxPool1d", &MaxPool1d::new([3]), x1, |p, x| p.forward(x));
    check("AvgPool1d", &AvgPool1d::new([2]), x1, |p, x| p.forward(x));
}

/// Non-trivial scale and bias, so the gradients through them are not the identity's.
fn perturb<M: Tree>(m: &M, seed: i64) -> M {
    let leaves = tree::leaves(m);
    let perturbed = leaves.iter().enumerate().map(|(i, l)| {
        let d = random::normal(&key(500 + seed + i as i64), l.shape(), l.dtype());
        l + d * 0.1
    });
    tree::unflatten(m, perturbed.collect())
}

#[test]
fn normalization() {
    let x = |s| normal(s, &[4, 6]);
    check("LayerNorm", &perturb(&LayerNorm::new(6), 0), x, |l, x| l.forward(x));
    check("RMSNorm", &perturb(&RMSNorm::new(6), 1), x, |l, x| l.forward(x));
    let gn = perturb(&GroupNorm::new(2, 6), 2);
    check("GroupNorm", &gn, |s| normal(s, &[2, 3, 6]), |l, x| l.forward(x));

    let bn = perturb(&BatchNorm::new(3), 3);
    // Running statistics away from their initial values, so eval mode is not trivial.
    let mut state = bn.init_state();
    state = bn.forward_train(&(normal(99, &[8, 3]) * 2.0 + 0.5).astype(DType::F32), &state).1;
    let model = (bn, state);
    let x = |s| normal(s, &[5, 3]);
    check("BatchNorm (train)", &model, x, |(bn, st): &(BatchNorm, BatchNormState), x| {
        bn.forward_train(x, st)
    });
    check("BatchNorm (eval)", &model, x, |(bn, st): &(BatchNorm, BatchNormState), x| {
        bn.forward_eval(x, st)
    });
}

#[test]
fn dropout() {
    let d = Dropout::new(0.4);
    let x = |s| normal(s, &[4, 5]);
    check("Dropout (eval, no key)", &d, x, |d, x| d.forward(x, None));
    // A key per call (per slice under vmap: every slice gets its own mask).
    let with_key = |s: i64| (key(s + 7), normal(s, &[4, 5]));
    check("Dropout (key input)", &d, with_key, |d, (k, x): &(Array, Array)| d.forward(x, Some(k)));
    // A key the forward closes over (a jit constant; the same mask for every vmap slice).
    let k = key(42);
    check("Dropout (closed-over key)", &d, x, move |d, x| d.forward(x, Some(&k)));
}

#[test]
fn attention() {
    let mha = MultiHeadAttention::new(&key(0), 8, 2);
    let x = |s| normal(s, &[4, 8]);
    check("MHA self", &mha, x, |m, x| m.forward(x, None));
    check("MHA self causal", &mha, x, |m, x| m.forward_causal(x));
    let qkv = |s: i64| (normal(s, &[4, 8]), normal(s + 50, &[4, 8]));
    check("MHA cross causal", &mha, qkv, |m, (q, kv): &(Array, Array)| {
        m.forward_qkv(q, kv, Some(&causal_mask(4)))
    });
    // Different query and key lengths, with a padding mask [Lq, Lk].
    let lens = |s: i64| (normal(s, &[2, 8]), normal(s + 50, &[5, 8]));
    let pad =
        Array::from_vec(vec![true, true, true, false, true, true, false, true, true, true], [2, 5]);
    check("MHA cross masked", &mha, lens, move |m, (q, kv): &(Array, Array)| {
        m.forward_qkv(q, kv, Some(&pad))
    });
}

#[test]
fn recurrent_cells() {
    let lstm = LSTMCell::new(&key(0), 3, 4);
    let lstm_in = |s: i64| ((normal(s, &[2, 4]), normal(s + 50, &[2, 4])), normal(s + 80, &[2, 3]));
    check("LSTMCell", &lstm, lstm_in, |c, (st, x): &(LSTMState, Array)| c.forward(st, x));
    // Three steps unrolled, as a loop over time would be.
    check("LSTMCell x3", &lstm, lstm_in, |c, (st, x): &(LSTMState, Array)| {
        let mut st = st.clone();
        for t in 0..3 {
            st = c.forward(&st, &(x * (1.0 + t as f64)));
        }
        st
    });
    let gru = GRUCell::new(&key(1), 3, 4);
    let gru_in = |s: i64| (normal(s, &[2, 4]), normal(s + 80, &[2, 3]));
    check("GRUCell", &gru, gru_in, |c, (h, x): &(Array, Array)| c.forward(h, x));
}

#[test]
fn sequential_and_mlp() {
    let ks = random::split_n(&key(0), 4);
    let cnn = Sequential::new(vec![
        Conv2d::new(&ks[0], 1, 4, [3, 3]).into(),
        Activation::Relu.into(),
        MaxPool2d::new([2, 2]).into(),
        Layer::Flatten { start_axis: 1 },
        Dropout::new(0.25).into(),
        Linear::new(&ks[1], 4 * 3 * 3, 5).into(),
        Activation::Gelu.into(),
        LayerNorm::new(5).into(),
    ]);
    let cnn_in = |s: i64| (key(s + 3), normal(s, &[2, 6, 6, 1]));
    check("Sequential CNN (train)", &cnn, cnn_in, |m, (k, x): &(Array, Array)| {
        m.forward(x, Some(k))
    });
    check("Sequential CNN (eval)", &cnn, |s| normal(s, &[2, 6, 6, 1]), |m, x| m.forward(x, None));

    let transformer = Sequential::new(vec![
        Embedding::new(&ks[2], 11, 8).into(),
        Layer::SelfAttention { attention: MultiHeadAttention::new(&ks[3], 8, 2), causal: true },
        RMSNorm::new(8).into(),
        Activation::Tanh.into(),
    ]);
    check("Sequential tokens", &transformer, |s| ids(s, 6, 11), |m, ids| m.forward(ids, None));

    let mlp = Mlp::new(&key(1), &[6, 16, 16, 3], Activation::Relu);
    check("Mlp", &mlp, |s| normal(s, &[5, 6]), |m, x| m.forward(x));
}
