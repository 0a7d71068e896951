# Golden PRNG values for kiln, generated with JAX on CPU.
#
# Pinned: jax==0.10.2 (jaxlib 0.10.2).  Run with the DEFAULT JAX config
# (no jax_enable_x64): x64 changes how integer seeds are canonicalized and
# the default dtypes, so this script refuses to run with x64 enabled.
#
#   pip install jax==0.10.2 numpy
#   JAX_PLATFORMS=cpu python bench/golden/gen_prng.py
#
# Writes bench/golden/prng.json (schema: see bench/golden/README.md).
import json
import math
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
import jax
import jax.numpy as jnp
from jax import random as jr

PINNED = "0.10.2"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prng.json")

assert not jax.config.jax_enable_x64, "PRNG goldens must be generated WITHOUT x64"
if jax.__version__ != PINNED:
    print(f"WARNING: jax {jax.__version__} != pinned {PINNED}", file=sys.stderr)

SEEDS = [0, 1, 42, 2**31 - 1, 123456789]
BIG_SEEDS = [0, 42]  # seeds used for arrays with >= 100 elements (size budget)
EXTRA_SEEDS = [-1, 2**32 + 5]  # documents seed -> key_data in x32 mode (wraps mod 2^32)


def is_big(shape):
    return math.prod(shape) >= 100


def seeds_for(shape):
    return BIG_SEEDS if is_big(shape) else SEEDS


def arr(x):
    """Encode an array: shape, dtype, flat values (+ exact bit patterns for floats)."""
    x = np.asarray(x)
    d = {"shape": list(x.shape), "dtype": str(x.dtype)}
    flat = x.reshape(-1)
    if x.dtype == np.float32:
        d["bits"] = [int(v) for v in flat.view(np.uint32)]
        # shortest decimal that round-trips *as float32*
        d["values"] = [float(str(np.float32(v))) for v in flat]
    elif x.dtype == np.float64:
        d["bits"] = [int(v) for v in flat.view(np.uint64)]
        d["values"] = [float(v) for v in flat]
    elif x.dtype == np.bool_:
        d["values"] = [bool(v) for v in flat]
    else:
        d["values"] = [int(v) for v in flat]
    return d


def kd(k):
    """Key data (uint32[..., 2]) of a typed or legacy key."""
    if jnp.issubdtype(k.dtype, jax.dtypes.prng_key):
        k = jr.key_data(k)
    return np.asarray(k)


def kd_list(k):
    return [int(v) for v in kd(k).reshape(-1)]


cases = []


def add(op, seed, key, params, out, **extra):
    c = {"op": op, "seed": seed, "key": kd_list(key), "params": params, "out": arr(out)}
    c.update(extra)
    cases.append(c)


# ---------------------------------------------------------------- keys
keys_section = []
for s in SEEDS + EXTRA_SEEDS:
    k = jr.key(s)
    pk = jr.PRNGKey(s)
    keys_section.append({
        "seed": s,
        "key_data": kd_list(k),          # jax.random.key_data(jax.random.key(seed))
        "prngkey": [int(v) for v in np.asarray(pk)],  # jax.random.PRNGKey(seed)
        "key_dtype": str(k.dtype),
        "prngkey_dtype": str(pk.dtype),
    })

# ---------------------------------------------------------------- raw threefry2x32 hash
from jax._src.random import threefry2x32 as _tf

raw = []
raw_inputs = [
    # (key0, key1, x0, x1) -- Random123 known-answer tests are included
    (0x00000000, 0x00000000, 0x00000000, 0x00000000),
    (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
    (0x13198A2E, 0x03707344, 0x243F6A88, 0x85A308D3),
    (0, 42, 0, 0), (0, 42, 0, 1), (0, 42, 1, 0), (0, 0, 0, 7),
]
for k0, k1, x0, x1 in raw_inputs:
    key = (jnp.uint32(k0), jnp.uint32(k1))
    y0, y1 = _tf.threefry2x32_p.bind(key[0], key[1], jnp.array([x0], jnp.uint32),
                                     jnp.array([x1], jnp.uint32))
    raw.append({"key": [k0, k1], "x": [x0, x1], "y": [int(y0[0]), int(y1[0])]})

# ---------------------------------------------------------------- split / fold_in
for s in SEEDS:
    k = jr.key(s)
    for n in [2, 3, 5]:
        add("split", s, k, {"num": n}, kd(jr.split(k, n)))
    for d in [0, 1, 7, 2**31 - 1, 123456]:
        add("fold_in", s, k, {"data": d}, kd(jr.fold_in(k, d)))
k = jr.key(0)
add("split", 0, k, {"num": [2, 3]}, kd(jr.split(k, (2, 3))))
add("split", 42, jr.key(42), {"num": 1}, kd(jr.split(jr.key(42), 1)))
# legacy uint32 key goes through the same path
add("split_prngkey", 0, jr.PRNGKey(0), {"num": 2}, np.asarray(jr.split(jr.PRNGKey(0), 2)))

# ---------------------------------------------------------------- bits
for shape in [(), (1,), (3,), (7,), (4, 5), (2, 3, 4), (1000,)]:
    for s in seeds_for(shape):
        k = jr.key(s)
        add("bits", s, k, {"shape": list(shape), "dtype": "uint32"},
            jr.bits(k, shape, dtype=jnp.uint32))
for dt in ["uint8", "uint16"]:
    for s in [0, 42]:
        k = jr.key(s)
        add("bits", s, k, {"shape": [7], "dtype": dt}, jr.bits(k, (7,), dtype=dt))

# ---------------------------------------------------------------- uniform
for shape in [(), (5,), (3, 4), (1001,)]:
    for (lo, hi) in [(0.0, 1.0), (-2.0, 3.0)]:
        for s in seeds_for(shape):
            k = jr.key(s)
            add("uniform", s, k,
                {"shape": list(shape), "dtype": "float32", "minval": lo, "maxval": hi},
                jr.uniform(k, shape, dtype=jnp.float32, minval=lo, maxval=hi))

# ---------------------------------------------------------------- normal
for shape in [(5,), (3, 4), (1001,)]:
    for s in seeds_for(shape):
        k = jr.key(s)
        add("normal", s, k, {"shape": list(shape), "dtype": "float32"},
            jr.normal(k, shape, dtype=jnp.float32))

# ---------------------------------------------------------------- truncated_normal
for (lo, hi) in [(-2.0, 2.0), (-1.0, 3.0)]:
    for shape in [(5,), (100,)]:
        for s in seeds_for(shape):
            k = jr.key(s)
            add("truncated_normal", s, k,
                {"shape": list(shape), "dtype": "float32", "lower": lo, "upper": hi},
                jr.truncated_normal(k, lo, hi, shape, dtype=jnp.float32))

# ---------------------------------------------------------------- randint
for shape in [(5,), (3, 4), (1000,)]:
    for (lo, hi) in [(0, 10), (-5, 5), (0, 2**31 - 1), (3, 1000)]:
        for s in (seeds_for(shape) if not is_big(shape) else [0]):
            k = jr.key(s)
            add("randint", s, k,
                {"shape": list(shape), "dtype": "int32", "minval": lo, "maxval": hi},
                jr.randint(k, shape, lo, hi, dtype=jnp.int32))
# degenerate: maxval <= minval -> always minval
add("randint", 0, jr.key(0), {"shape": [4], "dtype": "int32", "minval": 5, "maxval": 5},
    jr.randint(jr.key(0), (4,), 5, 5, dtype=jnp.int32))

# ---------------------------------------------------------------- bernoulli
for p in [0.1, 0.5, 0.9]:
    for shape in [(10,), (100,)]:
        for s in seeds_for(shape):
            k = jr.key(s)
            add("bernoulli", s, k, {"shape": list(shape), "p": p, "p_dtype": "float32"},
                jr.bernoulli(k, p, shape))

# ---------------------------------------------------------------- gumbel (used by categorical)
for shape in [(5,), (3, 5)]:
    for s in [0, 1, 42]:
        k = jr.key(s)
        add("gumbel", s, k, {"shape": list(shape), "dtype": "float32", "mode": "low"},
            jr.gumbel(k, shape, dtype=jnp.float32))

# ---------------------------------------------------------------- categorical
rng = np.random.default_rng(0)
logits35 = np.round(rng.normal(size=(3, 5)), 4).astype(np.float32)
logits10 = np.round(rng.normal(size=(10,)), 4).astype(np.float32)
for s in SEEDS:
    k = jr.key(s)
    add("categorical", s, k, {"logits": arr(logits35), "axis": -1, "shape": None},
        jr.categorical(k, jnp.asarray(logits35), axis=-1))
    add("categorical", s, k, {"logits": arr(logits10), "axis": -1, "shape": None},
        jr.categorical(k, jnp.asarray(logits10), axis=-1))
for s in [0, 42]:
    k = jr.key(s)
    add("categorical", s, k, {"logits": arr(logits35), "axis": -1, "shape": [4, 3]},
        jr.categorical(k, jnp.asarray(logits35), axis=-1, shape=(4, 3)))
    add("categorical", s, k, {"logits": arr(logits10), "axis": -1, "shape": [6]},
        jr.categorical(k, jnp.asarray(logits10), axis=-1, shape=(6,)))
    add("categorical", s, k, {"logits": arr(logits35), "axis": 0, "shape": None},
        jr.categorical(k, jnp.asarray(logits35), axis=0))

# ---------------------------------------------------------------- permutation
for n in [1, 5, 10, 100]:
    for s in seeds_for((n,)):
        k = jr.key(s)
        add("permutation", s, k, {"n": n}, jr.permutation(k, n))
add("permutation", 0, jr.key(0), {"n": 2000}, jr.permutation(jr.key(0), 2000))  # 2 rounds
x10 = jnp.arange(10, dtype=jnp.int32)
for s in SEEDS:
    k = jr.key(s)
    add("permutation_array", s, k,
        {"x": arr(np.asarray(x10)), "axis": 0, "independent": False},
        jr.permutation(k, x10, independent=False))
x34 = jnp.arange(12, dtype=jnp.int32).reshape(3, 4)
for s in [0, 42]:
    k = jr.key(s)
    add("permutation_array", s, k, {"x": arr(np.asarray(x34)), "axis": 0, "independent": False},
        jr.permutation(k, x34, axis=0, independent=False))

# ---------------------------------------------------------------- chains
chains = []


def chain(name, code, outs):
    chains.append({"name": name, "code": code,
                   "outputs": {kname: arr(v) for kname, v in outs.items()}})


k1, k2 = jr.split(jr.key(0))
chain("split_uniform",
      "k1, k2 = split(key(0)); u = uniform(k2, (3,))",
      {"k1": kd(k1), "k2": kd(k2), "u": jr.uniform(k2, (3,))})

k = jr.key(42)
k, sub = jr.split(k)
n1 = jr.normal(sub, (2, 3))
k, sub = jr.split(k)
n2 = jr.normal(sub, (4,))
chain("split_loop_normal",
      "k = key(42); k, sub = split(k); n1 = normal(sub, (2,3)); k, sub = split(k); n2 = normal(sub, (4,)); k_final = k",
      {"n1": n1, "n2": n2, "k_final": kd(k)})

# MLP init: split into 4, normal for each; scale 1/sqrt(fan_in); zeros for biases not needed
ks = jr.split(jr.key(0), 4)
w1 = jr.normal(ks[0], (4, 3)) / jnp.sqrt(jnp.float32(4))
b1 = jr.normal(ks[1], (3,))
w2 = jr.normal(ks[2], (3, 2)) / jnp.sqrt(jnp.float32(3))
b2 = jr.normal(ks[3], (2,))
chain("mlp_init",
      "ks = split(key(0), 4); w1 = normal(ks[0], (4,3)) / sqrt(f32(4)); b1 = normal(ks[1], (3,)); "
      "w2 = normal(ks[2], (3,2)) / sqrt(f32(3)); b2 = normal(ks[3], (2,))   "
      "[NB: XLA:CPU computes array/scalar as array * (1/scalar): w2 = n * f32(1/f32(sqrt(3)))]",
      {"ks": kd(ks), "w1": w1, "b1": b1, "w2": w2, "b2": b2})

k = jr.fold_in(jr.key(1), 3)
ka, kb, kc = jr.split(k, 3)
chain("fold_in_split_mixed",
      "k = fold_in(key(1), 3); ka, kb, kc = split(k, 3); u = uniform(ka, (4,), minval=-1, maxval=1); "
      "r = randint(kb, (6,), 0, 100); p = permutation(kc, 8)",
      {"k": kd(k), "u": jr.uniform(ka, (4,), minval=-1.0, maxval=1.0),
       "r": jr.randint(kb, (6,), 0, 100), "p": jr.permutation(kc, 8)})

k = jr.key(7)
for i in range(3):
    k = jr.split(k)[0]
chain("repeated_split_first",
      "k = key(7); for _ in range(3): k = split(k)[0]; b = bits(k, (4,))",
      {"k": kd(k), "b": jr.bits(k, (4,))})

# dropout-style mask
k = jr.key(123456789)
_, kd_ = jr.split(k)
keep = jr.bernoulli(kd_, 0.8, (2, 5))
chain("dropout_mask",
      "_, kdrop = split(key(123456789)); keep = bernoulli(kdrop, 0.8, (2,5))",
      {"keep": keep})

# ---------------------------------------------------------------- legacy non-partitionable
# Only for reference (NOT the default in 0.10.2).
legacy = []
jax.config.update("jax_threefry_partitionable", False)
for s in [0, 42]:
    k = jr.key(s)
    legacy.append({"op": "split", "seed": s, "key": kd_list(k), "params": {"num": 3},
                   "out": arr(kd(jr.split(k, 3)))})
    legacy.append({"op": "fold_in", "seed": s, "key": kd_list(k), "params": {"data": 7},
                   "out": arr(kd(jr.fold_in(k, 7)))})
    for shape in [(), (3,), (7,), (2, 3)]:
        legacy.append({"op": "bits", "seed": s, "key": kd_list(k),
                       "params": {"shape": list(shape), "dtype": "uint32"},
                       "out": arr(jr.bits(k, shape, dtype=jnp.uint32))})
    legacy.append({"op": "uniform", "seed": s, "key": kd_list(k),
                   "params": {"shape": [5], "dtype": "float32", "minval": 0.0, "maxval": 1.0},
                   "out": arr(jr.uniform(k, (5,)))})
jax.config.update("jax_threefry_partitionable", True)

# ---------------------------------------------------------------- write
import jaxlib

def _host_cpu():
    info = {"model": None, "fma": None, "avx2": None, "avx512f": None}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and info["model"] is None:
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                fl = set(line.split(":", 1)[1].split())
                info.update(fma="fma" in fl, avx2="avx2" in fl, avx512f="avx512f" in fl)
                break
    except OSError:
        pass
    return info


doc = {
    "format": "kiln-golden-prng-v1",
    "host_cpu": _host_cpu(),
    "numerics_note": "float32 outputs are bit patterns from XLA:CPU on an FMA-capable x86-64 host: "
                     "XLA:CPU contracts a*b+c into fused multiply-adds (uniform scaling, log/log1p/erf/erf_inv "
                     "polynomials). bench/golden/ref_prng.py reproduces every case bit-exactly without jax.",
    "generator": "bench/golden/gen_prng.py",
    "jax_version": jax.__version__,
    "jaxlib_version": jaxlib.__version__,
    "numpy_version": np.__version__,
    "backend": jax.default_backend(),
    "config": {
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "jax_threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
        "jax_default_prng_impl": str(jax.config.jax_default_prng_impl),
        "jax_enable_custom_prng": bool(jax.config.jax_enable_custom_prng),
        "jax_high_dynamic_range_gumbel": bool(jax.config.jax_high_dynamic_range_gumbel),
        "jax_random_seed_offset": int(jax.config.jax_random_seed_offset),
    },
    "keys": keys_section,
    "threefry2x32": raw,
    "cases": cases,
    "chains": chains,
    "legacy_nonpartitionable": {
        "config": {"jax_threefry_partitionable": False},
        "cases": legacy,
    },
}

with open(OUT, "w") as f:
    json.dump(doc, f, separators=(",", ":"))
    f.write("\n")
print(f"wrote {OUT}: {len(cases)} cases, {len(chains)} chains, "
      f"{os.path.getsize(OUT)} bytes")
