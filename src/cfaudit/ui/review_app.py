"""The review page: one counterfactual at a time beside its original and difference map, and the reviewer's answers.

:class:`ReviewSession` holds the queue (:mod:`cfaudit.review.queue`), its ratings (:mod:`cfaudit.review.ratings`)
and the pictures; nothing in it imports gradio. :func:`build_review_app` lays out the page over it:

* the reviewer types their name once per browser session and presses **Start**: the page goes to the first
  counterfactual they have not rated, and shows their earlier answers wherever they go back;
* each counterfactual is shown as original, counterfactual and signed difference (loaded the way the report loads
  them, :func:`cfaudit.report.edits.load_example`; blue-white-red as everywhere, :func:`cfaudit.data.difference.colour_map`);
  the page names the intervention and the prompts, not the candidate relation it may support, so that "something
  else changed" is the reviewer's own finding;
* answers: plausible / implausible, the intended change visible yes / no, something else changed yes / no, with a
  click on any of the three pictures marking where (stored in pixels of the counterfactual), and a comment;
* **Save** writes the rating (under the ratings file's lock, merged with what other tabs saved) and moves on to
  the next counterfactual this reviewer has not rated.

Pictures are shown enlarged by a whole factor (nearest neighbour, so pixels stay pixels): Gradio reports a click in
pixels of the picture it shows, which :meth:`ReviewSession.to_image_pixels` divides back. The app is started, offline
and local, by :func:`start_review`, with the same environment and temporary folder rules as the editor
(:mod:`cfaudit.ui.app`).
"""

# No `from __future__ import annotations` here: Gradio recognises the `gr.SelectData` parameter of a click handler
# by its annotation, which must therefore be the class itself, not a string to be resolved in this module.

import contextlib
import html
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cfaudit.data.difference import colour_map
from cfaudit.data.images import to_uint
from cfaudit.errors import CfauditError
from cfaudit.report.edits import load_example
from cfaudit.review.queue import (
    ReviewItem,
    ReviewQueue,
    read_queue,
    require_item_unchanged,
    require_unchanged,
)
from cfaudit.review.ratings import Rating, RatingStore, Saved
from cfaudit.ui.app import (
    IMAGE_HEIGHT,
    OFFLINE_ENVIRONMENT,
    RunningUi,
    error_markdown,
    escape_markdown,
    launch_offline,
    ok_markdown,
    pin_gradio_folders,
)

log = logging.getLogger("cfaudit.ui")

TITLE = "cfaudit: expert review"
#: Pictures are enlarged by a whole factor to at least this many pixels on their longer side.
DISPLAY_PIXELS = 384
PLAUSIBLE = ("plausible", "implausible")
YES_NO = ("yes", "no")
MARK_COLOUR = (255, 196, 0)
PICTURES_CACHED = 16


@dataclass(frozen=True)
class ItemView:
    """One item's pictures at the counterfactual's pixel size, and how they are enlarged for the page."""

    original: np.ndarray
    counterfactual: np.ndarray
    difference: np.ndarray
    scale: float  # the difference map's colour scale (largest |change|)
    original_label: str  # "original", "reconstruction" (the original is gone) or "missing"
    factor: int
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the counterfactual: the pixel grid marks are stored in."""
        return self.counterfactual.shape[1], self.counterfactual.shape[0]


@dataclass
class ReviewSession:
    """A queue opened for review: its items, its ratings store and a few pictures kept in memory."""

    queue: ReviewQueue
    store: RatingStore = field(init=False)
    _views: OrderedDict[int, ItemView] = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.store = RatingStore(self.queue.ratings_path)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "ReviewSession":
        """Open a queue; refuse one whose edit folder changed or whose ratings file does not parse."""
        queue = read_queue(path)
        require_unchanged(queue)
        session = cls(queue)
        session.store.read()  # a corrupt ratings file is reported now, before anyone rates
        return session

    def __len__(self) -> int:
        return len(self.queue.items)

    def item(self, position: int) -> ReviewItem:
        return self.queue.items[position]

    # --- pictures -----------------------------------------------------------------------------------------------

    def view(self, position: int) -> ItemView:
        if position in self._views:
            self._views.move_to_end(position)
            return self._views[position]
        item = self.item(position)
        notes: list[str] = []
        example = load_example(self.queue.edit_folder, item.edit_row(), item.line, notes)
        height, width = example.counterfactual.shape
        view = ItemView(
            original=example.original,
            counterfactual=example.counterfactual,
            difference=example.difference,
            scale=float(np.abs(example.difference).max()),
            original_label=example.original_label,
            factor=max(1, math.ceil(DISPLAY_PIXELS / max(height, width))),
            notes=tuple(notes),
        )
        self._views[position] = view
        while len(self._views) > PICTURES_CACHED:
            self._views.popitem(last=False)
        return view

    def pictures(
        self, position: int, mark: tuple[int, int] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(original, counterfactual, difference) as enlarged RGB pictures, the mark drawn on each."""
        view = self.view(position)
        gray = [
            np.repeat(to_uint(image, 8)[..., None], 3, axis=-1)
            for image in (view.original, view.counterfactual)
        ]
        original, counterfactual, difference = (
            _draw_mark(_enlarge(picture, view.factor), mark, view.factor)
            for picture in (*gray, colour_map(view.difference, view.scale)[0])
        )
        return original, counterfactual, difference

    def to_image_pixels(self, position: int, shown: tuple[int, int]) -> tuple[int, int]:
        """A click in pixels of the enlarged picture -> pixels of the counterfactual."""
        view = self.view(position)
        width, height = view.size
        return min(width - 1, max(0, int(shown[0]) // view.factor)), min(
            height - 1, max(0, int(shown[1]) // view.factor)
        )

    # --- ratings -----------------------------------------------------------------------------------------------

    def rated_by(self, reviewer: str) -> dict[tuple[str, str], Rating]:
        """The reviewer's ratings of this queue's items, as the file holds them now (other tabs included)."""
        current = {item.key: item.digest for item in self.queue.items}
        return {k: r for k, r in self.store.of_reviewer(reviewer).items() if current.get(k) == r.item_digest}

    def next_unrated(self, reviewer: str, after: int = -1) -> int | None:
        """The first item after ``after`` (wrapping round) that ``reviewer`` has not rated; None when all are."""
        rated = self.rated_by(reviewer)
        count = len(self)
        for step in range(1, count + 1):
            position = (after + step) % count
            if self.item(position).key not in rated:
                return position
        return None

    def save(
        self, reviewer: str, position: int, plausible: bool, intended_visible: bool, other_change: bool,
        mark: tuple[int, int] | None, comment: str,
    ) -> Saved:  # fmt: skip
        item = self.item(position)
        require_item_unchanged(self.queue, item)
        rating = Rating(
            reviewer=reviewer, image_id=item.image_id, intervention=item.intervention, item_digest=item.digest,
            plausible=plausible, intended_visible=intended_visible, other_change=other_change,
            mark=mark if other_change else None, image_size=self.view(position).size, comment=comment,
        )  # fmt: skip
        return self.store.save(rating)

    # --- text ----------------------------------------------------------------------------------------------------

    def describe(self, position: int) -> str:
        item = self.item(position)
        view = self.view(position)
        width, height = view.size
        lines = [
            f"**{escape_markdown(item.intervention)}** of image {escape_markdown(item.image_id)} ({width}x{height} pixels)",
            "",
            f"- asked for: {escape_markdown(item.target_prompt) or '–'}",
            f"- the image was described as: {escape_markdown(item.source_prompt) or '–'}",
            f"- difference: counterfactual - reconstruction; largest change {view.scale:.3f} of the intensity range "
            "(red: brighter, blue: darker)",
        ]
        if view.original_label != "original":
            lines.append(
                f"- the original image is not available; the left picture is the {view.original_label}"
            )
        return "\n".join(lines)

    def progress(self, position: int, reviewer: str | None, rated: int) -> str:
        text = f"Counterfactual **{position + 1} of {len(self)}**"
        if reviewer:
            text += f" · reviewing as **{escape_markdown(reviewer)}** · rated {rated} of {len(self)}"
        else:
            text += " · enter your name and press Start"
        return text


def _enlarge(picture: np.ndarray, factor: int) -> np.ndarray:
    return picture if factor == 1 else np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


def _draw_mark(picture: np.ndarray, mark: tuple[int, int] | None, factor: int) -> np.ndarray:
    """A ring round the marked pixel (dark outline, then the mark colour), on an enlarged RGB picture."""
    if mark is None:
        return picture
    image = Image.fromarray(picture, mode="RGB")
    draw = ImageDraw.Draw(image)
    cx, cy = (mark[0] + 0.5) * factor, (mark[1] + 0.5) * factor
    radius = max(7.0, 2.5 * factor)
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=(0, 0, 0), width=5)
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=MARK_COLOUR, width=3)
    return np.asarray(image)


# --- the page ----------------------------------------------------------------------------------------------------


def _picture(gr: Any, label: str, elem_id: str) -> Any:
    return gr.Image(
        label=label, type="numpy", format="png", interactive=False, height=IMAGE_HEIGHT, buttons=["fullscreen"],
        elem_id=elem_id,
    )  # fmt: skip


def build_review_app(session: ReviewSession) -> Any:
    """The Blocks app (not launched). Gradio is imported here, after :data:`OFFLINE_ENVIRONMENT` is set."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    import gradio as gr

    pin_gradio_folders(Path(gr.utils.get_upload_folder()))
    queue = session.queue

    def failure(error: Exception) -> str:
        if isinstance(error, CfauditError):
            message = str(error)
        else:  # a bug: the traceback goes to the terminal, one line to the page
            log.exception("cfaudit review: unexpected error")
            message = f"unexpected {type(error).__name__}: {error} (details in the terminal running cfaudit)"
        gr.Warning(html.escape(message), duration=10)  # the toast renders HTML, not Markdown
        return error_markdown(message)

    def show(state: dict[str, Any], position: int, status: str) -> tuple[Any, ...]:
        """Everything the page shows of the item at ``position``, with the reviewer's saved answers if any."""
        reviewer = state.get("reviewer")
        rated: dict[tuple[str, str], Rating] = {}
        try:
            rated = session.rated_by(reviewer) if reviewer else {}
        except Exception as error:  # a ratings file damaged while the page was open
            status = failure(error)
        saved = rated.get(session.item(position).key)
        mark = saved.mark if saved is not None else None
        state = {**state, "position": position, "mark": list(mark) if mark else None}
        pictures: tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[None, None, None]
        try:
            pictures = session.pictures(position, mark)
            about = session.describe(position)
        except Exception as error:
            pictures, about, status = (None, None, None), "", failure(error)
        answers = (
            (PLAUSIBLE[0] if saved.plausible else PLAUSIBLE[1], _yes_no(saved.intended_visible),
             _yes_no(saved.other_change), saved.comment)
            if saved is not None else (None, None, None, "")
        )  # fmt: skip
        if saved is not None and not status:
            status = ok_markdown(
                f"you rated this on {saved.rated_at}; change any answer and save again to replace it"
            )
        progress = session.progress(position, reviewer, len(rated))
        return (state, progress, about, *pictures, *answers, mark_markdown(mark), status)

    def on_load(state: dict[str, Any]) -> tuple[Any, ...]:
        return show(state or {}, 0, "")

    def on_start(name: str, state: dict[str, Any]) -> tuple[Any, ...]:
        reviewer = " ".join(str(name or "").split())
        try:
            if not reviewer:
                raise CfauditError("enter your name first")
            position = session.next_unrated(reviewer)
        except Exception as error:
            return keep_answers(state, failure(error))
        state = {**state, "reviewer": reviewer}
        if position is None:
            return show(
                state, 0, ok_markdown(f"you have rated all {len(session)} counterfactuals; thank you")
            )
        done = len(session.rated_by(reviewer))
        welcome = f"welcome, {reviewer}: " + (f"continuing after your {done} ratings" if done else "starting")
        return show(state, position, ok_markdown(welcome))

    def on_move(state: dict[str, Any], step: int) -> tuple[Any, ...]:
        position = min(len(session) - 1, max(0, state.get("position", 0) + step))
        return show(state, position, "")

    def on_save(
        state: dict[str, Any], plausible: str | None, intended: str | None, other: str | None, comment: str
    ) -> tuple[Any, ...]:
        position = state.get("position", 0)
        reviewer = state.get("reviewer")
        missing = [name for name, value in (("plausible", plausible), ("intended change visible", intended),
                                            ("something else changed", other)) if value is None]  # fmt: skip
        try:
            if not reviewer:
                raise CfauditError("enter your name and press Start before saving")
            if missing:
                raise CfauditError(f"answer every question before saving (missing: {', '.join(missing)})")
            mark = tuple(state["mark"]) if state.get("mark") else None
            saved = session.save(
                reviewer, position, plausible == PLAUSIBLE[0], intended == YES_NO[0], other == YES_NO[0],
                mark, comment or "",
            )  # fmt: skip
        except Exception as error:
            return keep_answers(state, failure(error))
        item = session.item(position)
        message = f"saved {item.image_id} {item.intervention}"
        if saved.replaced is not None:
            message += f" (replacing your rating of {saved.replaced.rated_at})"
        following = session.next_unrated(reviewer, position)
        if following is None:
            return show(
                state, position, ok_markdown(f"{message}; you have rated all {len(session)}; thank you")
            )
        return show(state, following, ok_markdown(message))

    def keep_answers(state: dict[str, Any], status: str) -> tuple[Any, ...]:
        """A refused save: the page keeps the reviewer's unsaved answers and only shows why."""
        return (state, *(gr.update() for _ in shown[1:-1]), status)

    def on_select(state: dict[str, Any], event: gr.SelectData) -> tuple[Any, ...]:
        position = state.get("position", 0)
        if not event.index or len(event.index) != 2 or event.index[0] is None:
            return state, gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        mark = session.to_image_pixels(position, (event.index[0], event.index[1]))
        state = {**state, "mark": list(mark)}
        return (state, *session.pictures(position, mark), YES_NO[0], mark_markdown(mark))

    def on_clear_mark(state: dict[str, Any]) -> tuple[Any, ...]:
        state = {**state, "mark": None}
        return (state, *session.pictures(state.get("position", 0), None), mark_markdown(None))

    def on_other(value: str | None, state: dict[str, Any]) -> tuple[Any, ...]:
        if value == YES_NO[1] and state.get("mark"):  # "nothing else changed" takes the mark away
            return on_clear_mark(state)
        return state, gr.update(), gr.update(), gr.update(), gr.update()

    source = "discovery" if queue.source_kind == "discovery" else "edit folder"
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            f"# {TITLE}\n"
            f"{len(session)} counterfactuals of the {source} {escape_markdown(str(queue.source))}. Look at each counterfactual "
            "beside the original and the difference map, answer the three questions, click where something else "
            f"changed, and press **Save**. Ratings are saved in {escape_markdown(str(queue.ratings_path))}."
        )
        state = gr.State({})
        with gr.Row(equal_height=True):
            name = gr.Textbox(label="Your name", placeholder="as it should appear in the report", scale=3,
                              elem_id="review-name")  # fmt: skip
            start = gr.Button("Start", variant="primary", scale=1, elem_id="review-start")
        progress = gr.Markdown(elem_id="review-progress")
        about = gr.Markdown(elem_id="review-item")
        with gr.Row():
            original = _picture(gr, "Original", "review-original")
            counterfactual = _picture(gr, "Counterfactual", "review-counterfactual")
            difference = _picture(gr, "Difference (red brighter, blue darker)", "review-difference")
        with gr.Row():
            plausible = gr.Radio(list(PLAUSIBLE), label="Is the counterfactual a plausible X-ray?",
                                 elem_id="review-plausible")  # fmt: skip
            intended = gr.Radio(
                list(YES_NO), label="Is the intended change visible?", elem_id="review-intended"
            )
            other = gr.Radio(list(YES_NO), label="Did something else change? (click where on a picture)",
                             elem_id="review-other")  # fmt: skip
        with gr.Row():
            mark = gr.Markdown(elem_id="review-mark")
            clear_mark = gr.Button("Clear the mark", size="sm", elem_id="review-clear-mark")
        comment = gr.Textbox(label="Comment (optional)", lines=2, elem_id="review-comment")
        with gr.Row():
            previous = gr.Button("← Previous", elem_id="review-previous")
            save = gr.Button("Save and go on", variant="primary", elem_id="review-save")
            following = gr.Button("Next →", elem_id="review-next")
        status = gr.Markdown(elem_id="review-status")

        shown = [state, progress, about, original, counterfactual, difference, plausible, intended, other, comment,
                 mark, status]  # fmt: skip
        marked = [state, original, counterfactual, difference]
        app.load(on_load, state, shown)
        start.click(on_start, [name, state], shown)
        name.submit(on_start, [name, state], shown)
        previous.click(lambda s: on_move(s, -1), state, shown)
        following.click(lambda s: on_move(s, +1), state, shown)
        save.click(on_save, [state, plausible, intended, other, comment], shown)
        for picture in (original, counterfactual, difference):
            picture.select(on_select, state, [*marked, other, mark])
        clear_mark.click(on_clear_mark, state, [*marked, mark])
        other.input(on_other, [other, state], [*marked, mark])
    return app


def _yes_no(value: bool) -> str:
    return YES_NO[0] if value else YES_NO[1]


def mark_markdown(mark: tuple[int, int] | list[int] | None) -> str:
    if not mark:
        return "No place marked. Where something else changed, click it on any of the three pictures."
    return f"Marked: x {mark[0]}, y {mark[1]} (pixels of the counterfactual, from its top left)."


# --- starting and stopping ---------------------------------------------------------------------------------------


def start_review(
    session: ReviewSession,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    temp_root: Path | None = None,
    quiet: bool = True,
) -> RunningUi:
    """Build and launch the review page without blocking (offline, local; see :func:`cfaudit.ui.app.start`)."""
    return launch_offline(
        lambda: build_review_app(session), host=host, port=port, temp_root=temp_root, quiet=quiet
    )


@contextlib.contextmanager
def running_review(session: ReviewSession, **kwargs: Any) -> Iterator[RunningUi]:
    """:func:`start_review` as a context manager that always closes the app."""
    ui = start_review(session, **kwargs)
    try:
        yield ui
    finally:
        ui.close()
