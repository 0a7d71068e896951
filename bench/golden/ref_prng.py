# Pure-NumPy reference implementation of JAX 0.10.2's default PRNG
# (threefry2x32, jax_threefry_partitionable=True, no x64), written from the
# algorithm description in bench/golden/README.md.  It does NOT import jax.
#
#   python bench/golden/ref_prng.py        # checks every case in prng.json
#
# EVERY case must match bit-exactly, including normal / truncated_normal /
# gumbel: XLA:CPU's float32 log, log1p, erf and erf_inv are ported below
# op-for-op, including the places where XLA:CPU's LLVM backend contracts
# a*b+c into one fused multiply-add (FMA).  A libm-based port (ln_1p, erf
# from libm) is typically within 1-3 ULP instead.
import json
import math
import os
import sys

import numpy as np

U32 = np.uint32
M32 = 0xFFFFFFFF


# ------------------------------------------------------------ threefry2x32
def rotl(x, r):
    return ((x << U32(r)) | (x >> U32(32 - r))).astype(U32)


def threefry2x32(k0, k1, x0, x1):
    """Threefry-2x32 with 20 rounds.  k0,k1: uint32 scalars; x0,x1: uint32 arrays."""
    with np.errstate(over="ignore"):
        k0 = U32(k0); k1 = U32(k1)
        x0 = np.asarray(x0, U32).copy(); x1 = np.asarray(x1, U32).copy()
        ks = [k0, k1, U32(k0 ^ k1 ^ U32(0x1BD11BDA))]
        R = [[13, 15, 26, 6], [17, 29, 16, 24]]
        x0 = x0 + ks[0]
        x1 = x1 + ks[1]
        for i in range(5):
            for r in R[i % 2]:
                x0 = x0 + x1
                x1 = rotl(x1, r)
                x1 = x1 ^ x0
            x0 = x0 + ks[(i + 1) % 3]
            x1 = x1 + ks[(i + 2) % 3] + U32(i + 1)
        return x0.astype(U32), x1.astype(U32)


def iota_hi_lo(shape):
    n = int(np.prod(shape, dtype=np.int64))
    c = np.arange(n, dtype=np.uint64)
    return (c >> np.uint64(32)).astype(U32).reshape(shape), (c & np.uint64(M32)).astype(U32).reshape(shape)


# ------------------------------------------------------------ key ops
def key_from_seed(seed):
    # x32 mode (default): hi word = 0, lo word = seed mod 2^32 (any Python int in int64 range).
    # (x64 mode would give [ (seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF ] for int64 seeds.)
    return np.array([0, seed & M32], U32)


def split(key, shape):
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    hi, lo = iota_hi_lo(shape)
    b0, b1 = threefry2x32(key[0], key[1], hi, lo)
    return np.stack([b0, b1], axis=-1)


def fold_in(key, data):
    b0, b1 = threefry2x32(key[0], key[1], np.array([0], U32), np.array([data & M32], U32))
    return np.array([b0[0], b1[0]], U32)


def random_bits(key, bit_width, shape):
    shape = tuple(shape)
    hi, lo = iota_hi_lo(shape)
    b0, b1 = threefry2x32(key[0], key[1], hi, lo)
    if bit_width == 64:
        return (b0.astype(np.uint64) << np.uint64(32)) | b1.astype(np.uint64)
    x = b0 ^ b1
    return x.astype({8: np.uint8, 16: np.uint16, 32: np.uint32}[bit_width])


# ------------------------------------------------------------ legacy (jax_threefry_partitionable=False)
def threefry_2x32_flat(key, counts):
    """jax._src.random.threefry2x32.threefry_2x32: hash a flat uint32 count array."""
    counts = np.asarray(counts, U32).reshape(-1)
    n = counts.size
    padded = np.concatenate([counts, np.zeros(n % 2, U32)])
    half = padded.size // 2
    y0, y1 = threefry2x32(key[0], key[1], padded[:half], padded[half:])
    return np.concatenate([y0, y1])[:n]


def split_legacy(key, num):
    n = int(np.prod(num))
    return threefry_2x32_flat(key, np.arange(2 * n, dtype=U32)).reshape(*np.atleast_1d(num), 2)


def random_bits_legacy32(key, shape):
    n = int(np.prod(shape, dtype=np.int64))
    return threefry_2x32_flat(key, np.arange(n, dtype=U32)).reshape(shape)


# ------------------------------------------------------------ float32 helpers
F = np.float32


def h(u):
    """float32 from its uint32 bit pattern."""
    return np.uint32(u).view(F)


def mul(a, b):
    return (np.asarray(a, F) * np.asarray(b, F)).astype(F)


def add(a, b):
    return (np.asarray(a, F) + np.asarray(b, F)).astype(F)


def fma(a, b, c):
    """Correctly rounded float32 fused multiply-add a*b+c (= Rust f32::mul_add).

    a*b is exact in f64; the f64 sum is made round-to-odd so the final f64->f32
    rounding is correct (no double-rounding)."""
    a = np.asarray(a, F).astype(np.float64); b = np.asarray(b, F).astype(np.float64)
    c = np.asarray(c, F).astype(np.float64)
    p = a * b
    with np.errstate(invalid="ignore", over="ignore"):
        s = p + c
        bb = s - p
        err = (p - (s - bb)) + (c - bb)           # TwoSum error term
        odd = (np.asarray(s).view(np.uint64) & np.uint64(1)) == 1
        fix = (err != 0) & ~odd & np.isfinite(s)
        s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return np.asarray(s).astype(F)


# ------------------------------------------------------------ XLA:CPU f32 math (bit-exact ports)
def xla_log(y):
    """XLA:CPU float32 log (Eigen/Cephes plog_float), including its FMA contraction."""
    y = np.asarray(y, F)
    m = np.where(y > h(0x00800000), y, h(0x00800000)).astype(F)   # clamp to FLT_MIN
    bits = m.view(np.uint32)
    e = add(((bits >> np.uint32(23)).astype(np.int32) - 127).astype(F), F(1))
    f = ((bits & np.uint32(0x807FFFFF)) | np.uint32(0x3F000000)).view(F)  # mantissa in [0.5,1)
    lt = f < h(0x3F3504F3)                                   # sqrt(0.5)
    x = add(add(f, F(-1)), np.where(lt, f, F(0)))            # (f - 1) + (lt ? f : 0)
    e = (e - np.where(lt, F(1), F(0))).astype(F)
    z = mul(x, x)
    z3 = mul(z, x)
    y1 = fma(fma(x, h(0x3D9021BB), h(0xBDEBD1B8)), x, h(0x3DEF251A))
    y2 = fma(fma(x, h(0xBDFE5D4F), h(0x3E11E9BF)), x, h(0xBE2AAE50))
    y3 = fma(fma(x, h(0x3E4CCEAC), h(0xBE7FFFFC)), x, h(0x3EAAAAAA))
    p = fma(y1, z3, y2)
    p = fma(p, z3, y3)
    p = fma(p, z3, mul(e, h(0xB95E8083)))                    # p*z3 + e*(-2.12194440e-4)
    r = add(fma(z, F(-0.5), x), p)                           # (x - 0.5*z) + p
    r = fma(e, h(0x3F318000), r)                             # + e*0.693359375
    with np.errstate(invalid="ignore"):
        r = np.where(y < 0, F(np.nan), r)
        r = np.where(y == 0, F(-np.inf), r)
        r = np.where(y == np.inf, F(np.inf), r)
        r = np.where(np.isnan(y), F(np.nan), r)
    return r.astype(F)


def xla_log1p(x):
    """XLA:CPU float32 log1p: rational approximation for |x| < sqrt(2)-1, else log(1+x)."""
    x = np.asarray(x, F)
    big = xla_log(add(x, F(1)))
    x2 = mul(x, x)
    d = F(1)
    for c in [0x417101AD, 0x42A6185B, 0x435DC32D, 0x439A8CA3, 0x43586D8A, 0x42707982]:
        d = fma(d, x, h(c))
    n = F(4.527e-05)    # 0x383DE04B
    for c in [0x3EFF40C5, 0x40D284FA, 0x41EF4B9C, 0x4273CC76, 0x426473AD, 0x41A05101]:
        n = fma(n, x, h(c))
    r = (n / d).astype(F)
    small = add(x, fma(x2, F(-0.5), mul(mul(x, x2), r)))     # x + (-(0.5*x2) + (x*x2)*r)
    return np.where(np.abs(x) < h(0x3ED413CD), small, big).astype(F)


def xla_erf(x):
    """XLA:CPU float32 erf: odd rational polynomial, clamped to +-1 for |x| >= 3.832."""
    x = np.asarray(x, F)
    x2 = mul(x, x)
    p = fma(x2, h(0x39702D51), h(0x3B5F5DA2))
    for c in [0x3D50B6EB, 0x3E3DA740, 0x3F906EBA]:
        p = fma(x2, p, h(c))
    q = fma(x2, h(0xB3FD3906), h(0x37C588DF))
    for c in [0x3A856D28, 0x3C6687D4, 0x3DE34C21, 0x3EFEB44A, 0x3F800000]:
        q = fma(x2, q, h(c))
    r = (mul(x, p) / q).astype(F)
    return np.where(np.abs(x) >= h(0x407547CB), np.copysign(F(1), x), r).astype(F)


ERFINV_LT5 = [2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
              0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941]
ERFINV_GE5 = [-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844,
              0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682]


def xla_erfinv(x):
    """chlo.erf_inv f32 (Giles' polynomial), Horner steps fused into FMAs."""
    x = np.asarray(x, F)
    w = (-xla_log1p(mul(x, -x))).astype(F)                  # w = -log1p(-x*x)
    lt = w < F(5.0)
    ww = np.where(lt, add(w, F(-2.5)), add(np.sqrt(w).astype(F), F(-3.0))).astype(F)
    p = np.where(lt, F(ERFINV_LT5[0]), F(ERFINV_GE5[0])).astype(F)
    for i in range(1, 9):
        p = fma(p, ww, np.where(lt, F(ERFINV_LT5[i]), F(ERFINV_GE5[i])))
    res = mul(p, x)
    with np.errstate(invalid="ignore"):
        return np.where(np.abs(x) == F(1), x * F(np.inf), res).astype(F)


# ------------------------------------------------------------ samplers (float32)
SQRT2 = F(np.sqrt(2))   # 1.4142135f = 0x3FB504F3


def uniform(key, shape, minval=0.0, maxval=1.0):
    minval = F(minval); maxval = F(maxval)
    bits = random_bits(key, 32, shape)
    fb = (bits >> U32(32 - 23)) | U32(0x3F800000)
    floats = add(fb.view(F), F(-1.0))
    span = add(maxval, -minval)                               # maxval - minval, in f32
    out = fma(floats, span, minval)                           # XLA:CPU contracts to ONE fma
    return np.maximum(minval, out).astype(F)


def normal(key, shape):
    lo = np.nextafter(F(-1.0), F(0.0))                        # -0.99999994f
    u = uniform(key, shape, lo, 1.0)
    return mul(SQRT2, xla_erfinv(u))


def truncated_normal(key, lower, upper, shape):
    lower = F(lower); upper = F(upper)
    a = xla_erf((lower / SQRT2).astype(F))
    b = xla_erf((upper / SQRT2).astype(F))
    u = uniform(key, shape, a, b)
    out = mul(SQRT2, xla_erfinv(u))
    return np.clip(out, np.nextafter(lower, F(np.inf)), np.nextafter(upper, F(-np.inf))).astype(F)


def bernoulli(key, p, shape):
    return uniform(key, shape) < F(p)


def gumbel(key, shape):
    tiny = F(np.finfo(F).tiny)
    u = uniform(key, shape, tiny, 1.0)
    return (-xla_log(-xla_log(u))).astype(F)


def categorical(key, logits, axis=-1, shape=None):
    logits = np.asarray(logits, F)
    batch_shape = tuple(np.delete(logits.shape, axis))
    shape = batch_shape if shape is None else tuple(shape)
    prefix = shape[:len(shape) - len(batch_shape)]
    ax = axis - logits.ndim if axis >= 0 else axis
    lshape = list(shape[len(shape) - len(batch_shape):])
    lshape.insert(ax % logits.ndim, logits.shape[ax])
    g = gumbel(key, (*prefix, *lshape))
    return np.argmax(g + logits.reshape((1,) * len(prefix) + logits.shape), axis=ax).astype(np.int32)


def randint(key, shape, minval, maxval):
    # int32 path (maxval <= int32 max so "maxval_out_of_range" is false)
    k1, k2 = split(key, 2)
    hi = random_bits(k1, 32, shape).astype(np.uint64)
    lo = random_bits(k2, 32, shape).astype(np.uint64)
    span = (maxval - minval) & M32 if maxval > minval else 1
    span = np.uint64(span)
    mult = np.uint64(2**16) % span
    mult = ((mult * mult) & np.uint64(M32)) % span   # uint32 multiply WRAPS (-> 0 when span > 2^16)
    off = ((hi % span) * mult + (lo % span)) & np.uint64(M32)   # uint32 wrap-around
    off = off % span
    return ((np.int64(minval) + off.astype(np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32)


def shuffle(key, x, axis=0):
    x = np.asarray(x)
    n = x.size
    rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(2**32 - 1)))
    for _ in range(rounds):
        ks = split(key, 2); key, sub = ks[0], ks[1]
        sk = random_bits(sub, 32, x.shape)
        order = np.argsort(sk, axis=axis, kind="stable")
        x = np.take_along_axis(x, order, axis=axis)
    return x


def permutation(key, x, axis=0):
    if np.ndim(x) == 0:
        return shuffle(key, np.arange(int(x)), 0).astype(np.int32)
    x = np.asarray(x)
    if x.ndim == 1:
        return shuffle(key, x, axis)
    ind = shuffle(key, np.arange(x.shape[axis], dtype=np.int32), 0)
    return np.take(x, ind, axis=axis)


# ------------------------------------------------------------ checking
def decode(o):
    shape = tuple(o["shape"])
    dt = np.dtype(o["dtype"])
    if dt == np.float32:
        return np.array(o["bits"], np.uint32).view(F).reshape(shape)
    return np.array(o["values"], dt).reshape(shape)


def ulp_dist(a, b):
    a = np.asarray(a, F).view(np.int32).astype(np.int64)
    b = np.asarray(b, F).view(np.int32).astype(np.int64)
    a = np.where(a < 0, -(a & 0x7FFFFFFF), a)
    b = np.where(b < 0, -(b & 0x7FFFFFFF), b)
    return int(np.max(np.abs(a - b))) if a.size else 0


def run(case):
    op, key, p = case["op"], np.array(case["key"], U32), case["params"]
    if op in ("split", "split_prngkey"):
        return split(key, p["num"])
    if op == "fold_in":
        return fold_in(key, p["data"])
    if op == "bits":
        return random_bits(key, np.dtype(p["dtype"]).itemsize * 8, p["shape"])
    if op == "uniform":
        return uniform(key, p["shape"], p["minval"], p["maxval"])
    if op == "normal":
        return normal(key, p["shape"])
    if op == "truncated_normal":
        return truncated_normal(key, p["lower"], p["upper"], p["shape"])
    if op == "randint":
        return randint(key, p["shape"], p["minval"], p["maxval"])
    if op == "bernoulli":
        return bernoulli(key, p["p"], p["shape"])
    if op == "gumbel":
        return gumbel(key, p["shape"])
    if op == "categorical":
        return categorical(key, decode(p["logits"]), p["axis"], p["shape"])
    if op == "permutation":
        return permutation(key, p["n"])
    if op == "permutation_array":
        return permutation(key, decode(p["x"]), p["axis"])
    raise KeyError(op)


def run_chain(name):
    K = key_from_seed
    if name == "split_uniform":
        k1, k2 = split(K(0), 2)
        return {"k1": k1, "k2": k2, "u": uniform(k2, (3,))}
    if name == "split_loop_normal":
        k = K(42)
        k, sub = split(k, 2); n1 = normal(sub, (2, 3))
        k, sub = split(k, 2); n2 = normal(sub, (4,))
        return {"n1": n1, "n2": n2, "k_final": k}
    if name == "mlp_init":
        # NB: XLA:CPU evaluates `array / broadcast_scalar` as array * (1/scalar)
        ks = split(K(0), 4)
        return {"ks": ks,
                "w1": (normal(ks[0], (4, 3)) / F(2)).astype(F), "b1": normal(ks[1], (3,)),
                "w2": mul(normal(ks[2], (3, 2)), (F(1) / np.sqrt(F(3))).astype(F)), "b2": normal(ks[3], (2,))}
    if name == "fold_in_split_mixed":
        k = fold_in(K(1), 3)
        ka, kb, kc = split(k, 3)
        return {"k": k, "u": uniform(ka, (4,), -1.0, 1.0), "r": randint(kb, (6,), 0, 100),
                "p": permutation(kc, 8)}
    if name == "repeated_split_first":
        k = K(7)
        for _ in range(3):
            k = split(k, 2)[0]
        return {"k": k, "b": random_bits(k, 32, (4,))}
    if name == "dropout_mask":
        _, kdrop = split(K(123456789), 2)
        return {"keep": bernoulli(kdrop, 0.8, (2, 5))}
    raise KeyError(name)


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prng.json")
    doc = json.load(open(path))
    bad = 0
    for r in doc["threefry2x32"]:
        y = threefry2x32(r["key"][0], r["key"][1], np.array([r["x"][0]], U32), np.array([r["x"][1]], U32))
        if [int(y[0][0]), int(y[1][0])] != r["y"]:
            print("threefry mismatch", r); bad += 1
    for k in doc["keys"]:
        if list(map(int, key_from_seed(k["seed"]))) != k["key_data"] or k["key_data"] != k["prngkey"]:
            print("key mismatch", k); bad += 1
    stats = {}
    for c in doc["cases"]:
        want = decode(c["out"])
        got = np.asarray(run(c)).reshape(want.shape)
        if want.dtype == np.float32:
            d = ulp_dist(got.astype(F), want)
            stats.setdefault(c["op"], []).append(d)
            if d > 0:
                print("MISMATCH", c["op"], c["seed"], c["params"], "ulp", d); bad += 1
        else:
            ok = np.array_equal(got.astype(want.dtype), want)
            stats.setdefault(c["op"], []).append(0 if ok else 1)
            if not ok:
                print("MISMATCH", c["op"], c["seed"], c["params"]); bad += 1
    for c in doc["legacy_nonpartitionable"]["cases"]:
        key, p = np.array(c["key"], U32), c["params"]
        want = decode(c["out"])
        if c["op"] == "split":
            got = split_legacy(key, p["num"])
        elif c["op"] == "fold_in":
            got = fold_in(key, p["data"])
        elif c["op"] == "bits":
            got = random_bits_legacy32(key, tuple(p["shape"]))
        elif c["op"] == "uniform":
            b = random_bits_legacy32(key, tuple(p["shape"]))
            got = add(((b >> U32(9)) | U32(0x3F800000)).view(F), F(-1))
        ok = np.array_equal(np.asarray(got).reshape(want.shape).view(want.dtype) if want.dtype == F
                            else np.asarray(got).reshape(want.shape), want)
        stats.setdefault("legacy_" + c["op"], []).append(0 if ok else 1)
        if not ok:
            print("MISMATCH legacy", c["op"], c["seed"], c["params"]); bad += 1
    for ch in doc["chains"]:
        got = run_chain(ch["name"])
        for name, o in ch["outputs"].items():
            want = decode(o)
            g = np.asarray(got[name]).reshape(want.shape)
            ok = np.array_equal(g.view(np.uint32) if want.dtype == F else g.astype(want.dtype),
                                want.view(np.uint32) if want.dtype == F else want)
            stats.setdefault("chain", []).append(0 if ok else 1)
            if not ok:
                print("MISMATCH chain", ch["name"], name); bad += 1
    for op, v in stats.items():
        print(f"{op:20s} cases={len(v):3d} max_err={max(v)}"
              + (" (ULP)" if op in ("uniform", "normal", "truncated_normal", "gumbel") else " (cases mismatched)"))
    print("FAILURES:", bad)
    return bad


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
