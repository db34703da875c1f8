"""The model card's file: YAML front matter, the generated part between the cfaudit:card markers, and the
user's text around them (kept when the card is refreshed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cfaudit.errors import CfauditError

CARD_FILE = "README.md"
BEGIN = (
    "<!-- cfaudit:card:begin - written by `cfaudit models card` from this folder's records; text between these"
    " markers is replaced when the card is refreshed, text outside them is kept -->"
)
END = "<!-- cfaudit:card:end -->"
_USER_HINT = (
    "<!-- Your own notes go below: `cfaudit models card` keeps text outside the cfaudit:card markers. -->"
)


def split_card(text: str, where: Path | str) -> tuple[dict[str, Any], str]:
    """(front matter, the rest) of a card's text."""
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---\n", 3)
    if end < 0:
        raise CfauditError(
            f"{where}: front matter opened with --- but never closed; fix it or delete the card"
        )
    try:
        data = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as error:
        raise CfauditError(
            f"{where}: front matter is not valid YAML ({error}); fix it or delete the card"
        ) from None
    if not isinstance(data, dict):
        raise CfauditError(f"{where}: front matter must be a YAML mapping; fix it or delete the card")
    return data, text[end + 5 :]


def compose(existing: str | None, front: dict[str, Any], generated: str, where: Path | str) -> str:
    """The card's text: ``generated`` between the markers, the user's text around them kept."""
    before, after = "\n", f"\n\n{_USER_HINT}\n"
    if existing is not None:
        body = split_card(existing, where)[1]
        start, stop = body.find(BEGIN), body.find(END)
        if start >= 0 and stop > start:
            before, after = body[:start], body[stop + len(END) :]
        elif start >= 0 or stop >= 0:
            raise CfauditError(
                f"{where}: has one cfaudit:card marker but not the other; restore it (or delete the card) so "
                "that the tool knows which text is its own"
            )
        elif body.strip():
            after = "\n\n" + body.lstrip("\n")  # a card without markers: all of it is the user's
    head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{head}---\n{before}{BEGIN}\n{generated}{END}{after}"
