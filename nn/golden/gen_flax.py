"""Golden values for kiln-nn (writes nn.json next to this file).

Pinned: jax==0.10.2. Flax is not installed in this environment, so every reference is
computed with plain jax.numpy / jax.lax formulas that replicate the Flax (linen) and Optax
semantics of each layer/loss (the formula used is written next to each entry). Weights and
inputs are fixed numbers from numpy's RandomState(0) and are stored in the JSON, so the
Rust tests load them instead of using kiln's PRNG.

Run: python3 nn/golden/gen_flax.py
"""

import json
import os

import jax

assert jax.__version__ == "0.10.2", jax.__version__
import jax.numpy as jnp
import numpy as np
from jax import lax

rng = np.random.RandomState(0)
out = {}


def arr(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def put(name, a):
    a = np.asarray(a)
    out[name] = {"shape": list(a.shape), "data": [float(v) for v in a.reshape(-1)]}


def put_int(name, a):
    a = np.asarray(a)
    out[name] = {"shape": list(a.shape), "data": [int(v) for v in a.reshape(-1)]}


NHWC = ("NHWC", "HWIO", "NHWC")

# Linear (flax.linen.Dense): x @ kernel + bias, leading dims kept.
x, w, b = arr(2, 3, 4), arr(4, 5), arr(5)
put("linear.x", x), put("linear.weight", w), put("linear.bias", b)
put("linear.y", jnp.dot(x, w) + b)

# Conv2d (flax.linen.Conv, padding SAME, strides 2).
x, k, b = arr(2, 7, 7, 3), arr(3, 3, 3, 4), arr(4)
put("conv.x", x), put("conv.kernel", k), put("conv.bias", b)
put("conv.y", lax.conv_general_dilated(x, k, (2, 2), "SAME", dimension_numbers=NHWC) + b)

# Grouped, dilated conv (feature_group_count=2, kernel_dilation=2, VALID).
x, k = arr(1, 8, 8, 4), arr(3, 3, 2, 6)
put("conv_g.x", x), put("conv_g.kernel", k)
put(
    "conv_g.y",
    lax.conv_general_dilated(
        x, k, (1, 1), "VALID", rhs_dilation=(2, 2), dimension_numbers=NHWC, feature_group_count=2
    ),
)

# ConvTranspose2d (flax.linen.ConvTranspose, transpose_kernel=False): lax.conv_transpose.
x, k, b = arr(1, 3, 3, 2), arr(3, 3, 2, 3), arr(3)
put("convt.x", x), put("convt.kernel", k), put("convt.bias", b)
put("convt.y", lax.conv_transpose(x, k, (2, 2), "SAME", dimension_numbers=NHWC) + b)

# Pooling (flax.linen.max_pool / avg_pool): window 3, strides 2, SAME; avg divides by the
# full window size (count_include_pad=True).
x = arr(2, 5, 5, 3)
put("pool.x", x)
win, st = (1, 3, 3, 1), (1, 2, 2, 1)
put("pool.max", lax.reduce_window(x, -jnp.inf, lax.max, win, st, "SAME"))
put("pool.avg", lax.reduce_window(x, 0.0, lax.add, win, st, "SAME") / 9.0)
put("pool.max_valid", lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"))

# LayerNorm (epsilon 1e-6): (x - mean) / sqrt(var + eps) * scale + bias over the last axis.
x, s, b = arr(3, 6), arr(6), arr(6)
put("layernorm.x", x), put("layernorm.scale", s), put("layernorm.bias", b)
m = x.mean(-1, keepdims=True)
v = ((x - m) ** 2).mean(-1, keepdims=True)
put("layernorm.y", (x - m) * lax.rsqrt(v + 1e-6) * s + b)

# RMSNorm (epsilon 1e-6).
put("rmsnorm.y", x * lax.rsqrt((x**2).mean(-1, keepdims=True) + 1e-6) * s)

# GroupNorm (num_groups=2, epsilon 1e-6) on [N, H, W, C].
x, s, b = arr(2, 3, 3, 4), arr(4), arr(4)
put("groupnorm.x", x), put("groupnorm.scale", s), put("groupnorm.bias", b)
xg = x.reshape(2, 3, 3, 2, 2)
m = xg.mean((1, 2, 4), keepdims=True)
v = ((xg - m) ** 2).mean((1, 2, 4), keepdims=True)
put("groupnorm.y", ((xg - m) * lax.rsqrt(v + 1e-6)).reshape(x.shape) * s + b)

# Embedding (flax.linen.Embed): table[ids].
t = arr(5, 3)
ids = np.array([[0, 4], [2, 2]], dtype=np.int32)
put("embed.table", t), put_int("embed.ids", ids), put("embed.y", t[ids])

# MultiHeadDotProductAttention (2 heads, head_dim 3, causal mask), projections flattened
# to [6, 6] kernels: q = (x @ Wq + bq).reshape(.., 2, 3) etc.
x = arr(2, 4, 6)
put("mha.x", x)
proj = {}
for n in ["query", "key", "value", "out"]:
    proj[n] = (arr(6, 6, scale=0.5), arr(6, scale=0.1))
    put(f"mha.{n}.weight", proj[n][0]), put(f"mha.{n}.bias", proj[n][1])


def heads(t):
    return t.reshape(*t.shape[:-1], 2, 3)


q = heads(x @ proj["query"][0] + proj["query"][1])
kk = heads(x @ proj["key"][0] + proj["key"][1])
vv = heads(x @ proj["value"][0] + proj["value"][1])
logits = jnp.einsum("...qhd,...khd->...hqk", q / np.sqrt(3.0).astype(np.float32), kk)
mask = jnp.tril(jnp.ones((4, 4), bool))
logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
wts = jax.nn.softmax(logits, -1)
o = jnp.einsum("...hqk,...khd->...qhd", wts, vv).reshape(2, 4, 6)
put("mha.y", o @ proj["out"][0] + proj["out"][1])

# Activations (jax.nn).
a = np.linspace(-4, 4, 17).astype(np.float32)
put("act.x", a)
put("act.gelu_tanh", jax.nn.gelu(a, approximate=True))
put("act.gelu_exact", jax.nn.gelu(a, approximate=False))
put("act.silu", jax.nn.silu(a))
put("act.elu", jax.nn.elu(a))
put("act.softplus", jax.nn.softplus(a))
put("act.leaky_relu", jax.nn.leaky_relu(a, 0.01))

# Losses (optax semantics, written out).
logits, labels = arr(4, 5), np.array([0, 3, 4, 1], dtype=np.int32)
put("loss.logits", logits), put_int("loss.labels", labels)
logp = jax.nn.log_softmax(logits, -1)
onehot = jax.nn.one_hot(labels, 5)
put("loss.ce_int", -(onehot * logp).sum(-1))
smooth = onehot * 0.9 + 0.1 / 5
put("loss.ce_smooth", -(smooth * logp).sum(-1))
pred, target = arr(4, 5), arr(4, 5)
put("loss.pred", pred), put("loss.target", target)
put("loss.mse", ((pred - target) ** 2).mean())
put("loss.mae", jnp.abs(pred - target).mean())
err = jnp.abs(pred - target)
q_ = jnp.minimum(err, 1.0)
put("loss.huber", 0.5 * q_**2 + 1.0 * (err - q_))
probs = (rng.uniform(size=(4, 5))).astype(np.float32)
put("loss.probs", probs)
put(
    "loss.bce",
    -probs * jax.nn.log_sigmoid(pred) - (1 - probs) * jax.nn.log_sigmoid(-pred),
)
tgt = jax.nn.softmax(target, -1)
put("loss.kl", (tgt * (jnp.log(tgt) - logp)).sum(-1))
put("metric.accuracy", (logits.argmax(-1) == labels).mean())

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nn.json")
with open(path, "w") as f:
    json.dump(out, f, indent=0)
print(f"wrote {path} ({len(out)} arrays)")
