# NumPy-only cross-check of ad.json (does not import jax): re-implements every
# formula string from the JSON in plain NumPy float64, checks "value" exactly
# up to rtol 1e-12, and checks grad / jvp / hvp / Jacobians against central
# finite differences (rtol ~1e-6).  Proves the formula strings are complete.
#
#   python bench/golden/check_ad.py
import json
import os
import sys

import numpy as np


def lse(z, axis=None, keepdims=False):
    m = np.max(z, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(z - m), axis=axis, keepdims=True))
    return out if keepdims else (np.squeeze(out, axis=axis) if axis is not None else out.reshape(()))


def conv_same(x, w):
    n, H, W, C = x.shape
    kh, kw, _, O = w.shape
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((n, H, W, O))
    for i in range(H):
        for j in range(W):
            out[:, i, j, :] = np.einsum("nhwc,hwco->no", xp[:, i:i + kh, j:j + kw, :], w)
    return out


def ln_norm(x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5)


FNS = {
    "tanh_sum": lambda x: np.sum(np.tanh(x)),
    "softplus_mean": lambda x: np.mean(np.log1p(np.exp(x))),
    "logsumexp": lambda x: float(lse(x)),
    "mlp": lambda w1, b1, w2, x: np.sum((np.tanh(x @ w1 + b1) @ w2) ** 2),
    "softmax_xent": lambda logits, labels: np.mean(
        -(logits - lse(logits, -1, True))[np.arange(len(labels)), labels]),
    "sin_cos_prod": lambda x, y: np.sum(np.sin(x) * np.cos(y)),
    "div_sqrt": lambda x, y: np.sum(x / np.sqrt(1 + y * y)),
    "max_reduce": lambda x: np.sum(np.max(x, axis=1)),
    "pow_exp": lambda x: np.sum(x * x * x * np.exp(-x)),
    "matmul_chain": lambda a, b, c: np.sum((a @ b) @ c),
    "norm": lambda x: np.sqrt(np.sum(x * x)),
    "where_relu": lambda x: np.sum(np.where(x > 0, x, 0.1 * x) ** 2),
    "layernorm": lambda x, w: np.sum(ln_norm(x) * w),
    "conv2d": lambda x, w: np.sum(conv_same(x, w) ** 2),
    "cumsum": lambda x: np.sum(np.cumsum(x) ** 2),
}
VFNS = {
    "vec_tanh_mul": lambda x: np.tanh(x) * x[::-1],
    "vec_softmax": lambda x: np.exp(x - x.max()) / np.sum(np.exp(x - x.max())),
    "vec_outer": lambda x: np.outer(x, x).ravel(),
}


def dec(o):
    return np.array(o["values"], dtype=o["dtype"]).reshape(o["shape"])


def close(a, b, rtol, atol, what):
    a = np.asarray(a, np.float64); b = np.asarray(b, np.float64)
    if not np.allclose(a, b, rtol=rtol, atol=atol):
        print("  MISMATCH", what, "max abs diff", np.max(np.abs(a - b)))
        return 1
    return 0


def fd_grad(f, args, i, eps=1e-6):
    x = args[i]
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp = x.copy(); xm = x.copy()
        xp[idx] += eps; xm[idx] -= eps
        ap = list(args); am = list(args); ap[i] = xp; am[i] = xm
        g[idx] = (f(*ap) - f(*am)) / (2 * eps)
    return g


def main():
    doc = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ad.json")))
    bad = 0
    for e in doc["functions"]:
        f = FNS[e["name"]]
        args = [dec(a) for a in e["args"]]
        names = [a["name"] for a in e["args"]]
        diff = [i for i, a in enumerate(e["args"]) if a["differentiable"]]
        bad += close(f(*args), e["value"], 1e-12, 1e-14, e["name"] + " value")
        for i in diff:
            bad += close(fd_grad(f, args, i), dec(e["grad"][names[i]]), 1e-6, 1e-7,
                         e["name"] + " grad " + names[i])
        # jvp = <grad, tangent>
        t = sum(np.sum(dec(e["grad"][names[i]]) * dec(e["jvp"]["tangents"][names[i]])) for i in diff)
        bad += close(t, e["jvp"]["tangent_out"], 1e-12, 1e-13, e["name"] + " jvp")
        # hvp by finite differences of the analytic-by-FD gradient along v
        eps = 1e-4
        ap = list(args); am = list(args)
        for i in diff:
            v = dec(e["hvp"]["vectors"][names[i]])
            ap[i] = args[i] + eps * v; am[i] = args[i] - eps * v
        for i in diff:
            hv = (fd_grad(f, ap, i, 1e-5) - fd_grad(f, am, i, 1e-5)) / (2 * eps)
            bad += close(hv, dec(e["hvp"]["out"][names[i]]), 1e-4, 1e-5, e["name"] + " hvp " + names[i])
        print(f"{e['name']:14s} ok" if not bad else f"{e['name']:14s} (bad so far: {bad})")
    for e in doc["vector_functions"]:
        f = VFNS[e["name"]]
        x = dec(e["args"][0])
        bad += close(f(x), dec(e["value"]), 1e-12, 1e-14, e["name"] + " value")
        J = np.stack([fd_grad(lambda z: f(z)[k], [x], 0) for k in range(f(x).size)])
        bad += close(J, dec(e["jacfwd"]), 1e-6, 1e-7, e["name"] + " jacfwd")
        bad += close(dec(e["jacrev"]), dec(e["jacfwd"]), 1e-12, 1e-15, e["name"] + " jacrev")
        bad += close(dec(e["jacfwd"]) @ dec(e["jvp"]["tangent"]), dec(e["jvp"]["out"]), 1e-12, 1e-14,
                     e["name"] + " jvp")
        bad += close(dec(e["vjp"]["cotangent"]) @ dec(e["jacfwd"]), dec(e["vjp"]["out"]), 1e-12, 1e-14,
                     e["name"] + " vjp")
        print(f"{e['name']:14s} ok" if not bad else f"{e['name']:14s} (bad so far: {bad})")
    print("FAILURES:", bad)
    return bad


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
