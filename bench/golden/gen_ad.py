# Golden autodiff values for kiln, generated with JAX on CPU in float64.
#
# Pinned: jax==0.10.2 (jaxlib 0.10.2).  Runs WITH jax_enable_x64=True (set
# below, before any array is created).  Do not merge with gen_prng.py: x64
# changes PRNG seeding/default dtypes, so PRNG goldens come from a separate
# process without x64.
#
#   pip install jax==0.10.2 numpy
#   JAX_PLATFORMS=cpu python bench/golden/gen_ad.py
#
# Writes bench/golden/ad.json (schema: see bench/golden/README.md).
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
from jax import lax

PINNED = "0.10.2"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ad.json")
if jax.__version__ != PINNED:
    print(f"WARNING: jax {jax.__version__} != pinned {PINNED}", file=sys.stderr)

rng = np.random.default_rng(0)


def inp(*shape):
    """Exactly reproducible input: N(0,1) from default_rng(0), rounded to 4 decimals."""
    return np.round(rng.normal(size=shape), 4).astype(np.float64)


def enc(x):
    x = np.asarray(x)
    d = {"shape": list(x.shape), "dtype": str(x.dtype)}
    flat = x.reshape(-1)
    if np.issubdtype(x.dtype, np.floating):
        d["values"] = [float(v) for v in flat]   # repr of a Python float round-trips f64 exactly
    else:
        d["values"] = [int(v) for v in flat]
    return d


# --------------------------------------------------------------------- scalar functions
# Each entry: name, formula, arg names, arg arrays, set of non-differentiable arg names.
F = []


def reg(name, formula, fn, args, nondiff=()):
    F.append(dict(name=name, formula=formula, fn=fn, args=args, nondiff=set(nondiff)))


reg("tanh_sum", "f(x) = sum(tanh(x))", lambda x: jnp.sum(jnp.tanh(x)), {"x": inp(3)})
reg("softplus_mean", "f(x) = mean(log1p(exp(x)))", lambda x: jnp.mean(jnp.log1p(jnp.exp(x))),
    {"x": inp(5)})
reg("logsumexp", "f(x) = log(sum(exp(x))) over all elements (jax.nn.logsumexp(x), i.e. "
    "m + log(sum(exp(x - m))) with m = max(x))",
    lambda x: jax.nn.logsumexp(x), {"x": inp(2, 3)})
reg("mlp", "f(w1,b1,w2,x) = sum(square(tanh(x @ w1 + b1) @ w2)); w1 (4,3), b1 (3,) broadcast "
    "over rows, w2 (3,2), x (5,4)",
    lambda w1, b1, w2, x: jnp.sum(jnp.square(jnp.tanh(x @ w1 + b1) @ w2)),
    {"w1": inp(4, 3), "b1": inp(3), "w2": inp(3, 2), "x": inp(5, 4)})
_labels = np.array([1, 0, 4, 2], np.int64)
reg("softmax_xent", "f(logits, labels) = mean_i( -log_softmax(logits, axis=-1)[i, labels[i]] ); "
    "log_softmax(z) = z - logsumexp(z, axis=-1, keepdims); logits (4,5), labels int64 (4,) "
    "(not differentiated)",
    lambda logits, labels: jnp.mean(
        -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), labels[:, None], axis=-1)[:, 0]),
    {"logits": inp(4, 5), "labels": _labels}, nondiff=("labels",))
reg("sin_cos_prod", "f(x, y) = sum(sin(x) * cos(y)); x, y (2,3)",
    lambda x, y: jnp.sum(jnp.sin(x) * jnp.cos(y)), {"x": inp(2, 3), "y": inp(2, 3)})
reg("div_sqrt", "f(x, y) = sum(x / sqrt(1 + y*y)); x, y (4,)",
    lambda x, y: jnp.sum(x / jnp.sqrt(1 + y * y)), {"x": inp(4), "y": inp(4)})
reg("max_reduce", "f(x) = sum(max(x, axis=1)); x (3,4), no ties",
    lambda x: jnp.sum(jnp.max(x, axis=1)), {"x": inp(3, 4)})
reg("pow_exp", "f(x) = sum(x**3 * exp(-x)); x**3 is lax.integer_pow (x*x*x), x (5,)",
    lambda x: jnp.sum(x ** 3 * jnp.exp(-x)), {"x": inp(5)})
reg("matmul_chain", "f(a, b, c) = sum((a @ b) @ c); a (2,3), b (3,4), c (4,2)",
    lambda a, b, c: jnp.sum((a @ b) @ c), {"a": inp(2, 3), "b": inp(3, 4), "c": inp(4, 2)})
reg("norm", "f(x) = sqrt(sum(x*x)); x (5,)", lambda x: jnp.sqrt(jnp.sum(x * x)), {"x": inp(5)})
reg("where_relu", "f(x) = sum(where(x > 0, x, 0.1*x) ** 2); x (6,), no zeros",
    lambda x: jnp.sum(jnp.where(x > 0, x, 0.1 * x) ** 2), {"x": inp(6)})
reg("layernorm", "f(x, w) = sum( ((x - mean(x,-1,keepdims)) / sqrt(var(x,-1,keepdims) + 1e-5)) * w ); "
    "var is the population variance mean((x-mean)^2) (ddof=0); x (3,4), w (4,) broadcast over rows",
    lambda x, w: jnp.sum((x - jnp.mean(x, -1, keepdims=True))
                         / jnp.sqrt(jnp.var(x, -1, keepdims=True) + 1e-5) * w),
    {"x": inp(3, 4), "w": inp(4)})


def _conv(x, w):
    return lax.conv_general_dilated(x, w, window_strides=(1, 1), padding="SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


reg("conv2d", "f(x, w) = sum(conv(x, w)**2) with conv = lax.conv_general_dilated(x, w, "
    "window_strides=(1,1), padding='SAME', dimension_numbers=('NHWC','HWIO','NHWC')): "
    "cross-correlation (no kernel flip), out[n,i,j,o] = sum_{di,dj,c} xpad[n,i+di,j+dj,c] * w[di,dj,c,o] "
    "with zero padding of 1 on each side of H and W; x (1,5,5,2), w (3,3,2,3), out (1,5,5,3)",
    lambda x, w: jnp.sum(_conv(x, w) ** 2), {"x": inp(1, 5, 5, 2), "w": inp(3, 3, 2, 3)})
reg("cumsum", "f(x) = sum(cumsum(x)**2); cumsum along axis 0, x (6,)",
    lambda x: jnp.sum(jnp.cumsum(x) ** 2), {"x": inp(6)})

# sanity on inputs
_mr = [f for f in F if f["name"] == "max_reduce"][0]["args"]["x"]
assert all(len(set(r)) == len(r) for r in _mr), "max_reduce input has ties"
assert np.all([f for f in F if f["name"] == "where_relu"][0]["args"]["x"] != 0)

functions = []
for spec in F:
    names = list(spec["args"].keys())
    arrays = [jnp.asarray(spec["args"][n]) for n in names]
    diff_idx = [i for i, n in enumerate(names) if n not in spec["nondiff"]]
    fn = spec["fn"]

    def f_diff(*dargs, _arrays=arrays, _diff_idx=diff_idx, _fn=fn):
        full = list(_arrays)
        for i, a in zip(_diff_idx, dargs):
            full[i] = a
        return _fn(*full)

    primals = tuple(arrays[i] for i in diff_idx)
    value = f_diff(*primals)
    grads = jax.grad(f_diff, argnums=tuple(range(len(diff_idx))))(*primals)
    tangents = tuple(jnp.asarray(inp(*p.shape)) for p in primals)
    p_out, t_out = jax.jvp(f_diff, primals, tangents)
    vecs = tuple(jnp.asarray(inp(*p.shape)) for p in primals)
    gfun = jax.grad(f_diff, argnums=tuple(range(len(diff_idx))))
    _, hvp = jax.jvp(lambda *a: gfun(*a), primals, vecs)
    # cross-check hvp against reverse-over-reverse
    hvp_rr = jax.grad(lambda *a: sum(jnp.vdot(g, v) for g, v in zip(gfun(*a), vecs)),
                      argnums=tuple(range(len(diff_idx))))(*primals)
    for a, b in zip(hvp, hvp_rr):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    dn = [names[i] for i in diff_idx]
    entry = {
        "name": spec["name"],
        "formula": spec["formula"],
        "args": [dict(name=n, differentiable=(n not in spec["nondiff"]), **enc(spec["args"][n]))
                 for n in names],
        "value": float(value),
        "grad": {n: enc(g) for n, g in zip(dn, grads)},
        "jvp": {"tangents": {n: enc(t) for n, t in zip(dn, tangents)},
                "primal_out": float(p_out), "tangent_out": float(t_out)},
        "hvp": {"vectors": {n: enc(v) for n, v in zip(dn, vecs)},
                "out": {n: enc(h) for n, h in zip(dn, hvp)}},
        "extra": {},
    }
    if spec["name"] == "tanh_sum":
        x = primals[0]
        H = jax.hessian(f_diff)(x)
        entry["extra"]["hessian"] = enc(H)
        entry["extra"]["hessian_diag"] = enc(jnp.diag(H))
        entry["extra"]["grad_of_grad_sum"] = enc(jax.grad(lambda x: jax.grad(f_diff)(x).sum())(x))
        np.testing.assert_allclose(jax.jacfwd(jax.jacrev(f_diff))(x), H, rtol=1e-12)
    if spec["name"] == "logsumexp":
        x = primals[0]
        H = jax.hessian(f_diff)(x)
        entry["extra"]["hessian"] = enc(H)   # shape (2,3,2,3): d2f / dx[i,j] dx[k,l]
        np.testing.assert_allclose(jax.jacrev(jax.jacfwd(f_diff))(x), H, rtol=1e-12)
    if spec["name"] == "conv2d":
        entry["extra"]["conv_out"] = enc(_conv(*primals))
    if spec["name"] == "layernorm":
        x, w = primals
        entry["extra"]["normalized"] = enc((x - jnp.mean(x, -1, keepdims=True))
                                           / jnp.sqrt(jnp.var(x, -1, keepdims=True) + 1e-5))
    functions.append(entry)

# --------------------------------------------------------------------- vector functions
vector_functions = []
VF = [
    ("vec_tanh_mul", "f(x) = tanh(x) * x[::-1]; x (4,) -> (4,)", lambda x: jnp.tanh(x) * x[::-1], inp(4)),
    ("vec_softmax", "f(x) = softmax(x) = exp(x - max(x)) / sum(exp(x - max(x))); x (4,) -> (4,)",
     lambda x: jax.nn.softmax(x), inp(4)),
    ("vec_outer", "f(x) = outer(x, x).ravel() (row-major: out[3*i+j] = x[i]*x[j]); x (3,) -> (9,)",
     lambda x: jnp.outer(x, x).ravel(), inp(3)),
]
for name, formula, fn, x in VF:
    x = jnp.asarray(x)
    y = fn(x)
    jf = jax.jacfwd(fn)(x)
    jr_ = jax.jacrev(fn)(x)
    np.testing.assert_allclose(jf, jr_, rtol=1e-12, atol=1e-15)
    t = jnp.asarray(inp(*x.shape))
    _, jvp_out = jax.jvp(fn, (x,), (t,))
    ct = jnp.asarray(inp(*y.shape))
    _, vjp_fn = jax.vjp(fn, x)
    (vjp_out,) = vjp_fn(ct)
    vector_functions.append({
        "name": name, "formula": formula,
        "args": [dict(name="x", differentiable=True, **enc(x))],
        "value": enc(y),
        "jacfwd": enc(jf), "jacrev": enc(jr_),   # shape (out_dim, in_dim): J[i, j] = d f_i / d x_j
        "jvp": {"tangent": enc(t), "out": enc(jvp_out)},
        "vjp": {"cotangent": enc(ct), "out": enc(vjp_out)},
    })

# --------------------------------------------------------------------- tree functions
# Tree-input, tree-output functions: jax.jacfwd / jax.jacrev give the nested tree
# (output structure of input structure), jax.hessian of a scalar companion gives
# input structure of input structure. Stored flattened by key path (see README).
# Drawn after every entry above, so the earlier inputs are unchanged.


def kpath(path):
    """kiln's KeyPath display: dict keys, sequence indices, attribute names joined by '.'."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        else:
            raise TypeError(f"unsupported key {k!r}")
    return ".".join(parts)


def flat(tree):
    return {kpath(p): enc(l) for p, l in jax.tree_util.tree_flatten_with_path(tree)[0]}


def nested(jac, out_like, in_like):
    """{out_path: {in_path: ARR}} from JAX's tree (out structure) of trees (in structure)."""
    rows = jax.tree_util.tree_structure(out_like).flatten_up_to(jac)
    out_paths = [kpath(p) for p, _ in jax.tree_util.tree_flatten_with_path(out_like)[0]]
    for r in rows:
        assert jax.tree_util.tree_structure(r) == jax.tree_util.tree_structure(in_like)
    return {op: flat(r) for op, r in zip(out_paths, rows)}


def tree_mlp(px):
    p, x = px
    y = jnp.tanh(x @ p["w"] + p["b"])
    return (y, jnp.sum(y * y))


def tree_struct(p):
    a, (c0, c1) = p["a"], p["c"]
    return {"u": jnp.tanh(a @ c0[:2]) * c1,
            "v": jnp.outer(jnp.exp(c0 * c1), jnp.sum(jnp.sin(a), axis=0))}


TF = [
    ("tree_mlp",
     "f((p, x)) = (y, sum(y*y)) with y = tanh(x @ p['w'] + p['b']); input tuple (dict "
     "{'b': (2,), 'w': (3,2)}, x (4,3)), all leaves differentiated; output tuple (y (4,2), scalar)",
     tree_mlp, "h((p, x)) = f((p, x))[1] = sum(y*y)", lambda px: tree_mlp(px)[1],
     lambda: ({"w": jnp.asarray(inp(3, 2)), "b": jnp.asarray(inp(2))}, jnp.asarray(inp(4, 3)))),
    ("tree_struct",
     "f(p) = {'u': tanh(a @ c0[:2]) * c1, 'v': outer(exp(c0 * c1), sum(sin(a), axis=0))} with "
     "p = {'a': (2,2), 'c': [c0 (3,), c1 ()]}; output dict u (2,), v (3,2)",
     tree_struct, "h(p) = sum(u*u) + sum(v)",
     lambda p: jnp.sum(tree_struct(p)["u"] ** 2) + jnp.sum(tree_struct(p)["v"]),
     lambda: {"a": jnp.asarray(inp(2, 2)), "c": [jnp.asarray(inp(3)), jnp.asarray(inp())]}),
]
tree_functions = []
for name, formula, fn, hformula, hfn, make in TF:
    x = make()
    y = fn(x)
    jf = jax.jacfwd(fn)(x)
    jr_ = jax.jacrev(fn)(x)
    for a, b in zip(jax.tree_util.tree_leaves(jf), jax.tree_util.tree_leaves(jr_)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    H = jax.hessian(hfn)(x)
    np.testing.assert_allclose(
        jax.tree_util.tree_leaves(jax.jacrev(jax.jacfwd(hfn))(x))[0], jax.tree_util.tree_leaves(H)[0],
        rtol=1e-12)
    v = jax.tree_util.tree_map(lambda l: jnp.asarray(inp(*l.shape)), x)
    _, hv = jax.jvp(jax.grad(hfn), (x,), (v,))
    tree_functions.append({
        "name": name, "formula": formula, "hessian_formula": hformula,
        "args": flat(x),                       # {in_path: ARR}
        "value": flat(y),                      # {out_path: ARR}
        "jacfwd": nested(jf, y, x),            # {out_path: {in_path: ARR (out.shape ++ in.shape)}}
        "jacrev": nested(jr_, y, x),
        "hessian": nested(H, x, x),            # of h: {in_path: {in_path: ARR}}
        "hvp": {"vectors": flat(v), "out": flat(hv)},
    })

import jaxlib

doc = {
    "format": "kiln-golden-ad-v1",
    "generator": "bench/golden/gen_ad.py",
    "jax_version": jax.__version__,
    "jaxlib_version": jaxlib.__version__,
    "numpy_version": np.__version__,
    "backend": jax.default_backend(),
    "config": {"jax_enable_x64": bool(jax.config.jax_enable_x64)},
    "dtype": "float64",
    "input_rule": "all float inputs, tangents and vectors are numpy.random.default_rng(0).normal(size=shape) "
                  "rounded to 4 decimals, drawn in file order; they are stored explicitly anyway",
    "suggested_tolerance": {"rtol": 1e-12, "atol": 1e-14},
    "functions": functions,
    "vector_functions": vector_functions,
    "tree_functions": tree_functions,
}
with open(OUT, "w") as f:
    json.dump(doc, f, indent=None, separators=(",", ":"))
    f.write("\n")
print(f"wrote {OUT}: {len(functions)} functions, {len(vector_functions)} vector functions, "
      f"{len(tree_functions)} tree functions, {os.path.getsize(OUT)} bytes")
