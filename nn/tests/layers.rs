//! Output shapes, gradient checks and tree behaviour of every layer.

use kiln::testing::{GradCheck, check_grads_with, to_f64};
use kiln::{Array, DType, Tree, random, tree};
use kiln_nn::*;

fn key(i: i64) -> Array {
    random::key(i)
}

fn normal64(seed: i64, shape: &[usize]) -> Array {
    random::normal(&key(seed), shape, DType::F64)
}

/// Checks first-order gradients of `f(params, x)` with respect to the parameters and the
/// input together (f64).
fn check<M: Tree>(model: &M, x: &Array, f: impl Fn(&M, &Array) -> Array) {
    let m = to_f64(model);
    let cfg = GradCheck { order: 1, rtol: 1e-4, atol: 1e-5, ..GradCheck::default() };
    check_grads_with(|(m, x): &(M, Array)| f(m, x), &(m, x.clone()), &cfg);
}

#[test]
fn linear_shapes_and_grads() {
    let l = Linear::new(&key(0), 4, 3);
    assert_eq!(l.forward(&Array::ones([4])).shape(), &[3]);
    assert_eq!(l.forward(&Array::ones([2, 5, 4])).shape(), &[2, 5, 3]);
    let paths: Vec<String> =
        tree::leaves_with_path(&l).into_iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(paths, ["weight", "bias"]);
    check(&l, &normal64(1, &[2, 4]), |l, x| l.forward(x));
    let mut cfg = LinearConfig::new(4, 3);
    cfg.use_bias = false;
    assert!(cfg.init(&key(0)).bias.is_none());
}

#[test]
fn conv_shapes_and_grads() {
    let c = ConvConfig::new(3, 4, [3, 3]).strides([2, 2]).init(&key(0));
    assert_eq!(c.forward(&Array::ones([2, 7, 7, 3])).shape(), &[2, 4, 4, 4]);
    assert_eq!(c.forward(&Array::ones([7, 7, 3])).shape(), &[4, 4, 4]);
    assert_eq!(c.forward(&Array::ones([2, 2, 7, 7, 3])).shape(), &[2, 2, 4, 4, 4]);
    let v = ConvConfig::new(4, 6, [3, 3]).padding(Padding::Valid).groups(2).init(&key(1));
    assert_eq!(v.kernel.shape(), &[3, 3, 2, 6]);
    assert_eq!(v.forward(&Array::ones([1, 5, 6, 4])).shape(), &[1, 3, 4, 6]);
    let e = ConvConfig::new(1, 2, [3, 3])
        .padding(Padding::Explicit(vec![(1, 1), (0, 0)]))
        .dilation([1, 2])
        .init(&key(2));
    assert_eq!(e.forward(&Array::ones([1, 5, 6, 1])).shape(), &[1, 5, 2, 2]);
    check(&c, &normal64(3, &[1, 5, 5, 3]), |c, x| c.forward(x));

    let c1 = Conv1d::new(&key(4), 2, 3, [3]);
    assert_eq!(c1.forward(&Array::ones([4, 10, 2])).shape(), &[4, 10, 3]);
    check(&c1, &normal64(5, &[2, 6, 2]), |c, x| c.forward(x));

    let t = ConvTranspose2d::new(&key(6), 2, 3, [3, 3], [2, 2]);
    assert_eq!(t.forward(&Array::ones([1, 4, 5, 2])).shape(), &[1, 8, 10, 3]);
    let mut tv = t.clone();
    tv.padding = Padding::Valid;
    assert_eq!(tv.forward(&Array::ones([1, 4, 5, 2])).shape(), &[1, 9, 11, 3]);
    check(&t, &normal64(7, &[1, 3, 3, 2]), |c, x| c.forward(x));
}

#[test]
fn pooling_shapes_and_grads() {
    let x = normal64(0, &[2, 6, 6, 3]);
    assert_eq!(MaxPool2d::new([2, 2]).forward(&x).shape(), &[2, 3, 3, 3]);
    assert_eq!(AvgPool2d::new([2, 2]).forward(&x).shape(), &[2, 3, 3, 3]);
    let same = MaxPool2d::with([3, 3], [2, 2], Padding::Same);
    assert_eq!(same.forward(&x).shape(), &[2, 3, 3, 3]);
    assert_eq!(MaxPool1d::new([2]).forward(&Array::ones([5, 8, 2])).shape(), &[5, 4, 2]);
    assert_eq!(AvgPool1d::new([4]).forward(&Array::ones([8, 2])).to_vec::<f32>(), vec![1.0; 4]);
    let cfg = GradCheck { order: 1, rtol: 1e-4, atol: 1e-5, ..GradCheck::default() };
    check_grads_with(|x: &Array| MaxPool2d::new([2, 2]).forward(x), &x, &cfg);
    check_grads_with(
        |x: &Array| AvgPool2d::with([3, 3], [2, 2], Padding::Same).forward(x),
        &x,
        &cfg,
    );
}

#[test]
fn norms_shapes_and_grads() {
    let x = normal64(0, &[2, 3, 4]);
    let ln = LayerNorm::new(4);
    let y = ln.forward(&x);
    assert_eq!(y.shape(), &[2, 3, 4]);
    assert!(y.mean_axes([-1], false).allclose(Array::zeros_of([2, 3], DType::F64), 0.0, 1e-9));
    check(&ln, &x, |l, x| l.forward(x));
    let rms = RMSNorm::new(4);
    check(&rms, &x, |l, x| l.forward(x));
    let gn = GroupNorm::new(2, 4);
    assert_eq!(gn.forward(&x).shape(), &[2, 3, 4]);
    check(&gn, &x, |l, x| l.forward(x));

    let bn = BatchNorm::new(4);
    let state = to_f64(&bn.init_state());
    let (y, s1) = bn.forward_train(&x, &state);
    assert_eq!(y.shape(), &[2, 3, 4]);
    assert_eq!(s1.mean.shape(), &[4]);
    let want_mean = x.mean_axes([0, 1], false) * 0.01;
    assert!(s1.mean.allclose(&want_mean, 1e-6, 1e-9));
    let ye = bn.forward_eval(&x, &s1);
    assert_eq!(ye.shape(), &[2, 3, 4]);
    check(&bn, &x, |b, x| b.forward_train(x, &to_f64(&b.init_state())).0);
}

#[test]
fn embedding_dropout_attention_recurrent() {
    let e = Embedding::new(&key(0), 10, 4);
    let ids = Array::from_vec(vec![1i32, 9, 0, 3, 3, 3], [2, 3]);
    assert_eq!(e.forward(&ids).shape(), &[2, 3, 4]);
    assert_eq!(e.attend(&Array::ones([2, 4])).shape(), &[2, 10]);
    let e64 = to_f64(&e);
    let cfg = GradCheck { order: 1, rtol: 1e-4, atol: 1e-5, ..GradCheck::default() };
    check_grads_with(|e: &Embedding| e.forward(&ids), &e64, &cfg);

    let d = Dropout::new(0.25);
    let x = Array::ones([4000]);
    let y = d.forward(&x, Some(&key(1)));
    let kept = y.to_vec::<f32>().iter().filter(|&&v| v != 0.0).count() as f64 / 4000.0;
    assert!((kept - 0.75).abs() < 0.05, "kept fraction {kept}");
    assert!((y.mean().item::<f32>() - 1.0).abs() < 0.07);
    assert_eq!(d.forward(&x, None).to_vec::<f32>(), x.to_vec::<f32>());

    let mha = MultiHeadAttention::new(&key(2), 6, 2);
    let x = normal64(3, &[2, 5, 6]);
    assert_eq!(mha.forward(&Array::ones([3, 5, 6]), None).shape(), &[3, 5, 6]);
    assert_eq!(mha.forward_causal(&Array::ones([5, 6])).shape(), &[5, 6]);
    check(&mha, &x, |m, x| m.forward_causal(x));
    // Causality: changing the last position does not change earlier outputs.
    let m64 = to_f64(&mha);
    let y1 = m64.forward_causal(&x);
    let x2 = x.at_set([Idx::from(..), Idx::at(4)], 5.0);
    let y2 = m64.forward_causal(&x2);
    let first = |y: &Array| y.index([Idx::from(..), Idx::range(0, 4)]);
    assert!(first(&y1).allclose(first(&y2), 1e-12, 1e-12));
    assert!(!y1.allclose(&y2, 1e-6, 1e-6));

    let lstm = LSTMCell::new(&key(4), 3, 5);
    let s = lstm.init_state(&[2]);
    let (h, c) = lstm.forward(&s, &Array::ones([2, 3]));
    assert_eq!((h.shape(), c.shape()), (&[2usize, 5][..], &[2usize, 5][..]));
    let s64 = (normal64(5, &[2, 5]), normal64(6, &[2, 5]));
    check(&lstm, &normal64(7, &[2, 3]), |l, x| {
        let (h, c) = l.forward(&s64, x);
        h + c
    });
    let gru = GRUCell::new(&key(8), 3, 4);
    assert_eq!(gru.forward(&gru.init_state(&[2]), &Array::ones([2, 3])).shape(), &[2, 4]);
    let h64 = normal64(9, &[2, 4]);
    check(&gru, &normal64(10, &[2, 3]), |g, x| g.forward(&h64, x));
}

use kiln::Idx;

#[test]
fn initializers() {
    let k = key(0);
    let w = init::lecun_normal().init(&k, &[200, 300], DType::F32);
    let std = w.std().item::<f32>() as f64;
    assert!((std - (1.0f64 / 200.0).sqrt()).abs() < 0.003, "lecun std {std}");
    let w = init::he_uniform().init(&k, &[3, 3, 50, 40], DType::F32);
    let lim = (3.0f64 * 2.0 / 450.0).sqrt() as f32;
    assert!(w.to_vec::<f32>().iter().all(|&v| v.abs() <= lim));
    let w = init::glorot_uniform().init(&k, &[100, 300], DType::F32);
    assert!(w.abs().max().item::<f32>() <= (6.0f32 / 400.0).sqrt());
    let w = init::glorot_normal().init(&k, &[100, 300], DType::F32);
    assert!((w.std().item::<f32>() - (2.0f32 / 400.0).sqrt()).abs() < 0.004);
    let w = init::he_normal().init(&k, &[400, 100], DType::F32);
    assert!((w.std().item::<f32>() - (2.0f32 / 400.0).sqrt()).abs() < 0.004);
    let w = init::lecun_uniform().init(&k, &[400, 100], DType::F32);
    assert!(w.abs().max().item::<f32>() <= (3.0f32 / 400.0).sqrt());
    let w = init::truncated_normal(0.5).init(&k, &[1000], DType::F32);
    assert!(w.abs().max().item::<f32>() <= 1.0);
    let w = Initializer::Uniform { scale: 2.0 }.init(&k, &[1000], DType::F32);
    assert!(w.min().item::<f32>() >= 0.0 && w.max().item::<f32>() < 2.0);
    let w = Initializer::Normal { stddev: 3.0 }.init(&k, &[4000], DType::F64);
    assert!((w.std().item::<f64>() - 3.0).abs() < 0.15);
    assert_eq!(Initializer::Constant(2.5).init(&k, &[2], DType::F32).to_vec::<f32>(), vec![2.5; 2]);
    assert_eq!(Initializer::Ones.init(&k, &[2], DType::F32).to_vec::<f32>(), vec![1.0; 2]);
    assert_eq!(init::fans(&[3, 3, 4, 8]), (36.0, 72.0));
}

#[test]
fn mlp_grad_is_an_mlp_and_training_reduces_loss() {
    let (km, kx) = random::split2(&key(0));
    let mlp = Mlp::new(&km, &[3, 8, 2], Activation::Tanh);
    let x = random::normal(&kx, &[10, 3], DType::F32);
    let labels = Array::from_vec((0..10).map(|i| i % 2).collect::<Vec<i32>>(), [10]);
    let loss_fn =
        |m: &Mlp| loss::softmax_cross_entropy_with_integer_labels(&m.forward(&x), &labels).mean();
    let g: Mlp = kiln::grad(loss_fn)(&mlp);
    assert_eq!(g.layers.len(), 2);
    assert_eq!(g.activation, Activation::Tanh);
    assert_eq!(g.layers[0].weight.shape(), &[3, 8]);
    assert_eq!(g.def(), mlp.def());
    let mut m = mlp.clone();
    let l0 = loss_fn(&m).item::<f32>();
    for _ in 0..20 {
        let g = kiln::grad(loss_fn)(&m);
        m = tree::zip_map(&m, &g, |p, g| p - g * 0.5);
    }
    assert!(loss_fn(&m).item::<f32>() < l0 * 0.9);
    check(&mlp, &normal64(1, &[4, 3]), |m, x| m.forward(x));
}

#[test]
fn sequential_and_summary() {
    let ks = random::split_n(&key(0), 3);
    let model = Sequential::new(vec![
        Conv2d::new(&ks[0], 1, 4, [3, 3]).into(),
        Activation::Gelu.into(),
        MaxPool2d::new([2, 2]).into(),
        LayerNorm::new(4).into(),
        Layer::Flatten { start_axis: 1 },
        Dropout::new(0.5).into(),
        Linear::new(&ks[1], 64, 10).into(),
    ]);
    let x = Array::ones([2, 8, 8, 1]);
    assert_eq!(model.forward(&x, None).shape(), &[2, 10]);
    assert_eq!(model.forward(&x, Some(&ks[2])).shape(), &[2, 10]);
    let g = kiln::grad(|m: &Sequential| m.forward(&x, Some(&ks[2])).square().mean())(&model);
    assert_eq!(g.def(), model.def());
    let table = summary(&model);
    assert!(table.contains("layers.0.0.kernel"), "{table}");
    assert!(table.contains("[3, 3, 1, 4]"));
    let total = 3 * 3 * 4 + 4 + 4 + 4 + 64 * 10 + 10;
    assert!(table.lines().last().unwrap().trim_end().ends_with(&total.to_string()), "{table}");
}

#[test]
fn losses_and_metrics_basics() {
    let logits = Array::from_vec(vec![2.0f32, 1.0, 0.0, 0.0, 3.0, 1.0], [2, 3]);
    let labels = Array::from_vec(vec![0i32, 2], [2]);
    assert_eq!(metric::accuracy(&logits, &labels).item::<f32>(), 0.5);
    assert_eq!(metric::top_k_accuracy(&logits, &labels, 2).item::<f32>(), 1.0);
    assert_eq!(metric::top_k_accuracy(&logits, &labels, 1).item::<f32>(), 0.5);
    let onehot = kiln::one_hot(&labels, 3, DType::F32);
    let a = loss::softmax_cross_entropy_with_integer_labels(&logits, &labels);
    let b = loss::softmax_cross_entropy(&logits, &onehot);
    assert!(a.allclose(&b, 1e-6, 1e-6));
    let p = normal64(0, &[3, 4]);
    let t = normal64(1, &[3, 4]);
    let cfg = GradCheck { order: 2, rtol: 1e-4, atol: 1e-5, ..GradCheck::default() };
    check_grads_with(|p: &Array| loss::sigmoid_binary_cross_entropy(p, &t.sigmoid()), &p, &cfg);
    check_grads_with(|p: &Array| loss::softmax_cross_entropy(p, &t.softmax(-1)), &p, &cfg);
    check_grads_with(|p: &Array| loss::mse(p, &t), &p, &cfg);
    check_grads_with(|p: &Array| loss::kl_divergence(&p.log_softmax(-1), &t.softmax(-1)), &p, &cfg);
    for act in [
        Activation::Relu,
        Activation::LeakyRelu(0.1),
        Activation::Gelu,
        Activation::GeluExact,
        Activation::Silu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Softplus,
        Activation::Elu(1.0),
        Activation::Softmax,
        Activation::LogSoftmax,
    ] {
        check_grads_with(|x: &Array| act.apply(x), &p, &GradCheck { order: 1, ..cfg.clone() });
    }
}
