//! [`MultiHeadAttention`] (Flax's `MultiHeadDotProductAttention`) and masks.

use crate::linear::{Linear, LinearConfig};
use kiln::{Array, DType, Tree, lax, random, where_};

/// A causal mask `[len, len]` (bool): position `i` attends to positions `j <= i`.
pub fn causal_mask(len: usize) -> Array {
    let i = lax::iota(DType::I32, &[len, len], 0);
    let j = lax::iota(DType::I32, &[len, len], 1);
    lax::ge(&i, &j)
}

/// Scaled dot-product attention on `q [.., Lq, H, D]`, `k [.., Lk, H, D]`, `v [.., Lk, H,
/// Dv]` with an optional bool `mask` broadcastable to `[.., H, Lq, Lk]` (`true` = attend).
/// Returns `[.., Lq, H, Dv]`. Logits are scaled by `1/sqrt(D)`; masked logits get the
/// dtype's lowest value, as in Flax.
#[track_caller]
pub fn dot_product_attention(q: &Array, k: &Array, v: &Array, mask: Option<&Array>) -> Array {
    let nd = q.ndim();
    assert!(nd >= 3, "dot_product_attention: q {:?} needs [.., L, H, D]", q.shape());
    let d = q.shape()[nd - 1];
    let batch: Vec<usize> = (0..nd - 3).collect();
    // Bring the heads in front of the sequence: [.., H, L, D].
    let mut perm = batch.clone();
    perm.extend([nd - 2, nd - 3, nd - 1]);
    // The queries are scaled before the transpose, so that under `jit` the transposes fold
    // into the products (which then read the heads in place).
    let q_scaled = q * (1.0 / (d as f64).sqrt());
    let (qt, kt, vt) = (q_scaled.transpose(&perm), k.transpose(&perm), v.transpose(&perm));
    let mut bdims = batch.clone();
    bdims.push(nd - 3);
    let logits = lax::dot_general(&qt, &kt, ((&[nd - 1], &[nd - 1]), (&bdims, &bdims)));
    let logits = match mask {
        Some(m) => {
            let lowest = match logits.dtype() {
                DType::F64 => f64::MIN,
                _ => f32::MIN as f64,
            };
            where_(m, &logits, lowest)
        }
        None => logits,
    };
    let weights = logits.softmax(-1);
    // [.., H, Lq, Lk] x [.., H, Lk, Dv] -> [.., H, Lq, Dv]
    let out = lax::dot_general(&weights, &vt, ((&[nd - 1], &[nd - 2]), (&bdims, &bdims)));
    out.transpose(&perm)
}

/// Multi-head attention with query, key, value and output projections.
///
/// `query`, `key`, `value` are `Linear(d_model -> heads * head_dim)` (their kernels are
/// Flax's `[d_model, heads, head_dim]` kernels flattened), `out` is `Linear(heads *
/// head_dim -> d_model)`.
#[derive(Clone, Debug, Tree)]
pub struct MultiHeadAttention {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Output projection.
    pub out: Linear,
    /// Number of heads.
    #[tree(static)]
    pub num_heads: usize,
}

impl MultiHeadAttention {
    /// `num_heads` heads over `d_model` features (`head_dim = d_model / num_heads`), with
    /// lecun-normal kernels and zero biases.
    #[track_caller]
    pub fn new(key: &Array, d_model: usize, num_heads: usize) -> MultiHeadAttention {
        assert!(
            num_heads > 0 && d_model.is_multiple_of(num_heads),
            "MultiHeadAttention: d_model = {d_model} is not divisible by num_heads = {num_heads}"
        );
        let ks = random::split_n(key, 4);
        let proj = |k: &Array| LinearConfig::new(d_model, d_model).init(k);
        MultiHeadAttention {
            query: proj(&ks[0]),
            key: proj(&ks[1]),
            value: proj(&ks[2]),
            out: proj(&ks[3]),
            num_heads,
        }
    }

    fn heads(&self, x: &Array) -> Array {
        let mut shape = x.shape().to_vec();
        let f = shape.pop().expect("projection output has a feature axis");
        shape.extend([self.num_heads, f / self.num_heads]);
        x.reshape(&shape)
    }

    /// Attention of `inputs_q [.., Lq, D]` over `inputs_kv [.., Lk, D]` with an optional bool
    /// `mask` broadcastable to `[.., heads, Lq, Lk]`. Returns `[.., Lq, D]`.
    pub fn forward_qkv(&self, inputs_q: &Array, inputs_kv: &Array, mask: Option<&Array>) -> Array {
        let q = self.heads(&self.query.forward(inputs_q));
        let k = self.heads(&self.key.forward(inputs_kv));
        let v = self.heads(&self.value.forward(inputs_kv));
        let o = dot_product_attention(&q, &k, &v, mask);
        let mut shape = o.shape().to_vec();
        let dh = shape.pop().expect("attention output has a head_dim axis");
        let h = shape.pop().expect("attention output has a heads axis");
        shape.push(h * dh);
        self.out.forward(&o.reshape(&shape))
    }

    /// Self-attention of `x [.., L, D]` with an optional mask.
    pub fn forward(&self, x: &Array, mask: Option<&Array>) -> Array {
        self.forward_qkv(x, x, mask)
    }

    /// Causal self-attention of `x [.., L, D]`: each position attends to itself and earlier.
    pub fn forward_causal(&self, x: &Array) -> Array {
        let len = x.shape()[x.ndim() - 2];
        self.forward(x, Some(&causal_mask(len)))
    }
}
