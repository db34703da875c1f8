"""``cfaudit``: the entry point. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import importlib
import sys

import click
import typer
from rich.console import Console

from cfaudit.atomic_io import os_error_message
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


#: Exit status of a command stopped by Ctrl-C (SIGINT), as a shell reports it (128 + 2).
INTERRUPTED = 130
#: Commands that pick up where an interrupted run stopped when run again as they were.
RESUMABLE: tuple[tuple[str, ...], ...] = (("edit",), ("scm", "edit"), ("discover",), ("demo",))


def interrupted_line(argv: list[str]) -> str:
    """The one line said when Ctrl-C stops the command ``argv``: how to go on, for a resumable one."""
    words = tuple(argv)
    if any(words[: len(command)] == command for command in RESUMABLE):
        return "interrupted; re-run the same command to resume"
    return "interrupted"


def _by_interrupt(error: BaseException) -> bool:
    """Whether ``error`` (click's Abort or Exit) stands for a KeyboardInterrupt (Ctrl-C)."""
    return isinstance(error.__cause__ or error.__context__, KeyboardInterrupt)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a :class:`CfauditError` becomes one red line on stderr and exit status 2; Ctrl-C one line
    (:func:`interrupted_line`) and exit status 130."""
    _register_commands()
    err = Console(stderr=True)
    usage_errors, aborts, exits = _click_exception_types()
    words = list(sys.argv[1:] if argv is None else argv)

    def interrupted() -> int:
        err.print(f"[yellow]{interrupted_line(words)}[/]", highlight=False)
        return INTERRUPTED

    try:
        result = app(args=argv, standalone_mode=False)
    except CfauditError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        return 2
    except OSError as error:  # e.g. an output that cannot be written: one line naming the path, no traceback
        if (message := os_error_message(error)) is None:
            raise  # no path and no known cause: a bug, keep the traceback
        err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return interrupted()
    except aborts as error:
        if _by_interrupt(error):  # click < 8.2 and typer < 0.26 turn Ctrl-C into Abort
            return interrupted()
        err.print("[bold red]aborted[/]")
        return 130
    except usage_errors as error:
        error.show()
        return error.exit_code
    except exits as stop:
        return interrupted() if _by_interrupt(stop) else stop.exit_code
    if result == INTERRUPTED:  # typer >= 0.26 turns Ctrl-C into a silent exit status 130, returned here
        return interrupted()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
