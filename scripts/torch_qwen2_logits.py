#!/usr/bin/env python3
"""An independent Qwen2 model directory and its logits, for the GPU check's engine step.

Builds a Qwen2-layout causal LM with random weights, saves it as a Hugging Face model
directory (config.json + model.safetensors) and writes the float64 logits of the given
token rows, so that lgrpo-native can load the directory with Policy.fromPretrained and
compare its own logits, position by position, with these.

The model is transformers' Qwen2ForCausalLM where transformers can be imported (saved with
save_pretrained), else the plain-PyTorch Qwen2 of scripts/bench-torch.py (saved with the
minimal safetensors writer below): either way an implementation that shares no code with
the engine. The meta.json output says which one ran.

Input (stdin, JSON): {"config": <config.json dict>, "seed": int, "rows": [[ids...], ...],
"dir": path, "device": "cpu" | "cuda:N"}. Writes in dir: the model files, logits.bin (float64,
the rows' positions concatenated, each [V]) and meta.json.
"""
import importlib.util
import json
import os
import struct
import sys

import torch


def log(message):
    print(f"torch_qwen2_logits: {message}", file=sys.stderr, flush=True)


def plain_model(config):
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("bench_torch", os.path.join(here, "bench-torch.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    heads = config["num_attention_heads"]
    c = {
        "hidden": config["hidden_size"], "intermediate": config["intermediate_size"],
        "layers": config["num_hidden_layers"], "heads": heads,
        "kvHeads": config.get("num_key_value_heads", heads),
        "headDim": config.get("head_dim", config["hidden_size"] // heads),
        "vocab": config["vocab_size"], "tied": config.get("tie_word_embeddings", False),
        "qkvBias": True, "rmsEps": config["rms_norm_eps"], "ropeTheta": config["rope_theta"],
    }
    model = bench.CausalLM(c, config.get("max_position_embeddings", 4096))
    bench.init_weights(model, config.get("initializer_range", 0.02), torch.initial_seed())
    return model, c


def write_safetensors(path, tensors):
    """The safetensors layout: u64 header length, a JSON header of dtype/shape/offsets, the data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    spec = json.load(sys.stdin)
    config, rows, out = spec["config"], spec["rows"], spec["dir"]
    device = torch.device(spec.get("device", "cpu"))
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(spec.get("seed", 0))
    try:
        import transformers
        from transformers import Qwen2Config, Qwen2ForCausalLM
    except ImportError:
        transformers = None

    def perturb(model):
        # Norm weights off 1 and biases off 0 (initialisers set them to exactly 1 and 0),
        # so that a misplaced norm or bias shows in the logits.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.normal_(1.0, 0.1)
                elif name.endswith(".bias"):
                    p.normal_(0.0, 0.02)

    if transformers is not None:
        cfg = Qwen2Config(**config)
        cfg._attn_implementation = "eager"
        model = Qwen2ForCausalLM(cfg).float().eval()
        perturb(model)
        model.save_pretrained(out, safe_serialization=True)
        implementation = f"transformers {transformers.__version__} Qwen2ForCausalLM"

        def logits_of(ids):
            return model(input_ids=ids).logits[0]
    else:
        model, c = plain_model(config)
        perturb(model)
        named = {("lm_head.weight" if n == "lm_head.weight" else f"model.{n}"): p for n, p in model.named_parameters()}
        write_safetensors(os.path.join(out, "model.safetensors"), named)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump({"architectures": ["Qwen2ForCausalLM"], **config}, f, indent=2)
        implementation = "plain PyTorch Qwen2 (scripts/bench-torch.py; transformers is not installed)"

        def logits_of(ids):
            h = model(ids)[0]
            return h @ model.head_weight.t()

    # float64 on the device: the reference is far more exact than the f32 engine it checks.
    model = model.to(device=device, dtype=torch.float64)
    pieces = []
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row], dtype=torch.long, device=device)
            pieces.append(logits_of(ids).to(torch.float64).cpu())
    logits = torch.cat(pieces) if pieces else torch.zeros(0)
    with open(os.path.join(out, "logits.bin"), "wb") as f:
        f.write(logits.numpy().tobytes())
    meta = {"implementation": implementation, "torch": torch.__version__, "device": str(device),
            "positions": int(logits.shape[0]), "vocab": int(logits.shape[1]) if logits.ndim == 2 else 0}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f)
    log(f"{implementation}: {meta['positions']} positions of {meta['vocab']} logits")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
