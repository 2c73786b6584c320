#!/usr/bin/env python3
"""PyTorch baseline for `lgrpo-native bench --engine`.

What a user would otherwise reach for: the same Qwen2-family causal LM written in plain
PyTorch (no transformers package), the same configuration, batch and thread count, timed
on the same training step (forward, LM head + log_softmax gather, GRPO clipped-surrogate
loss, backward, grad-norm clipping, AdamW) and the same sampled decoding with a KV cache.

For benchmarks only: PyTorch is never a dependency of lgrpo-native. The engine bench runs
this script when `python3 -c "import torch"` works and skips the comparison otherwise.

Input: one JSON object on stdin (see src/bench/engine.ts, TorchSpec). Output: one JSON
object on stdout. Progress goes to stderr. With "device": "cuda:N" in the spec (the CUDA
engine bench, src/bench/engine_cuda.ts) the model runs there with fp32 master weights and
bf16 autocast, as a PyTorch user trains on a GPU, every timing ends with a device
synchronisation, and the bf16 matmul rate of the device is measured in the same run.
"""
import contextlib
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def log(message):
    print(f"torch: {message}", file=sys.stderr, flush=True)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # In fp32 under bf16 autocast too, as transformers' Qwen2RMSNorm does.
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


# F.scaled_dot_product_attention arrived in PyTorch 2.0; Debian's 1.13 takes the explicit path.
HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c["heads"], c["kvHeads"], c["headDim"]
        d, qw, kvw = c["hidden"], c["heads"] * c["headDim"], c["kvHeads"] * c["headDim"]
        self.q_proj = nn.utils.skip_init(nn.Linear, d, qw, bias=c["qkvBias"])
        self.k_proj = nn.utils.skip_init(nn.Linear, d, kvw, bias=c["qkvBias"])
        self.v_proj = nn.utils.skip_init(nn.Linear, d, kvw, bias=c["qkvBias"])
        self.o_proj = nn.utils.skip_init(nn.Linear, qw, d, bias=False)

    def forward(self, x, cos, sin, cache):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        past = 0
        if cache is not None:
            # Preallocated [B, KV, S, hd] buffers: appending writes in place, no re-concatenation.
            past = cache["length"]
            cache["k"][:, :, past:past + t] = k
            cache["v"][:, :, past:past + t] = v
            k = cache["k"][:, :, :past + t]
            v = cache["v"][:, :, :past + t]
        groups = self.heads // self.kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        if HAS_SDPA and (t == 1 or past == 0):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
        else:
            scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
            if t > 1:
                s = past + t
                mask = torch.ones(t, s, dtype=torch.bool, device=scores.device).triu(past + 1)
                scores = scores.masked_fill(mask, float("-inf"))
            out = torch.softmax(scores, dim=-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, i = c["hidden"], c["intermediate"]
        self.gate_proj = nn.utils.skip_init(nn.Linear, d, i, bias=False)
        self.up_proj = nn.utils.skip_init(nn.Linear, d, i, bias=False)
        self.down_proj = nn.utils.skip_init(nn.Linear, i, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden"], c["rmsEps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden"], c["rmsEps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class CausalLM(nn.Module):
    """Qwen2 / Llama layout with Hugging Face parameter names."""

    def __init__(self, c, max_positions):
        super().__init__()
        self.embed_tokens = nn.utils.skip_init(nn.Embedding, c["vocab"], c["hidden"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["hidden"], c["rmsEps"])
        self.tied = c["tied"]
        if not self.tied:
            self.lm_head = nn.utils.skip_init(nn.Linear, c["hidden"], c["vocab"], bias=False)
        hd = c["headDim"]
        inv_freq = 1.0 / (c["ropeTheta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        angles = torch.arange(max_positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    @property
    def head_weight(self):
        return self.embed_tokens.weight if self.tied else self.lm_head.weight

    def forward(self, ids, caches=None, start=0, last_only=False):
        """Final normed hidden states [B, T, D] (or [B, D] of the last position)."""
        t = ids.shape[1]
        cos, sin = self.cos[start:start + t], self.sin[start:start + t]
        x = self.embed_tokens(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i])
        if caches is not None:
            for cache in caches:
                cache["length"] += t
        if last_only:
            x = x[:, -1]
        return self.norm(x)


def init_weights(model, std, seed):
    """As transformers initialises: linear and embedding weights ~ N(0, std²), norms 1, biases 0."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, std)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device, n=8192, runs=20):
    """The device's bf16 matmul rate (n×n×n, fp32 accumulate), as cuBLAS reaches it."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(runs):
        a @ b
    synchronize(device)
    return 2 * n ** 3 * runs / (time.perf_counter() - t0) / 1e12


def timed(fn, timing, device=torch.device("cpu")):
    """Warm-up calls, then timed calls until minRuns and minSeconds are met (or maxSeconds passes)."""
    for _ in range(timing["warmup"]):
        fn()
    synchronize(device)
    samples = []
    while True:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        samples.append((time.perf_counter() - t0) * 1000.0)
        total = sum(samples) / 1000.0
        if len(samples) >= timing["minRuns"] and total >= timing["minSeconds"]:
            break
        if total >= timing["maxSeconds"]:
            break
    ordered = sorted(samples)
    m = len(ordered) // 2
    median = ordered[m] if len(ordered) % 2 else (ordered[m - 1] + ordered[m]) / 2
    return {"medianMs": median, "minMs": ordered[0], "runs": len(samples)}


def median(values):
    ordered = sorted(values)
    m = len(ordered) // 2
    return ordered[m] if len(ordered) % 2 else (ordered[m - 1] + ordered[m]) / 2


def blas_library():
    """The BLAS shared library this process loaded: torch's build info says only "generic"
    on Debian, where /usr/lib/.../libblas.so.3 is whatever the alternatives system points at
    (reference netlib BLAS unless OpenBLAS is installed, about 20 times slower here)."""
    torch.ones(2, 2) @ torch.ones(2, 2)
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if ("blas" in path or "mkl" in path) and path not in found:
                    found.append(path)
    except OSError:
        pass
    return found


def openblas_core(libraries):
    """The kernel OpenBLAS picked for this CPU (openblas_get_corename), or None."""
    import ctypes
    for path in libraries:
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return lib.openblas_get_corename().decode()
        except (OSError, AttributeError):
            continue
    return None


def main():
    spec = json.load(sys.stdin)
    c = spec["config"]
    B, T = spec["batch"], spec["seq"]
    P, new_tokens = spec["promptLength"], spec["maxNewTokens"]
    threads = spec["threads"]
    device = torch.device(spec.get("device", "cpu"))
    on_gpu = device.type == "cuda"
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    log(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"attention {'sdpa' if HAS_SDPA else 'explicit'}; building {spec['name']} on {device}")
    if not on_gpu and openblas_core(blas_library()) is None:
        log(f"! the BLAS is not OpenBLAS ({', '.join(blas_library()) or 'none found'}): if it is the reference "
            "BLAS, these times are no baseline (Debian: apt-get install libopenblas0-openmp)")
    # GPU: fp32 master weights, bf16 matmuls (autocast), as the CUDA engine's precision.
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_gpu else contextlib.nullcontext
    peak = matmul_tflops(device) if on_gpu else None
    if peak is not None:
        log(f"bf16 matmul 8192³: {peak:.1f} TFLOP/s")

    t0 = time.perf_counter()
    model = CausalLM(c, max(T, P + new_tokens))
    init_weights(model, spec.get("initStd", 0.02), spec.get("seed", 0))
    model.to(device)
    params = sum(p.numel() for p in model.parameters())
    log(f"{params / 1e6:.1f} M parameters, initialised in {time.perf_counter() - t0:.1f} s")

    # Hugging Face Trainer's rule: no decay on biases and norm weights.
    decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "norm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith(".bias") or "norm" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec["weightDecay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec["lr"], betas=(0.9, 0.999), eps=1e-8,
    )

    gen = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, c["vocab"], (B, T), generator=gen)
    targets = torch.cat((ids[:, 1:], torch.randint(0, c["vocab"], (B, 1), generator=gen)), dim=1).reshape(-1)
    advantages = torch.randn(B, generator=gen)
    ids, targets, advantages = ids.to(device), targets.to(device), advantages.to(device)
    eps_low, eps_high = 0.2, 0.2
    D = c["hidden"]

    def token_logprobs():
        with autocast():
            h = model(ids).reshape(-1, D)
            logits = h @ model.head_weight.t()
        return torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).view(B, T)

    with torch.no_grad():
        old = token_logprobs() + 0.05 * torch.randn(B, T, generator=gen).to(device)

    phases = {"forwardLossMs": [], "backwardMs": [], "optimizerMs": []}

    def train_step():
        a = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logp = token_logprobs()
        ratio = torch.exp(logp - old)
        adv = advantages[:, None]
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
        loss = (-surrogate).mean(dim=1).mean()  # 'grpo' aggregation: per-row token mean, then row mean
        b = time.perf_counter()
        loss.backward()
        c2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec["maxGradNorm"])
        opt.step()
        d = time.perf_counter()
        phases["forwardLossMs"].append((b - a) * 1000)
        phases["backwardMs"].append((c2 - b) * 1000)
        phases["optimizerMs"].append((d - c2) * 1000)

    log(f"training step B={B} T={T}...")
    train = timed(train_step, spec["trainTiming"], device)
    skip = spec["trainTiming"]["warmup"]
    train["phases"] = {k: median(v[skip:]) for k, v in phases.items()}
    train["tokensPerS"] = B * T / (train["medianMs"] / 1000)
    log(f"training step {train['medianMs']:.0f} ms median ({train['runs']} runs), {train['tokensPerS']:.0f} tokens/s")

    del opt, old
    for p in model.parameters():
        p.grad = None

    B = spec.get("decodeBatch", B)  # rollouts may decode more rows than a training step holds
    prompts = torch.randint(0, c["vocab"], (B, P), generator=gen).to(device)
    temperature = spec["temperature"]
    S = P + new_tokens - 1
    cache_dtype = torch.bfloat16 if on_gpu else torch.float32

    @torch.inference_mode()
    def generate():
        # Prefill samples the first token, then one step per further token, as the engine does.
        caches = [{"k": torch.empty(B, c["kvHeads"], S, c["headDim"], device=device, dtype=cache_dtype),
                   "v": torch.empty(B, c["kvHeads"], S, c["headDim"], device=device, dtype=cache_dtype), "length": 0}
                  for _ in range(c["layers"])]
        sampler = torch.Generator(device=device).manual_seed(7)
        with autocast():
            h = model(prompts, caches, 0, last_only=True)
        out = []
        for step in range(new_tokens):
            with autocast():
                logits = (h @ model.head_weight.t()).float() / temperature
            logp = torch.log_softmax(logits, dim=-1)
            token = torch.multinomial(logp.exp(), 1, generator=sampler)
            out.append((token, logp.gather(1, token)))
            if step + 1 < new_tokens:
                with autocast():
                    h = model(token, caches, P + step, last_only=True)
        return out

    log(f"decoding B={B}, prompt {P}, {new_tokens} new tokens per row (KV cache, sampled at temperature {temperature})...")
    decode = timed(generate, spec["decodeTiming"], device)
    decode["tokensPerS"] = B * new_tokens / (decode["medianMs"] / 1000)
    decode["newTokens"] = B * new_tokens
    log(f"decoding {decode['medianMs']:.0f} ms median ({decode['runs']} runs), {decode['tokensPerS']:.1f} tokens/s")

    json.dump({
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "blasLibraries": blas_library(),
        "blasCore": openblas_core(blas_library()),
        "attention": "scaled_dot_product_attention" if HAS_SDPA else "explicit softmax(QKᵀ)V",
        "kvCache": True,
        "parameters": params,
        "train": train,
        "decode": decode,
        "peakRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        **({"device": torch.cuda.get_device_name(device), "precision": "fp32 weights, bf16 autocast",
            "matmulTflops": peak, "peakDeviceBytes": torch.cuda.max_memory_allocated(device)} if on_gpu else {}),
    }, sys.stdout)
    print()


if __name__ == "__main__":
    main()
