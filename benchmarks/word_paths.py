"""Copies of a diffusers pipeline whose UNet reads the words at its finest level too (docs/BENCHMARKS.md, "Race and
where the words reach the UNet").

The tiny-f4 UNet reads the prompt only through cross-attention at 16x16 and 8x8, while the phantom's race gratings
repeat every 2-4 cells of its 32x32 grid. Two stock-diffusers ways to carry the words there (``from_pretrained``
loads both without extra arguments):

* ``time-embedding``: ``addition_embed_type: text``, the attention-pooled token states added to the timestep
  embedding, which scales and shifts every ResNet block (+21k parameters, no measurable cost per step);
* ``cross-attention``: cross-attention blocks at the top level with ``only_cross_attention`` there (no 1024-token
  self-attention; +82k parameters, about 2.6x a training step on a CPU).

Every weight of the source UNet is kept. ``--zero`` makes the new module's output zero, so that the copy starts as
the source model (a phase trained on from it); without it the module keeps diffusers' default init, seeded (a
random init trained from scratch, e.g. ``runs/demo-f4/models/init`` of ``cfaudit demo --train``), its output
scaled by ``--scale`` (0.2: a path that starts at a fifth of its default strength).

    python benchmarks/word_paths.py --variant time-embedding --source runs/demo-f4/models/init --out runs/temb-init
    cfaudit train --config my.yaml        # configs/train/demo_f4_scratch.yaml with model: runs/temb-init
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

VARIANTS = ("time-embedding", "cross-attention")


def variant_config(config: dict, variant: str) -> tuple[dict, tuple[str, ...]]:
    """The UNet config of ``variant`` and the prefixes of the parameters it adds."""
    config = dict(config)
    if variant == "time-embedding":
        config["addition_embed_type"] = "text"
        config["addition_embed_type_num_heads"] = 8
        return config, ("add_embedding",)
    config["down_block_types"] = ["CrossAttnDownBlock2D", *config["down_block_types"][1:]]
    config["up_block_types"] = [*config["up_block_types"][:-1], "CrossAttnUpBlock2D"]
    levels = len(config["down_block_types"])
    config["only_cross_attention"] = [True] + [False] * (levels - 1)
    return config, ("down_blocks.0.attentions", f"up_blocks.{levels - 1}.attentions")


def scale_new_outputs(unet: UNet2DConditionModel, variant: str, added: tuple[str, ...], scale: float) -> None:
    """Scale the added module's output by ``scale``: 0 makes the UNet compute what the source did; between 0 and 1
    the new path starts quieter than diffusers' init."""

    def scaled(tensor: torch.Tensor) -> None:
        if scale == 0.0:
            tensor.zero_()  # +0.0 everywhere (a product would leave -0.0), as --zero always wrote
        else:
            tensor.mul_(scale)

    with torch.no_grad():
        if variant == "time-embedding":
            scaled(unet.add_embedding.norm2.weight)
            scaled(unet.add_embedding.norm2.bias)
            return
        for name, module in unet.named_modules():
            if name.startswith(added) and name.endswith("proj_out"):
                scaled(module.weight)
                scaled(module.bias)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--source", type=Path, required=True, help="a diffusers pipeline folder")
    parser.add_argument("--out", type=Path, required=True, help="the new pipeline folder (replaced)")
    parser.add_argument("--zero", action="store_true", help="start as the source model (a phase trained on)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="scale the new module's output at init (--zero: 0)"
    )
    parser.add_argument("--seed", type=int, default=0, help="init of the added module without --zero")
    args = parser.parse_args()

    source = UNet2DConditionModel.from_pretrained(args.source / "unet", torch_dtype=torch.float32)
    config, added = variant_config(dict(source.config), args.variant)
    torch.manual_seed(args.seed)
    unet = UNet2DConditionModel.from_config(config)
    missing, unexpected = unet.load_state_dict(source.state_dict(), strict=False)
    if unexpected or not all(key.startswith(added) for key in missing):
        raise SystemExit(f"the source UNet does not fit the variant: {unexpected or missing}")
    scale = 0.0 if args.zero else args.scale
    if scale != 1.0:
        scale_new_outputs(unet, args.variant, added, scale)
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(args.source, args.out, ignore=shutil.ignore_patterns("unet"))
    unet.save_pretrained(args.out / "unet", safe_serialization=True)
    grown = sum(p.numel() for p in unet.parameters()) - sum(p.numel() for p in source.parameters())
    print(
        f"wrote {args.out}: {args.variant}, +{grown:,} parameters"
        + (" (starts as the source)" if scale == 0.0 else f" (new output x{scale:g})" if scale != 1.0 else "")
    )


if __name__ == "__main__":
    main()
