"""The options that several commands share, declared once: ``--model``, ``--device`` and ``--seed``.

A command declares ``model: Model = "demo"``, ``device: Device = None`` or ``seed: Seed = 0``, so that every
command names and explains them alike.
"""

from __future__ import annotations

from typing import Annotated

import typer

_DEVICE_NAMES = "cpu, cuda, cuda:1 ..."

#: A diffusion model (default ``"demo"``).
Model = Annotated[str, typer.Option(help="demo (the shipped tiny model), a pipeline folder or a hub id.")]
#: Where to run (default ``None``: :func:`cfaudit.devices.resolve_device`'s choice, or accelerate's per process).
Device = Annotated[str | None, typer.Option(help=f"{_DEVICE_NAMES} (default: the GPU when there is one).")]
#: Where to run, for ``cfaudit sample``, whose default stays ``"cpu"`` (the README's samples are made there).
CpuDevice = Annotated[str, typer.Option(help=_DEVICE_NAMES)]
#: The seed of a command's random choices (default ``0``).
Seed = Annotated[int, typer.Option(help="Random seed: the same inputs and seed give the same results.")]
#: A seed that overrides the one of a preset or config file (default ``None``: theirs).
SeedOverride = Annotated[int | None, typer.Option(help="Random seed (default: the preset's or config's).")]
