"""``cfaudit ui``: the interactive counterfactual editor in the browser (local only by default)."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cfaudit.cli.options import Device, EditSteps, Host, Method, Model, Port

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def wait_until_interrupted(ui: Any) -> None:
    """Block until Ctrl-C or SIGTERM (the server runs in its own threads); then the caller cleans up."""
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def ui_command(
    model: Model = "demo",
    data: Annotated[
        Path | None, typer.Option(help="index.csv whose images can be picked in the page (with metadata).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split of --data offered: train, val, test or all.")] = "test",
    classifier: Annotated[
        Path | None,
        typer.Option(help="Attribute classifier folder (cfaudit classifiers train): scores before/after."),
    ] = None,
    host: Host = "127.0.0.1",
    port: Port = 7860,
    method: Method = "direct",
    steps: EditSteps = None,
    cache: Annotated[
        Path | None,
        typer.Option(help="Also keep inversions in this folder (shared with `cfaudit edit --cache`)."),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted, in megabytes.")] = 50.0,
    max_megapixels: Annotated[
        float, typer.Option(help="Largest upload accepted, in millions of pixels.")
    ] = 50.0,
    device: Device = None,
    review: Annotated[
        Path | None,
        typer.Option(
            help="Open an expert review queue (`cfaudit review queue`) instead of the editor; the same as "
            "`cfaudit review open QUEUE`."
        ),
    ] = None,
) -> None:
    """Start the editor in the browser: upload or pick an X-ray, choose do(...), see and download the counterfactual.

    --method and --steps are the page's first choice; it can change them per edit."""
    from cfaudit.errors import CfauditError

    if review is not None:
        from cfaudit.cli.review import open_command

        open_command(review, host=host, port=port)
        return

    if importlib.util.find_spec("gradio") is None:
        raise CfauditError("cfaudit ui needs gradio; install it with `pip install 'cfaudit[ui]'`")
    from cfaudit.ui.app import UiOptions, make_temp_root, start
    from cfaudit.ui.session import EditorSession
    from cfaudit.ui.sources import DataSource, UploadLimits

    if not 1 <= port <= 65535:
        raise CfauditError(f"--port must lie in 1..65535, got {port}")
    options = UiOptions(method, steps, UploadLimits.from_megabytes(max_upload_mb, max_megapixels))
    console = Console()
    source = DataSource.read(data, split) if data is not None else None
    temp_root = make_temp_root()
    try:
        with console.status(f"loading {model} ..."):
            session = EditorSession.from_model(
                model, temp_root / "outputs", classifier=classifier, cache_dir=cache, device=device
            )
        ui = start(session, source, options, host=host, port=port, temp_root=temp_root)
    except BaseException:
        shutil.rmtree(temp_root, ignore_errors=True)
        raise
    try:
        console.print(f"cfaudit ui: open {ui.url} (Ctrl-C to stop); uploads stay in {temp_root}")
        if host not in LOCAL_HOSTS:
            console.print(
                f"[yellow]listening on {host}: anyone who can reach this machine can upload images and run edits[/]"
            )
        wait_until_interrupted(ui)
    finally:
        ui.close()
        shutil.rmtree(temp_root, ignore_errors=True)
        console.print("cfaudit ui: stopped; temporary files removed")


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_command)
