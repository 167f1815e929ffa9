#!/usr/bin/env python3
"""The MLR-PL training step of `mlrpl-engine bench --e2e` in PyTorch, two ways,
timed the same way (docs/benchmarks.md).

* ``literal``: the model as docs/model.md writes it, on OpenAI's CLIP code
  (``clip.model.CLIP`` from the ``clip-anytorch`` wheel): CoOp-style prompts
  ("X X ... X {name}." tokenized to 77 positions, the learned context spliced
  between SOT and the name), the full 77-position causal text pass, the
  semantic decoupling module materialising z = tanh(fc1(X) * fc2(T)) of shape
  [B, C, N, d] and applying fc3 then fc4, softmax over positions, the cosine
  classifier and the masked BCE; eager, with bf16 autocast on a GPU.
* ``optimized``: the engine's algebra on the same weights: the text pass
  truncated to the longest EOT + 1 positions, fc3 and fc4 collapsed into one
  vector (s = tanh(x~ * t~) . (W3^T w4) + w4 . b3 + b4, the parameters kept as
  written), PyTorch's fused scaled-dot-product attention in both towers, the
  frozen towers stored bf16 on a GPU (as the engine's default there), the
  positional embeddings interpolated once, and ``torch.compile`` on the step
  after the vision tower where it works and pays (``--compile auto`` keeps the
  faster of compiled and eager over three trial steps).

Both read the CLIP weights (OpenAI naming, safetensors) and the batch, class
names and initial trainable parameters that ``mlrpl-engine bench --e2e
--export DIR`` wrote, so the first step's loss must equal the engine's.

A training step is: frozen image tower under ``no_grad`` (vision), prompts
through the frozen text tower, decoupling, classifier and loss, backward, SGD
(momentum 0.9, weight decay 5e-4 except on log_kappa and beta, lr 0.002).
The inference step is the logits of the same batch under
``torch.inference_mode()``. Each is timed after warm-up; the figure is the
median. One variant per process, so the peak memory is that variant's:
``ru_maxrss`` (the process's peak resident set) on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU.

``--memory-cap-gib G`` (GPU) caps PyTorch's allocator at G GiB
(``torch.cuda.set_per_process_memory_fraction``), to ask whether the step
fits a smaller GPU; running out of memory, capped or not, is a result, not a
crash: the JSON then holds ``"out_of_memory": true``, the peak reached and
the error's first line, and the script exits 3.

Usage:
  python tools/torch_reference.py --clip DIR/clip.safetensors --inputs DIR/inputs.safetensors
      --variant literal|optimized [--image-size R] [--device cpu|cuda] [--steps N] [--warmup N]
      [--threads N] [--compile auto|on|off] [--memory-cap-gib G] [--json PATH]
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

import clip
import clip.model as openai_clip

FORMAT_VERSION = 1
LR, MOMENTUM, WEIGHT_DECAY = 0.002, 0.9, 5e-4
PHASES = ["vision", "forward", "backward", "optimizer"]


def clip_config(sd):
    """OpenAI's CLIP constructor arguments from a state dict (as
    ``clip.model.build_model`` infers them, for ViT towers)."""
    width = sd["visual.conv1.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    layers = lambda prefix: len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})
    text_width = sd["ln_final.weight"].shape[0]
    return dict(embed_dim=sd["text_projection"].shape[1], image_resolution=patch * grid,
                vision_layers=layers("visual.transformer.resblocks."), vision_width=width,
                vision_patch_size=patch, context_length=sd["positional_embedding"].shape[0],
                vocab_size=sd["token_embedding.weight"].shape[0], transformer_width=text_width,
                transformer_heads=text_width // 64, transformer_layers=layers("transformer.resblocks."))


def load_clip(path, device):
    sd = {k: v.float() for k, v in load_file(path).items()}
    sd.pop("logit_scale", None)
    cfg = clip_config(sd)
    model = openai_clip.CLIP(**cfg).float().eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "logit_scale"]
    if missing or unexpected:
        sys.exit(f"{path}: not an OpenAI-named CLIP (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device), cfg


def load_inputs(path, device):
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    tensors = {k: v.to(device) for k, v in load_file(path).items()}
    return tensors, json.loads(meta["classes"]), int(meta["n_ctx"])


def positional_for(visual, grid):
    """The patch grid's positional embeddings, bicubically resized when the
    resolution differs from the checkpoint's (the class position kept)."""
    pos = visual.positional_embedding
    native = round((pos.shape[0] - 1) ** 0.5)
    if native == grid:
        return pos
    patch = pos[1:].reshape(1, native, native, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], patch.permute(0, 2, 3, 1).reshape(grid * grid, -1)], dim=0)


class Literal:
    """docs/model.md written out on OpenAI's modules, CoOp-style."""

    def __init__(self, model, class_names, n_ctx, device):
        self.model = model
        tokens = clip.tokenize([" ".join(["X"] * n_ctx) + f" {name}." for name in class_names]).to(device)
        with torch.no_grad():
            embedding = model.token_embedding(tokens)
        self.prefix, self.suffix = embedding[:, :1], embedding[:, 1 + n_ctx:]
        self.eot = tokens.argmax(-1)

    def image_tokens(self, images):
        v = self.model.visual
        x = v.conv1(images)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1) + positional_for(v, round(x.shape[1] ** 0.5)).to(x.dtype)
        x = v.transformer(v.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return v.ln_post(x) @ v.proj

    def text_features(self, p):
        m = self.model
        x = torch.cat([self.prefix, p["prompt.ctx"], self.suffix], dim=1) + m.positional_embedding
        x = m.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return m.ln_final(x)[torch.arange(x.shape[0]), self.eot] @ m.text_projection

    @staticmethod
    def decouple(patches, text, p):
        x = patches @ p["sdm.fc1.weight"].T
        t = text @ p["sdm.fc2.weight"].T
        z = torch.tanh(x[:, None, :, :] * t[None, :, None, :])  # [B, C, N, d]
        scores = ((z @ p["sdm.fc3.weight"].T + p["sdm.fc3.bias"]) @ p["sdm.fc4.weight"].T + p["sdm.fc4.bias"])
        return torch.einsum("bcn,bnd->bcd", scores.squeeze(-1).softmax(dim=-1), patches)

    def logits(self, tokens, p):
        text = self.text_features(p)
        visual = self.decouple(tokens[:, 1:], text, p)
        cosine = (F.normalize(visual, dim=-1) * F.normalize(text, dim=-1)[None]).sum(-1)
        return p["classifier.log_kappa"].exp() * cosine + p["classifier.beta"]


def sdpa_block(block, x, causal):
    """OpenAI's ResidualAttentionBlock on batch-first x, with the fused
    attention of ``F.scaled_dot_product_attention``."""
    attn = block.attn
    b, n, w = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    split = lambda t: t.reshape(b, n, heads, w // heads).transpose(1, 2)
    y = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=causal)
    x = x + F.linear(y.transpose(1, 2).reshape(b, n, w), attn.out_proj.weight, attn.out_proj.bias)
    return x + block.mlp(block.ln_2(x))


class Optimized(Literal):
    """The engine's algebra: truncated text pass, collapsed fc3/fc4, SDPA."""

    def __init__(self, model, class_names, n_ctx, device, image_size):
        # Frozen towers stored bf16 on a GPU, as the engine's --precision
        # auto; the trainable head and its parameters stay f32.
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model = model.to(self.dtype)
        super().__init__(model, class_names, n_ctx, device)
        self.length = int(self.eot.max()) + 1
        self.suffix = self.suffix[:, :self.length - 1 - n_ctx]
        self.text_pos = model.positional_embedding[:self.length]
        with torch.no_grad():
            self.vision_pos = positional_for(model.visual, image_size // model.visual.conv1.weight.shape[-1])

    def image_tokens(self, images):
        v = self.model.visual
        x = v.conv1(images.to(self.dtype)).flatten(2).transpose(1, 2)
        cls = v.class_embedding.expand(x.shape[0], 1, -1)
        x = v.ln_pre(torch.cat([cls, x], dim=1) + self.vision_pos)
        for block in v.transformer.resblocks:
            x = sdpa_block(block, x, causal=False)
        return (v.ln_post(x) @ v.proj).float()

    def text_features(self, p):
        m = self.model
        x = torch.cat([self.prefix, p["prompt.ctx"].to(self.dtype), self.suffix], dim=1) + self.text_pos
        for block in m.transformer.resblocks:
            x = sdpa_block(block, x, causal=True)
        return (m.ln_final(x[torch.arange(x.shape[0]), self.eot]) @ m.text_projection).float()

    @staticmethod
    def decouple(patches, text, p):
        x = patches @ p["sdm.fc1.weight"].T
        t = text @ p["sdm.fc2.weight"].T
        u = (p["sdm.fc4.weight"] @ p["sdm.fc3.weight"]).squeeze(0)
        shift = p["sdm.fc4.weight"] @ p["sdm.fc3.bias"] + p["sdm.fc4.bias"]
        scores = torch.tanh(x[:, None, :, :] * t[None, :, None, :]) @ u + shift  # [B, C, N]
        return scores.softmax(dim=-1) @ patches


def masked_bce(logits, labels):
    known = labels != 0
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], (labels[known] > 0).to(logits.dtype))


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak resident set of the process"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", required=True, help="CLIP weights, OpenAI naming (safetensors)")
    ap.add_argument("--inputs", required=True, help="inputs.safetensors of `mlrpl-engine bench --e2e --export`")
    ap.add_argument("--variant", required=True, choices=["literal", "optimized"])
    ap.add_argument("--image-size", type=int, help="default: the images' size")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each kind")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least 1)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                    help="optimized: torch.compile the step after the vision tower (auto: keep it only where it "
                         "works and is faster than eager over 3 trial steps)")
    ap.add_argument("--memory-cap-gib", type=float, help="cuda: cap the allocator at this many GiB")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    if args.memory_cap_gib is not None and args.device != "cuda":
        sys.exit("--memory-cap-gib needs --device cuda")
    try:
        run(args)
    except torch.cuda.OutOfMemoryError as e:
        peak, peak_kind = peak_memory_mib(torch.device(args.device))
        doc = {"format_version": FORMAT_VERSION, "variant": args.variant, "torch_version": torch.__version__,
               "device": torch.cuda.get_device_name(), "out_of_memory": True,
               "memory_cap_gib": args.memory_cap_gib, "error": str(e).splitlines()[0] if str(e) else "",
               "peak_memory_mib": peak, "peak_memory_kind": peak_kind}
        print(f"torch {args.variant}: out of memory"
              f"{f' (capped at {args.memory_cap_gib:g} GiB)' if args.memory_cap_gib else ''}; peak {peak:.0f} MiB",
              file=sys.stderr)
        write_json(args.json, doc)
        sys.exit(3)


def write_json(path, doc):
    if path:
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")


def run(args):

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, cfg = load_clip(args.clip, device)
    inputs, class_names, n_ctx = load_inputs(args.inputs, device)
    images, labels = inputs["images"], inputs["labels"]
    image_size = args.image_size or images.shape[-1]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.cuda.reset_peak_memory_stats()
        if args.memory_cap_gib is not None:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total), device)
    if args.variant == "literal":
        impl = Literal(model, class_names, n_ctx, device)
    else:
        impl = Optimized(model, class_names, n_ctx, device, image_size)
    names = ["prompt.ctx", "sdm.fc1.weight", "sdm.fc2.weight", "sdm.fc3.weight", "sdm.fc3.bias",
             "sdm.fc4.weight", "sdm.fc4.bias", "classifier.log_kappa", "classifier.beta"]
    params = {n: inputs[n].clone().requires_grad_(True) for n in names}
    optimizer = torch.optim.SGD([{"params": [params[n] for n in names[:7]], "weight_decay": WEIGHT_DECAY},
                                 {"params": [params[n] for n in names[7:]], "weight_decay": 0.0}],
                                lr=LR, momentum=MOMENTUM)
    # bf16 autocast on a GPU for the literal model (as people run it); f32 on the CPU.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and args.variant == "literal")

    def eager_loss(tokens):
        return masked_bce(impl.logits(tokens, params).float(), labels)

    head = {"loss": eager_loss}
    compiled = args.variant == "optimized" and args.compile != "off"
    if compiled:
        head["loss"] = torch.compile(eager_loss)

    def step(laps):
        """One training step; with a list, appends the time at each phase's
        end (the device synchronised)."""
        def lap():
            if laps is not None:
                synchronize(device)
                laps.append(time.perf_counter())

        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad(), autocast:
            tokens = impl.image_tokens(images)
        lap()
        with autocast:
            loss = head["loss"](tokens)
        lap()
        loss.backward()
        lap()
        optimizer.step()
        lap()
        return loss

    first_loss, compile_error, trial_ms = None, None, {}
    for i in range(max(1, args.warmup)):
        try:
            loss = step(None)
        except Exception as e:  # torch.compile's failures come in many types
            if not (compiled and args.compile == "auto" and i == 0):
                raise
            compile_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"torch.compile failed, running eager: {compile_error}", file=sys.stderr)
            compiled, head["loss"] = False, eager_loss
            loss = step(None)
        if first_loss is None:
            first_loss = loss.item()
    if compiled and args.compile == "auto":
        # Where compiling works but does not pay (small models on the CPU),
        # the faster of the two is the optimized figure.
        def trial():
            laps = [time.perf_counter()]
            step(laps)
            return (laps[-1] - laps[0]) * 1e3
        for name, fn in (("eager", eager_loss), ("compiled", head["loss"])):
            head["loss"] = fn
            trial_ms[name] = statistics.median(trial() for _ in range(3))
        compiled = trial_ms["compiled"] < trial_ms["eager"]
        head["loss"] = head["loss"] if compiled else eager_loss

    train_ms, train_cpu_ms, phase_ms = [], [], {p: [] for p in PHASES}
    for _ in range(max(1, args.steps)):
        synchronize(device)
        laps, cpu = [time.perf_counter()], time.process_time()
        step(laps)
        train_cpu_ms.append((time.process_time() - cpu) * 1e3)
        train_ms.append((laps[-1] - laps[0]) * 1e3)
        for p, a, b in zip(PHASES, laps, laps[1:]):
            phase_ms[p].append((b - a) * 1e3)

    def infer():
        with torch.inference_mode(), autocast:
            synchronize(device)
            t = time.perf_counter()
            impl.logits(impl.image_tokens(images), params)
            synchronize(device)
            return (time.perf_counter() - t) * 1e3

    for _ in range(args.warmup):
        infer()
    infer_ms = [infer() for _ in range(max(1, args.steps))]
    peak, peak_kind = peak_memory_mib(device)
    batch = images.shape[0]
    figures = lambda ms: {"median_ms": statistics.median(ms), "mean_ms": statistics.mean(ms), "min_ms": min(ms),
                          "images_per_s": batch / statistics.median(ms) * 1e3, "times_ms": ms}
    doc = {
        "format_version": FORMAT_VERSION,
        "variant": args.variant,
        "torch_version": torch.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "compiled": compiled,
        "compile_error": compile_error,
        "compile_trial_ms": trial_ms,
        "autocast_bf16": device.type == "cuda" and args.variant == "literal",
        "config": {"batch": batch, "image_size": image_size, "classes": len(class_names), "n_ctx": n_ctx,
                   "text_length": getattr(impl, "length", cfg["context_length"]), "steps": args.steps,
                   "warmup": args.warmup},
        "first_loss": first_loss,
        "train": figures(train_ms),
        "phases_ms": {p: statistics.mean(v) for p, v in phase_ms.items()},
        # Process CPU time of all threads (OpenMP's spin-waits included).
        "train_cpu_ms": statistics.mean(train_cpu_ms),
        "inference": figures(infer_ms),
        "out_of_memory": False,
        "memory_cap_gib": args.memory_cap_gib,
        "peak_memory_mib": peak,
        "peak_memory_kind": peak_kind,
    }
    t, i = doc["train"], doc["inference"]
    print(f"torch {args.variant}{' (compiled)' if compiled else ''}: first loss {first_loss:.6f}; train "
          f"{t['median_ms']:.1f} ms ({t['images_per_s']:.2f} images/s), inference {i['median_ms']:.1f} ms; "
          f"peak {peak:.0f} MiB")
    write_json(args.json, doc)


if __name__ == "__main__":
    main()
