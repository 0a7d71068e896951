#!/usr/bin/env python3
"""Loads a kiln-train checkpoint with safetensors + numpy, the way a Python user would.

    python3 train-cli/scripts/load_checkpoint.py runs/mnist-mlp/checkpoints/ckpt-00002340.safetensors

Prints the metadata (step, config) and every tensor's name, dtype and shape, checks the
kiln checksum (FNV-1a 64 over names, dtypes, shapes and bytes, sorted by name) and, for
`mlp` checkpoints, runs the forward pass in numpy on zeros as a smoke test.
"""
import json
import sys

import numpy as np
from safetensors import safe_open

DTYPES = {"float32": "F32", "float64": "F64", "int32": "I32", "int64": "I64", "uint32": "U32", "uint8": "U8"}


def fnv1a(chunks):
    h = 0xCBF29CE484222325
    for c in chunks:
        for b in c:
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main(path):
    with safe_open(path, framework="numpy") as f:
        meta = json.loads(f.metadata()["kiln"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    chunks = []
    for name in sorted(tensors):
        a = tensors[name]
        shape = "[" + ", ".join(str(d) for d in a.shape) + "]"
        chunks += [name.encode(), f"{DTYPES[str(a.dtype)]}{shape}".encode(), np.ascontiguousarray(a).tobytes()]
    got = fnv1a(chunks)
    assert got == meta["checksum"], f"checksum {got} != stored {meta['checksum']}"
    print(f"step {meta['step']}, kiln {meta['kiln_version']}, checksum {got} ok")
    for name, a in sorted(tensors.items()):
        print(f"  {name:<45} {a.dtype} {list(a.shape)}")
    if 'name = "mlp"' in meta["config"]:
        n = len([k for k in tensors if k.startswith("params.layers.") and k.endswith(".weight")])
        h = np.zeros((2, tensors["params.layers.0.weight"].shape[0]), np.float32)
        for i in range(n):
            h = h @ tensors[f"params.layers.{i}.weight"] + tensors[f"params.layers.{i}.bias"]
            if i + 1 < n:
                h = np.maximum(h, 0)
        print(f"numpy forward on zeros: logits shape {h.shape}")


if __name__ == "__main__":
    main(sys.argv[1])
