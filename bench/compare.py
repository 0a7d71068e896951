#!/usr/bin/env python3
"""Runs the same workloads in kiln and JAX on this machine, in one session, and
prints the figures side by side with kiln/JAX ratios. JAX runs eager (no jit) for every
workload; where a workload also has a jitted JAX variant, it gets a second row.

Rows listed in TWINS (kiln-nn/kiln-optim versions of a hand-written kiln workload) compare
with the JAX program of the workload they re-implement and with the hand-written kiln row.

PyTorch twins run too when `torch` imports, and get a column of their own (nan without
it): jitted rows compare with `torch.compile`, and train steps also with eager PyTorch.

Usage: python3 bench/compare.py [workload-substring] [--rounds N]
  (e.g. `mlp_step` for both MLP steps; N rounds alternate kiln, JAX and PyTorch, medians)
Needs: `pip install jax==0.10.2` (CPU); optional `pip install torch`. Builds kiln-bench in
release mode first.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

args = sys.argv[1:]
rounds = 1
if "--rounds" in args:
    i = args.index("--rounds")
    rounds = int(args[i + 1])
    del args[i:i + 2]
only = args[0] if args else ""


# Seconds of calls before a row is timed (kiln's bench/src/main.rs warms up as long): the
# machine's throughput ramps up over the first tenths of a second of steady work.
WARM_SECONDS = 1.0


def med(f, warmup, reps):
    """Median seconds per call of `f` over `reps` calls, after at least `warmup` calls
    and WARM_SECONDS of calls."""
    t0, calls = time.perf_counter(), 0
    while calls < warmup or time.perf_counter() - t0 < WARM_SECONDS:
        f()
        calls += 1
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


def torch_results():
    """PyTorch twins of the JAX workloads, keyed by the kiln row they compare with."""
    # Compile times are measured cold, not from inductor's on-disk cache of earlier runs.
    os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return {}
    import logging
    torch._logging.set_logs(dynamo=logging.ERROR)  # compile-time notices are not results
    torch.manual_seed(0)
    out = {}
    if "dispatch" in only or not only:
        x, y = torch.ones(8), torch.ones(8)
        out["dispatch_add_f32[8]"] = ("us/op", med(lambda: x + y, 1000, 20001) * 1e6)
    if "fused_sum" in only or not only:
        n = 10_000_000
        x, y, z = (torch.randn(n) for _ in range(3))
        t = med(lambda: (x + y * z).sum(), 2, 11)
        out["sum(x+y*z)_f32[10M]"] = ("GB/s", 12 * n / t / 1e9)
        f = torch.compile(lambda x, y, z: (x + y * z).sum())
        t = med(lambda: f(x, y, z), 2, 11)
        out["sum(x+y*z)_f32[10M] [jit]"] = ("GB/s", 12 * n / t / 1e9)
    if "matmul" in only or not only:
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        t = med(lambda: a @ b, 2, 11)
        out["matmul_f32_1024^3"] = ("GFLOP/s", 2 * 1024**3 / t / 1e9)
    if "mlp_step" in only or not only:
        model = torch.nn.Sequential(
            torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
            torch.nn.ReLU(), torch.nn.Linear(512, 10))
        x = torch.randn(128, 784)
        y = F.one_hot(torch.arange(128) % 10, 10).float()
        torch_step(out, "mlp_step_784-512-512-10_b128_adam [jit]", model, x, y)
    if "lm_step" in only or not only:
        V, T, D, H, L, B = 65, 64, 128, 4, 4, 32
        nn = torch.nn

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln1, self.ln2 = nn.LayerNorm(D, eps=1e-6), nn.LayerNorm(D, eps=1e-6)
                self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
                self.up, self.down = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

            def forward(self, h):
                q, k, v = (t.reshape(B, T, H, D // H).transpose(1, 2)
                           for t in self.qkv(self.ln1(h)).split(D, -1))
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                h = h + self.proj(o.transpose(1, 2).reshape(B, T, D))
                return h + self.down(F.gelu(self.up(self.ln2(h)), approximate="tanh"))

        class Gpt(nn.Module):
            def __init__(self):
                super().__init__()
                self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
                self.blocks = nn.Sequential(*[Block() for _ in range(L)])
                self.ln, self.head = nn.LayerNorm(D, eps=1e-6), nn.Linear(D, V)

            def forward(self, x):
                h = self.tok(x) + self.pos.weight[:T]
                return self.head(self.ln(self.blocks(h)))

        x = torch.tensor((np.arange(B * T) * 7 + 13) % V).reshape(B, T)
        y = F.one_hot(torch.tensor((np.arange(B * T) * 7 + 26) % V).reshape(B, T), V).float()
        torch_step(out, "lm_step_gpt4x128_ctx64_b32_adam [jit]", Gpt(), x, y, dims=(-1,))
    if "cnn_step" in only or not only:
        model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(7 * 7 * 64, 128), torch.nn.ReLU(),
            torch.nn.Linear(128, 10)).to(memory_format=torch.channels_last)
        x = torch.randn(64, 1, 28, 28).to(memory_format=torch.channels_last)
        y = F.one_hot(torch.arange(64) % 10, 10).float()
        torch_step(out, "cnn_step_28x28_b64_adam [jit]", model, x, y)
    return out


def torch_step(out, name, model, x, y, dims=(1,)):
    """A PyTorch train step (forward, backward, torch.optim.Adam), eager and under
    torch.compile: `name` gets the compiled figure (kiln's jitted step compares with it),
    `name (eager)` the eager one, `name compile` the compile time. The loss is the mean
    over the batch (and sequence) of the cross-entropy summed over `dims` (the classes)."""
    import torch
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def one():
        opt.zero_grad(set_to_none=True)
        loss = -(torch.log_softmax(model(x), -1) * y).sum(dims).mean()
        loss.backward()
        opt.step()
        return loss

    out[name + " (eager)"] = ("ms/step", med(one, 3, 21) * 1e3)
    compiled = torch.compile(one)
    t0 = time.perf_counter()
    compiled()
    first = time.perf_counter() - t0
    t = med(compiled, 3, 21)
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


def median_rows(runs):
    """Per row, the median over rounds (rows missing from a round are skipped)."""
    out = {}
    for name in dict.fromkeys(n for r in runs for n in r):
        vals = sorted(r[name][1] for r in runs if name in r)
        out[name] = (next(r[name][0] for r in runs if name in r), vals[len(vals) // 2])
    return out


def main():
    # Rounds alternate kiln, JAX and PyTorch so that a machine whose speed drifts over
    # minutes does not favour whichever ran in its fast stretch; each row is the median.
    ks, js, ts = [], [], []
    for _ in range(rounds):
        ks.append(kiln_results())
        js.append(jax_results())
        ts.append(torch_results())
    k, j, t = median_rows(ks), median_rows(js), median_rows(ts)
    higher_is_better = {"GB/s", "GFLOP/s", "ex/s"}
    w = 45
    nan = float("nan")

    def ratio(metric, ours, theirs):
        return ours / theirs if metric in higher_is_better else theirs / ours

    def row(label, metric, kv, jv, tv, note=""):
        print(f"{label:{w}} {metric:8} {kv:10.3f} {jv:10.3f} {ratio(metric, kv, jv):11.2f}x"
              f" {tv:10.3f} {ratio(metric, kv, tv):10.2f}x{note}")

    print(f"{'workload':{w}} {'metric':8} {'kiln':>10} {'JAX':>10} {'kiln vs JAX':>12}"
          f" {'PyTorch':>10} {'vs PyTorch':>11}")
    for name, (metric, kv) in k.items():
        twin = twin_of(name)
        # The eager JAX figure, then any variant (e.g. "name [jit]") of the same workload;
        # kiln rows marked [jit] compare with JAX's [jit] row of the same name.
        variants = [] if "[jit]" in name else sorted(n for n in j if n.startswith(name + " ["))
        for jname in [name] + variants:
            jv = j.get(twin or jname, (metric, nan))[1]
            tv = t.get(twin or jname, (metric, nan))[1]
            label = name if jname == name else "  vs JAX " + jname[len(name) + 1:]
            row(label, metric, kv, jv, tv)
        eager = t.get((twin or name) + " (eager)")
        if eager is not None:
            row("  vs PyTorch eager", metric, kv, nan, eager[1])
        if twin is not None:
            hv = k.get(twin, (metric, nan))[1]
            print(f"{'  vs kiln hand-written':{w}} {metric:8} {kv:10.3f} {hv:10.3f}"
                  f" {ratio(metric, kv, hv):11.2f}x  (2nd figure: kiln's hand-written step, not JAX)")
    print("(> 1 means kiln is faster. Rows marked [jit] are compiled in kiln and JAX, and in "
          "PyTorch with torch.compile; 'vs PyTorch eager' rows compare with the eager step; "
          f"the others are eager unless the variant is marked [jit]. Same machine, {rounds} "
          "round(s) alternating the three, medians.)")


if __name__ == "__main__":
    main()
