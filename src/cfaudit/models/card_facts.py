"""The facts of a model card, from records only: the folder's training records, the data index (Table 1) and
quoted measured figures (:data:`METRICS_FILE`, ``--metrics``), gathered by :func:`gather`."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfaudit.config_files import read_yaml
from cfaudit.data.labels import LabelPolicy
from cfaudit.data.records import DataIndex
from cfaudit.data.stats import format_table1, table1
from cfaudit.digests import file_sha256
from cfaudit.errors import CfauditError
from cfaudit.models.card_file import CARD_FILE, split_card
from cfaudit.models.loading import check_pipeline_folder
from cfaudit.models.shipped_model import (
    DEMO_DIR,
    architecture_summary,
    cfaudit_command,
    portable,
    preset_name,
)

#: Figures measured on the model, kept beside its weights and quoted by every refresh of the card.
METRICS_FILE = "metrics.yaml"
#: Licenses of the published base models cfaudit fine-tunes (a fine-tune inherits its base's).
BASE_LICENSES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "creativeml-openrail-m",
    "runwayml/stable-diffusion-v1-5": "creativeml-openrail-m",
    "CompVis/stable-diffusion-v1-4": "creativeml-openrail-m",
    "stabilityai/stable-diffusion-2-1": "openrail++",
    "stabilityai/stable-diffusion-2-1-base": "openrail++",
}
#: The project's own license, for weights cfaudit trained from random ones.
OWN_LICENSE = "apache-2.0"
FIGURE_SECTIONS: tuple[str, ...] = ("reconstruction", "prompt_control", "other")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_HUB_CACHE = re.compile(r"models--([A-Za-z0-9][\w.\-]*?)--([\w.\-]+)")
#: Top-level cfaudit commands whose recorded command line the card repeats (others: the Python API, a test).
_TRAIN_KEYS = ("max_steps", "seed", "resolution", "split", "batch_size", "gradient_accumulation_steps",
               "learning_rate", "lr_schedule", "lr_warmup_steps", "max_grad_norm", "train_text_encoder",
               "text_encoder_lr", "use_ema", "ema_decay", "lora_rank", "prediction_type", "snr_gamma",
               "noise_offset", "timestep_bias", "coarse_loss_weight", "finding_min_share", "caption_dropout",
               "caption_partial", "caption_always", "caption_negative", "unet_trainable", "preserve_weight",
               "preserve_share", "caption_always_alone", "caption_always_alone_share", "mixed_precision",
               "save_dtype")  # fmt: skip
_VAE_KEYS = ("max_steps", "seed", "resolution", "crop", "split", "batch_size", "learning_rate", "lr_schedule",
             "lr_warmup_steps", "max_grad_norm", "mse_weight", "lpips_weight", "kl_weight", "eval_split",
             "eval_images")  # fmt: skip


@dataclass
class Figure:
    """One measured figure, quoted with where it was measured."""

    measure: str
    value: str
    source: str
    setting: str = ""


@dataclass
class QuotedTable:
    """A table of measured figures (Table 2), quoted whole with its source."""

    title: str
    source: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]
    setting: str = ""


@dataclass
class Figures:
    reconstruction: list[Figure] = field(default_factory=list)
    prompt_control: list[Figure] = field(default_factory=list)
    other: list[Figure] = field(default_factory=list)
    table2: list[QuotedTable] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # the metrics files quoted (names only)


@dataclass
class DataFacts:
    """What a model was trained on, as recorded, and Table 1 when the index could be read and checked."""

    index: str
    sha256: str | None
    split: str | None
    rows: int | None
    source: str | None = None
    split_method: str | None = None
    label_policy: dict[str, str] | None = None
    rows_counted: bool = False  # rows counted in the index, not recorded by the training
    table1: str | None = None
    table1_note: str = ""

    @property
    def lines(self) -> list[str]:
        """The card's list of what the model was trained on."""

        def code(value: Any) -> str:
            return f"`{value}`" if value else "not recorded"

        if self.rows is None:
            count = "number of images not recorded"
        else:
            count = f"{self.rows} images" + (" (counted in the index)" if self.rows_counted else "")
        lines = [f"index: {code(self.index)}, sha256 {code(self.sha256)}"]
        if self.source:
            phantom = " (the synthetic phantom of `cfaudit phantom`)" if self.source == "phantom" else ""
            lines.append(f"data set: `{self.source}`{phantom}")
        lines.append(f"trained on: split {code(self.split)}, {count}")
        if self.split_method:
            lines.append(f"split: {self.split_method}")
        if self.label_policy:
            policy = self.label_policy
            lines.append(f"label policy: uncertain -> {policy['uncertain']}, blank -> {policy['blank']}")
        return lines


@dataclass
class CardFacts:
    """Everything the card says, gathered from the folder's records (paths already portable)."""

    title: str
    reference: str  # how cfaudit commands name the model: demo or path/to/<folder>
    architecture: str
    preset: str | None
    origin: str  # trained | autoencoder | random | unrecorded
    base_model: str | None
    started_from: str | None
    license: str
    text_encoder: str  # clip | minilm
    text_encoder_shape: tuple[Any, Any]  # layers, width
    unet_run: dict[str, Any]
    vae_run: dict[str, Any]
    init: dict[str, Any]
    data: DataFacts | None
    figures: Figures
    resolution: int | None
    has_provenance_txt: bool

    @property
    def command(self) -> str | None:
        """The recorded command line with its program named ``cfaudit`` (the recorded one may be a local runner
        script or a virtual environment's path); ``None`` when the run was no cfaudit command (the API, a test)."""
        return cfaudit_command(self.unet_run.get("command"))

    @property
    def text_encoder_text(self) -> str:
        if self.text_encoder == "minilm":
            return "all-MiniLM-L6-v2, pretrained and frozen (Apache-2.0)"
        layers, width = self.text_encoder_shape
        trained: Any = (self.unet_run.get("config") or {}).get("train_text_encoder")  # a JSON value, if any
        state = {True: ", trained with the UNet", False: ", frozen in training"}.get(trained, "")
        return f"CLIP, {layers} layers of width {width}{state}"

    @property
    def phases(self) -> list[dict[str, Any]]:
        """The UNet's training records, first phase first: a run that started from an earlier cfaudit training
        run's model keeps that run's record in ``base_model.trained``."""
        return training_phases(self.unet_run)

    @staticmethod
    def settings_of(run: dict[str, Any]) -> list[tuple[str, Any]]:
        """The settings the card lists of one phase's training record."""
        config = run.get("config") or {}
        return [(key, config[key]) for key in _TRAIN_KEYS if key in config]

    @property
    def vae_settings(self) -> list[tuple[str, Any]]:
        config = self.vae_run.get("config") or {}
        return [(key, config[key]) for key in _VAE_KEYS if key in config]


# 1. Reading the records -------------------------------------------------------------------------------------


def training_phases(unet_run: dict[str, Any], limit: int = 8) -> list[dict[str, Any]]:
    """A UNet training record and those of the phases before it (each in ``base_model.trained``), first first."""
    phases = [unet_run]
    while len(phases) < limit and isinstance(
        earlier := (phases[-1].get("base_model") or {}).get("trained"), dict
    ):
        phases.append(earlier)
    return phases[::-1]


def read_record(path: Path) -> dict[str, Any]:
    """A JSON record of a model folder (``{}`` when absent); unreadable JSON is a :class:`CfauditError`."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CfauditError(
            f"{path}: not readable JSON ({error}); restore it from the training run's output, or delete it "
            "and the card will say that the recipe is not recorded"
        ) from None
    if not isinstance(data, dict):
        raise CfauditError(f"{path}: expected a JSON object, found {type(data).__name__}; restore the file")
    return data


def card_folder(model: str | os.PathLike[str]) -> Path:
    """The folder a card is written into: ``demo`` (the shipped model) or a pipeline folder."""
    folder = DEMO_DIR if str(model) == "demo" else Path(model).expanduser()
    if not folder.is_dir():
        raise CfauditError(
            f"{model}: no such model folder; give `demo` or a pipeline folder written by cfaudit"
        )
    if not (folder / "model_index.json").is_file() and not (folder / "unet").is_dir():
        hint = " (its model/ folder is one: give that)" if (folder / "model" / "unet").is_dir() else ""
        raise CfauditError(
            f"{model}: not a model folder (no model_index.json or unet/){hint}; give `demo` or a pipeline folder "
            "written by `cfaudit train`, `cfaudit models train-vae` or `cfaudit models init-random`"
        )
    check_pipeline_folder(folder, label=str(model))
    return folder


def _hub_id(text: str | None) -> str | None:
    """The hub id in a hub-cache path (``.../models--org--name/snapshots/...``), if any."""
    match = _HUB_CACHE.search(text or "")
    return f"{match[1]}/{match[2]}" if match else None


def _front_matter_of(folder: Path) -> dict[str, Any]:
    card = folder / CARD_FILE
    if not card.is_file():
        return {}
    try:
        return split_card(card.read_text(encoding="utf-8"), card)[0]
    except CfauditError:
        return {}


def base_model(folder: Path, unet_run: dict[str, Any], vae_run: dict[str, Any], depth: int = 0) -> str | None:
    """The published (hub) model these weights descend from, following the local folders the records name;
    ``None`` when there is none or it is not recorded."""
    recorded = unet_run.get("base_model") or {}
    source, start = str(recorded.get("source") or ""), str(recorded.get("folder") or "")
    found = _hub_id(start) or _hub_id(source)
    if found:
        return found
    if source and start and source != start and _HUB_ID.match(source) and not Path(source).exists():
        return source  # loaded by hub id (the folder is the hub cache's)
    vae_base = str(vae_run.get("base_model") or "")
    found = _hub_id(vae_base)
    if found:
        return found
    if depth >= 4:
        return None
    for local in (start, vae_base):
        path = DEMO_DIR if local == "demo" else Path(local) if local else None
        if path is None or not path.is_dir() or path.resolve() == folder.resolve():
            continue
        card = _front_matter_of(path)
        if card:
            return card.get("base_model")
        try:
            runs = read_record(path / "provenance.json"), read_record(path / "vae_provenance.json")
        except CfauditError:  # a folder this one only started from: its broken record is not this card's
            return None
        return base_model(path, *runs, depth + 1)
    preset = preset_name(
        read_record(folder / "unet" / "config.json"), read_record(folder / "vae" / "config.json")
    )
    # an SD-shaped autoencoder trained from a name that is no local folder: the hub's (a tiny one has none there)
    if vae_base and preset in ("sd15", "sd21") and _HUB_ID.match(vae_base) and not Path(vae_base).exists():
        return vae_base
    return None


def _data_facts(
    unet_run: dict[str, Any], vae_run: dict[str, Any], index: str | os.PathLike[str] | None
) -> DataFacts | None:
    """The recorded data of the UNet's training (else the autoencoder's), with Table 1 where it can be checked.

    An ``index`` given by the user must be the recorded one (same sha256); the recorded path is read only when
    it reaches a file with the recorded sha256 (or, where none was recorded, any readable index).
    """
    recorded = unet_run.get("data") or {}
    if not recorded and (vae_run.get("config") or {}).get("index"):
        config = vae_run["config"]
        recorded = {"index": config["index"], "split": config.get("split")}
    if not recorded and index is None:
        return None
    where = str(index if index is not None else recorded.get("index") or "")
    shown = portable(str(recorded.get("index") or where))  # the recorded path, where there is one
    facts = DataFacts(shown, recorded.get("index_sha256"), recorded.get("split"), recorded.get("rows"))
    path = Path(where) if where else None
    if index is not None and not Path(index).is_file():
        raise CfauditError(f"{index}: no such index file; give the index.csv the model was trained on")
    if path is None or not path.is_file():
        facts.table1_note = (
            f"the index `{facts.index or 'not recorded'}` cannot be read here; refresh with "
            "`cfaudit models card MODEL --index INDEX` to add it"
        )
        return facts
    if facts.sha256 and file_sha256(path) != facts.sha256:
        if index is not None:
            raise CfauditError(
                f"{index}: its sha256 is not the {facts.sha256[:12]}... of the index the model was trained on; "
                "give that index, or none (the card then leaves Table 1 out)"
            )
        facts.table1_note = f"the index at `{facts.index}` has changed since training (its sha256 differs)"
        return facts
    try:
        data = DataIndex.read(path)
    except CfauditError as error:
        if index is not None:
            raise
        facts.table1_note = f"the index is not readable here ({portable(str(error))})"
        return facts
    _add_table1(facts, data)
    return facts


def _add_table1(facts: DataFacts, data: DataIndex) -> None:
    meta = data.meta
    facts.source = meta.get("source")
    split = meta.get("split") or {}
    if split.get("method"):
        fractions = " / ".join(str(f) for f in split.get("fractions") or [])
        facts.split_method = (
            f"`{split['method']}` by subject"
            + (f", seed {split['seed']}" if split.get("seed") is not None else "")
            + (f", fractions {fractions}" if fractions else "")
        )
    if facts.rows is None and facts.split:  # not recorded (the autoencoder's run): counted in the index
        facts.rows = len(data.split(facts.split))
        facts.rows_counted = True
    facts.label_policy = LabelPolicy.from_dict(meta.get("label_policy")).to_dict()
    facts.table1 = format_table1(table1(data, LabelPolicy.from_dict(facts.label_policy)), "markdown").strip()
    facts.table1_note = (
        "Computed from the index, whose sha256 is the recorded one"
        if facts.sha256
        else "Computed from the index as it is now (its sha256 was not recorded when the model was trained)"
    )


# 2. Measured figures ----------------------------------------------------------------------------------------


def _text(value: Any, where: str, key: str, required: bool = True) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise CfauditError(
                f"{where}: no `{key}`; every quoted figure says what, how much and where it was measured"
            )
        return ""
    if isinstance(value, (dict, list)):
        raise CfauditError(f"{where}: `{key}` must be text or a number, not a {type(value).__name__}")
    return str(value).strip()


def read_metrics(paths: Iterable[Path]) -> Figures:
    """Figures quoted from metrics files (YAML or JSON), each naming its source; see ``demo/metrics.yaml``.

    Sections: ``reconstruction``, ``prompt_control`` and ``other`` (lists of ``measure``, ``value``, ``source``,
    optional ``setting``) and ``table2`` (a list of ``title``, ``source``, optional ``setting``, ``columns``
    and ``rows``: a mapping of row name to one cell per column).
    """
    figures = Figures()
    for path in paths:
        path = Path(path)
        data = read_yaml(path, "no such metrics file; give a YAML or JSON file of measured figures") or {}
        if not isinstance(data, dict):
            raise CfauditError(
                f"{path}: expected a mapping of sections ({', '.join((*FIGURE_SECTIONS, 'table2'))})"
            )
        unknown = sorted(set(data) - {*FIGURE_SECTIONS, "table2"})
        if unknown:
            raise CfauditError(
                f"{path}: unknown section(s) {', '.join(unknown)}; use {', '.join((*FIGURE_SECTIONS, 'table2'))}"
            )
        for section in (*FIGURE_SECTIONS, "table2"):
            entries = data.get(section) or []
            if not isinstance(entries, list):
                raise CfauditError(f"{path}: `{section}` must be a list")
            for k, entry in enumerate(entries):
                where = f"{path.name}: {section}[{k}]"
                if not isinstance(entry, dict):
                    raise CfauditError(f"{where}: expected a mapping")
                if section == "table2":
                    figures.table2.append(_quoted_table(entry, where))
                    continue
                figure = Figure(_text(entry.get("measure"), where, "measure"), _text(entry.get("value"), where, "value"),
                                _text(entry.get("source"), where, "source"),
                                _text(entry.get("setting"), where, "setting", required=False))  # fmt: skip
                getattr(figures, section).append(figure)
        figures.files.append(path.name)
    return figures


def _quoted_table(entry: dict[str, Any], where: str) -> QuotedTable:
    columns = entry.get("columns")
    rows = entry.get("rows")
    if not isinstance(columns, list) or not columns:
        raise CfauditError(f"{where}: `columns` must be a non-empty list")
    if not isinstance(rows, dict) or not rows:
        raise CfauditError(f"{where}: `rows` must map each row's name to its cells")
    table_rows = []
    for name, cells in rows.items():
        if not isinstance(cells, list) or len(cells) != len(columns):
            raise CfauditError(f"{where}: row {name!r} must have {len(columns)} cells, one per column")
        table_rows.append((str(name), [_text(c, where, f"rows.{name}") for c in cells]))
    return QuotedTable(_text(entry.get("title"), where, "title"), _text(entry.get("source"), where, "source"),
                       [str(c) for c in columns], table_rows, _text(entry.get("setting"), where, "setting", False))  # fmt: skip


def _recorded_figures(vae_run: dict[str, Any]) -> list[Figure]:
    """Figures the training itself recorded: the autoencoder's held-out reconstruction error by step."""
    curve = vae_run.get("held_out_l1") or {}
    if not curve:
        return []
    config = vae_run.get("config") or {}
    steps = sorted(curve.items(), key=lambda kv: int(kv[0]))
    images = config.get("eval_images")
    return [
        Figure(
            "autoencoder's reconstruction L1 (0-255) of held-out images, by training step",
            ", ".join(f"step {step}: {value}" for step, value in steps),
            "vae_provenance.json (recorded by `cfaudit models train-vae`)",
            f"split `{config.get('eval_split', 'val')}`"
            + (f", {images} images" if images else "")
            + f", at {config.get('resolution')} px",
        )
    ]


# 3. Gathering -----------------------------------------------------------------------------------------------


def _origin(unet_run: dict[str, Any], vae_run: dict[str, Any], init: dict[str, Any]) -> str:
    if unet_run.get("config"):
        return "trained"
    if init.get("vae_from"):  # a random UNet on a trained autoencoder: its record came along with it
        return "random"
    if vae_run.get("config"):
        return "autoencoder"
    return "random" if init else "unrecorded"


def _license(existing: dict[str, Any], base: str | None, preset: str | None) -> str:
    if existing.get("license"):
        return str(existing["license"])
    if base is not None:
        return BASE_LICENSES.get(base, "other")
    return OWN_LICENSE if preset in ("tiny", "tiny-f4") or preset is None else "other"


def _resolution(unet: dict[str, Any], vae: dict[str, Any]) -> int | None:
    """Image size in pixels: the UNet's latent size times the VAE's downsampling."""
    size = unet.get("sample_size")
    size = size[0] if isinstance(size, list) else size
    if not isinstance(size, int):
        return None
    return size * 2 ** (len(vae.get("block_out_channels", [0])) - 1)


def gather(
    folder: Path,
    *,
    index: str | os.PathLike[str] | None = None,
    metrics: Sequence[str | os.PathLike[str]] = (),
    origin: dict[str, Any] | None = None,
    name: str | None = None,
    existing: dict[str, Any] | None = None,
) -> CardFacts:
    """The facts of ``folder``'s card. ``origin``: how a record-less folder was made (``init-random`` passes its
    architecture, seed, text encoder and donor VAE); ``name``: what commands call the model (``demo``; default:
    the folder's name); ``existing``: the current card's front matter."""
    existing = existing or {}
    unet_run = read_record(folder / "provenance.json")
    vae_run = read_record(folder / "vae_provenance.json")
    start = str((unet_run.get("base_model") or {}).get("folder") or "")
    # a trained UNet's autoencoder record is in the folder its training started from
    if not vae_run and start and Path(start).is_dir():
        vae_run = read_record(Path(start) / "vae_provenance.json")
    init = dict(origin or (existing.get("cfaudit") or {}).get("init") or {})
    unet = read_record(folder / "unet" / "config.json")
    vae = read_record(folder / "vae" / "config.json")
    preset = preset_name(unet, vae)
    base = base_model(folder, unet_run, vae_run)
    extra = [folder / METRICS_FILE] if (folder / METRICS_FILE).is_file() else []
    figures = read_metrics([*extra, *(Path(p) for p in metrics)])
    figures.reconstruction[:0] = _recorded_figures(vae_run)
    encoder = (read_record(folder / "model_index.json").get("text_encoder") or [None, "CLIPTextModel"])[1]
    text = read_record(folder / "text_encoder" / "config.json")
    # where the first phase started (a later phase starts from an earlier one's folder)
    first = training_phases(unet_run)[0]
    started = (first.get("base_model") or {}).get("source") or vae_run.get("base_model")
    name = name or ("demo" if folder.resolve() == DEMO_DIR.resolve() else folder.name)
    label = f"{folder.parent.name}/model" if name == "model" else name
    return CardFacts(
        title="cfaudit demo model" if name == "demo" else f"cfaudit model `{label}`",
        reference="demo" if name == "demo" else f"path/to/{name}",
        architecture=architecture_summary(folder),
        preset=preset,
        origin=_origin(unet_run, vae_run, init),
        base_model=base,
        started_from=portable(str(started)) if started else None,
        license=_license(existing, base, preset),
        text_encoder="minilm" if encoder == "BertModel" else "clip",
        text_encoder_shape=(text.get("num_hidden_layers"), text.get("hidden_size")),
        unet_run=portable(unet_run),
        vae_run=portable(vae_run),
        init=portable(init),
        data=_data_facts(unet_run, vae_run, index),
        figures=figures,
        resolution=_resolution(unet, vae),
        has_provenance_txt=(folder / "PROVENANCE.txt").is_file(),
    )
