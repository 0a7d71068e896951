#!/usr/bin/env python3
"""Runs the same workloads in kiln (eager) and JAX on this machine, in one session, and
prints the figures side by side with kiln/JAX ratios. JAX runs eager (no jit) for every
workload; where a workload also has a jitted JAX variant, it gets a second row.

Usage: python3 bench/compare.py [workload-substring]
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
    return out


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


def main():
    k = kiln_results()
    j = jax_results()
    higher_is_better = {"GB/s", "GFLOP/s", "ex/s"}
    w = 43
    print(f"{'workload':{w}} {'metric':8} {'kiln':>10} {'JAX':>10} {'kiln vs JAX':>12}")
    for name, (metric, kv) in k.items():
        # The eager JAX figure, then any variant (e.g. "name [jit]") of the same workload.
        for jname in [name] + sorted(n for n in j if n.startswith(name + " [")):
            jv = j.get(jname, (metric, float("nan")))[1]
            speedup = kv / jv if metric in higher_is_better else jv / kv
            label = name if jname == name else "  vs JAX " + jname[len(name) + 1:]
            print(f"{label:{w}} {metric:8} {kv:10.3f} {jv:10.3f} {speedup:11.2f}x")
    print("(kiln vs JAX > 1 means kiln is faster; kiln is always eager; JAX eager unless marked "
          "[jit]; same machine, same run)")


if __name__ == "__main__":
    main()
