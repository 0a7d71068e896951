//! `jit`: values equal eager, composition with every transformation, the cache, static
//! arguments, donation, the optimization passes and fusion.

use kiln::jit::{Jit, jit_static};
use kiln::{Array, Axes, DType, grad, jit, jvp, lax, value_and_grad, vmap, vmap_with};
use std::rc::Rc;

fn data(shape: &[usize], seed: u64, dtype: DType) -> Array {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    Array::from_f64_vec(&v, shape, dtype)
}

#[track_caller]
fn close(got: &Array, want: &Array, tol: f64) {
    assert_eq!(got.shape(), want.shape(), "shape");
    assert_eq!(got.dtype(), want.dtype(), "dtype");
    for (i, (g, w)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        assert!(
            *g == w || (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan()),
            "[{i}]: jit {g}, eager {w}"
        );
    }
}

fn sum_xyz(t: &(Array, Array, Array)) -> Array {
    (&t.0 + &t.1 * &t.2).sum()
}

#[test]
fn sum_of_product_is_one_fused_pass() {
    for dtype in [DType::F32, DType::F64] {
        let n = 200_003; // not a multiple of the tile or chunk sizes, above the parallel threshold
        let args = (data(&[n], 1, dtype), data(&[n], 2, dtype), data(&[n], 3, dtype));
        let f = Jit::new(sum_xyz);
        close(&f.call(&args), &sum_xyz(&args), 1e-5);
        let compiled = f.lower(&args).compile();
        assert_eq!(compiled.executable().num_steps(), 1, "{compiled}");
        assert_eq!(compiled.executable().num_fused(), 1, "{compiled}");
        assert!(compiled.to_string().contains("reduce_sum"), "{compiled}");
    }
}

fn mlp(p: &(Array, Array, Array, Array), x: &Array) -> Array {
    let h = (x.matmul(&p.0) + &p.1).relu();
    let logits = h.matmul(&p.2) + &p.3;
    logits.log_softmax(-1)
}

fn params(dtype: DType) -> (Array, Array, Array, Array) {
    (
        data(&[8, 16], 11, dtype),
        data(&[16], 12, dtype),
        data(&[16, 5], 13, dtype),
        data(&[5], 14, dtype),
    )
}

#[test]
fn fused_broadcasts_rows_and_softmax_match_eager() {
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
        let p = params(dtype);
        for batch in [1, 7, 300] {
            let x = data(&[batch, 8], 5, dtype);
            let x2 = x.clone();
            let f = Jit::new(move |p: &(Array, Array, Array, Array)| mlp(p, &x2));
            close(&f.call(&p), &mlp(&p, &x), tol);
            let loss = |x: Array| move |p: &(Array, Array, Array, Array)| -mlp(p, &x).mean();
            let want = grad(loss(x.clone()))(&p);
            let got = Jit::new(move |p: &(Array, Array, Array, Array)| {
                value_and_grad(loss(x.clone()))(p)
            })
            .call(&p);
            close(&got.1.0, &want.0, tol);
            close(&got.1.1, &want.1, tol);
            close(&got.1.2, &want.2, tol);
            close(&got.1.3, &want.3, tol);
        }
    }
}

/// Row reductions of every length class (one element, several rows to a tile, exactly a
/// tile, longer than a tile) over operands broadcast along different axes and a
/// transposed operand: the strided loads cross row and tile boundaries.
#[test]
fn short_and_long_rows_with_strided_operands_match_eager() {
    for inner in [1usize, 3, 64, 512, 700] {
        let rows = 401;
        let x = data(&[rows, inner], 7, DType::F32);
        let col = data(&[rows, 1], 8, DType::F32);
        let row = data(&[inner], 9, DType::F32);
        let xt = data(&[inner, rows], 10, DType::F32);
        let f = |(x, col, row, xt): &(Array, Array, Array, Array)| {
            let y = (x * col + row).exp() - xt.transpose([1, 0]) * 0.5;
            (y.sum_axes([1], false), y.max_axes([1], true), y.tanh())
        };
        let args = (x, col, row, xt);
        let (s1, m1, t1) = jit(f)(&args);
        let (s2, m2, t2) = f(&args);
        close(&s1, &s2, 1e-5);
        close(&m1, &m2, 0.0);
        close(&t1, &t2, 0.0);
    }
}

#[test]
fn selects_comparisons_and_clamps_fuse() {
    let f = |x: &Array| {
        let y = kiln::where_(x.gt(0.25), (x * 3.0).exp(), &(x.sin() - 1.0));
        let z = lax::clamp(
            &Array::scalar(-0.5f64).broadcast_to(x.shape()),
            &y,
            &Array::scalar(2.0f64).broadcast_to(x.shape()),
        );
        (z.clone(), z.sum_axes([1], false), x.gt(0.0))
    };
    let x = data(&[50, 3000], 4, DType::F64);
    let (a, b, c) = jit(f)(&x);
    let (wa, wb, wc) = f(&x);
    close(&a, &wa, 1e-12);
    close(&b, &wb, 1e-12);
    assert_eq!(c.to_vec::<bool>(), wc.to_vec::<bool>());
}

#[test]
fn composition_in_every_order() {
    let f = |x: &Array| (x.sin() * x + x.tanh()).sum();
    let x = data(&[4, 3], 7, DType::F64);
    let g = grad(f)(&x);
    // grad(jit), jit(grad), jvp(jit), nested jit
    close(&grad(jit(f))(&x), &g, 1e-12);
    close(&jit(grad(f))(&x), &g, 1e-12);
    close(&jit(move |x: &Array| jit(grad(f))(x))(&x), &g, 1e-12);
    let t = data(&[4, 3], 8, DType::F64);
    close(&jvp(jit(f), &x, &t).1, &jvp(f, &x, &t).1, 1e-12);
    // vmap(jit), jit(vmap), jit(vmap(grad))
    let per_row = |x: &Array| (x.sin() * x).sum();
    let want_rows = vmap(per_row)(&x);
    close(&vmap(jit(per_row))(&x), &want_rows, 1e-12);
    close(&jit(vmap(per_row))(&x), &want_rows, 1e-12);
    let want_g = vmap(grad(per_row))(&x);
    close(&jit(vmap(grad(per_row)))(&x), &want_g, 1e-12);
    close(&vmap(jit(grad(per_row)))(&x), &want_g, 1e-12);
    // vmap of jit with a broadcast (unmapped) argument
    let w = data(&[3], 9, DType::F64);
    let h = |(x, w): &(Array, Array)| (x * w).sin().sum();
    let got = vmap_with(jit(h), Axes::tuple((Some(0), None)))(&(x.clone(), w.clone()));
    close(&got, &vmap_with(h, Axes::tuple((Some(0), None)))(&(x.clone(), w.clone())), 1e-12);
    // hessian through jit
    close(&kiln::hessian(jit(f))(&x.reshape([-1])), &kiln::hessian(f)(&x.reshape([-1])), 1e-10);
}

#[test]
fn jit_closing_over_an_outer_tracer() {
    let x = data(&[5], 3, DType::F64);
    let w = data(&[5], 4, DType::F64);
    // d/dw of a jitted function that closes over w (a JVP tracer inside grad).
    let got = grad(|w: &Array| {
        let w = w.clone();
        let inner = jit(move |x: &Array| (x * &w).sin().sum());
        inner(&x)
    })(&w);
    let want = grad(|w: &Array| (&x * w).sin().sum())(&w);
    close(&got, &want, 1e-12);
}

#[test]
fn cache_retraces_only_on_new_signatures() {
    let f = Jit::new(|x: &Array| (x * 2.0).exp());
    let a = data(&[3], 1, DType::F32);
    f.call(&a);
    f.call(&data(&[3], 2, DType::F32));
    assert_eq!(f.traces(), 1);
    f.call(&data(&[4], 2, DType::F32));
    assert_eq!(f.traces(), 2);
    f.call(&data(&[3], 2, DType::F64));
    assert_eq!(f.traces(), 3);
    f.call(&a);
    assert_eq!(f.traces(), 3);
}

#[test]
fn static_arguments_are_part_of_the_key() {
    let calls = Rc::new(std::cell::Cell::new(0));
    let c = calls.clone();
    let f = jit_static(move |x: &Array, power: &i32| {
        c.set(c.get() + 1);
        let mut y = x.clone();
        for _ in 1..*power {
            y = &y * x;
        }
        y
    });
    let x = Array::from_vec(vec![2.0f32, 3.0], [2]);
    assert_eq!(f(&x, &3).to_vec::<f32>(), vec![8.0, 27.0]);
    assert_eq!(f(&x, &2).to_vec::<f32>(), vec![4.0, 9.0]);
    assert_eq!(f(&x, &3).to_vec::<f32>(), vec![8.0, 27.0]);
    assert_eq!(calls.get(), 2, "one trace per static value");
}

#[test]
fn donated_inputs_give_the_same_values() {
    // An SGD step: params are donated and updated in place.
    let x = data(&[16, 8], 1, DType::F32);
    let step = Jit::new(move |p: &(Array, Array, Array, Array)| {
        let g = grad(|p: &(Array, Array, Array, Array)| -mlp(p, &x).mean())(p);
        (&p.0 - &g.0 * 0.1, &p.1 - &g.1 * 0.1, &p.2 - &g.2 * 0.1, &p.3 - &g.3 * 0.1)
    });
    let mut p = params(DType::F32);
    let mut q = params(DType::F32);
    for _ in 0..3 {
        q = step.call(&q);
        p = step.call_donated(p);
    }
    close(&p.0, &q.0, 0.0);
    close(&p.3, &q.3, 0.0);
}

#[test]
fn passes_fold_simplify_dedupe_and_drop_dead_code() {
    let f = Jit::new(|x: &Array| {
        let unused = x.exp();
        let _ = unused;
        let a = x.sin() + x.sin(); // common subexpression
        let b = &a * 1.0 + 0.0; // identities
        let c = b.t().t(); // double transpose
        let c = kiln::lax::integer_pow(&c, 1); // x^1 = x
        let k = Array::scalar(2.0f32) * Array::scalar(3.0f32); // folded before staging
        c * k
    });
    let x = data(&[3, 4], 2, DType::F32);
    let lowered = f.lower(&x);
    let text = lowered.to_string();
    assert_eq!(text.matches("sin").count(), 1, "{text}");
    assert!(!text.contains("exp"), "{text}");
    assert!(!text.contains("transpose"), "{text}");
    assert!(!text.contains("integer_pow"), "{text}");
    let ops = lowered.jaxpr.eqns.len();
    assert!(ops <= 4, "{ops} equations left:\n{text}");
    let want = (x.sin() + x.sin()) * 6.0;
    close(&f.call(&x), &want, 1e-6);
}

#[test]
fn transposed_batched_products_swap_their_operands() {
    // out[b, j, i] = sum_k x[b, i, k] y[b, k, j]: the transpose folds into the product.
    let f = Jit::new(|(x, y): &(Array, Array)| {
        let d = kiln::lax::dot_general(x, y, ((&[2], &[1]), (&[0], &[0])));
        d.transpose([0, 2, 1])
    });
    let args = (data(&[3, 4, 5], 1, DType::F32), data(&[3, 5, 6], 2, DType::F32));
    let text = f.lower(&args).to_string();
    assert!(!text.contains("transpose"), "{text}");
    let want =
        kiln::lax::dot_general(&args.0, &args.1, ((&[2], &[1]), (&[0], &[0]))).transpose([0, 2, 1]);
    assert_eq!(f.call(&args).shape(), &[3, 6, 4]);
    close(&f.call(&args), &want, 1e-5);
    // Per-example gradients (vmap of grad of a matmul) need no transpose either.
    let g = Jit::new(|(w, xs): &(Array, Array)| {
        kiln::vmap(|x: &Array| kiln::grad(|w: &Array| x.matmul(w).tanh().sum())(w))(xs)
    });
    let (w, xs) = (data(&[5, 3], 3, DType::F32), data(&[4, 2, 5], 4, DType::F32));
    let text = g.lower(&(w.clone(), xs.clone())).to_string();
    assert!(!text.contains("transpose"), "{text}");
    let eager: Vec<Array> = (0..4)
        .map(|i| {
            let x = xs.slice_axis(0, i, i + 1, 1).reshape([2, 5]);
            kiln::grad(|w: &Array| x.matmul(w).tanh().sum())(&w)
        })
        .collect();
    let got = g.call(&(w, xs));
    for (i, e) in eager.iter().enumerate() {
        close(&got.slice_axis(0, i as isize, i as isize + 1, 1).reshape([5, 3]), e, 1e-5);
    }
}

#[test]
fn products_read_transposed_operands_in_place() {
    // Attention scores: heads moved in front of the sequence, then a product batched over
    // (batch, head). Both transposes fold into the product, which reads the heads of
    // `[b, t, h, d]` in place (batch dims 0 and 2).
    let f = Jit::new(|(q, k): &(Array, Array)| {
        let (qt, kt) = ((q * 0.5).transpose([0, 2, 1, 3]), k.transpose([0, 2, 1, 3]));
        kiln::lax::dot_general(&qt, &kt, ((&[3], &[3]), (&[0, 1], &[0, 1])))
    });
    let args = (data(&[2, 5, 3, 4], 1, DType::F32), data(&[2, 5, 3, 4], 2, DType::F32));
    let text = f.lower(&args).to_string();
    assert!(!text.contains("transpose"), "{text}");
    let want = kiln::lax::dot_general(
        &(args.0.transpose([0, 2, 1, 3]) * 0.5),
        &args.1.transpose([0, 2, 1, 3]),
        ((&[3], &[3]), (&[0, 1], &[0, 1])),
    );
    assert_eq!(f.call(&args).shape(), &[2, 3, 5, 5]);
    close(&f.call(&args), &want, 1e-5);
    // Gradients through the folded product (its dims renumbered: batch dims 0 and 2).
    let scores = |(q, k): &(Array, Array)| {
        let (qt, kt) = ((q * 0.5).transpose([0, 2, 1, 3]), k.transpose([0, 2, 1, 3]));
        kiln::lax::dot_general(&qt, &kt, ((&[3], &[3]), (&[0, 1], &[0, 1]))).tanh().sum()
    };
    let (gq, gk) = grad(jit(scores))(&args);
    let (eq, ek) = grad(scores)(&args);
    close(&gq, &eq, 1e-5);
    close(&gk, &ek, 1e-5);
    // Attention outputs: the product over (batch, head) is written straight back behind
    // the sequence, `[b, h, t, d] -> [b, t, h, d]`, with no transpose kernel.
    let o = Jit::new(|(p, v): &(Array, Array)| {
        let vt = v.transpose([0, 2, 1, 3]);
        let o = kiln::lax::dot_general(p, &vt, ((&[3], &[2]), (&[0, 1], &[0, 1])));
        o.transpose([0, 2, 1, 3]).reshape([2, 5, 12])
    });
    let args = (data(&[2, 3, 5, 5], 7, DType::F32), data(&[2, 5, 3, 4], 8, DType::F32));
    let compiled = o.lower(&args).compile().to_string();
    assert!(!compiled.contains("kernel transpose"), "{compiled}");
    assert!(compiled.contains("-> transpose"), "{compiled}");
    let want = kiln::lax::dot_general(
        &args.0,
        &args.1.transpose([0, 2, 1, 3]),
        ((&[3], &[2]), (&[0, 1], &[0, 1])),
    )
    .transpose([0, 2, 1, 3])
    .reshape([2, 5, 12]);
    close(&o.call(&args), &want, 1e-5);
    // The same in f64, and a permutation that splits a side's free dims stays a kernel.
    let args64 = (args.0.astype(DType::F64), args.1.astype(DType::F64));
    let want64 = kiln::lax::dot_general(
        &args64.0,
        &args64.1.transpose([0, 2, 1, 3]),
        ((&[3], &[2]), (&[0, 1], &[0, 1])),
    )
    .transpose([0, 2, 1, 3])
    .reshape([2, 5, 12]);
    close(&o.call(&args64), &want64, 1e-12);
    let split = Jit::new(|(x, y): &(Array, Array)| {
        let d = kiln::lax::dot_general(x, y, ((&[3], &[1]), (&[0], &[0])));
        d.transpose([0, 2, 1, 3])
    });
    let args = (data(&[2, 3, 4, 5], 9, DType::F32), data(&[2, 5, 6], 10, DType::F32));
    let compiled = split.lower(&args).compile().to_string();
    assert!(compiled.contains("kernel transpose"), "{compiled}");
    let want = kiln::lax::dot_general(&args.0, &args.1, ((&[3], &[1]), (&[0], &[0])))
        .transpose([0, 2, 1, 3]);
    close(&split.call(&args), &want, 1e-5);
    // x^T @ y (a weight gradient) reads x in place; its gradients (through the folded
    // product's transpose rule) match eager too.
    let g = Jit::new(|(x, y): &(Array, Array)| x.t().matmul(y));
    let args = (data(&[6, 4], 3, DType::F32), data(&[6, 5], 4, DType::F32));
    let text = g.lower(&args).to_string();
    assert!(!text.contains("transpose"), "{text}");
    close(&g.call(&args), &args.0.t().matmul(&args.1), 1e-5);
    let loss = |(x, y): &(Array, Array)| (x.t().matmul(y)).tanh().sum();
    let (gx, gy) = jit(grad(loss))(&args);
    let (ex, ey) = grad(loss)(&args);
    close(&gx, &ex, 1e-5);
    close(&gy, &ey, 1e-5);
    // A free dim reordered by the transpose does not fold: it would reorder the output.
    let h = Jit::new(|(x, y): &(Array, Array)| {
        kiln::lax::dot_general(&x.transpose([1, 0, 2]), y, ((&[2], &[0]), (&[], &[])))
    });
    let args = (data(&[3, 4, 5], 5, DType::F32), data(&[5, 2], 6, DType::F32));
    let want =
        kiln::lax::dot_general(&args.0.transpose([1, 0, 2]), &args.1, ((&[2], &[0]), (&[], &[])));
    close(&h.call(&args), &want, 1e-5);
}

#[test]
fn scalar_ops_after_a_reshape_fuse_into_the_producer() {
    // Splitting the heads, then scaling (attention queries): the scaling moves in front of
    // the reshape and joins the product's bias epilogue.
    let (w, b) = (data(&[8, 12], 1, DType::F32), data(&[12], 2, DType::F32));
    let f = Jit::new(move |x: &Array| (x.matmul(&w) + &b).reshape([4, 5, 3, 4]) * 0.25);
    let x = data(&[20, 8], 3, DType::F32);
    let compiled = f.lower(&x).compile().to_string();
    assert!(compiled.contains("-> add, mul}"), "{compiled}");
    let (w, b) = (data(&[8, 12], 1, DType::F32), data(&[12], 2, DType::F32));
    close(&f.call(&x), &((x.matmul(&w) + &b).reshape([4, 5, 3, 4]) * 0.25), 1e-6);
    // A scalar on the left, and a reshape that is also read elsewhere.
    let g = Jit::new(|x: &Array| {
        let r = x.exp().reshape([6, 2]);
        (Array::scalar(3.0f32) - &r, r.sum())
    });
    let x = data(&[3, 4], 4, DType::F32);
    let (a, s) = g.call(&x);
    close(&a, &(Array::scalar(3.0f32) - x.exp().reshape([6, 2])), 1e-6);
    close(&s, &x.exp().sum(), 1e-6);
}

#[test]
fn compiled_display_shows_fusion_and_buffer_plan() {
    let x = data(&[64, 32], 1, DType::F32);
    let w = data(&[32, 16], 2, DType::F32);
    let f = Jit::new(move |x: &Array| (x.matmul(&w).relu() * 2.0).softmax(-1));
    let c = f.lower(&x).compile();
    let s = c.to_string();
    assert!(s.contains("kernel dot_general"), "{s}");
    assert!(s.contains("fused["), "{s}");
    assert!(s.contains("; free"), "{s}");
    assert!(s.contains("peak intermediates"), "{s}");
}

#[test]
fn wrong_input_is_an_error_not_a_panic() {
    let f = Jit::new(|x: &Array| x.exp());
    let exe = f.lower(&Array::zeros([2])).compile();
    assert!(exe.executable().num_steps() >= 1);
    // Different shapes simply retrace.
    assert_eq!(f.try_call(&Array::zeros([3])).unwrap().shape(), &[3]);
}

/// Bias and activation after a matrix product or convolution run as the contraction's
/// epilogue (one step, on each output block while it is in cache), on every code path of
/// the product (column blocks, batched, one threaded product) and of the convolution
/// (im2col blocks, 1x1, depthwise), in f32 and f64; the values equal eager bit for bit.
#[test]
fn bias_and_activation_fuse_into_contractions() {
    type Case = (Vec<usize>, Vec<usize>, fn(&Array, &Array) -> Array);
    let dense: fn(&Array, &Array) -> Array = |x, w| x.matmul(w);
    fn conv(groups: usize, x: &Array, w: &Array) -> Array {
        let mut p = lax::ConvParams::new(2);
        p.padding = vec![(1, 1), (1, 1)];
        p.feature_group_count = groups;
        lax::conv_general_dilated(x, w, &p)
    }
    let cases: Vec<Case> = vec![
        // Short and wide: one column block per thread.
        (vec![64, 512], vec![512, 512], dense),
        // Tall: one product on gemm's threads, then the epilogue in parallel pieces.
        (vec![700, 96], vec![96, 128], dense),
        // Batched: one product per batch element.
        (vec![6, 40, 24], vec![6, 24, 32], |x, w| {
            lax::dot_general(x, w, ((&[2], &[1]), (&[0], &[0])))
        }),
        (vec![4, 28, 28, 8], vec![3, 3, 8, 16], |x, w| conv(1, x, w)),
        (vec![4, 28, 28, 16], vec![3, 3, 1, 16], |x, w| conv(16, x, w)),
        (vec![4, 9, 9, 8], vec![1, 1, 8, 24], |x, w| {
            lax::conv_general_dilated(x, w, &lax::ConvParams::new(2))
        }),
    ];
    for dtype in [DType::F32, DType::F64] {
        for (i, (xs, ws, op)) in cases.iter().enumerate() {
            let (x, w) = (data(xs, 40 + i as u64, dtype), data(ws, 50 + i as u64, dtype));
            let b = data(&[*ws.last().expect("rank")], 60 + i as u64, dtype);
            let op = *op;
            // Two outputs (the activation and its mask), a broadcast bias, a literal.
            let f = move |(x, w, b): &(Array, Array, Array)| {
                let z = op(x, w) + b;
                let mask = z.gt(0.0).astype(dtype);
                (z.relu() * 0.5, mask)
            };
            let args = (x, w, b);
            let jf = Jit::new(f);
            let (got, want) = (jf.call(&args), f(&args));
            assert_eq!(got.0.to_f64_vec(), want.0.to_f64_vec(), "case {i} {dtype}");
            assert_eq!(got.1.to_f64_vec(), want.1.to_f64_vec(), "case {i} {dtype}");
            let c = jf.lower(&args).compile();
            assert_eq!(c.executable().num_steps(), 1, "case {i}: {c}");
            assert!(c.to_string().contains(" -> add"), "case {i}: {c}");
        }
    }
}

/// A contraction stays a separate kernel when its output is also returned or read twice;
/// read with values computed after it (an Adam update's bias corrections), it runs as the
/// reading group's epilogue where the group ran. The values equal eager in every case.
#[test]
fn contractions_keep_their_output_when_it_is_needed() {
    let x = data(&[32, 48], 1, DType::F32);
    let w = data(&[48, 64], 2, DType::F32);
    let b = data(&[64], 3, DType::F32);
    let returned = |(x, w, b): &(Array, Array, Array)| {
        let z = x.matmul(w);
        (z.clone(), (z + b).relu())
    };
    let twice = |(x, w, b): &(Array, Array, Array)| {
        let z = x.matmul(w);
        ((&z + b).relu(), (&z * b).tanh().sum())
    };
    let later = |(x, w, b): &(Array, Array, Array)| {
        let z = x.matmul(w);
        let s = (x * 2.0).sum();
        (&z + b) * s
    };
    let args = (x, w, b);
    for (got, want) in [
        (Jit::new(returned).call(&args), returned(&args)),
        (Jit::new(twice).call(&args), twice(&args)),
    ] {
        close(&got.0, &want.0, 1e-6);
        close(&got.1, &want.1, 1e-6);
    }
    close(&Jit::new(later).call(&args), &later(&args), 1e-6);
    let c = Jit::new(returned).lower(&args).compile();
    assert!(c.to_string().contains("kernel dot_general"), "{c}");
    let c = Jit::new(later).lower(&args).compile();
    let shown = c.to_string();
    assert!(shown.contains("{dot_general") && shown.contains(" -> add, mul}"), "{c}");
    assert_eq!(c.executable().num_steps(), 2, "{c}");
}

/// A convolution's kernel gradient (`transpose(conv(transpose(x), transpose(g)))` from
/// the transpose rule) compiles to one `conv_filter_grad` step, with no transposed copies,
/// for strides, padding, cropping, kernel dilation, one input channel and 1 to 3 spatial
/// dims, and per group of a grouped convolution (the rule slices the groups apart); values
/// equal eager (to rounding: the sum runs in another order). A transposed (input-dilated)
/// convolution keeps the general path.
#[test]
fn kernel_gradients_of_convolutions_skip_the_transposes() {
    struct Case {
        x: Vec<usize>,
        w: Vec<usize>,
        strides: Vec<usize>,
        padding: Vec<(i64, i64)>,
        rhs_dil: Vec<usize>,
        lhs_dil: Vec<usize>,
        groups: usize,
        folds: bool,
    }
    let case = |x: &[usize], w: &[usize], strides: &[usize], padding: &[(i64, i64)]| Case {
        x: x.to_vec(),
        w: w.to_vec(),
        strides: strides.to_vec(),
        padding: padding.to_vec(),
        rhs_dil: vec![1; strides.len()],
        lhs_dil: vec![1; strides.len()],
        groups: 1,
        folds: true,
    };
    let cases = [
        case(&[8, 14, 14, 16], &[3, 3, 16, 32], &[1, 1], &[(1, 1), (1, 1)]),
        case(&[4, 28, 28, 1], &[3, 3, 1, 8], &[1, 1], &[(1, 1), (1, 1)]),
        case(&[3, 11, 9, 4], &[3, 2, 4, 5], &[2, 3], &[(1, 0), (-1, 2)]),
        Case {
            rhs_dil: vec![2, 1],
            ..case(&[2, 10, 9, 3], &[2, 3, 3, 4], &[1, 2], &[(0, 0), (2, 1)])
        },
        case(&[3, 17, 5], &[4, 5, 6], &[2], &[(2, 1)]),
        case(&[2, 5, 6, 4, 3], &[2, 3, 2, 3, 2], &[1, 2, 1], &[(0, 1), (1, 1), (0, 0)]),
        Case {
            lhs_dil: vec![2, 2],
            folds: false,
            ..case(&[2, 5, 5, 3], &[3, 3, 3, 4], &[1, 1], &[(1, 1), (1, 1)])
        },
        Case { groups: 2, ..case(&[2, 6, 6, 4], &[3, 3, 2, 6], &[1, 1], &[(1, 1), (1, 1)]) },
    ];
    for dtype in [DType::F32, DType::F64] {
        for (i, c) in cases.iter().enumerate() {
            let mut p = lax::ConvParams::new(c.strides.len());
            p.strides = c.strides.clone();
            p.padding = c.padding.clone();
            p.rhs_dilation = c.rhs_dil.clone();
            p.lhs_dilation = c.lhs_dil.clone();
            p.feature_group_count = c.groups;
            let f = move |(x, w): &(Array, Array)| {
                let (x, p) = (x.clone(), p.clone());
                grad(move |w: &Array| lax::conv_general_dilated(&x, w, &p).tanh().sum())(w)
            };
            let args = (data(&c.x, 70 + i as u64, dtype), data(&c.w, 80 + i as u64, dtype));
            let want = f(&args);
            let jf = Jit::new(f);
            close(&jf.call(&args), &want, if dtype == DType::F32 { 1e-4 } else { 1e-12 });
            let s = jf.lower(&args).compile().to_string();
            assert_eq!(s.contains("conv_filter_grad"), c.folds, "case {i} {dtype}: {s}");
            if c.folds {
                assert!(!s.contains("transpose"), "case {i} {dtype}: {s}");
            }
        }
    }
}

/// The tanh-GELU of a layer: `0.5 h (1 + tanh(c (h + 0.044715 h^3)))`.
fn gelu(h: &Array) -> Array {
    let inner = (h + kiln::lax::integer_pow(h, 3) * 0.044715) * 0.797_884_6;
    h * 0.5 * (inner.tanh() + 1.0)
}

#[test]
fn backward_passes_recompute_cheap_forward_values() {
    // The forward GELU group holds several values the backward pass needs (h^2 terms,
    // 1 - tanh^2, 1 + tanh, ...); all come from its input `h`, so the backward group
    // recomputes them and the forward group writes only `h` and its output.
    let x = data(&[64, 32], 1, DType::F32);
    let b = data(&[48], 3, DType::F32);
    let (xc, bc) = (x.clone(), b.clone());
    let loss = move |(w1, w2): &(Array, Array)| gelu(&(xc.matmul(w1) + &bc)).matmul(w2).sum();
    let f = Jit::new(kiln::grad(loss.clone()));
    let params = (data(&[32, 48], 2, DType::F32), data(&[48, 8], 4, DType::F32));
    let text = f.lower(&params).compile().to_string();
    let tanh_lines: Vec<&str> = text.lines().filter(|l| l.contains("tanh")).collect();
    assert_eq!(tanh_lines.len(), 2, "forward and recomputed in the backward pass:\n{text}");
    let outs = |l: &str| l.split(" = ").next().unwrap_or("").split_whitespace().count() - 1;
    assert!(outs(tanh_lines[0]) <= 2, "the forward group writes h and gelu(h) only:\n{text}");
    // Nor does it compute what only the backward pass reads (1 - tanh^2, the h^2 of the
    // derivative of h^3): the recomputing group has those.
    let ops = |l: &str| l.split('{').nth(1).unwrap_or("").to_string();
    let fwd = ops(tanh_lines[0]);
    assert!(!fwd.contains("sub"), "1 - tanh^2 is dead in the forward group:\n{text}");
    assert_eq!(fwd.matches("integer_pow").count(), 1, "h^2 is dead in the forward group:\n{text}");
    assert!(ops(tanh_lines[1]).contains("sub"), "the backward group recomputes it:\n{text}");
    let (g1, g2) = f.call(&params);
    let (e1, e2) = kiln::grad(loss)(&params);
    close(&g1, &e1, 1e-5);
    close(&g2, &e2, 1e-5);
}

#[test]
fn gelu_is_one_instruction_in_fused_groups_and_epilogues() {
    let x = data(&[64, 32], 1, DType::F32);
    let w = data(&[32, 48], 2, DType::F32);
    for approximate in [true, false] {
        // Elementwise: one fused group, the same bits as eager.
        let g = move |x: &Array| {
            let h = x * 2.0 + 1.0;
            (lax::gelu(&h, approximate), lax::gelu_grad(&h, approximate) * &h)
        };
        let jg = Jit::new(g);
        let text = jg.lower(&x).compile().to_string();
        assert!(text.contains("gelu, ") || text.contains("gelu}"), "{text}");
        let ((a, b), (ea, eb)) = (jg.call(&x), g(&x));
        assert_eq!(a.to_bytes(), ea.to_bytes(), "approximate={approximate}");
        assert_eq!(b.to_bytes(), eb.to_bytes(), "approximate={approximate}");
        // A layer and its gradient: gelu joins the product's epilogue, and the backward
        // pass multiplies by the saved derivative.
        let xc = x.clone();
        let loss = move |(w1, w2): &(Array, Array)| {
            lax::gelu(&xc.matmul(w1), approximate).matmul(w2).sum()
        };
        let f = Jit::new(kiln::value_and_grad(loss.clone()));
        let params = (w.clone(), data(&[48, 8], 4, DType::F32));
        let text = f.lower(&params).compile().to_string();
        assert!(text.lines().any(|l| l.contains("dot_general") && l.contains("-> gelu")), "{text}");
        let ((l, (g1, g2)), (el, (e1, e2))) =
            (f.call(&params), kiln::value_and_grad(loss)(&params));
        close(&l, &el, 1e-5);
        close(&g1, &e1, 1e-5);
        close(&g2, &e2, 1e-5);
    }
}

#[test]
fn layer_norm_backward_recomputes_what_its_input_gives() {
    // The backward pass of `x -> layer_norm(x) * s + b` reads `2 (x - mean)` and the
    // normalized `x`; both come from `x` (an input) and per-row values, so the forward
    // group writes only its output, not three full-size values. `x - mean` is read by
    // several backward groups: once some recompute it, the producer writes it for the
    // others alone, and the next round of rematerialization has them recompute it too.
    let x = data(&[64, 32], 5, DType::F32);
    let loss = |(x, w, s, b): &(Array, Array, Array, Array)| {
        let c = x - x.mean_axes([-1], true);
        let var = c.square().mean_axes([-1], true);
        ((c * (var + 1e-5f32).rsqrt() * s + b).matmul(w)).square().sum()
    };
    let f = Jit::new(kiln::grad(loss));
    let args =
        (x, data(&[32, 8], 6, DType::F32), data(&[32], 7, DType::F32), data(&[32], 8, DType::F32));
    let lowered = f.lower(&args);
    let shapes: std::collections::HashMap<String, String> = lowered
        .to_string()
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(':')?;
            Some((name.to_string(), rest.split_whitespace().next()?.to_string()))
        })
        .collect();
    let text = lowered.compile().to_string();
    let fwd = text.lines().find(|l| l.contains("rsqrt")).expect("a layer-norm group");
    let outs = fwd.split(" = ").next().unwrap_or("").split_whitespace().skip(1);
    let full = outs.filter(|o| shapes.get(*o).is_some_and(|s| s == "f32[64,32]")).count();
    assert!(full <= 1, "the forward group writes its output only:\n{text}");
    let (g, e) = (f.call(&args), kiln::grad(loss)(&args));
    for (a, b) in [(&g.0, &e.0), (&g.1, &e.1), (&g.2, &e.2), (&g.3, &e.3)] {
        close(a, b, 1e-4);
    }
}

#[test]
fn empty_contractions_still_run_their_epilogue() {
    // `[4, 0] @ [0, 3]` is all zeros; the fused bias + relu must still run on it.
    let w = Array::zeros([0, 3]);
    let b = data(&[3], 5, DType::F32);
    let (wc, bc) = (w.clone(), b.clone());
    let f = Jit::new(move |x: &Array| (x.matmul(&wc) + &bc).relu());
    let x = Array::zeros([4, 0]);
    let text = f.lower(&x).compile().to_string();
    assert!(text.contains("dot_general") && text.contains("->"), "an epilogue:\n{text}");
    close(&f.call(&x), &(x.matmul(&w) + &b).relu(), 0.0);
}

#[test]
fn runs_the_same_from_the_callers_thread_and_from_inside_rayons_pool() {
    // A weight gradient `x^T @ dy` long enough to be split along its contraction, with a
    // fused update epilogue, and a product split over threads: executables run their
    // kernels on a pool thread, whichever thread calls them.
    let step = |t: &(Array, Array, Array)| {
        let g = lax::dot_general(&t.0, &t.1, ((&[0], &[0]), (&[], &[])));
        (&t.2 - g * 0.1f32, t.0.matmul(&t.2).tanh())
    };
    let args = (
        data(&[1100, 40], 1, DType::F32),
        data(&[1100, 30], 2, DType::F32),
        data(&[40, 30], 3, DType::F32),
    );
    let eager = step(&args);
    let outside = Jit::new(step).call(&args);
    let inside = rayon::scope(|_| Jit::new(step).call(&args));
    close(&outside.0, &eager.0, 1e-4);
    close(&outside.1, &eager.1, 1e-4);
    assert_eq!(outside.0.to_f64_vec(), inside.0.to_f64_vec());
    assert_eq!(outside.1.to_f64_vec(), inside.1.to_f64_vec());
}

#[test]
fn concurrent_calls_from_several_threads_agree_with_eager() {
    // Each top-level call keeps the pool's other threads spinning while it runs; calls
    // from several user threads at once share the pool (a run's kernels may execute on
    // a thread that spins for another run) and must all finish with the right values.
    fn step(t: &(Array, Array)) -> (Array, Array) {
        ((t.0.matmul(&t.1) + 1.0f32).tanh().sum_axes([1], false), t.0.exp().sum())
    }
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let args = (data(&[600, 200], 1, DType::F32), data(&[200, 300], 2, DType::F32));
                let (jitted, eager) = (Jit::new(step), step(&args));
                let first = jitted.call(&args);
                close(&first.0, &eager.0, 1e-4);
                close(&first.1, &eager.1, 1e-4);
                for _ in 0..25 {
                    let got = jitted.call(&args);
                    assert_eq!(got.0.to_f64_vec(), first.0.to_f64_vec());
                    assert_eq!(got.1.to_f64_vec(), first.1.to_f64_vec());
                }
            });
        }
    });
}

#[test]
fn tall_products_run_their_epilogue_block_by_block() {
    // [2088, 64] @ [64, 128] + bias, relu: a tall product with a fused epilogue runs in
    // blocks of rows (the last one ragged), each finished while in cache.
    let f = |t: &(Array, Array, Array)| (t.0.matmul(&t.1) + &t.2).relu();
    let args = (
        data(&[2088, 64], 1, DType::F32),
        data(&[64, 128], 2, DType::F32),
        data(&[128], 3, DType::F32),
    );
    let jitted = Jit::new(f);
    close(&jitted.call(&args), &f(&args), 1e-5);
    let compiled = jitted.lower(&args).compile();
    assert_eq!(compiled.executable().num_steps(), 1, "{compiled}");
}

fn layer_norm(x: &Array) -> Array {
    let mean = x.mean_axes([-1], true);
    let c = x - &mean;
    let var = c.square().mean_axes([-1], true);
    c * (var + 1e-5).rsqrt()
}

/// Rows that fit a tile run a softmax or a layer norm as one pass: the reductions' results
/// (row values) feed the rest of the row in the same tile, through the non-finite fix-up
/// of the softmax's max, reshapes and broadcasts. Row values returned from the group (a
/// max, a boolean, a keep-dims mean) and rows longer than a tile (no row values: several
/// passes) match eager, including rows of `-inf` and rows with some `-inf`.
#[test]
fn softmax_and_layer_norm_run_row_by_row_in_one_pass() {
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
        for inner in [1usize, 5, 64, 128, 513, 1024, 1025] {
            let rows = 301; // several work items of several tiles, with a ragged last tile
            let mut v = data(&[rows, inner], 21, dtype).to_f64_vec();
            v[3 * inner..4 * inner].fill(f64::NEG_INFINITY);
            for x in v[4 * inner..5 * inner].iter_mut().step_by(2) {
                *x = f64::NEG_INFINITY;
            }
            let x = Array::from_f64_vec(&v, [rows, inner], dtype);
            let f = |x: &Array| {
                let m = x.max_axes([1], false);
                (x.softmax(-1), m.clone(), lax::is_finite(&m), x.mean_axes([1], true))
            };
            let (s1, m1, b1, a1) = jit(f)(&x);
            let (s2, m2, b2, a2) = f(&x);
            close(&s1, &s2, tol);
            close(&m1, &m2, 0.0);
            assert_eq!(b1.to_f64_vec(), b2.to_f64_vec(), "inner {inner}");
            close(&a1, &a2, tol);
            let finite = data(&[rows, inner], 22, dtype);
            close(&jit(layer_norm)(&finite), &layer_norm(&finite), tol * 10.0);
            // One pass when the rows fit a tile.
            let sm = Jit::new(|x: &Array| x.softmax(-1));
            let c = sm.lower(&x).compile();
            let one_pass = inner <= 1024; // rows up to a tile (`fused::TILE`)
            assert_eq!(c.executable().num_steps() == 1, one_pass, "inner {inner}: {c}");
            let ln = Jit::new(layer_norm);
            let c = ln.lower(&finite).compile();
            assert_eq!(c.executable().num_steps() == 1, one_pass, "inner {inner}: {c}");
        }
    }
    // Gradients through the row-wise groups, jit vs eager.
    let x = data(&[37, 128], 23, DType::F32);
    let w = data(&[128], 24, DType::F32);
    let loss = |w: &Array, x: &Array| (layer_norm(x) * w).softmax(-1).square().sum();
    let want = grad(|(w, x): &(Array, Array)| loss(w, x))(&(w.clone(), x.clone()));
    let got = jit(grad(move |(w, x): &(Array, Array)| loss(w, x)))(&(w, x));
    close(&got.0, &want.0, 1e-4);
    close(&got.1, &want.1, 1e-4);
}

/// Lines of the compiled program that run a reduction as a kernel of its own.
fn reduce_kernels(text: &str) -> usize {
    text.lines().filter(|l| l.contains("= kernel reduce_")).count()
}

#[test]
fn column_reductions_fold_into_the_group_that_computes_them() {
    // `sum(x * y + 1, axes=[0, 1])` (a bias gradient's shape): one pass that never writes
    // the product; a max over the same axes alike.
    let (x, y) = (data(&[48, 20, 24], 1, DType::F32), data(&[48, 20, 24], 2, DType::F32));
    let f = |(x, y): &(Array, Array)| {
        let t = (x * y + 1.0f32).tanh();
        (lax::reduce_sum(&t, &[0, 1]), lax::reduce_max(&(x * y), &[0, 1]))
    };
    let args = (x, y);
    let c = Jit::new(f).lower(&args).compile();
    let text = c.to_string();
    assert_eq!(reduce_kernels(&text), 0, "{text}");
    assert_eq!(c.executable().num_steps(), 1, "one group computes both:\n{text}");
    let (got, want) = (Jit::new(f).call(&args), f(&args));
    close(&got.0, &want.0, 1e-5);
    close(&got.1, &want.1, 0.0);
    // Work items depend only on the shape: the same bits on one thread as on four.
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        pool.install(|| Jit::new(f).call(&args)).0.to_f64_vec()
    };
    assert_eq!(on(1), on(4));
}

#[test]
fn column_reductions_fold_into_a_group_that_reads_their_operand() {
    // The bias gradient `sum(dy)` of an input `dy` that the ReLU's backward pass reads
    // whole joins that pass; with `dy` donated, the pass writes its output over `dy` and
    // the sum must still see the old values.
    let f = |(dy, x): &(Array, Array)| {
        (lax::reduce_sum(dy, &[0]), lax::select(&x.gt(0.0f32), dy, &Array::zeros_like(dy)) * 2.0f32)
    };
    let args = (data(&[300, 96], 3, DType::F32), data(&[300, 96], 4, DType::F32));
    let jf = Jit::new(f);
    let text = jf.lower(&args).compile().to_string();
    assert_eq!(reduce_kernels(&text), 0, "{text}");
    let want = f(&args);
    drop(args);
    // Arrays nothing else references, so the executable may overwrite them.
    let got = jf.call_donated((data(&[300, 96], 3, DType::F32), data(&[300, 96], 4, DType::F32)));
    close(&got.0, &want.0, 1e-5);
    close(&got.1, &want.1, 0.0);
}

#[test]
fn column_reductions_stay_kernels_where_rows_do_not_fit() {
    // Kept columns wider than a tile (2048), and columns that differ from the rows of the
    // group's own row reduction (8 vs 16 * 8): kernels, with the same values.
    let f = |(x, y): &(Array, Array)| {
        let t = (x * y).exp();
        (lax::reduce_sum(&t, &[0]), lax::reduce_sum(&(x + y).sin(), &[0]))
    };
    let args = (data(&[6, 2048], 5, DType::F32), data(&[6, 2048], 6, DType::F32));
    let text = Jit::new(f).lower(&args).compile().to_string();
    assert_eq!(reduce_kernels(&text), 2, "{text}");
    let (got, want) = (Jit::new(f).call(&args), f(&args));
    close(&got.0, &want.0, 1e-5);
    close(&got.1, &want.1, 1e-5);
    let g = |(x, y): &(Array, Array)| {
        let t = (x * y).exp();
        let m = t.sum_axes([-1], true);
        (lax::reduce_sum(&(&t / m), &[0]), lax::reduce_sum(&(&t * 3.0f32), &[0, 1]))
    };
    let args = (data(&[10, 16, 8], 7, DType::F32), data(&[10, 16, 8], 8, DType::F32));
    let text = Jit::new(g).lower(&args).compile().to_string();
    assert_eq!(reduce_kernels(&text), 1, "the [0] sum keeps 16 * 8 columns:\n{text}");
    let (got, want) = (Jit::new(g).call(&args), g(&args));
    close(&got.0, &want.0, 1e-5);
    close(&got.1, &want.1, 1e-5);
}
