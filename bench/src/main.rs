//! Eager kiln workloads, timed; prints one JSON object per workload.
//!
//! Run through `bench/compare.py`, which runs the same workloads in JAX on this machine in
//! the same session and prints kiln/JAX ratios. Timings never go in tests.

use kiln::{Array, Axes, DType, grad, one_hot, random, vmap_with};
use std::hint::black_box;
use std::time::Instant;

/// Median seconds per call of `f` over `reps` calls after `warmup` calls.
fn time(warmup: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
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
            |(p, x, y): &(Vec<(Array, Array)>, Array, Array)| grad(|p: &Vec<_>| loss(p, x, y))(p),
            Axes::tuple((None, Some(0), Some(0))),
        );
        let batch = (params, xs, ys);
        let g = per_example(&batch);
        assert_eq!(g[0].0.shape(), &[B, 784, 128]);
        let t = time(3, 21, || {
            black_box(per_example(&batch));
        });
        report("per_example_grad_mlp_784-128-10_b128", t, "ex/s", B as f64 / t);
    }
}
