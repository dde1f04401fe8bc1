#!/usr/bin/env python3
"""Independent reference for scratchgpt's GPT-2 weight loading.

Writes a small random GPT-2 checkpoint the way Hugging Face's GPT2LMHeadModel lays it out
(Conv1D weights [in, out], a "transformer." prefix, the attn.bias mask buffers, tied head),
with its own minimal safetensors writer, and computes its logits with a NumPy
implementation of GPT-2's forward pass (float64). The Rust test
model/tests/gpt2_reference.rs loads the directory and compares logits.

    python3 scripts/gpt2_reference.py model/tests/fixtures/tiny-gpt2

Needs only NumPy. The output is committed so CI needs no Python.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np

V, T, C, NH, L = 37, 16, 16, 4, 2
IDS = [[3, 14, 15, 9, 26, 5, 35, 8, 9, 7], [0, 36, 1, 2, 2, 2, 30, 11, 4, 33]]


def params(rng):
    p = {
        "wte.weight": rng.normal(0, 0.5, (V, C)),
        "wpe.weight": rng.normal(0, 0.2, (T, C)),
        "ln_f.weight": 1 + rng.normal(0, 0.1, C),
        "ln_f.bias": rng.normal(0, 0.1, C),
    }
    for i in range(L):
        h = f"h.{i}."
        p[h + "ln_1.weight"] = 1 + rng.normal(0, 0.1, C)
        p[h + "ln_1.bias"] = rng.normal(0, 0.1, C)
        p[h + "attn.c_attn.weight"] = rng.normal(0, 0.3, (C, 3 * C))
        p[h + "attn.c_attn.bias"] = rng.normal(0, 0.1, 3 * C)
        p[h + "attn.c_proj.weight"] = rng.normal(0, 0.3, (C, C))
        p[h + "attn.c_proj.bias"] = rng.normal(0, 0.1, C)
        p[h + "ln_2.weight"] = 1 + rng.normal(0, 0.1, C)
        p[h + "ln_2.bias"] = rng.normal(0, 0.1, C)
        p[h + "mlp.c_fc.weight"] = rng.normal(0, 0.3, (C, 4 * C))
        p[h + "mlp.c_fc.bias"] = rng.normal(0, 0.1, 4 * C)
        p[h + "mlp.c_proj.weight"] = rng.normal(0, 0.2, (4 * C, C))
        p[h + "mlp.c_proj.bias"] = rng.normal(0, 0.1, C)
    # round to float32 once, so file and reference use identical values
    return {k: v.astype(np.float32) for k, v in p.items()}


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def forward(p, ids):
    p = {k: v.astype(np.float64) for k, v in p.items()}
    ids = np.array(ids)
    B, n = ids.shape
    x = p["wte.weight"][ids] + p["wpe.weight"][np.arange(n)]
    hs = C // NH
    mask = np.triu(np.ones((n, n), dtype=bool), 1)
    for i in range(L):
        h = f"h.{i}."
        a = layer_norm(x, p[h + "ln_1.weight"], p[h + "ln_1.bias"])
        qkv = a @ p[h + "attn.c_attn.weight"] + p[h + "attn.c_attn.bias"]  # Conv1D: x @ W
        q, k, v = np.split(qkv, 3, axis=-1)
        q, k, v = (t.reshape(B, n, NH, hs).transpose(0, 2, 1, 3) for t in (q, k, v))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
        s = np.where(mask, -np.inf, s)
        s = np.exp(s - s.max(-1, keepdims=True))
        w = s / s.sum(-1, keepdims=True)
        ctx = (w @ v).transpose(0, 2, 1, 3).reshape(B, n, C)
        x = x + ctx @ p[h + "attn.c_proj.weight"] + p[h + "attn.c_proj.bias"]
        m = layer_norm(x, p[h + "ln_2.weight"], p[h + "ln_2.bias"])
        m = gelu_new(m @ p[h + "mlp.c_fc.weight"] + p[h + "mlp.c_fc.bias"])
        x = x + m @ p[h + "mlp.c_proj.weight"] + p[h + "mlp.c_proj.bias"]
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
    return x @ p["wte.weight"].T  # tied head


def write_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    p = params(np.random.default_rng(2024))
    tensors = {"transformer." + k: v for k, v in p.items()}
    for i in range(L):  # the causal-mask buffers real GPT-2 files carry
        tensors[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
    write_safetensors(out / "model.safetensors", tensors)
    config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": V, "n_positions": T,
        "n_ctx": T, "n_embd": C, "n_head": NH, "n_layer": L, "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    logits = forward(p, IDS)
    (out / "expected_logits.json").write_text(
        json.dumps({"ids": IDS, "shape": list(logits.shape), "logits": [round(float(x), 7) for x in logits.ravel()]}) + "\n"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "model/tests/fixtures/tiny-gpt2")
