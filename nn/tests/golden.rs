//! Values against JAX references (`nn/golden/gen_flax.py`, jax 0.10.2, Flax semantics).

use kiln::testing::assert_allclose;
use kiln::{Array, DType};
use kiln_nn::*;
use serde_json::Value;

struct Golden(Value);

impl Golden {
    fn load() -> Golden {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/golden/nn.json");
        let text = std::fs::read_to_string(path).expect("read nn/golden/nn.json");
        Golden(serde_json::from_str(&text).expect("parse nn.json"))
    }

    fn entry(&self, name: &str) -> (Vec<usize>, Vec<f64>) {
        let e = &self.0[name];
        let shape = e["shape"].as_array().unwrap_or_else(|| panic!("no golden {name}"));
        let shape = shape.iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let data = e["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        (shape, data)
    }

    fn f32(&self, name: &str) -> Array {
        let (shape, data) = self.entry(name);
        Array::from_f64_vec(&data, shape, DType::F32)
    }

    fn i32(&self, name: &str) -> Array {
        let (shape, data) = self.entry(name);
        Array::from_f64_vec(&data, shape, DType::I32)
    }
}

fn close(got: &Array, want: &Array) {
    assert_allclose(got, want, 1e-4, 1e-5);
}

#[test]
fn linear_conv_pool() {
    let g = Golden::load();
    let l = Linear { weight: g.f32("linear.weight"), bias: Some(g.f32("linear.bias")) };
    close(&l.forward(&g.f32("linear.x")), &g.f32("linear.y"));

    let mut c = ConvConfig::new(3, 4, [3, 3]).strides([2, 2]).init(&kiln::random::key(0));
    c.kernel = g.f32("conv.kernel");
    c.bias = Some(g.f32("conv.bias"));
    close(&c.forward(&g.f32("conv.x")), &g.f32("conv.y"));

    let cg = Conv2d {
        kernel: g.f32("conv_g.kernel"),
        bias: None,
        strides: [1, 1],
        padding: Padding::Valid,
        dilation: [2, 2],
        groups: 2,
    };
    close(&cg.forward(&g.f32("conv_g.x")), &g.f32("conv_g.y"));

    let t = ConvTranspose2d {
        kernel: g.f32("convt.kernel"),
        bias: Some(g.f32("convt.bias")),
        strides: [2, 2],
        padding: Padding::Same,
        dilation: [1, 1],
    };
    close(&t.forward(&g.f32("convt.x")), &g.f32("convt.y"));

    let x = g.f32("pool.x");
    close(&MaxPool2d::with([3, 3], [2, 2], Padding::Same).forward(&x), &g.f32("pool.max"));
    close(&AvgPool2d::with([3, 3], [2, 2], Padding::Same).forward(&x), &g.f32("pool.avg"));
    close(&MaxPool2d::new([2, 2]).forward(&x), &g.f32("pool.max_valid"));
}

#[test]
fn norms_embedding_attention() {
    let g = Golden::load();
    let x = g.f32("layernorm.x");
    let ln = LayerNorm {
        scale: Some(g.f32("layernorm.scale")),
        bias: Some(g.f32("layernorm.bias")),
        epsilon: 1e-6,
    };
    close(&ln.forward(&x), &g.f32("layernorm.y"));
    let rms = RMSNorm { scale: g.f32("layernorm.scale"), epsilon: 1e-6 };
    close(&rms.forward(&x), &g.f32("rmsnorm.y"));
    let mut gn = GroupNorm::new(2, 4);
    gn.scale = g.f32("groupnorm.scale");
    gn.bias = g.f32("groupnorm.bias");
    close(&gn.forward(&g.f32("groupnorm.x")), &g.f32("groupnorm.y"));

    let e = Embedding { weight: g.f32("embed.table") };
    close(&e.forward(&g.i32("embed.ids")), &g.f32("embed.y"));

    let lin = |n: &str| Linear {
        weight: g.f32(&format!("mha.{n}.weight")),
        bias: Some(g.f32(&format!("mha.{n}.bias"))),
    };
    let mha = MultiHeadAttention {
        query: lin("query"),
        key: lin("key"),
        value: lin("value"),
        out: lin("out"),
        num_heads: 2,
    };
    close(&mha.forward_causal(&g.f32("mha.x")), &g.f32("mha.y"));
}

#[test]
fn activations_losses_metrics() {
    let g = Golden::load();
    let a = g.f32("act.x");
    close(&activation::gelu(&a), &g.f32("act.gelu_tanh"));
    close(&activation::gelu_exact(&a), &g.f32("act.gelu_exact"));
    close(&activation::silu(&a), &g.f32("act.silu"));
    close(&activation::elu(&a, 1.0), &g.f32("act.elu"));
    close(&activation::softplus(&a), &g.f32("act.softplus"));
    close(&activation::leaky_relu(&a, 0.01), &g.f32("act.leaky_relu"));

    let logits = g.f32("loss.logits");
    let labels = g.i32("loss.labels");
    close(
        &loss::softmax_cross_entropy_with_integer_labels(&logits, &labels),
        &g.f32("loss.ce_int"),
    );
    close(
        &loss::softmax_cross_entropy_with_label_smoothing(&logits, &labels, 0.1),
        &g.f32("loss.ce_smooth"),
    );
    let (p, t) = (g.f32("loss.pred"), g.f32("loss.target"));
    close(&loss::mse(&p, &t), &g.f32("loss.mse"));
    close(&loss::mae(&p, &t), &g.f32("loss.mae"));
    close(&loss::huber_loss(&p, &t, 1.0), &g.f32("loss.huber"));
    close(&loss::sigmoid_binary_cross_entropy(&p, &g.f32("loss.probs")), &g.f32("loss.bce"));
    close(&loss::kl_divergence(&logits.log_softmax(-1), &t.softmax(-1)), &g.f32("loss.kl"));
    close(&metric::accuracy(&logits, &labels), &g.f32("metric.accuracy"));
}
