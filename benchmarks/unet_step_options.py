"""What else could make the demo UNet's training step cheaper on a CPU, side by side in one run (docs/BENCHMARKS.md,
"A shorter recipe for slower machines: it loses the heart").

Times the shipped tiny-f4 UNet's forward, squared-error backward and AdamW update at the training batch's shape
(as ``cpu_bf16_step.py``) eagerly, in ``channels_last`` memory format and under ``torch.compile``, then forward and
backward of one attention call at each of the UNet's attention shapes with the CPU flash kernel, the math kernel and
``baddbmm`` + softmax (the classic attention processor's arithmetic), then the step of two variants of the
architecture (random weights: only their cost is measured, not what they learn): without the attention blocks at
the 16x16 level, and with 2 heads of width 32 there instead of 8 of width 8. Eager runs first and last, and the
variants alternate with the shipped layout twice, so that a machine's drift shows.

    python benchmarks/unet_step_options.py --threads 2              # about 5 minutes, most of it the compile
    python benchmarks/unet_step_options.py --threads 2 --no-compile
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch.nn.attention import SDPBackend, sdpa_kernel

from cfaudit.models.shipped_model import DEMO_DIR


def timed_steps(
    unet: UNet2DConditionModel, batch: int, steps: int, option: str = "eager"
) -> tuple[float, float]:
    """(seconds of the first two steps, mean seconds a step after them) of ``unet``'s training step on random
    latents and text states at ``batch`` images, run ``option``'s way (``eager``, ``channels_last`` or
    ``compile``)."""
    generator = torch.Generator().manual_seed(0)
    config = unet.config
    size = config.sample_size
    latents = torch.randn(batch, config.in_channels, size, size, generator=generator)
    timesteps = torch.randint(0, 1000, (batch,), generator=generator)
    states = torch.randn(batch, 77, config.cross_attention_dim, generator=generator)
    if option == "channels_last":
        unet = unet.to(memory_format=torch.channels_last)
        latents = latents.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    forward: Callable[..., object] = torch.compile(unet) if option == "compile" else unet

    def step() -> None:
        prediction = forward(latents, timesteps, states).sample  # type: ignore[attr-defined]
        (prediction - latents).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    started = time.perf_counter()
    step()
    step()
    warm_up = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return warm_up, (time.perf_counter() - started) / steps


def shipped_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel.from_pretrained(DEMO_DIR, subfolder="unet").float()


#: Changes to the shipped UNet's config: the architecture variants timed beside it (``attention_head_dim`` is the
#: key diffusers reads as the heads per block).
VARIANTS: dict[str, dict[str, object]] = {
    "shipped": {},
    "no attention at 16x16": {
        "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    },
    "2 heads at 16x16": {"attention_head_dim": [8, 2, 8, 8]},
}


def variant_unet(name: str) -> UNet2DConditionModel:
    """The UNet of :data:`VARIANTS` ``name``, with random weights (seed 0)."""
    config = UNet2DConditionModel.load_config(DEMO_DIR, subfolder="unet")
    config = {key: value for key, value in config.items() if not key.startswith("_")}
    torch.manual_seed(0)
    return UNet2DConditionModel(**{**config, **VARIANTS[name]})


def _baddbmm_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    flat_q, flat_k, flat_v = (t.flatten(0, 1) for t in (q, k, v))
    scores = torch.baddbmm(
        torch.empty(flat_q.shape[0], flat_q.shape[1], flat_k.shape[1]),
        flat_q,
        flat_k.transpose(1, 2),
        beta=0,
        alpha=q.shape[-1] ** -0.5,
    )
    return torch.bmm(scores.softmax(-1), flat_v).view(q.shape)


def attention_ms(kernel: str, shape: tuple[int, int, int, int, int], repeats: int = 20) -> float:
    """Milliseconds for forward and backward of one attention call (batch, heads, queries, keys, head width)."""
    batch, heads, queries, keys, width = shape
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(batch, heads, queries, width, generator=generator, requires_grad=True)
    k = torch.randn(batch, heads, keys, width, generator=generator, requires_grad=True)
    v = torch.randn(batch, heads, keys, width, generator=generator, requires_grad=True)

    def once() -> None:
        if kernel == "baddbmm":
            out = _baddbmm_attention(q, k, v)
        else:
            backend = SDPBackend.FLASH_ATTENTION if kernel == "flash" else SDPBackend.MATH
            with sdpa_kernel(backend):
                out = F.scaled_dot_product_attention(q, k, v)
        out.sum().backward()

    for _ in range(3):
        once()
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - started) / repeats * 1000


def attention_shapes(batch: int) -> list[tuple[int, int, int, int, int]]:
    """Every distinct attention call of one forward pass of the shipped UNet, read by hooks on its attention
    modules: (batch, heads, queries, keys, head width)."""
    from diffusers.models.attention_processor import Attention

    unet = shipped_unet()
    shapes: list[tuple[int, int, int, int, int]] = []

    def record(module: Attention, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states")
        keys = hidden.shape[1] if context is None else context.shape[1]
        shape = (batch, module.heads, hidden.shape[1], keys, module.inner_dim // module.heads)
        if shape not in shapes:
            shapes.append(shape)

    for module in unet.modules():
        if isinstance(module, Attention):
            module.register_forward_pre_hook(record, with_kwargs=True)
    config = unet.config
    with torch.no_grad():
        unet(
            torch.zeros(1, config.in_channels, config.sample_size, config.sample_size),
            torch.tensor([500]),
            torch.zeros(1, 77, config.cross_attention_dim),
        )
    return shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--no-compile", action="store_true", help="leave torch.compile out (it compiles ~2 min)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = ["eager", "channels_last", *([] if args.no_compile else ["compile"]), "eager"]
    print(f"training step, batch {args.batch_size}, {args.threads} threads, {args.steps} steps after two:")
    for option in options:
        warm_up, seconds = timed_steps(shipped_unet(), args.batch_size, args.steps, option)
        print(f"  {option}: {seconds:.3f} s/step (first two steps {warm_up:.1f} s)")
    print("attention forward + backward, ms (batch, heads, queries, keys, head width):")
    for shape in attention_shapes(args.batch_size):
        timings = {kernel: attention_ms(kernel, shape) for kernel in ("flash", "math", "baddbmm")}
        print(f"  {shape}: " + ", ".join(f"{kernel} {ms:.1f}" for kernel, ms in timings.items()))
    print("architecture variants (random weights), s/step:")
    for _ in range(2):
        for name in VARIANTS:
            unet = variant_unet(name)
            parameters = sum(p.numel() for p in unet.parameters())
            print(
                f"  {name}: {timed_steps(unet, args.batch_size, args.steps)[1]:.3f} ({parameters / 1e6:.2f}M parameters)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
