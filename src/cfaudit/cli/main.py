"""``cfaudit``: the entry point. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import importlib
import sys

import click
import typer
from rich.console import Console

from cfaudit.errors import CfauditError

app = typer.Typer(
    name="cfaudit",
    help="Counterfactual audits of chest X-ray data sets with fine-tuned text-to-image diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_commands() -> None:
    # Imported here so that `cfaudit --help` stays fast: command modules import torch lazily, inside commands.
    from cfaudit.cli import (
        assets,
        classifiers,
        data,
        demo,
        discover,
        edit,
        evaluate,
        models,
        phantom,
        report,
        review,
        sample,
        scm,
        train,
        ui,
    )

    for module in (
        assets,
        phantom,
        data,
        models,
        train,
        sample,
        classifiers,
        edit,
        scm,
        evaluate,
        discover,
        review,
        report,
        ui,
        demo,
    ):
        module.register(app)


def _click_exception_types() -> tuple[
    tuple[type[click.ClickException], ...],
    tuple[type[Exception], ...],
    tuple[type[click.exceptions.Exit | typer.Exit], ...],
]:
    """(usage errors, aborts, exits) for the click that typer runs on: typer >= 0.26 vendors its own copy."""
    errors: list[type[click.ClickException]] = [click.ClickException]
    aborts: list[type[Exception]] = [click.exceptions.Abort, typer.Abort]
    exits: list[type[click.exceptions.Exit | typer.Exit]] = [click.exceptions.Exit, typer.Exit]
    try:
        # By name: older typer has no such module, so a static import would not type-check on both
        vendored = importlib.import_module("typer._click.exceptions")
    except ImportError:
        pass
    else:
        errors.append(vendored.ClickException)  # its Abort and Exit are typer.Abort and typer.Exit
    return tuple(errors), tuple(aborts), tuple(exits)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a :class:`CfauditError` becomes one red line on stderr and exit status 2."""
    _register_commands()
    err = Console(stderr=True)
    usage_errors, aborts, exits = _click_exception_types()
    try:
        result = app(args=argv, standalone_mode=False)
    except CfauditError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
    except aborts:
        err.print("[bold red]aborted[/]")
        return 130
    except usage_errors as error:
        error.show()
        return error.exit_code
    except exits as stop:
        return stop.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
