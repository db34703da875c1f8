"""``cfaudit review``: make a queue of counterfactuals for an expert to rate, and open it in the browser."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cfaudit.cli.options import Host, Port, command_group

review_app = command_group(
    "review",
    "Expert review: rate counterfactuals in the browser (plausible? intended change? what else changed?).",
)


@review_app.command("queue")
def queue_command(
    source: Annotated[
        Path,
        typer.Argument(
            help="An edit folder (cfaudit edit / scm edit) or a discovery folder (cfaudit discover)."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Review folder (or .json file) for the queue; its ratings go beside it. Default: SOURCE/review."
        ),
    ] = None,
    top: Annotated[
        int, typer.Option(help="Discovery: the best-ranked candidates reviewed besides every flagged one.")
    ] = 5,
    images: Annotated[
        int, typer.Option(help="Counterfactuals per candidate (per intervention of an edit folder); 0 = all.")
    ] = 8,
) -> None:
    """Make the review queue of an edit folder or a discovery (flagged candidates first, then the top-ranked)."""
    from cfaudit.review.queue import make_queue

    queue = make_queue(source, out, top=top, images=images)
    console = Console(soft_wrap=True, highlight=False)
    console.print(
        f"review queue: {queue.path} ({len(queue.items)} counterfactuals, {len(queue.candidates)} candidates)"
    )
    for candidate in queue.candidates:
        flag = " [bold]flagged[/]" if candidate.flagged else ""
        console.print(f"  {candidate.title}{flag}: {len(queue.items_of(candidate.key))}")
    console.print(f"open it with: cfaudit review open {queue.folder}")


@review_app.command("open")
def open_command(
    queue: Annotated[
        Path, typer.Argument(help="The review folder (or its queue.json) made by `cfaudit review queue`.")
    ],
    host: Host = "127.0.0.1",
    port: Port = 7860,
) -> None:
    """Open the review page: each counterfactual beside its original and difference map, and the questions."""
    from cfaudit.errors import CfauditError

    if importlib.util.find_spec("gradio") is None:
        raise CfauditError("cfaudit review open needs gradio; install it with `pip install 'cfaudit[ui]'`")
    from cfaudit.cli.ui import LOCAL_HOSTS, wait_until_interrupted
    from cfaudit.ui.app import make_temp_root
    from cfaudit.ui.review_app import ReviewSession, start_review

    if not 1 <= port <= 65535:
        raise CfauditError(f"--port must lie in 1..65535, got {port}")
    session = ReviewSession.open(queue)
    console = Console(soft_wrap=True, highlight=False)
    temp_root = make_temp_root()
    try:
        ui = start_review(session, host=host, port=port, temp_root=temp_root)
    except BaseException:
        shutil.rmtree(temp_root, ignore_errors=True)
        raise
    try:
        console.print(
            f"cfaudit review: open {ui.url} (Ctrl-C to stop); {len(session)} counterfactuals, ratings saved in "
            f"{session.queue.ratings_path}"
        )
        if host not in LOCAL_HOSTS:
            console.print(
                f"[yellow]listening on {host}: anyone who can reach this machine can see and rate the images[/]"
            )
        wait_until_interrupted(ui)
    finally:
        ui.close()
        console.print("cfaudit review: stopped; every saved rating is in the ratings file")


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
