#!/usr/bin/env python3
"""Writes the MLR-PL model parity fixture (tests/fixtures/mlrpl_step.safetensors).

The reference is docs/model.md written literally in PyTorch on OpenAI's CLIP
code (clip-anytorch): CoOp-style category-specific prompts ("X X ... X
{name}." tokenized, context vectors spliced between SOT and the name), the
full 77-token text pass, the semantic decoupling module materialising
z = tanh(fc1(X) * fc2(T)) of shape [B, C, N, d] then fc3 and fc4, softmax
over positions, the cosine classifier with exp(log_kappa) and beta, and the
masked BCE. It dumps the logits, the loss, every trainable gradient after
one backward, the logits of the prompts-only variant (no decoupling), and
the losses of 10 SGD steps (momentum 0.9, weight decay 5e-4 except on
log_kappa and beta).

The CLIP is the small random one of make_clip_dumps.py but with the full
49,408-token vocabulary (the real BPE ids); only the token-embedding rows the
prompts use are non-zero and stored (`token_rows`, `token_ids`).

  pip install torch clip-anytorch ftfy regex safetensors "setuptools<70"
  python3 tools/make_mlrpl_dumps.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_clip_dumps as clip_dumps  # noqa: E402
import clip  # noqa: E402

FORMAT_VERSION = 1
CLASSES = ["cat", "hair drier", "potted plant", "dog"]
N_CTX, DECOUPLING_WIDTH, BATCH = 4, 16, 3
LR, MOMENTUM, WEIGHT_DECAY, STEPS = 0.05, 0.9, 5e-4, 10


def main():
    out_dir = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    cfg = dict(clip_dumps.SMALL, vocab_size=49408)
    torch.set_grad_enabled(False)
    model = clip_dumps.build_openai(cfg, seed=3)
    prompts = [" ".join(["X"] * N_CTX) + f" {name}." for name in CLASSES]
    tokens = clip.tokenize(prompts)
    used = torch.unique(tokens)
    keep = torch.zeros(cfg["vocab_size"], dtype=torch.bool)
    keep[used] = True
    model.token_embedding.weight[~keep] = 0.0

    gen = torch.Generator().manual_seed(4)
    width, embed, res = cfg["transformer_width"], cfg["embed_dim"], cfg["image_resolution"]
    images = torch.randn(BATCH, 3, res, res, generator=gen)
    labels = torch.tensor([[1, -1, 0, 1], [0, 0, -1, -1], [-1, 1, 1, 0]], dtype=torch.float32)

    def rounded(*shape, std):
        return clip_dumps.exact_in_f16_and_bf16(torch.randn(*shape, generator=gen) * std)

    init = {
        "ctx": rounded(len(CLASSES), N_CTX, width, std=0.02),
        "w1": rounded(DECOUPLING_WIDTH, embed, std=embed ** -0.5),
        "w2": rounded(DECOUPLING_WIDTH, embed, std=embed ** -0.5),
        "w3": rounded(DECOUPLING_WIDTH, DECOUPLING_WIDTH, std=DECOUPLING_WIDTH ** -0.5),
        "b3": rounded(DECOUPLING_WIDTH, std=0.1),
        "w4": rounded(1, DECOUPLING_WIDTH, std=DECOUPLING_WIDTH ** -0.5),
        "b4": rounded(1, std=0.1),
        "log_kappa": torch.tensor([20.0]).log(),
        "beta": torch.full((len(CLASSES),), -5.0),
    }
    embedding = model.token_embedding(tokens)
    prefix, suffix = embedding[:, :1], embedding[:, 1 + N_CTX:]
    eot = tokens.argmax(-1)
    patches = clip_dumps.visual_tokens(model.visual, images)

    def text_features(ctx):
        x = torch.cat([prefix, ctx, suffix], dim=1) + model.positional_embedding
        x = model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return model.ln_final(x)[torch.arange(len(CLASSES)), eot] @ model.text_projection

    def logits_of(p, sdm=True):
        text = text_features(p["ctx"])
        if sdm:
            x = patches[:, 1:]
            z = torch.tanh((x @ p["w1"].T)[:, None, :, :] * (text @ p["w2"].T)[None, :, None, :])  # [B, C, N, d]
            scores = ((z @ p["w3"].T + p["b3"]) @ p["w4"].T + p["b4"]).squeeze(-1)
            visual = torch.einsum("bcn,bnd->bcd", scores.softmax(dim=-1), x)
        else:
            visual = patches[:, :1].expand(-1, len(CLASSES), -1)
        cosine = (F.normalize(visual, dim=-1) * F.normalize(text, dim=-1)[None]).sum(-1)
        return p["log_kappa"].exp() * cosine + p["beta"]

    def masked_bce(logits):
        known = labels != 0
        if not known.any():
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits[known], (labels[known] > 0).float())

    torch.set_grad_enabled(True)
    params = {k: v.clone().requires_grad_(True) for k, v in init.items()}
    logits = logits_of(params)
    loss = masked_bce(logits)
    loss.backward()
    dump = {"images": images, "labels": labels, "logits": logits.detach(), "loss": loss.detach().reshape(1),
            "logits_no_sdm": logits_of(params, sdm=False).detach()}
    dump.update({f"init.{k}": v for k, v in init.items()})
    dump.update({f"grad.{k}": v.grad for k, v in params.items()})

    params = {k: v.clone().requires_grad_(True) for k, v in init.items()}
    decayed = [params[k] for k in ["ctx", "w1", "w2", "w3", "b3", "w4", "b4"]]
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": WEIGHT_DECAY},
                                 {"params": [params["log_kappa"], params["beta"]], "weight_decay": 0.0}],
                                lr=LR, momentum=MOMENTUM)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        step_loss = masked_bce(logits_of(params))
        step_loss.backward()
        optimizer.step()
        losses.append(step_loss.item())
    dump["step_losses"] = torch.tensor(losses)
    dump["token_ids"] = used.float()
    dump["token_rows"] = model.token_embedding.weight[used]

    weights = {k: v.to(torch.float16) for k, v in model.state_dict().items()
               if v.is_floating_point() and k != "token_embedding.weight"}
    meta = {"format_version": str(FORMAT_VERSION), "config": json.dumps(cfg), "classes": json.dumps(CLASSES),
            "n_ctx": str(N_CTX), "decoupling_width": str(DECOUPLING_WIDTH), "lr": str(LR),
            "momentum": str(MOMENTUM), "weight_decay": str(WEIGHT_DECAY), "text_heads": str(cfg["transformer_heads"]),
            "torch": torch.__version__}
    save_file(weights, os.path.join(out_dir, "mlrpl_clip.safetensors"), metadata=meta)
    save_file({k: v.detach().float().contiguous() for k, v in dump.items()},
              os.path.join(out_dir, "mlrpl_step.safetensors"), metadata=meta)
    print(f"loss {loss.item():.6f}, step losses {[round(x, 5) for x in losses]}")


if __name__ == "__main__":
    main()
