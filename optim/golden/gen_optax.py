"""Generates optim/golden/optax.json: Optax reference trajectories for kiln-optim's tests.

Pinned versions: optax==0.2.8, jax==0.10.2 (float32, CPU). Run from the repository root:

    python3 optim/golden/gen_optax.py

Every case starts from the same params {"b": (2,), "w": (3, 2)} and uses the deterministic
gradient function grads = 2 * params + sin(params), re-evaluated at the current params each step
(reproduced in optim/tests/golden.rs). The JSON records the params after 1 and after 10 steps.
"""

import json
import os

import jax
import jax.numpy as jnp
import optax

assert optax.__version__ == "0.2.8", optax.__version__
assert jax.__version__ == "0.10.2", jax.__version__

PARAMS = {
    "b": jnp.array([0.1, -0.4], dtype=jnp.float32),
    "w": jnp.array([[0.5, -1.0], [1.5, 0.3], [-0.7, 2.0]], dtype=jnp.float32),
}


def grad_fn(p):
    return jax.tree.map(lambda x: 2.0 * x + jnp.sin(x), p)


def run(opt, steps):
    params = PARAMS
    state = opt.init(params)
    for _ in range(steps):
        g = grad_fn(params)
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params


def flat(p):
    return {k: [float(v) for v in jnp.ravel(p[k]).tolist()] for k in sorted(p)}


warmup_cos = optax.warmup_cosine_decay_schedule(
    init_value=0.0, peak_value=0.01, warmup_steps=3, decay_steps=10, end_value=0.001
)

CASES = {
    "sgd": optax.sgd(0.1),
    "sgd_momentum": optax.sgd(0.1, momentum=0.9),
    "sgd_nesterov": optax.sgd(0.1, momentum=0.9, nesterov=True),
    "adam": optax.adam(0.01, b1=0.9, b2=0.999, eps=1e-8),
    "adam_schedule": optax.adam(warmup_cos, b1=0.9, b2=0.999, eps=1e-8),
    "adamw": optax.adamw(0.01, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01),
    "nadam": optax.nadam(0.01, b1=0.9, b2=0.999, eps=1e-8),
    "amsgrad": optax.amsgrad(0.01, b1=0.9, b2=0.999, eps=1e-8),
    "lamb": optax.lamb(0.01, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01),
    "lars": optax.lars(0.1, weight_decay=0.01, trust_coefficient=0.001, eps=0.0, momentum=0.9),
    "lion": optax.lion(0.001, b1=0.9, b2=0.99, weight_decay=0.001),
    "rmsprop": optax.rmsprop(0.01, decay=0.9, eps=1e-8),
    "rmsprop_centered_momentum": optax.rmsprop(
        0.01, decay=0.9, eps=1e-8, centered=True, momentum=0.9
    ),
    "adagrad": optax.adagrad(0.1, initial_accumulator_value=0.1, eps=1e-7),
    "adadelta": optax.adadelta(1.0, rho=0.9, eps=1e-6),
    "adabelief": optax.adabelief(0.01, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16),
    "adafactor": optax.adafactor(0.01, min_dim_size_to_factor=2),
    "adafactor_unfactored": optax.adafactor(0.01),
    "clip_adamw_warmup_cosine": optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(warmup_cos, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01),
    ),
    "ema_debias": optax.chain(optax.ema(0.9, debias=True), optax.scale(-0.1)),
    "scale_by_stddev": optax.chain(optax.scale_by_stddev(0.9, eps=1e-8), optax.scale(-0.01)),
    "clip": optax.chain(optax.clip(0.5), optax.scale(-0.1)),
    "multi_steps_3_sgd": optax.MultiSteps(optax.sgd(0.1, momentum=0.9), every_k_schedule=3),
}

STEPS = list(range(0, 14))
SCHEDULES = {
    "constant": optax.constant_schedule(0.5),
    "linear": optax.linear_schedule(1.0, 0.1, transition_steps=8, transition_begin=2),
    "polynomial": optax.polynomial_schedule(1.0, 0.1, power=2.0, transition_steps=8, transition_begin=2),
    "exponential_decay": optax.exponential_decay(1.0, transition_steps=3, decay_rate=0.5, transition_begin=1),
    "exponential_decay_staircase_end": optax.exponential_decay(
        1.0, transition_steps=3, decay_rate=0.5, transition_begin=1, staircase=True, end_value=0.2
    ),
    "cosine_decay": optax.cosine_decay_schedule(1.0, decay_steps=10, alpha=0.1, exponent=1.0),
    "warmup_cosine_decay": warmup_cos,
    "warmup_exponential": optax.warmup_exponential_decay_schedule(
        0.0, 1.0, warmup_steps=4, transition_steps=2, decay_rate=0.5, end_value=0.1
    ),
    "piecewise_constant": optax.piecewise_constant_schedule(1.0, {3: 0.5, 7: 0.1}),
    "one_cycle": optax.cosine_onecycle_schedule(
        10, peak_value=1.0, pct_start=0.3, div_factor=25.0, final_div_factor=1e4
    ),
    "join": optax.join_schedules(
        [optax.linear_schedule(0.0, 1.0, 4), optax.constant_schedule(0.3)], [5]
    ),
}

out = {
    "init": flat(PARAMS),
    "cases": {name: {"1": flat(run(opt, 1)), "10": flat(run(opt, 10))} for name, opt in CASES.items()},
    "schedules": {
        name: [float(s(jnp.array(t, dtype=jnp.int32))) for t in STEPS] for name, s in SCHEDULES.items()
    },
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optax.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)
    f.write("\n")
print("wrote", path)
