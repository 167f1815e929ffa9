#!/usr/bin/env python3
"""PyTorch side of `mlrpl-engine bench`: times the same primitives at the
same shapes, on the same device, with the same method, and writes torch.json.

The case list is read from the engine's bench.json (op + params per figure),
so shapes never drift between the two sides. Each op is what a PyTorch user
would write for the primitive (F.layer_norm, F.scaled_dot_product_attention,
torch.optim.AdamW(fused=True) on CUDA, ...); a backward is the backward of
that forward alone (torch.autograd.grad with retain_graph), so its time is
the backward kernels' only.

Method, as the engine's (src/bench/timing.rs): warm-up calls, then the
median of N samples, a sample being enough back-to-back calls to last
min_sample_ms (from bench.json) divided by their number. CUDA: the stream's
time between two events after torch.cuda.synchronize(); CPU: wall clock,
torch.set_num_threads(--threads).

End-to-end figures (train_step, clip_image_forward) have no counterpart
here: the report lists them as engine only. The text tower step
(text_tower_step[_bf16]) has one: the CoOp-style prompt text pass as
PyTorch users write it, OpenAI's text transformer (nn.MultiheadAttention
with the causal mask) on all 77 positions, forward and backward into the
context; with bf16 towers, bf16 autocast over f32 weights, as CoOp runs.

Usage:
  python tools/bench_torch_kernels.py --engine DIR/bench.json [--out DIR/torch.json]
      [--device cuda|cpu] [--threads N] [--runs N] [--warmup N]
--device defaults to the engine's device kind.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

FORMAT_VERSION = 1
MAX_INNER = 1000


class Op:
    """A callable to time and a description of what it calls."""

    def __init__(self, call, impl):
        self.call = call
        self.impl = impl


# The dtype of the inputs `build` makes: bfloat16 while it builds an engine
# case whose name ends in `_bf16`.
DTYPE = torch.float32


def randn(*shape, dev, requires_grad=False, std=1.0):
    return (torch.randn(*shape, device=dev, dtype=DTYPE) * std).requires_grad_(requires_grad)


def backward_of(forward, inputs, impl, grad_inputs=None):
    """Times the backward of `forward(*inputs)` only (into grad_inputs,
    default all inputs): the graph is built once and kept."""
    out = forward(*inputs)
    grad = torch.randn_like(out)
    targets = inputs if grad_inputs is None else grad_inputs
    return Op(lambda: torch.autograd.grad(out, targets, grad, retain_graph=True), impl + " backward (autograd.grad)")


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def decoupling_scores(x, t, u):
    # s[b,c,n] = sum_k u[k] tanh(x[b,n,k] t[c,k]); PyTorch has no fused form,
    # so [B, C, N, d] is materialised.
    return torch.tanh(x[:, None, :, :] * t[None, :, None, :]) @ u


def decoupling_attention(x, t, u, patches):
    # The engine's fused op with the same fc3/fc4 collapse, as PyTorch
    # writes it: the [B, C, N, d] tanh terms are materialised; the constant
    # w4.b3 + b4 cancels in the softmax and is left out on both sides.
    scores = torch.tanh(x[:, None, :, :] * t[None, :, None, :]) @ u
    return torch.softmax(scores, -1) @ patches


def decoupling_module(patches, text, w1, w2, w3, b3, w4, b4):
    # The literal semantic decoupling module: fc1..fc4 with fc3 on the
    # [B, C, N, d] tensor.
    x = F.linear(patches, w1)
    t = F.linear(text, w2)
    z = torch.tanh(x[:, None, :, :] * t[None, :, None, :])
    scores = F.linear(F.linear(z, w3, b3), w4, b4).squeeze(-1)
    return torch.softmax(scores, -1) @ patches


def step_of(forward, inputs, grad_inputs, impl):
    """Forward then backward (into grad_inputs) per call: the graph is
    rebuilt each time, as the engine's step case does."""
    grad = torch.randn_like(forward(*inputs))

    def call():
        torch.autograd.grad(forward(*inputs), grad_inputs, grad)

    return Op(call, impl + ", forward + backward (autograd.grad)")


def prompt_embed(frozen, pos, ctx, n_ctx):
    # CoOp's assembly: cat(SOT, ctx in the tower's dtype broadcast to every
    # category, the rest), then the positional add of the text tower.
    classes, length = frozen.shape[0], frozen.shape[1] + n_ctx
    ctx = ctx.to(frozen.dtype).expand(classes, -1, -1)
    return torch.cat([frozen[:, :1], ctx, frozen[:, 1:]], 1) + pos[:length]


class CoopTextPass:
    """The CoOp prompt text pass on a random OpenAI text transformer
    (clip.model.Transformer when the clip package is there, else the same
    blocks written out: nn.MultiheadAttention, QuickGELU, causal mask):
    prompts of all `context` positions, ln_final, the EOT rows gathered,
    text_projection; forward and backward into the per-category context."""

    def __init__(self, p, dev, autocast):
        width, layers, heads, context = p["width"], p["layers"], p["heads"], p["context"]
        classes, n_ctx, length = p["classes"], p["n_ctx"], p["len"]
        self.transformer = text_transformer(width, layers, heads, context).to(dev)
        for param in self.transformer.parameters():
            param.requires_grad_(False)
        self.ln_final = torch.nn.LayerNorm(width).to(dev).requires_grad_(False)
        self.projection = torch.randn(width, p["embed"], device=dev) * width ** -0.5
        self.pos = torch.randn(context, width, device=dev) * 0.01
        # SOT, the name, ".", EOT at the engine's longest position, padding.
        self.frozen = torch.randn(classes, context - n_ctx, width, device=dev) * 0.02
        self.eot = torch.full((classes,), length - 1, device=dev)
        self.ctx = (torch.randn(classes, n_ctx, width, device=dev) * 0.02).requires_grad_(True)
        self.weights = torch.randn(classes, p["embed"], device=dev)
        self.n_ctx, self.dev, self.autocast = n_ctx, dev, autocast

    def step(self):
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.autocast):
            x = prompt_embed(self.frozen, self.pos, self.ctx, self.n_ctx)
            x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
            x = self.ln_final(x)
            features = x[torch.arange(x.shape[0], device=self.dev), self.eot] @ self.projection
        (grad,) = torch.autograd.grad((features.float() * self.weights).sum(), (self.ctx,))
        return grad


def text_transformer(width, layers, heads, context):
    mask = torch.full((context, context), float("-inf")).triu_(1)
    try:
        import clip.model as openai_clip

        return openai_clip.Transformer(width, layers, heads, attn_mask=mask)
    except ImportError:
        pass

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(width, heads)
            self.ln_1, self.ln_2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
            self.c_fc, self.c_proj = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)
            self.register_buffer("mask", mask)

        def forward(self, x):
            h = self.ln_1(x)
            x = x + self.attn(h, h, h, need_weights=False, attn_mask=self.mask.to(h.dtype))[0]
            return x + self.c_proj(quick_gelu(self.c_fc(self.ln_2(x))))

    return torch.nn.Sequential(*[Block() for _ in range(layers)])


def copy_bandwidth(dev, warmup, runs, min_sample_ms):
    """GB/s of dst.copy_(src) on 256 MiB of f32, bytes read plus written:
    the reference of the masked BCE's bandwidth target."""
    n = 64 << 20
    src, dst = torch.randn(n, device=dev), torch.empty(n, device=dev)
    timing = measure(lambda: dst.copy_(src), dev, warmup, runs, min_sample_ms)
    return {"bytes": 8 * n, "impl": "dst.copy_(src), 256 MiB f32", "gb_per_s": 8 * n / (timing["ms"] * 1e-3) / 1e9, **timing}


def masked_bce(logits, labels):
    known = (labels != 0).float()
    target = (labels > 0).float()
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * known).sum() / known.sum().clamp_min(1.0)


def contrastive(logits):
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def labels_of(n, dev):
    return torch.randint(-1, 2, (n,), device=dev).float()


def build(op, p, dev):
    """The PyTorch counterpart of engine op `op` with params `p`, or None."""
    if op == "gemm_linear":
        a, w = randn(p["m"], p["k"], dev=dev), randn(p["n"], p["k"], dev=dev)
        return Op(lambda: F.linear(a, w), "F.linear")
    if op == "gemm_linear_bf16":
        a, w = randn(p["m"], p["k"], dev=dev).bfloat16(), randn(p["n"], p["k"], dev=dev).bfloat16()
        b = randn(p["n"], dev=dev).bfloat16()
        return Op(lambda: F.linear(a, w, b), "F.linear (bf16, bias)")
    if op.startswith("text_tower_step"):
        # The bf16 engine figure against autocast (what CoOp users run);
        # the f32 one against f32.
        text_pass = CoopTextPass(p, dev, autocast=op.endswith("_bf16") and dev.type == "cuda")
        impl = "CoOp text pass, 77 positions, clip.model.Transformer" + (" (bf16 autocast)" if text_pass.autocast else "")
        return Op(text_pass.step, impl + ", forward + backward (autograd.grad)")
    if op.endswith("_bf16"):
        # The f32 case's PyTorch op on bfloat16 inputs.
        global DTYPE
        DTYPE = torch.bfloat16
        try:
            built = build(op[: -len("_bf16")], p, dev)
        finally:
            DTYPE = torch.float32
        return built and Op(built.call, built.impl + " (bf16)")
    if op.startswith("flash_attention"):
        # The engine's tensor-core kernels against PyTorch's flash backend,
        # forced (an error, not a fallback, where it cannot run): bf16
        # [1, heads, len, 64], the layout that backend takes.
        from torch.nn.attention import SDPBackend, sdpa_kernel

        causal = "causal" in op
        bh, lq, lk, hd = p["batch_heads"], p["q_len"], p["kv_len"], p["head_dim"]
        grad = "_bwd_" in op
        q, k, v = (randn(1, bh, n, hd, dev=dev, requires_grad=grad) for n in (lq, lk, lk))

        def fwd(q, k, v):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        impl = f"F.scaled_dot_product_attention(is_causal={causal}) under sdpa_kernel(FLASH_ATTENTION)"
        return backward_of(fwd, (q, k, v), impl) if grad else Op(lambda: fwd(q, k, v), impl)
    if op.startswith("attention"):
        causal = "causal" in op
        bh, lq, lk, hd = p["batch_heads"], p["q_len"], p["kv_len"], p["head_dim"]
        grad = op.endswith("_bwd")
        q, k, v = (randn(bh, n, hd, dev=dev, requires_grad=grad) for n in (lq, lk, lk))
        fwd = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
        impl = f"F.scaled_dot_product_attention(is_causal={causal})"
        return backward_of(fwd, (q, k, v), impl) if grad else Op(lambda: fwd(q, k, v), impl)
    if op.startswith("layernorm"):
        rows, cols = p["rows"], p["cols"]
        grad = op.endswith("_bwd")
        x, w, b = randn(rows, cols, dev=dev, requires_grad=grad), randn(cols, dev=dev, requires_grad=grad), randn(cols, dev=dev, requires_grad=grad)
        fwd = lambda x, w, b: F.layer_norm(x, (cols,), w, b, 1e-5)  # noqa: E731
        return backward_of(fwd, (x, w, b), "F.layer_norm") if grad else Op(lambda: fwd(x, w, b), "F.layer_norm")
    unary = {
        "softmax": (lambda x: torch.softmax(x, -1), "torch.softmax"),
        "l2_normalize": (lambda x: F.normalize(x, dim=-1, eps=1e-12), "F.normalize"),
        "quick_gelu": (quick_gelu, "x * sigmoid(1.702 x)"),
    }
    for name, (fwd, impl) in unary.items():
        if op in (f"{name}_fwd", f"{name}_bwd"):
            grad = op.endswith("_bwd")
            x = randn(p["rows"], p["cols"], dev=dev, requires_grad=grad)
            return backward_of(fwd, (x,), impl) if grad else Op(lambda: fwd(x), impl)
    if op.startswith("decoupling_attention"):
        b, c, n, d, e = p["batch"], p["classes"], p["positions"], p["width"], p["embed"]
        step = op.startswith("decoupling_attention_step")
        grad = op.endswith("_bwd") or step
        patches = randn(b, n, e, dev=dev)
        if op == "decoupling_attention_step_vs_module":
            text = randn(c, e, dev=dev)
            params = [randn(*shape, dev=dev, requires_grad=True, std=std) for shape, std in
                      (((d, e), e ** -0.5), ((d, e), e ** -0.5), ((d, d), d ** -0.5), ((d,), d ** -0.5), ((1, d), d ** -0.5), ((1,), d ** -0.5))]
            impl = "literal module: fc1, fc2, tanh, fc3 and fc4 on [B, C, N, d], softmax, @ patches"
            return step_of(decoupling_module, (patches, text, *params), params, impl)
        x, t = randn(b, n, d, dev=dev, requires_grad=grad), randn(c, d, dev=dev, requires_grad=grad)
        u = randn(d, dev=dev, requires_grad=grad, std=d ** -0.5)
        impl = "softmax(tanh(x[:,None] * t[None,:,None]) @ u) @ patches (same collapse)"
        if step:
            return step_of(decoupling_attention, (x, t, u, patches), (x, t, u), impl)
        if grad:
            return backward_of(decoupling_attention, (x, t, u, patches), impl, (x, t, u))
        return Op(lambda: decoupling_attention(x, t, u, patches), impl)
    if op.startswith("decoupling"):
        b, c, n, d = p["batch"], p["classes"], p["positions"], p["width"]
        grad = op.endswith("_bwd")
        x, t, u = randn(b, n, d, dev=dev, requires_grad=grad), randn(c, d, dev=dev, requires_grad=grad), randn(d, dev=dev, requires_grad=grad)
        impl = "tanh(x[:,None] * t[None,:,None]) @ u"
        return backward_of(decoupling_scores, (x, t, u), impl) if grad else Op(lambda: decoupling_scores(x, t, u), impl)
    if op.startswith("masked_bce"):
        n = p["batch"] * p["classes"]
        grad = op != "masked_bce_fwd"
        logits, labels = randn(n, dev=dev, requires_grad=grad, std=2.0), labels_of(n, dev)
        fwd = lambda x: masked_bce(x, labels)  # noqa: E731
        impl = "masked F.binary_cross_entropy_with_logits"
        if op == "masked_bce_step":
            return step_of(fwd, (logits,), (logits,), impl)
        return backward_of(fwd, (logits,), impl) if grad else Op(lambda: fwd(logits), impl)
    if op.startswith("prompt_embed"):
        c, m, w, sets = p["classes"], p["n_ctx"], p["width"], p["sets"]
        grad = "_bwd" in op
        frozen, pos = randn(c, p["len"] - m, w, dev=dev, std=0.02), randn(p["positions"], w, dev=dev, std=0.01)
        ctx = torch.randn(sets, m, w, device=dev).mul_(0.02).requires_grad_(grad)
        fwd = lambda ctx: prompt_embed(frozen, pos, ctx, m)  # noqa: E731
        impl = "torch.cat([sot, ctx.to(dtype).expand(C, -1, -1), rest], 1) + pos[:L]"
        return backward_of(fwd, (ctx,), impl) if grad else Op(lambda: fwd(ctx), impl)
    if op.startswith("contrastive"):
        grad = op.endswith("_bwd")
        logits = randn(p["n"], p["n"], dev=dev, requires_grad=grad, std=3.0)
        impl = "symmetric F.cross_entropy"
        return backward_of(contrastive, (logits,), impl) if grad else Op(lambda: contrastive(logits), impl)
    if op == "add_bias":
        x, b = randn(p["rows"], p["cols"], dev=dev), randn(p["cols"], dev=dev)
        return Op(lambda: x + b, "x + bias (broadcast)")
    if op == "sum_rows":
        x = randn(p["rows"], p["cols"], dev=dev)
        return Op(lambda: x.sum(0), "x.sum(0)")
    if op == "add_residual":
        a, b = randn(p["rows"], p["cols"], dev=dev), randn(p["rows"], p["cols"], dev=dev)
        return Op(lambda: a + b, "a + b")
    if op == "cast_f32_to_bf16":
        x = randn(p["rows"], p["cols"], dev=dev)
        return Op(lambda: x.to(torch.bfloat16), "x.to(bfloat16)")
    if op == "cast_bf16_to_f32":
        x = randn(p["rows"], p["cols"], dev=dev).to(torch.bfloat16)
        return Op(lambda: x.float(), "x.float()")
    if op == "bicubic_pos_embed":
        x = randn(1, p["channels"], p["height"], p["width"], dev=dev)
        size = (p["out_height"], p["out_width"])
        return Op(lambda: F.interpolate(x, size=size, mode="bicubic", align_corners=False), "F.interpolate(bicubic)")
    if op == "permute_qkv":
        x = randn(p["batch"], p["tokens"], 3, p["heads"], p["head_dim"], dev=dev)
        return Op(lambda: x.permute(2, 0, 3, 1, 4).contiguous(), "permute(2,0,3,1,4).contiguous()")
    if op == "permute_heads":
        x = randn(p["batch"], p["heads"], p["tokens"], p["head_dim"], dev=dev)
        return Op(lambda: x.permute(0, 2, 1, 3).contiguous(), "permute(0,2,1,3).contiguous()")
    if op == "concat_class_token":
        a, b = randn(p["batch"], 1, p["width"], dev=dev), randn(p["batch"], p["tokens"] - 1, p["width"], dev=dev)
        return Op(lambda: torch.cat([a, b], 1), "torch.cat")
    if op == "index_select_embedding":
        table = randn(p["rows"], p["cols"], dev=dev, std=0.02)
        ids = torch.randint(0, p["rows"], (p["ids"],), device=dev)
        return Op(lambda: table.index_select(0, ids), "table.index_select(0, ids)")
    if op == "index_add_eot":
        src = randn(p["ids"], p["cols"], dev=dev)
        len_ = p["rows"] // p["ids"]
        ids = torch.arange(p["ids"], device=dev) * len_ + len_ - 1
        return Op(lambda: torch.zeros(p["rows"], p["cols"], device=dev).index_add_(0, ids, src), "zeros().index_add_(0, ids, src)")
    if op in ("adamw_step", "sgd_step"):
        # The MLR-PL trainable tensors, as Setup::trainable lists them.
        d = p["embed"]
        sizes = [p["classes"] * p["n_ctx"] * p["text_width"], d * d, d * d, d * d, d, d, 1, 1, p["classes"]]
        assert len(sizes) == p["tensors"] and sum(sizes) == p["elements"], "Setup::trainable changed"
        params = [torch.nn.Parameter(randn(n, dev=dev)) for n in sizes]
        for param in params:
            param.grad = randn(param.numel(), dev=dev, std=0.1)
        if op == "adamw_step":
            fused = dev.type == "cuda"
            opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, fused=fused)
            impl = f"torch.optim.AdamW({'fused=True' if fused else 'default (foreach)'}).step() over {len(sizes)} tensors"
        else:
            opt = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=5e-4)
            impl = f"torch.optim.SGD(momentum=0.9).step() (foreach) over {len(sizes)} tensors"
        return Op(opt.step, impl)
    if op == "grad_accumulate":
        acc, g = randn(p["elements"], dev=dev), randn(p["elements"], dev=dev)
        return Op(lambda: acc.add_(g), "acc.add_(g)")
    return None


def sample_ms(call, calls, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - t) * 1e3


def measure(call, dev, warmup, runs, min_sample_ms):
    for _ in range(warmup):
        call()
    first = sample_ms(call, 1, dev)
    inner = min(max(int(-(-min_sample_ms // first)) if first > 0 else MAX_INNER, 1), MAX_INNER)
    per_call = [sample_ms(call, inner, dev) / inner for _ in range(max(runs, 1))]
    return {"ms": statistics.median(per_call), "min_ms": min(per_call), "runs": len(per_call), "inner": inner}


def device_name(dev):
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        return f"cuda:{dev.index or 0}: {torch.cuda.get_device_name(dev)} (sm_{major}{minor})"
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {model}, {torch.get_num_threads()} threads"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, help="the engine's bench.json")
    ap.add_argument("--out", help="torch.json to write (default: beside bench.json)")
    ap.add_argument("--device", choices=["cuda", "cpu"], help="default: the engine's device kind")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (default: one per core, as the engine's rayon)")
    ap.add_argument("--runs", type=int, help="samples per op (default: the engine's)")
    ap.add_argument("--warmup", type=int, help="warm-up calls (default: the engine's)")
    args = ap.parse_args()

    with open(args.engine) as f:
        engine = json.load(f)
    if engine.get("format_version") != FORMAT_VERSION:
        sys.exit(f"{args.engine}: format_version {engine.get('format_version')} is not {FORMAT_VERSION}")
    kind = args.device or engine["device_kind"]
    if kind == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch.cuda.is_available() is False")
    dev = torch.device("cuda:0" if kind == "cuda" else "cpu")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    warmup = engine["warmup"] if args.warmup is None else args.warmup
    runs = engine["runs"] if args.runs is None else args.runs
    min_sample_ms = engine["min_sample_ms"]

    figures, skipped = [], []
    for fig in engine["figures"]:
        op = build(fig["op"], fig["params"], dev)
        if op is None:
            skipped.append({"id": fig["id"], "reason": "no PyTorch counterpart in this script"})
            continue
        timing = measure(op.call, dev, warmup, runs, min_sample_ms)
        figures.append({"id": fig["id"], "op": fig["op"], "setup": fig["setup"], "shape": fig["shape"], "impl": op.impl, **timing})
        print(f"  {fig['id']:<36} {fig['shape']:<42} {timing['ms']:>10.4f} ms  {op.impl}", file=sys.stderr)
        del op
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    copy = copy_bandwidth(dev, warmup, runs, min_sample_ms)
    print(f"  copy bandwidth: {copy['gb_per_s']:.0f} GB/s ({copy['impl']})", file=sys.stderr)

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.engine)), "torch.json")
    doc = {
        "format_version": FORMAT_VERSION,
        "torch_version": torch.__version__,
        "device_kind": kind,
        "device": device_name(dev),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "warmup": warmup,
        "runs": runs,
        "min_sample_ms": min_sample_ms,
        "figures": figures,
        "skipped": skipped,
        "copy_bandwidth": copy,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"wrote {out} ({len(figures)} ops timed, {len(skipped)} without a PyTorch counterpart)", file=sys.stderr)


if __name__ == "__main__":
    main()
