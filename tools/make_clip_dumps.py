#!/usr/bin/env python3
"""Writes the CLIP parity fixtures the Rust tests hold the engine to.

It builds a small random CLIP with OpenAI's own model code (`clip.model.CLIP`
from the `clip-anytorch` wheel), copies the same weights into Hugging Face's
`transformers.CLIPModel`, checks that the two agree, and writes under the
output folder (default tests/fixtures/):

  clip_openai.safetensors  weights in OpenAI's state-dict naming, stored f16
  clip_hf.safetensors      the same weights in Hugging Face naming, stored bf16
  clip_io.safetensors      inputs, per-block activations and outputs (f32)
  clip_input.png           an image at the model's resolution, with its
                           embeddings in clip_io (`png_*`), for `encode`

Weights are rounded to values exact in both f16 and bf16, so both files hold
the same model and one set of outputs serves both. Every file's
`__metadata__` holds the config and `format_version`. Token ids are stored as
f32 (exact below 2^24).

Usage:
  pip install torch clip-anytorch transformers safetensors "setuptools<70"
  python3 tools/make_clip_dumps.py                   # the CI fixtures (~2 MB)
  python3 tools/make_clip_dumps.py --full-size --out /tmp/vitb16
      # random full-size ViT-B/16 weights for a manual check (not in CI)
"""
import argparse
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

import clip.model as openai_clip
from transformers import CLIPConfig, CLIPModel

FORMAT_VERSION = 1
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

SMALL = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
             context_length=77, vocab_size=1000, transformer_width=64, transformer_heads=2, transformer_layers=2)
VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)


def exact_in_f16_and_bf16(t):
    """Rounds to bf16 and flushes magnitudes f16 cannot hold exactly."""
    r = t.to(torch.bfloat16).to(torch.float32)
    r[r.abs() < 2.0 ** -14] = 0.0
    assert torch.equal(r.to(torch.float16).to(torch.float32), r)
    return r


def build_openai(cfg, seed):
    torch.manual_seed(seed)
    model = openai_clip.CLIP(**cfg).float().eval()
    with torch.no_grad():
        # CLIP initialises layer norms to (1, 0) and many biases to 0: randomise
        # them so the parity check sees every parameter.
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("ln_") or "ln_pre" in name or "ln_post" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if name.endswith("weight") else 0.05 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
        for p in model.parameters():
            p.copy_(exact_in_f16_and_bf16(p))
    return model


def to_hf_naming(sd, cfg):
    out = {}
    v, t = "vision_model", "text_model"
    out[f"{v}.embeddings.class_embedding"] = sd["visual.class_embedding"]
    out[f"{v}.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    out[f"{v}.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    for hf, oa in [("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")]:
        for p in ["weight", "bias"]:
            out[f"{v}.{hf}.{p}"] = sd[f"visual.{oa}.{p}"]
    out["visual_projection.weight"] = sd["visual.proj"].t().contiguous()
    out[f"{t}.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    out[f"{t}.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    for p in ["weight", "bias"]:
        out[f"{t}.final_layer_norm.{p}"] = sd[f"ln_final.{p}"]
    out["text_projection.weight"] = sd["text_projection"].t().contiguous()
    out["logit_scale"] = sd["logit_scale"]
    for hf_tower, oa_tower, layers in [(v, "visual.transformer", cfg["vision_layers"]),
                                        (t, "transformer", cfg["transformer_layers"])]:
        for i in range(layers):
            hb, ob = f"{hf_tower}.encoder.layers.{i}", f"{oa_tower}.resblocks.{i}"
            for p in ["weight", "bias"]:
                q, k, vv = sd[f"{ob}.attn.in_proj_{p}"].chunk(3, dim=0)
                out[f"{hb}.self_attn.q_proj.{p}"] = q.contiguous()
                out[f"{hb}.self_attn.k_proj.{p}"] = k.contiguous()
                out[f"{hb}.self_attn.v_proj.{p}"] = vv.contiguous()
                for hf, oa in [("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                               ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]:
                    out[f"{hb}.{hf}.{p}"] = sd[f"{ob}.{oa}.{p}"]
    return out


def build_hf(cfg, hf_weights):
    config = CLIPConfig(
        text_config=dict(vocab_size=cfg["vocab_size"], hidden_size=cfg["transformer_width"],
                         intermediate_size=4 * cfg["transformer_width"], num_hidden_layers=cfg["transformer_layers"],
                         num_attention_heads=cfg["transformer_heads"], max_position_embeddings=cfg["context_length"],
                         hidden_act="quick_gelu", bos_token_id=cfg["vocab_size"] - 2,
                         eos_token_id=cfg["vocab_size"] - 1),
        vision_config=dict(hidden_size=cfg["vision_width"], intermediate_size=4 * cfg["vision_width"],
                           num_hidden_layers=cfg["vision_layers"], num_attention_heads=cfg["vision_width"] // 64,
                           image_size=cfg["image_resolution"], patch_size=cfg["vision_patch_size"],
                           hidden_act="quick_gelu"),
        projection_dim=cfg["embed_dim"])
    model = CLIPModel(config).float().eval()
    missing, unexpected = model.load_state_dict(hf_weights, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    assert not missing and not unexpected, (missing, unexpected)
    return model


def features(out):
    """transformers returns a tensor or, in newer versions, a model output."""
    return out if torch.is_tensor(out) else out.pooler_output


def visual_tokens(visual, images, pos=None, blocks=None):
    """OpenAI's VisionTransformer.forward with ln_post + proj on every token."""
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + (visual.positional_embedding if pos is None else pos)
    x = visual.ln_pre(x).permute(1, 0, 2)
    for block in visual.transformer.resblocks:
        x = block(x)
        if blocks is not None:
            blocks.append(x.permute(1, 0, 2).contiguous())
    return visual.ln_post(x.permute(1, 0, 2)) @ visual.proj


def interpolated_pos(visual, grid):
    pos = visual.positional_embedding
    native = int(round((pos.shape[0] - 1) ** 0.5))
    patch = pos[1:].reshape(1, native, native, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], patch.permute(0, 2, 3, 1).reshape(grid * grid, -1)], dim=0)


def token_batch(cfg, gen):
    """Sequences SOT ... EOT with EOT (the largest id) at different places."""
    vocab, ctx = cfg["vocab_size"], cfg["context_length"]
    sot, eot = vocab - 2, vocab - 1
    rows = []
    for length in [5, 12, 3, ctx - 2]:
        body = torch.randint(1, vocab - 2, (length,), generator=gen)
        row = torch.zeros(ctx, dtype=torch.long)
        row[0], row[1:length + 1], row[length + 1] = sot, body, eot
        rows.append(row)
    return torch.stack(rows)


def text_blocks(model, tokens, length):
    x = model.token_embedding(tokens) + model.positional_embedding
    x = x.permute(1, 0, 2)
    acts = []
    for block in model.transformer.resblocks:
        x = block(x)
        acts.append(x.permute(1, 0, 2)[:, :length].contiguous())
    return acts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    ap.add_argument("--full-size", action="store_true", help="random ViT-B/16 weights instead of the small model")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = VIT_B16 if args.full_size else SMALL
    os.makedirs(args.out, exist_ok=True)
    torch.set_grad_enabled(False)

    model = build_openai(cfg, args.seed)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    hf = build_hf(cfg, to_hf_naming(sd, cfg))

    gen = torch.Generator().manual_seed(args.seed + 1)
    res = cfg["image_resolution"]
    images = torch.randn(2, 3, res, res, generator=gen)
    big_grid = res // cfg["vision_patch_size"] + 2
    big_res = big_grid * cfg["vision_patch_size"]
    images_big = torch.randn(2, 3, big_res, big_res, generator=gen)
    tokens = token_batch(cfg, gen)

    pixels = torch.randint(0, 256, (res, res, 3), generator=gen, dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(os.path.join(args.out, "clip_input.png"))
    # torchvision's ToTensor + Normalize, in f32 (no resampling: already R x R).
    png = pixels.permute(2, 0, 1).float() / 255.0
    png = ((png - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)).unsqueeze(0)

    vision_blocks = []
    dense = visual_tokens(model.visual, images, blocks=vision_blocks)
    image_embeds = model.encode_image(images)
    assert torch.allclose(dense[:, 0], image_embeds, atol=1e-5)
    dense_big = visual_tokens(model.visual, images_big, pos=interpolated_pos(model.visual, big_grid))
    text_embeds = model.encode_text(tokens)
    longest = int(tokens.argmax(-1).max()) + 1
    text_acts = text_blocks(model, tokens, longest)

    hf_image = features(hf.get_image_features(pixel_values=images))
    hf_text = features(hf.get_text_features(input_ids=tokens))
    for name, a, b in [("image", hf_image, image_embeds), ("text", hf_text, text_embeds)]:
        rel = float((a - b).norm() / b.norm())
        assert rel < 1e-5, f"transformers and OpenAI CLIP disagree on {name} embeddings: {rel}"

    meta = {"format_version": str(FORMAT_VERSION), "config": json.dumps(cfg), "seed": str(args.seed),
            "text_heads": str(cfg["transformer_heads"]), "torch": torch.__version__}
    save_file({k: v.to(torch.float16) for k, v in sd.items() if v.is_floating_point()},
              os.path.join(args.out, "clip_openai.safetensors"), metadata=meta)
    save_file({k: v.to(torch.bfloat16) for k, v in to_hf_naming(sd, cfg).items()},
              os.path.join(args.out, "clip_hf.safetensors"), metadata=meta)

    io = {"images": images, "images_big": images_big, "tokens": tokens.float(),
          "image_embeds": image_embeds, "dense_tokens": dense, "dense_tokens_big": dense_big,
          "text_embeds": text_embeds, "png_image_embeds": model.encode_image(png),
          "png_dense_tokens": visual_tokens(model.visual, png)}
    for i, a in enumerate(vision_blocks):
        io[f"vision_block_{i}"] = a
    for i, a in enumerate(text_acts):
        io[f"text_block_{i}"] = a
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(args.out, "clip_io.safetensors"),
              metadata={**meta, "big_resolution": str(big_res)})
    print(f"wrote {args.out}: image {tuple(image_embeds.shape)}, text {tuple(text_embeds.shape)}, "
          f"dense {tuple(dense.shape)}, interpolated {big_res}px")


if __name__ == "__main__":
    main()
