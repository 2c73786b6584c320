#!/usr/bin/env python3
"""PyTorch autograd on the inputs scripts/gpu-check.mjs wrote, against the outputs our
kernels gave on the same inputs. Written from the spec, sharing no code with the
project: log_softmax/gather for tokenLogprobs, the clipped surrogate + k3 KL + λ
weights for grpoLoss, gradients by autograd. Prints one JSON object of max errors.

Usage: python3 torch_reference.py DIR   (DIR holds case.json and the .bin arrays)
"""
import json
import os
import sys

import numpy as np
import torch

d = sys.argv[1]
case = json.load(open(os.path.join(d, "case.json")))
dev = "cuda" if torch.cuda.is_available() else "cpu"


def load(name, dtype=np.float32, shape=None):
    a = np.fromfile(os.path.join(d, name + ".bin"), dtype=dtype)
    return torch.from_numpy(a.reshape(shape) if shape else a).to(dev)


def max_err(ours, ref):
    ours, ref = ours.double().cpu(), ref.double().cpu()
    diff = (ours - ref).abs()
    return {
        "maxAbs": float(diff.max()) if diff.numel() else 0.0,
        "maxRel": float((diff / ref.abs().clamp_min(1e-6)).max()) if diff.numel() else 0.0,
        "finite": bool(torch.isfinite(ours).all()),
    }


out = {"torch": torch.__version__, "device": dev}

# ---- tokenLogprobs: L = Σ g·logp + e·H, gradient w.r.t. the logits ----
t = case["tokenLogprobs"]
N, V, tau = t["rows"], t["vocab"], t["temperature"]
logits = load("tl_logits", shape=(N, V)).double().requires_grad_(True)
targets = load("tl_targets", np.int32).long()
g, e = load("tl_g").double(), load("tl_e").double()
logp_all = torch.log_softmax(logits / tau, dim=-1)
logp = logp_all.gather(1, targets[:, None])[:, 0]
entropy = -(logp_all.exp() * logp_all).sum(-1)
((g * logp).sum() + (e * entropy).sum()).backward()
out["tokenLogprobs"] = {
    "logprobs": max_err(load("tl_out_logprobs"), logp.detach()),
    "entropy": max_err(load("tl_out_entropy"), entropy.detach()),
    "gradLogits": max_err(load("tl_out_grad", shape=(N, V)), logits.grad),
}

# ---- grpoLoss, aggregation 'lambda' (spec §3-4) ----
c = case["grpoLoss"]
B, T = c["B"], c["T"]
lp = load("gl_logprobs", shape=(B, T)).double().requires_grad_(True)
old = load("gl_old", shape=(B, T)).double()
ref = load("gl_ref", shape=(B, T)).double()
adv = load("gl_adv").double()
mask = load("gl_mask", np.uint8, shape=(B, T)).double()
ids = load("gl_ids", np.int32).long()
lam = torch.tensor(c["lambda"], dtype=torch.float64, device=dev, requires_grad=True)
r, eps_low, eps_high, beta = c["r"], c["epsLow"], c["epsHigh"], c["beta"]

ratio = torch.exp(lp - old)
s = torch.minimum(ratio * adv[:, None], ratio.clamp(1 - eps_low, 1 + eps_high) * adv[:, None])
diff = (ref - lp).clamp(-20, 20)
kl = torch.exp(diff) - diff - 1
token_loss = -s + beta * kl
lengths = mask.sum(1)
weights = torch.zeros(B, dtype=torch.float64, device=dev)
for gid in ids.unique():
    rows = ids == gid
    L = lengths[rows]
    mu, sigma = L.mean(), L.var(unbiased=False).sqrt()
    z = (L - mu) / sigma.clamp_min(1e-8)
    h = (1 + r * z).clamp_min(1e-6)
    q = h**lam
    weights = weights.index_put((rows.nonzero()[:, 0],), rows.sum() * torch.softmax(q, 0))
loss = (weights * (mask * token_loss).sum(1)).sum() / lengths.sum()
loss.backward()
out["grpoLoss"] = {
    "loss": max_err(load("gl_out_loss"), loss.detach().reshape(1)),
    "gradLogprobs": max_err(load("gl_out_grad", shape=(B, T)), lp.grad),
    "gradLambda": max_err(load("gl_out_gradlambda"), lam.grad.reshape(1)),
}
print(json.dumps(out))
