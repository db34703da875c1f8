"""Encode a data set with the VAE once and keep the latent distributions on disk.

The reference training script encodes every image with the VAE at every step; the VAE encoder at 512x512 costs
about as much as the UNet step. Here each image is encoded once; the cache holds the mean and standard deviation
of the VAE's latent Gaussian, and the trainer draws ``mean + std * eps`` per step, exactly the sample the
reference takes, without the encoder. A cache file is named by a hash of everything that determines it (VAE
config and weights, index file, split, resolution, the images' sizes and modification times), so a changed
input makes a new cache and a stale one is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cfaudit import atomic_io
from cfaudit.digests import file_sha256
from cfaudit.errors import CfauditError


@dataclass
class LatentCache:
    """Per-image latent Gaussians ``[N, C, h, w]`` (unscaled: multiply samples by the VAE's scaling factor)."""

    mean: torch.Tensor
    std: torch.Tensor
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    def sample(self, rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One latent sample per row, noise drawn from ``generator`` (CPU)."""
        mean, std = self.mean[rows], self.std[rows]
        return mean + std * torch.randn(mean.shape, generator=generator)


def vae_fingerprint(vae: Any, folder: str | os.PathLike[str] | None = None) -> str:
    """A hash of the VAE's config and weights (the safetensors file's hash when the model came from a folder)."""
    digest = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    weights = Path(folder) / "vae" / "diffusion_pytorch_model.safetensors" if folder else None
    if weights is not None and weights.is_file():
        digest.update(file_sha256(weights).encode())
    else:
        for name, tensor in sorted(vae.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def cache_key(
    vae_hash: str, index_hash: str, split: str, resolution: int, image_paths: Sequence[Path]
) -> str:
    """The cache file's name: changes whenever the VAE, the index, the split, the size or an image changes."""
    digest = hashlib.sha256(f"{vae_hash}|{index_hash}|{split}|{resolution}".encode())
    for path in image_paths:
        stat = path.stat() if path.is_file() else None
        digest.update(f"{path}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}".encode())
    return digest.hexdigest()[:32]


def load_pixels(paths: Sequence[Path], resolution: int, channels: int) -> torch.Tensor:
    """Images -> ``[N, channels, R, R]`` in ``[-1, 1]`` (grayscale repeated for an RGB VAE)."""
    from cfaudit.data.images import load_model_tensor

    return torch.stack([load_model_tensor(p, resolution).expand(channels, -1, -1) for p in paths])


@torch.no_grad()
def encode_images(
    vae: Any, paths: Sequence[Path], resolution: int, *, batch_size: int = 16, progress: Any = None
) -> LatentCache:
    """Encode every image (in batches) and return its latent mean and standard deviation, fp32 on CPU."""
    device = next(vae.parameters()).device
    dtype = next(vae.parameters()).dtype
    channels = int(vae.config.in_channels)
    means, stds = [], []
    for start in range(0, len(paths), batch_size):
        pixels = load_pixels(paths[start : start + batch_size], resolution, channels)
        dist = vae.encode(pixels.to(device, dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
        if progress is not None:
            progress(min(start + batch_size, len(paths)))
    return LatentCache(torch.cat(means), torch.cat(stds))


def load_or_encode(
    vae: Any,
    paths: Sequence[Path],
    resolution: int,
    cache_folder: Path,
    key: str,
    *,
    batch_size: int = 16,
    progress: Any = None,
) -> LatentCache:
    """The cached latents for ``key`` if present, else encode and write them (atomically) first."""
    from safetensors.torch import load_file, save_file

    path = cache_folder / f"latents-{key}.safetensors"
    if path.is_file():
        try:
            tensors = load_file(str(path))
        except Exception as error:  # a damaged cache is rebuilt, never trusted
            raise CfauditError(
                f"{path}: damaged latent cache ({error}); delete the file and run again"
            ) from None
        if tensors["mean"].shape[0] == len(paths):
            return LatentCache(tensors["mean"], tensors["std"], path)
    cache = encode_images(vae, paths, resolution, batch_size=batch_size, progress=progress)
    with atomic_io.atomic_path(path) as tmp:
        save_file(
            {"mean": cache.mean.contiguous(), "std": cache.std.contiguous()}, str(tmp), metadata={"key": key}
        )
    cache.path = path
    return cache
