"""The options that several commands share, declared once: one name, one help text and one default each.

A command declares e.g. ``model: Model = "demo"``, ``device: Device = None`` or ``split: EditSplit = "test"``, so
that every command names and explains them alike. ``--device`` has one default everywhere (the GPU when there is
one); ``--seed`` is ``Seed`` (0) except where it overrides a preset's or config file's (``SeedOverride``);
``--model`` is ``Model`` (``demo``) except in ``cfaudit demo`` (a model instead of the shipped one; none: that one)
and ``cfaudit scm edit`` (an SCM, not a diffusion model).
Options that share a name but not a meaning or default stay in their commands: ``--steps`` (``EditSteps`` for
``cfaudit edit`` and ``cfaudit ui``, which start direct inversion at 12 steps; ``cfaudit discover`` starts it at
20, ``cfaudit sample`` at 50), ``--batch-size`` (1, 4, 8 or the preset's), ``--prompt-mode`` (``contrast`` for
``cfaudit edit``, ``full`` for ``cfaudit discover``), and ``--index``, ``--out``, ``--classifier``, ``--config``,
``--cache``, ``--do``, whose help says what each command reads or writes there.
"""

from __future__ import annotations

from typing import Annotated

import typer

#: A diffusion model (default ``"demo"``).
Model = Annotated[str, typer.Option(help="demo (the shipped model), a pipeline folder or a hub id.")]
#: Where to run (default ``None``: :func:`cfaudit.devices.resolve_device`'s choice, or accelerate's per process).
Device = Annotated[
    str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: the GPU when there is one).")
]
#: The seed of a command's random choices (default ``0``).
Seed = Annotated[
    int, typer.Option(min=0, help="Random seed (0 or more): the same inputs and seed give the same results.")
]
#: A seed that overrides the one of a preset or config file (default ``None``: theirs).
SeedOverride = Annotated[
    int | None, typer.Option(min=0, help="Random seed, 0 or more (default: the preset's or config's).")
]

#: The split of an index whose images are edited (default ``"test"``).
EditSplit = Annotated[str, typer.Option(help="Split of the index: train, val, test or all.")]
#: Edit only the first N images of the split (default ``None``: all).
Limit = Annotated[int | None, typer.Option(help="Edit only the first N images of the split.")]
#: The inversion method of an edit (default ``"direct"``); ``cfaudit ui`` only preselects one in its page.
Method = Annotated[str, typer.Option(help="Inversion: direct (default, fast), nti, npi or ddim.")]
#: DDIM steps of an edit (default ``None``: 12 for direct inversion, 50 for the others).
EditSteps = Annotated[
    int | None, typer.Option(help="DDIM steps (default: 12 for direct, 50 for nti, npi and ddim).")
]
#: Classifier-free guidance scale (default ``7.5``).
Guidance = Annotated[float, typer.Option(help="Classifier-free guidance scale (1: none).")]
#: The guidance of the edits that name an attribute, ``ATTR=SCALE`` repeated (default ``None``: ``--guidance``).
AttributeGuidance = Annotated[
    list[str] | None,
    typer.Option(
        help="Guidance of the edits naming an attribute, ATTR=SCALE (e.g. age=4: age edits go too far at the "
        "scale a finding needs; evaluate's dose shows it), or of one intervention, do(A=v)=SCALE (e.g. "
        "'do(age=-20)=2'); repeat for more. Not with nti."
    ),
]
#: Continue a training run (default ``None``: start afresh).
Resume = Annotated[
    str | None, typer.Option(help="`latest` (the run's newest checkpoint, if any) or a checkpoint folder.")
]
#: Show a training progress bar (default ``True``).
ShowProgress = Annotated[bool, typer.Option(help="Show a progress bar.")]
#: The address a browser app listens on (default ``"127.0.0.1"``).
Host = Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 keeps the page on this machine.")]
#: The port a browser app listens on (default ``7860``).
Port = Annotated[int, typer.Option(help="Port to listen on.")]
_UNCERTAIN_HELP = "Label policy for -1: negative, positive or blank"
_BLANK_HELP = "Label policy for blank labels: negative or blank"
_RECORDED = " (default: the one recorded in index.json)."
#: Label policy for uncertain (-1) labels of a new index (default ``"negative"``).
Uncertain = Annotated[str, typer.Option(help=f"{_UNCERTAIN_HELP}.")]
#: Label policy for blank labels of a new index (default ``"negative"``).
Blank = Annotated[str, typer.Option(help=f"{_BLANK_HELP}.")]
#: Label policy for uncertain (-1) labels, overriding the index's (default ``None``: the index's).
UncertainOverride = Annotated[str | None, typer.Option(help=_UNCERTAIN_HELP + _RECORDED)]
#: Label policy for blank labels, overriding the index's (default ``None``: the index's).
BlankOverride = Annotated[str | None, typer.Option(help=_BLANK_HELP + _RECORDED)]


def attribute_scales(texts: list[str] | None) -> dict[str, float]:
    """``--attribute-guidance`` values (``age=4``, ``do(age=-20)=2``) as ``{"age": 4.0, "do(age=-20)": 2.0}``; the
    attributes and interventions are checked where used."""
    from cfaudit.errors import CfauditError

    scales = {}
    for text in texts or []:
        name, sep, value = text.rpartition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            scales[name.strip()] = float(value)
        except ValueError:
            raise CfauditError(
                f"--attribute-guidance {text!r}: give ATTRIBUTE=SCALE or do(A=v)=SCALE, e.g. age=4"
            ) from None
    return scales


def command_group(name: str, help: str) -> typer.Typer:
    """A group of subcommands (``cfaudit NAME ...``) that shows its help when called without one."""
    return typer.Typer(name=name, help=help, no_args_is_help=True)


def label_policy_overrides(recorded: dict | None, uncertain: str | None, blank: str | None) -> dict:
    """The label policy recorded in an index's meta, with ``--uncertain`` / ``--blank`` where they are given."""
    policy = dict(recorded or {})
    if uncertain is not None:
        policy["uncertain"] = uncertain
    if blank is not None:
        policy["blank"] = blank
    return policy
