//! Eager kiln workloads, timed; prints one JSON object per workload.
//!
//! Run through `bench/compare.py`, which runs the same workloads in JAX on this machine in
//! the same session and prints kiln/JAX ratios. Timings never go in tests.

/// mimalloc keeps freed activation buffers for reuse; glibc hands the memory of rayon's
/// pool threads back to the OS and faults it in again each step (measured on the
/// transformer step: 73-101k page faults per run with glibc, 13-36k with mimalloc), and
/// with its purge delay raised by `kiln_train::alloc::keep_freed_memory` (first thing in
/// `main`) it keeps them committed between steps (3 faults per run).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use kiln::jit::Jit;
use kiln::lax::{self, ConvParams};
use kiln::prim::WindowKind;
use kiln::{Array, Axes, DType, Tree, grad, one_hot, random, tree, value_and_grad, vmap_with};
use kiln_nn::{Activation, Mlp, loss as nn_loss};
use kiln_optim::{Transform, apply_updates};
use kiln_train::{Model, Transformer, TransformerConfig};
use std::hint::black_box;
use std::time::Instant;

/// Seconds of calls before a row is timed. This machine's throughput ramps up over the
/// first tenths of a second of steady work: the jitted sum went from 22 to 40 GB/s over its
/// first 20 calls, and JAX's and PyTorch's twins ramp alike. `compare.py` warms them up
/// for as long, so every row measures the steady state.
const WARM_SECONDS: f64 = 1.0;

/// Median seconds per call of `f` over `reps` calls, after at least `warmup` calls and
/// [`WARM_SECONDS`] of calls.
fn time(warmup: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    let mut calls = 0;
    while calls < warmup || t0.elapsed().as_secs_f64() < WARM_SECONDS {
        f();
        calls += 1;
    }
    let mut ts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    ts[ts.len() / 2]
}

fn report(name: &str, seconds: f64, metric: &str, value: f64) {
    println!(
        "{}",
        serde_json::json!({"workload": name, "seconds": seconds, "metric": metric, "value": value})
    );
}

fn normal(seed: i64, shape: &[usize]) -> Array {
    random::normal(&random::key(seed), shape, DType::F32)
}

fn main() {
    kiln_train::alloc::keep_freed_memory();
    let only: Option<String> = std::env::args().nth(1);
    let run = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));

    if run("dispatch") {
        let x = Array::ones([8]);
        let y = Array::ones([8]);
        let t = time(1000, 20001, || {
            black_box(&x + &y);
        });
        report("dispatch_add_f32[8]", t, "us/op", t * 1e6);
    }
    if run("fused_sum") {
        let n = 10_000_000;
        let (x, y, z) = (normal(0, &[n]), normal(1, &[n]), normal(2, &[n]));
        let t = time(2, 11, || {
            black_box((&x + &y * &z).sum());
        });
        report("sum(x+y*z)_f32[10M]", t, "GB/s", 3.0 * 4.0 * n as f64 / t / 1e9);
    }
    if run("matmul") {
        let (a, b) = (normal(3, &[1024, 1024]), normal(4, &[1024, 1024]));
        let t = time(2, 11, || {
            black_box(a.matmul(&b));
        });
        report("matmul_f32_1024^3", t, "GFLOP/s", 2.0 * 1024f64.powi(3) / t / 1e9);
    }
    if run("mlp_grad") {
        let sizes = [784, 512, 512, 10];
        let params: Vec<(Array, Array)> = (0..3)
            .map(|i| {
                let w = normal(10 + i as i64, &[sizes[i], sizes[i + 1]])
                    * (1.0 / (sizes[i] as f32).sqrt());
                (w, Array::zeros([sizes[i + 1]]))
            })
            .collect();
        let x = normal(20, &[128, 784]);
        let labels = Array::from_vec((0..128).map(|i: i32| i % 10).collect::<Vec<_>>(), [128]);
        let loss = |p: &Vec<(Array, Array)>| {
            let mut h = x.clone();
            for (i, (w, b)) in p.iter().enumerate() {
                h = h.matmul(w) + b;
                if i < 2 {
                    h = h.relu();
                }
            }
            let lp = h.log_softmax(-1);
            -lp.take_along_axis(&labels.reshape([-1, 1]), -1).mean()
        };
        let g = grad(loss);
        let t = time(3, 21, || {
            black_box(g(&params));
        });
        report("grad_mlp_784-512-512-10_b128", t, "ms/step", t * 1e3);
    }
    if run("per_example") {
        // One gradient per example: vmap over the batch of grad of a single-example loss,
        // the parameters broadcast (in_axes None). Eager: every primitive runs batched once.
        const B: usize = 128;
        let sizes = [784, 128, 10];
        let params: Vec<(Array, Array)> = (0..2)
            .map(|i| {
                let w = normal(30 + i as i64, &[sizes[i], sizes[i + 1]])
                    * (1.0 / (sizes[i] as f32).sqrt());
                (w, Array::zeros([sizes[i + 1]]))
            })
            .collect();
        let xs = normal(40, &[B, 784]);
        let labels = Array::from_vec((0..B as i32).map(|i| i % 10).collect::<Vec<_>>(), [B]);
        let ys = one_hot(&labels, 10, DType::F32);
        let loss = |p: &Vec<(Array, Array)>, x: &Array, y: &Array| {
            let h = (x.matmul(&p[0].0) + &p[0].1).relu();
            let logits = h.matmul(&p[1].0) + &p[1].1;
            -(logits.log_softmax(-1) * y).sum()
        };
        let per_example = vmap_with(
            move |(p, x, y): &(Vec<(Array, Array)>, Array, Array)| {
                grad(|p: &Vec<_>| loss(p, x, y))(p)
            },
            Axes::tuple((None, Some(0), Some(0))),
        );
        let batch = (params, xs, ys);
        let g = per_example(&batch);
        assert_eq!(g[0].0.shape(), &[B, 784, 128]);
        let t = time(3, 21, || {
            black_box(per_example(&batch));
        });
        report("per_example_grad_mlp_784-128-10_b128", t, "ex/s", B as f64 / t);
        let jitted = Jit::new(move |b: &(Vec<(Array, Array)>, Array, Array)| per_example(b));
        let t = time(3, 21, || {
            black_box(jitted.call(&batch));
        });
        report("per_example_grad_mlp_784-128-10_b128 [jit]", t, "ex/s", B as f64 / t);
    }
    if run("fused_sum") {
        let n = 10_000_000;
        let (x, y, z) = (normal(0, &[n]), normal(1, &[n]), normal(2, &[n]));
        let f = Jit::new(|(x, y, z): &(Array, Array, Array)| (x + y * z).sum());
        let args = (x, y, z);
        let t = time(2, 11, || {
            black_box(f.call(&args));
        });
        report("sum(x+y*z)_f32[10M] [jit]", t, "GB/s", 3.0 * 4.0 * n as f64 / t / 1e9);
    }
    if run("mlp_step") {
        let sizes = [784, 512, 512, 10];
        let params: Vec<Array> = (0..3)
            .flat_map(|i| {
                let w = normal(50 + i as i64, &[sizes[i], sizes[i + 1]])
                    * (1.0 / (sizes[i] as f32).sqrt());
                [w, Array::zeros([sizes[i + 1]])]
            })
            .collect();
        let x = normal(60, &[128, 784]);
        let labels = Array::from_vec((0..128).map(|i: i32| i % 10).collect::<Vec<_>>(), [128]);
        let y = one_hot(&labels, 10, DType::F32);
        let loss = |p: &Vec<Array>, x: &Array, y: &Array| {
            let mut h = x.clone();
            for i in 0..3 {
                h = h.matmul(&p[2 * i]) + &p[2 * i + 1];
                if i < 2 {
                    h = h.relu();
                }
            }
            -(h.log_softmax(-1) * y).sum_axes([1], false).mean()
        };
        step_bench("mlp_step_784-512-512-10_b128_adam [jit]", params, (x, y), loss);
    }
    if run("nn_mlp_step") {
        // The mlp_step workload written with kiln-nn and kiln-optim: Mlp, the library's
        // softmax cross-entropy, optax-style adam and apply_updates. Must cost no more than
        // the hand-written step (compare.py prints the ratio).
        let model = Mlp::new(&random::key(50), &[784, 512, 512, 10], Activation::Relu);
        let x = normal(60, &[128, 784]);
        let labels = Array::from_vec((0..128).map(|i: i32| i % 10).collect::<Vec<_>>(), [128]);
        let y = one_hot(&labels, 10, DType::F32);
        let opt = kiln_optim::adam(1e-3, 0.9, 0.999, 1e-8);
        let opt_state = opt.init(&model);
        let state = (model, opt_state); // moved, so the first call can donate its buffers
        type State = (Mlp, <kiln_optim::Adam as Transform>::State<Mlp>);
        let step = Jit::new(move |((m, s), (x, y)): &(State, (Array, Array))| {
            let loss = |m: &Mlp| nn_loss::softmax_cross_entropy(&m.forward(x), y).mean();
            let (l, g) = value_and_grad(loss)(m);
            let (updates, s) = opt.update(g, s.clone(), m);
            ((apply_updates(m, &updates), s), l)
        });
        time_step("nn_mlp_step_784-512-512-10_b128_adam [jit]", &step, state, (x, y));
    }
    if run("lm_step") {
        // The model of examples/shakespeare-transformer.toml (kiln-train's Transformer:
        // 4 pre-LN blocks of width 128, 4 heads, context 64, vocabulary 65), batch 32, with
        // kiln-optim's adam; compare.py runs the same GPT written in JAX.
        let c = TransformerConfig {
            vocab: 65,
            context: 64,
            layers: 4,
            d_model: 128,
            heads: 4,
            dropout: 0.0,
        };
        let model = Transformer::new(&random::key(7), c);
        let tokens = |seed: usize| {
            let v: Vec<i32> = (0..32 * 64).map(|i| ((i * 7 + seed * 13) % 65) as i32).collect();
            Array::from_vec(v, [32, 64])
        };
        let opt = kiln_optim::adam(1e-3, 0.9, 0.999, 1e-8);
        let opt_state = opt.init(&model);
        type State = (Transformer, <kiln_optim::Adam as Transform>::State<Transformer>);
        let step = Jit::new(move |((m, s), (x, y)): &(State, (Array, Array))| {
            let loss = |m: &Transformer| m.loss(&m.apply(&(), x, None).0, y);
            let (l, g) = value_and_grad(loss)(m);
            let (updates, s) = opt.update(g, s.clone(), m);
            ((apply_updates(m, &updates), s), l)
        });
        let batch = (tokens(1), tokens(2));
        time_step("lm_step_gpt4x128_ctx64_b32_adam [jit]", &step, (model, opt_state), batch);
    }
    if run("cnn_step") {
        let (b, c1, c2) = (64usize, 32usize, 64usize);
        let he = |seed: i64, shape: &[usize], fan_in: usize| {
            normal(seed, shape) * (2.0 / fan_in as f32).sqrt()
        };
        let params: Vec<Array> = vec![
            he(70, &[3, 3, 1, c1], 9),
            Array::zeros([c1]),
            he(71, &[3, 3, c1, c2], 9 * c1),
            Array::zeros([c2]),
            he(72, &[7 * 7 * c2, 128], 7 * 7 * c2),
            Array::zeros([128]),
            he(73, &[128, 10], 128),
            Array::zeros([10]),
        ];
        let x = normal(74, &[b, 28, 28, 1]);
        let labels = Array::from_vec((0..b as i32).map(|i| i % 10).collect::<Vec<_>>(), [b]);
        let y = one_hot(&labels, 10, DType::F32);
        let loss = |p: &Vec<Array>, x: &Array, y: &Array| {
            let mut same = ConvParams::new(2);
            same.padding = vec![(1, 1), (1, 1)];
            let pool = |h: &Array| {
                lax::reduce_window(h, WindowKind::Max, &[1, 2, 2, 1], &[1, 2, 2, 1], &[(0, 0); 4])
            };
            let h = pool(&(lax::conv_general_dilated(x, &p[0], &same) + &p[1]).relu());
            let h = pool(&(lax::conv_general_dilated(&h, &p[2], &same) + &p[3]).relu());
            let h = h.reshape([x.shape()[0] as isize, -1]);
            let h = (h.matmul(&p[4]) + &p[5]).relu();
            let logits = h.matmul(&p[6]) + &p[7];
            -(logits.log_softmax(-1) * y).sum_axes([1], false).mean()
        };
        step_bench("cnn_step_28x28_b64_adam [jit]", params, (x, y), loss);
    }
}

type AdamState = (Vec<Array>, Vec<Array>, Vec<Array>, Array);

/// A jitted train step (forward, loss, grad, Adam written with tree maps), timed by
/// [`time_step`].
fn step_bench(
    name: &str,
    params: Vec<Array>,
    batch: (Array, Array),
    loss: impl Fn(&Vec<Array>, &Array, &Array) -> Array + Copy + 'static,
) {
    let (lr, b1, b2, eps) = (1e-3f32, 0.9f32, 0.999f32, 1e-8f32);
    let step = Jit::new(move |(s, (x, y)): &(AdamState, (Array, Array))| {
        let (p, m, v, t) = s;
        let (l, g) = value_and_grad(|p: &Vec<Array>| loss(p, x, y))(p);
        let t1 = t + 1.0;
        let c1 = -(&t1 * b1.ln()).exp() + 1.0;
        let c2 = -(&t1 * b2.ln()).exp() + 1.0;
        let m = tree::zip_map(m, &g, |m, g| m * b1 + g * (1.0 - b1));
        let v = tree::zip_map(v, &g, |v, g| v * b2 + g * g * (1.0 - b2));
        let p = tree::zip3_map(p, &m, &v, |p, m, v| p - (m / &c1) * lr / ((v / &c2).sqrt() + eps));
        ((p, m, v, t1), l)
    });
    let zeros = |p: &Vec<Array>| tree::map(p, |a| Array::zeros(a.shape()));
    let (m, v) = (zeros(&params), zeros(&params));
    let state: AdamState = (params, m, v, Array::scalar(0.0f32));
    time_step(name, &step, state, batch);
}

/// A jitted train step `(state, (x, y)) -> (state, loss)`.
type Step<S> = Jit<(S, (Array, Array)), (S, Array)>;

/// Times a jitted train step `(state, batch) -> (state, loss)` run with donated state:
/// reports steady ms/step and the compile time (first call minus a steady step).
fn time_step<S: Tree>(name: &str, step: &Step<S>, state: S, batch: (Array, Array)) {
    let t0 = Instant::now();
    let (s, l0) = step.call_donated((state, batch.clone()));
    black_box(l0.item::<f32>());
    let first = t0.elapsed().as_secs_f64();
    let mut state = Some(s);
    let t = time(3, 21, || {
        let (s, l) = step.call_donated((state.take().expect("state"), batch.clone()));
        black_box(l);
        state = Some(s);
    });
    report(name, t, "ms/step", t * 1e3);
    report(&format!("{name} compile"), first - t, "s", first - t);
}
