#!/usr/bin/env python3
"""Runs the same workloads in kiln and JAX on this machine, in one session, and
prints the figures side by side with kiln/JAX ratios. JAX runs eager (no jit) for every
workload; where a workload also has a jitted JAX variant, it gets a second row.

Rows listed in TWINS (kiln-nn/kiln-optim versions of a hand-written kiln workload) compare
with the JAX program of the workload they re-implement and with the hand-written kiln row.

Usage: python3 bench/compare.py [workload-substring]  (e.g. `mlp_step` for both MLP steps)
Needs: `pip install jax==0.10.2` (CPU). Builds kiln-bench in release mode first.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

only = sys.argv[1] if len(sys.argv) > 1 else ""


def med(f, warmup, reps):
    for _ in range(warmup):
        f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def jax_results():
    import jax
    import jax.numpy as jnp

    out = {}
    if "dispatch" in only or not only:
        x = jnp.ones(8, jnp.float32)
        y = jnp.ones(8, jnp.float32)
        t = med(lambda: (x + y).block_until_ready(), 1000, 20001)
        out["dispatch_add_f32[8]"] = ("us/op", t * 1e6)
    if "fused_sum" in only or not only:
        n = 10_000_000
        k = jax.random.split(jax.random.key(0), 3)
        x, y, z = (jax.random.normal(kk, (n,), jnp.float32) for kk in k)
        t = med(lambda: (x + y * z).sum().block_until_ready(), 2, 11)
        out["sum(x+y*z)_f32[10M]"] = ("GB/s", 12 * n / t / 1e9)
    if "matmul" in only or not only:
        k = jax.random.split(jax.random.key(1), 2)
        a, b = (jax.random.normal(kk, (1024, 1024), jnp.float32) for kk in k)
        t = med(lambda: (a @ b).block_until_ready(), 2, 11)
        out["matmul_f32_1024^3"] = ("GFLOP/s", 2 * 1024**3 / t / 1e9)
    if "mlp_grad" in only or not only:
        sizes = [784, 512, 512, 10]
        ks = jax.random.split(jax.random.key(2), 4)
        params = [
            (jax.random.normal(ks[i], (sizes[i], sizes[i + 1]), jnp.float32) / np.sqrt(sizes[i]),
             jnp.zeros(sizes[i + 1], jnp.float32))
            for i in range(3)
        ]
        x = jax.random.normal(ks[3], (128, 784), jnp.float32)
        labels = jnp.arange(128) % 10

        def loss(p):
            h = x
            for i, (w, b) in enumerate(p):
                h = h @ w + b
                if i < 2:
                    h = jax.nn.relu(h)
            lp = jax.nn.log_softmax(h, -1)
            return -jnp.take_along_axis(lp, labels[:, None], -1).mean()

        g = jax.grad(loss)
        t = med(lambda: jax.block_until_ready(g(params)), 3, 21)
        out["grad_mlp_784-512-512-10_b128"] = ("ms/step", t * 1e3)
    if "per_example" in only or not only:
        B = 128
        sizes = [784, 128, 10]
        ks = jax.random.split(jax.random.key(3), 3)
        params = [
            (jax.random.normal(ks[i], (sizes[i], sizes[i + 1]), jnp.float32) / np.sqrt(sizes[i]),
             jnp.zeros(sizes[i + 1], jnp.float32))
            for i in range(2)
        ]
        xs = jax.random.normal(ks[2], (B, 784), jnp.float32)
        ys = jax.nn.one_hot(jnp.arange(B) % 10, 10, dtype=jnp.float32)

        def loss(p, x, y):
            h = jax.nn.relu(x @ p[0][0] + p[0][1])
            logits = h @ p[1][0] + p[1][1]
            return -(jax.nn.log_softmax(logits, -1) * y).sum()

        per_example = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))
        assert per_example(params, xs, ys)[0][0].shape == (B, 784, 128)
        name = "per_example_grad_mlp_784-128-10_b128"
        t = med(lambda: jax.block_until_ready(per_example(params, xs, ys)), 3, 21)
        out[name] = ("ex/s", B / t)
        jitted = jax.jit(per_example)
        t = med(lambda: jax.block_until_ready(jitted(params, xs, ys)), 3, 21)
        out[name + " [jit]"] = ("ex/s", B / t)
    if "fused_sum" in only or not only:
        n = 10_000_000
        k = jax.random.split(jax.random.key(0), 3)
        x, y, z = (jax.random.normal(kk, (n,), jnp.float32) for kk in k)
        f = jax.jit(lambda x, y, z: (x + y * z).sum())
        t = med(lambda: f(x, y, z).block_until_ready(), 2, 11)
        out["sum(x+y*z)_f32[10M] [jit]"] = ("GB/s", 12 * n / t / 1e9)
    if "mlp_step" in only or not only:
        sizes = [784, 512, 512, 10]
        ks = jax.random.split(jax.random.key(5), 4)
        params = []
        for i in range(3):
            params += [jax.random.normal(ks[i], (sizes[i], sizes[i + 1]), jnp.float32)
                       / np.sqrt(sizes[i]), jnp.zeros(sizes[i + 1], jnp.float32)]
        x = jax.random.normal(ks[3], (128, 784), jnp.float32)
        y = jax.nn.one_hot(jnp.arange(128) % 10, 10, dtype=jnp.float32)

        def loss(p, x, y):
            h = x
            for i in range(3):
                h = h @ p[2 * i] + p[2 * i + 1]
                if i < 2:
                    h = jax.nn.relu(h)
            return -(jax.nn.log_softmax(h, -1) * y).sum(1).mean()

        step_bench(out, "mlp_step_784-512-512-10_b128_adam [jit]", params, (x, y), loss)
    if "lm_step" in only or not only:
        # The GPT of examples/shakespeare-transformer.toml, as kiln-train's Transformer.
        V, T, D, H, L, B = 65, 64, 128, 4, 4, 32
        ks = iter(jax.random.split(jax.random.key(7), 64))
        nrm = lambda shape, s: jax.random.normal(next(ks), shape, jnp.float32) * s
        params = [nrm((V, D), 0.02), nrm((T, D), 0.02)]
        for _ in range(L):
            params += [jnp.ones(D), jnp.zeros(D)]
            for _ in range(4):
                params += [nrm((D, D), D ** -0.5), jnp.zeros(D)]
            params += [jnp.ones(D), jnp.zeros(D)]
            params += [nrm((D, 4 * D), D ** -0.5), jnp.zeros(4 * D),
                       nrm((4 * D, D), (4 * D) ** -0.5), jnp.zeros(D)]
        params += [jnp.ones(D), jnp.zeros(D), nrm((D, V), D ** -0.5), jnp.zeros(V)]
        x = jnp.asarray((np.arange(B * T) * 7 + 13) % V, jnp.int32).reshape(B, T)
        y = jnp.asarray((np.arange(B * T) * 7 + 26) % V, jnp.int32).reshape(B, T)
        mask = jnp.tril(jnp.ones((T, T), bool))

        def ln(h, s, b):
            m = h.mean(-1, keepdims=True)
            v = ((h - m) ** 2).mean(-1, keepdims=True)
            return (h - m) * jax.lax.rsqrt(v + 1e-6) * s + b

        def loss(p, x, y):
            h = p[0][x] + p[1][:T]
            i = 2
            for _ in range(L):
                a = ln(h, p[i], p[i + 1])
                q, k, v = (a @ p[i + 2 + 2 * j] + p[i + 3 + 2 * j] for j in range(3))
                q, k, v = (t.reshape(B, T, H, D // H) for t in (q, k, v))
                w = jnp.einsum("bqhd,bkhd->bhqk", q / np.sqrt(D // H), k)
                w = jax.nn.softmax(jnp.where(mask, w, jnp.finfo(jnp.float32).min), -1)
                o = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(B, T, D)
                h = h + o @ p[i + 8] + p[i + 9]
                m = ln(h, p[i + 10], p[i + 11])
                h = h + jax.nn.gelu(m @ p[i + 12] + p[i + 13]) @ p[i + 14] + p[i + 15]
                i += 16
            logits = ln(h, p[i], p[i + 1]) @ p[i + 2] + p[i + 3]
            return -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), y[..., None], -1).mean()

        step_bench(out, "lm_step_gpt4x128_ctx64_b32_adam [jit]", params, (x, y), loss)
    if "cnn_step" in only or not only:
        b, c1, c2 = 64, 32, 64
        ks = jax.random.split(jax.random.key(6), 5)
        he = lambda k, shape, fan_in: jax.random.normal(k, shape, jnp.float32) * np.sqrt(2 / fan_in)
        params = [he(ks[0], (3, 3, 1, c1), 9), jnp.zeros(c1),
                  he(ks[1], (3, 3, c1, c2), 9 * c1), jnp.zeros(c2),
                  he(ks[2], (7 * 7 * c2, 128), 7 * 7 * c2), jnp.zeros(128),
                  he(ks[3], (128, 10), 128), jnp.zeros(10)]
        x = jax.random.normal(ks[4], (b, 28, 28, 1), jnp.float32)
        y = jax.nn.one_hot(jnp.arange(b) % 10, 10, dtype=jnp.float32)
        dn = ("NHWC", "HWIO", "NHWC")

        def loss(p, x, y):
            def pool(h):
                return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            conv = lambda h, w: jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=dn)
            h = pool(jax.nn.relu(conv(x, p[0]) + p[1]))
            h = pool(jax.nn.relu(conv(h, p[2]) + p[3]))
            h = h.reshape(x.shape[0], -1)
            h = jax.nn.relu(h @ p[4] + p[5])
            logits = h @ p[6] + p[7]
            return -(jax.nn.log_softmax(logits, -1) * y).sum(1).mean()

        step_bench(out, "cnn_step_28x28_b64_adam [jit]", params, (x, y), loss)
    return out


def step_bench(out, name, params, batch, loss):
    """A jitted train step with Adam written by hand (as in kiln-bench), donated state."""
    import jax
    import jax.numpy as jnp
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8

    def step(state, batch):
        p, m, v, t = state
        l, g = jax.value_and_grad(loss)(p, *batch)
        t1 = t + 1
        c1 = 1 - b1 ** t1
        c2 = 1 - b2 ** t1
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        p = jax.tree.map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), p, m, v)
        return (p, m, v, t1), l

    jstep = jax.jit(step, donate_argnums=0)
    zeros = [jnp.zeros_like(a) for a in params]
    state = (params, zeros, [jnp.zeros_like(a) for a in params], jnp.float32(0))
    t0 = time.perf_counter()
    state, l = jstep(state, batch)
    l.block_until_ready()
    first = time.perf_counter() - t0
    box = [state]

    def one():
        box[0], l = jstep(box[0], batch)
        l.block_until_ready()

    t = med(one, 3, 21)
    out[name] = ("ms/step", t * 1e3)
    out[name + " compile"] = ("s", first - t)


def kiln_results():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-bench"], check=True, cwd=root)
    args = [os.path.join(target, "release", "kiln-bench")] + ([only] if only else [])
    lines = subprocess.run(args, check=True, capture_output=True, text=True).stdout.splitlines()
    out = {}
    for line in lines:
        r = json.loads(line)
        out[r["workload"]] = (r["metric"], r["value"])
    return out


# kiln workloads without a JAX program of their own: they compare with the JAX row of the
# workload they re-implement, and also with that kiln row (printed as "vs kiln <row>").
# nn_mlp_step is mlp_step written with kiln-nn (Mlp) and kiln-optim (adam): the library
# version must cost no more than the hand-written one.
TWINS = {
    "nn_mlp_step_784-512-512-10_b128_adam [jit]": "mlp_step_784-512-512-10_b128_adam [jit]",
}


def twin_of(name):
    """The workload `name` re-implements (its " compile" row maps to the twin's), or None."""
    for ours, theirs in TWINS.items():
        if name == ours:
            return theirs
        if name == ours + " compile":
            return theirs + " compile"
    return None


def main():
    k = kiln_results()
    j = jax_results()
    higher_is_better = {"GB/s", "GFLOP/s", "ex/s"}
    w = 45

    def ratio(metric, ours, theirs):
        return ours / theirs if metric in higher_is_better else theirs / ours

    print(f"{'workload':{w}} {'metric':8} {'kiln':>10} {'JAX':>10} {'kiln vs JAX':>12}")
    for name, (metric, kv) in k.items():
        twin = twin_of(name)
        # The eager JAX figure, then any variant (e.g. "name [jit]") of the same workload;
        # kiln rows marked [jit] compare with JAX's [jit] row of the same name.
        variants = [] if "[jit]" in name else sorted(n for n in j if n.startswith(name + " ["))
        for jname in [name] + variants:
            jv = j.get(twin or jname, (metric, float("nan")))[1]
            label = name if jname == name else "  vs JAX " + jname[len(name) + 1:]
            print(f"{label:{w}} {metric:8} {kv:10.3f} {jv:10.3f} {ratio(metric, kv, jv):11.2f}x")
        if twin is not None:
            hv = k.get(twin, (metric, float("nan")))[1]
            label = "  vs kiln hand-written"
            print(f"{label:{w}} {metric:8} {kv:10.3f} {hv:10.3f} {ratio(metric, kv, hv):11.2f}x"
                  "  (2nd figure: kiln's hand-written step, not JAX)")
    print("(kiln vs JAX > 1 means kiln is faster; rows marked [jit] are compiled in both, "
          "the others eager in both unless the JAX variant is marked [jit]; same machine, "
          "same run)")


if __name__ == "__main__":
    main()
