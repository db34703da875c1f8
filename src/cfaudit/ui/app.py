"""The page: a Gradio Blocks layout over :class:`~cfaudit.ui.session.EditorSession`, and starting it offline.

The layout only wires controls to :mod:`cfaudit.ui.sources` (checking an upload, reading an index row) and
:mod:`cfaudit.ui.session` (the edit and its download). Every handler turns a :class:`~cfaudit.errors.CfauditError`
into a message in the page (the status box and a warning toast); anything else is logged with its traceback on
the terminal and shown as one line, never as a stack trace in the page.

Offline and local by default (:func:`start`): analytics and the version check are off, the server listens on
127.0.0.1 with ``share=False``, no run history, monitoring or MCP endpoint, and Gradio keeps uploads and served
files in a fresh temporary folder (``GRADIO_TEMP_DIR``) that is deleted when the app stops; no path of the user's
is served (``allowed_paths`` is empty).
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfaudit.data.images import to_uint
from cfaudit.data.interventions import DEFAULT_PROMPT_MODE, PROMPT_MODES
from cfaudit.data.vocabulary import FINDINGS, finding_slug
from cfaudit.edit.inversion import DEFAULT_STEPS, INVERSION_METHODS
from cfaudit.errors import CfauditError
from cfaudit.ui.controls import (
    AGE_RANGE,
    RACE_CHOICES,
    SEX_CHOICES,
    UNCHANGED,
    finding_choices,
    intervention_from_choices,
)
from cfaudit.ui.session import EditorSession, EditOutcome, make_settings
from cfaudit.ui.sources import DataSource, SourceImage, UploadLimits, load_upload, record_summary

log = logging.getLogger("cfaudit.ui")

TITLE = "cfaudit: counterfactual editor"
IMAGE_HEIGHT = 300  # pixels on the page; the images themselves keep the model's resolution
#: Environment that keeps Gradio from reaching the network (set before any Blocks is built).
OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_RUN_HISTORY": "False",
    "GRADIO_MCP_SERVER": "False",
    "GRADIO_SSR_MODE": "False",
}
PAGE_CSS = """
#cfaudit-status .error { color: #b42318; font-weight: 600; }
#cfaudit-status .ok { color: #067647; }
.cfaudit-picture img { width: 100%; height: 100%; object-fit: contain; }
"""


@dataclass(frozen=True)
class UiOptions:
    """Defaults shown in the page and the upload limits."""

    method: str = "direct"
    steps: int | None = None  # None: the method's default
    limits: UploadLimits = field(default_factory=UploadLimits)

    def __post_init__(self) -> None:
        if self.method not in INVERSION_METHODS:
            raise CfauditError(
                f"unknown inversion method {self.method!r}; choose one of {', '.join(INVERSION_METHODS)}"
            )
        if self.steps is not None and self.steps < 1:
            raise CfauditError(f"--steps must be at least 1, got {self.steps}")

    @property
    def default_steps(self) -> int:
        return self.steps or DEFAULT_STEPS[self.method]


# --- what the handlers show ------------------------------------------------------------------------------------


def escape_markdown(text: str) -> str:
    """Text shown inside Markdown: HTML-escaped, Markdown's emphasis and code characters neutralised."""
    escaped = html.escape(str(text), quote=False)
    for char in "\\`*_[]#|":
        escaped = escaped.replace(char, "\\" + char)
    return escaped


def error_markdown(message: str) -> str:
    return f'<span class="error">Error:</span> {escape_markdown(message)}'


def ok_markdown(message: str) -> str:
    return f'<span class="ok">{escape_markdown(message)}</span>'


def display(image: np.ndarray) -> np.ndarray:
    """A ``[0, 1]`` grayscale image as 8-bit pixels for the browser (the download keeps 16 bits)."""
    return to_uint(image, 8)


def source_markdown(source: SourceImage, resolution: int) -> str:
    """What is known about the current image: where it came from, its size, notes and its metadata."""
    width, height = source.pixels.shape[1], source.pixels.shape[0]
    where = "uploaded file" if source.kind == "upload" else "data set image"
    lines = [f"**{where}** {escape_markdown(source.name)}: {width}x{height} pixels, shown as the model sees it "
             f"({resolution}x{resolution})."]  # fmt: skip
    lines += [f"- {escape_markdown(note)}" for note in source.notes]
    if source.record is not None:
        lines += ["", "| field | value |", "|---|---|"]
        lines += [
            f"| {escape_markdown(key)} | {escape_markdown(value)} |"
            for key, value in record_summary(source.record)
        ]
    elif source.kind == "upload":
        lines += ["", "No metadata came with this file: describe the image in the source prompt."]
    return "\n".join(lines)


def outcome_markdown(outcome: EditOutcome) -> str:
    """The prompts, the method and the time taken, for the summary box."""
    timings = outcome.timings
    cached = {
        "memory": "cached in memory",
        "disk": "cached on disk",
        None: f"{timings['inversion_s']:.2f} s",
    }[outcome.inversion_cached]
    inversion = outcome.settings.inversion
    return "\n".join(
        [
            f"**{escape_markdown(str(outcome.intervention))}**: {inversion.method} inversion, {inversion.steps} steps, "
            f"guidance {outcome.settings.edit.guidance_scale:g}, {outcome.settings.prompt_mode} prompt, "
            f"seed {outcome.settings.seed}",
            "",
            f"- source prompt: {escape_markdown(outcome.source_prompt)}",
            f"- target prompt: {escape_markdown(outcome.target_prompt)}",
            f"- measured against: {escape_markdown(outcome.reference_prompt)}",
            f"- time taken: **{timings['total_s']:.2f} s** (inversion {cached}, edit {timings['edit_s']:.2f} s"
            + (f", scores {timings['scores_s']:.2f} s" if outcome.scores is not None else "")
            + f"); {outcome.unet_evals:g} UNet evaluations",
            f"- difference: largest change {outcome.diff_scale:.3f} of the intensity range "
            "(red: brighter in the counterfactual, blue: darker)",
        ]
    )


def _output_image(gr: Any, label: str, elem_id: str) -> Any:
    return gr.Image(
        label=label,
        type="numpy",
        format="png",
        interactive=False,
        height=IMAGE_HEIGHT,
        buttons=["download", "fullscreen"],
        elem_id=elem_id,
        elem_classes=["cfaudit-picture"],
    )


# --- the page --------------------------------------------------------------------------------------------------


def build_app(
    session: EditorSession, data: DataSource | None = None, options: UiOptions | None = None
) -> Any:
    """The Blocks app (not launched). Gradio is imported here, after :data:`OFFLINE_ENVIRONMENT` is set."""
    options = options or UiOptions()
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    import gradio as gr

    pin_gradio_folders(Path(gr.utils.get_upload_folder()))

    def load_source(state: dict[str, str] | None) -> SourceImage:
        if not state:
            raise CfauditError(
                "no image yet: upload a PNG, JPEG or DICOM file, or pick one from the data set"
            )
        if state["kind"] == "data":
            if data is None:
                raise CfauditError("this app was started without --data")
            return data.load(state["image_id"])
        return load_upload(state["path"], options.limits)

    def failure(error: Exception) -> str:
        if isinstance(error, CfauditError):
            message = str(error)
        else:  # a bug: the traceback goes to the terminal, one line to the page
            log.exception("cfaudit ui: unexpected error")
            message = (
                f"unexpected {type(error).__name__}: {error} (details in the terminal running cfaudit ui)"
            )
        gr.Warning(html.escape(message), duration=8)  # the toast renders HTML, not Markdown
        return error_markdown(message)

    def show_source(state: dict[str, str]) -> tuple[Any, ...]:
        """(state, preview, metadata, prompt, status, upload, picker) for a newly chosen image.

        A refused upload is cleared from the upload box (so another file can be dropped at once); an accepted
        image clears the other source's control, so the page shows one current image.
        """
        try:
            source = load_source(state)
        except Exception as error:
            cleared = None if state["kind"] == "upload" else gr.update()
            return None, None, "", gr.update(), failure(error), cleared, gr.update()
        preview = display(session.model_input(source))
        status = ok_markdown(f"{source.name} is ready; choose an intervention and press Run.")
        other_upload = None if source.kind == "data" else gr.update()
        other_pick = None if source.kind == "upload" else gr.update()
        details = source_markdown(source, session.resolution)
        return state, preview, details, source.prompt, status, other_upload, other_pick

    def on_upload(path: str | None) -> tuple[Any, ...]:
        if path is None:
            return None, None, "", gr.update(), "", gr.update(), gr.update()
        return show_source({"kind": "upload", "path": str(path)})

    def on_clear() -> tuple[Any, ...]:
        return None, None, "", gr.update(), "", gr.update(), gr.update()

    def on_pick(image_id: str | None) -> tuple[Any, ...]:
        if not image_id:
            return (gr.update(),) * 5 + (gr.update(), gr.update())
        return show_source({"kind": "data", "image_id": str(image_id)})

    def on_method(method: str) -> Any:
        return gr.update(value=DEFAULT_STEPS.get(method, options.default_steps))

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            f"# {TITLE}\n"
            f"Model **{escape_markdown(session.model_id)}** ({session.resolution} px, fingerprint "
            f"{session.fingerprint}); classifier: "
            f"{escape_markdown(str(getattr(session.classifier, 'folder', None) or 'none'))}. "
            "Choose an X-ray, check the source prompt that describes it, set what to change, and press **Run**: "
            "the image is inverted once (cached, so further edits of it are fast) and edited by prompt."
        )
        source_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(
                    label="Upload an X-ray (PNG, JPEG or DICOM)", type="filepath", elem_id="cfaudit-upload"
                )
                picker = None
                if data is not None:
                    picker = gr.Dropdown(
                        data.image_ids[:1000],
                        value=None,
                        label="... or pick an image of the data set"
                        + ("" if data.split == "all" else f" ({data.split} split)"),
                        info=f"{len(data.image_ids)} images; type to search (any id of the split works)",
                        allow_custom_value=True,
                        elem_id="cfaudit-image-id",
                    )
                preview = gr.Image(
                    label="Input (as the model sees it)", type="numpy", format="png", interactive=False,
                    buttons=["fullscreen"], height=IMAGE_HEIGHT, elem_id="cfaudit-input", elem_classes=["cfaudit-picture"],
                )  # fmt: skip
                metadata = gr.Markdown(elem_id="cfaudit-metadata")
            with gr.Column(scale=2):
                prompt = gr.Textbox(
                    label="Source prompt",
                    info="The caption of the image as it is (built from its metadata); edit it to match the image.",
                    elem_id="cfaudit-source-prompt",
                )
                with gr.Row():
                    sex = gr.Dropdown(list(SEX_CHOICES), value=UNCHANGED, label="sex", elem_id="cfaudit-sex")
                    race = gr.Dropdown(
                        list(RACE_CHOICES), value=UNCHANGED, label="race", elem_id="cfaudit-race"
                    )
                    with gr.Column():
                        set_age = gr.Checkbox(label="change age", value=False, elem_id="cfaudit-set-age")
                        age = gr.Slider(
                            *AGE_RANGE, value=60, step=1, label="age, years", elem_id="cfaudit-age"
                        )
                with gr.Accordion("Findings", open=True):
                    finding_controls = {}
                    for start in range(0, len(FINDINGS), 4):
                        with gr.Row():
                            for finding in FINDINGS[start : start + 4]:
                                finding_controls[finding] = gr.Dropdown(
                                    list(finding_choices(finding)), value=UNCHANGED, label=finding,
                                    elem_id=f"cfaudit-finding-{finding_slug(finding)}",
                                )  # fmt: skip
                with gr.Row():
                    method = gr.Dropdown(
                        list(INVERSION_METHODS),
                        value=options.method,
                        label="inversion",
                        elem_id="cfaudit-method",
                    )
                    steps = gr.Slider(
                        1, 200, value=options.default_steps, step=1, label="steps", elem_id="cfaudit-steps"
                    )
                with gr.Accordion("More settings", open=False), gr.Row():
                    guidance = gr.Number(
                        value=7.5, minimum=1.0, label="guidance scale", elem_id="cfaudit-guidance"
                    )
                    prompt_mode = gr.Radio(
                        list(PROMPT_MODES),
                        value=DEFAULT_PROMPT_MODE,
                        label="target prompt",
                        elem_id="cfaudit-prompt-mode",
                    )
                    seed = gr.Number(value=0, precision=0, label="seed", elem_id="cfaudit-seed")
                    local_blend = gr.Checkbox(value=False, label="local blend", elem_id="cfaudit-local-blend")
                run = gr.Button("Run", variant="primary", elem_id="cfaudit-run")
        status = gr.Markdown(elem_id="cfaudit-status")
        with gr.Row():
            reconstruction = _output_image(gr, "Reconstruction", "cfaudit-reconstruction")
            counterfactual = _output_image(gr, "Counterfactual", "cfaudit-counterfactual")
            difference = _output_image(
                gr, "Difference (counterfactual - reconstruction)", "cfaudit-difference"
            )
        summary = gr.Markdown(elem_id="cfaudit-summary")
        scores = gr.Dataframe(
            label="Classifier outputs (change = counterfactual - reconstruction)",
            visible=session.classifier is not None, interactive=False, elem_id="cfaudit-scores",
        )  # fmt: skip
        download = gr.DownloadButton("Download outputs (.zip)", interactive=False, elem_id="cfaudit-download")

        controls = {"sex": sex, "race": race, "set_age": set_age, "age": age, "method": method, "steps": steps,
                    "guidance": guidance, "prompt_mode": prompt_mode, "seed": seed, "local_blend": local_blend,
                    "prompt": prompt, "source": source_state}  # fmt: skip
        run_outputs = [status, reconstruction, counterfactual, difference, summary, scores, download]

        def on_run(values: dict[Any, Any], progress: Any = gr.Progress()) -> tuple[Any, ...]:
            """One edit; ``values`` maps each input component to its value (inputs given as a set)."""
            keep = tuple(gr.update() for _ in run_outputs[1:])
            try:
                value = {name: values[component] for name, component in controls.items()}
                progress(0.0, desc="reading the image")
                source = load_source(value["source"])
                intervention = intervention_from_choices(
                    value["sex"],
                    value["race"],
                    float(value["age"]) if value["set_age"] else None,
                    {finding: values[control] for finding, control in finding_controls.items()},
                )
                settings = make_settings(
                    value["method"], int(value["steps"]), float(value["guidance"] or 7.5),
                    value["prompt_mode"], int(value["seed"] or 0), bool(value["local_blend"]),
                )  # fmt: skip
                outcome = session.edit(
                    source, intervention, settings, value["prompt"],
                    progress=lambda fraction, text: progress(fraction, desc=text),
                )  # fmt: skip
            except Exception as error:
                return (failure(error), *keep)
            return (
                ok_markdown(f"done: {outcome.intervention} in {outcome.timings['total_s']:.1f} s"),
                display(outcome.reconstruction),
                display(outcome.counterfactual),
                outcome.difference_rgb,
                outcome_markdown(outcome),
                outcome.scores if outcome.scores is not None else gr.update(),
                gr.update(value=str(outcome.bundle), interactive=True),
            )

        # A hidden stand-in keeps the outputs' shape when there is no data set to pick from.
        picker_output = picker if picker is not None else gr.State(None)
        source_outputs = [source_state, preview, metadata, prompt, status, upload, picker_output]
        upload.upload(on_upload, upload, source_outputs)
        upload.clear(on_clear, None, source_outputs)
        if isinstance(picker, gr.Dropdown):
            picker.input(on_pick, picker, source_outputs)
        method.change(on_method, method, steps)
        run.click(on_run, {*controls.values(), *finding_controls.values()}, run_outputs)
    return app


# --- starting and stopping ---------------------------------------------------------------------------------------


@dataclass
class RunningUi:
    """A started app: its URL, and :meth:`close` to stop it and delete its temporary folder."""

    app: Any
    url: str
    temp_root: Path
    _restore: dict[str, str | None]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.app.close()
        restore_environment(self._restore)
        shutil.rmtree(self.temp_root, ignore_errors=True)


def _transfer_limit(limits: UploadLimits) -> int:
    """Gradio's own cap on an upload's bytes: above ours, so that our clearer message is the one normally seen,
    yet bounded, so that a huge file is refused before it fills the temporary folder."""
    return max(2 * limits.max_bytes, limits.max_bytes + 16 * 1024 * 1024)


def pin_gradio_folders(folder: Path) -> None:
    """Point the folders Gradio fixed at its first import (from ``GRADIO_TEMP_DIR`` then) at ``folder``.

    ``gradio.routes`` makes ``DEFAULT_TEMP_DIR/vibe_edit_history`` whenever an app is built or launched; left
    alone, a second app in one process would recreate the first app's deleted temporary folder.
    """
    import gradio.routes

    if hasattr(gradio.routes, "DEFAULT_TEMP_DIR"):
        gradio.routes.DEFAULT_TEMP_DIR = str(folder)


def make_temp_root() -> Path:
    """A fresh private folder under the system's temporary directory for uploads and outputs."""
    return Path(tempfile.mkdtemp(prefix="cfaudit-ui-"))


def set_environment(values: dict[str, str]) -> dict[str, str | None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    return previous


def restore_environment(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def launch_offline(
    build: Callable[[], Any],
    *,
    host: str,
    port: int,
    temp_root: Path | None,
    quiet: bool,
    environment: dict[str, str] | None = None,
    **launch: Any,
) -> RunningUi:
    """Build a Blocks page with ``build()`` and launch it without blocking, offline and local.

    Gradio keeps its files in ``temp_root/gradio`` (made when not given, deleted by :meth:`RunningUi.close`);
    ``environment`` adds settings under the offline ones; ``launch`` adds arguments of ``Blocks.launch``.
    """
    # Gradio's local event statistics use pandas options that pandas 3 deprecates: noise on every click.
    warnings.filterwarnings(
        "ignore", message=r"(?s).*(no_silent_downcasting|The copy keyword is deprecated)", module=r"gradio\."
    )
    temp_root = Path(temp_root) if temp_root is not None else make_temp_root()
    served = temp_root / "gradio"
    served.mkdir(parents=True, exist_ok=True)
    previous = set_environment({**OFFLINE_ENVIRONMENT, "GRADIO_TEMP_DIR": str(served), **(environment or {})})
    try:
        app = build()
        app.queue(default_concurrency_limit=1)
        try:
            _, url, _ = app.launch(
                server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=quiet,
                show_error=False, inbrowser=False, allowed_paths=[], footer_links=[], run_history=False,
                enable_monitoring=False, ssr_mode=False, pwa=False, mcp_server=False, css=PAGE_CSS, **launch,
            )  # fmt: skip
        except OSError as error:
            raise CfauditError(
                f"cannot listen on {host}:{port} ({error}); choose another --port or --host"
            ) from None
    except BaseException:
        restore_environment(previous)
        shutil.rmtree(temp_root, ignore_errors=True)
        raise
    return RunningUi(app, url, temp_root, previous)


def start(
    session: EditorSession,
    data: DataSource | None = None,
    options: UiOptions | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    temp_root: Path | None = None,
    quiet: bool = True,
) -> RunningUi:
    """Build and launch the app without blocking; uploads stay in ``temp_root`` (made when not given)."""
    options = options or UiOptions()
    temp_root = Path(temp_root) if temp_root is not None else make_temp_root()
    return launch_offline(
        lambda: build_app(session, data, options),
        host=host,
        port=port,
        temp_root=temp_root,
        quiet=quiet,
        environment={"GRADIO_EXAMPLES_CACHE": str(temp_root / "gradio" / "examples")},
        max_file_size=_transfer_limit(options.limits),
    )


@contextlib.contextmanager
def running(session: EditorSession, data: DataSource | None = None, options: UiOptions | None = None,
            **kwargs: Any) -> Iterator[RunningUi]:  # fmt: skip
    """:func:`start` as a context manager that always closes the app."""
    ui = start(session, data, options, **kwargs)
    try:
        yield ui
    finally:
        ui.close()
