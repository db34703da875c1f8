"""The editor behind `cfaudit ui`, without a browser: uploads, controls, edits, the cache, the download, the CLI."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cfaudit.data.images import save_image
from cfaudit.data.interventions import Intervention
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError
from cfaudit.ui.controls import intervention_from_choices
from cfaudit.ui.session import SCORE_COLUMNS, EditorSession, InversionCache, make_settings
from cfaudit.ui.sources import UPLOAD_PROMPT, DataSource, UploadLimits, dicom_prompt, load_upload

STEPS = 4


def chest(size: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth grey 'chest': two dark lungs, a bright heart, a little noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    image = 0.75 - 0.45 * (np.exp(-(((x + 0.4) / 0.25) ** 2 + (y / 0.5) ** 2)))
    image -= 0.45 * np.exp(-(((x - 0.4) / 0.25) ** 2 + (y / 0.5) ** 2))
    image += 0.3 * np.exp(-(((x + 0.05) / 0.2) ** 2 + ((y - 0.25) / 0.2) ** 2))
    return np.clip(image + 0.02 * rng.standard_normal(image.shape), 0, 1).astype(np.float32)


def write_dicom(path: Path, pixels: np.ndarray, age: str = "063Y", sex: str = "F") -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    dataset.PatientAge, dataset.PatientSex, dataset.Modality = age, sex, "DX"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)


# --- uploads ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "bits"), [(".png", 8), (".png", 16), (".jpg", 8)])
def test_good_uploads_are_read_by_bit_depth(tmp_path, suffix, bits):
    image = chest(64)
    path = tmp_path / f"xray{suffix}"
    save_image(image, path, bits=bits)
    source = load_upload(path)
    assert source.pixels.shape == (64, 64) and source.kind == "upload"
    assert np.abs(source.pixels - image).max() < (0.03 if suffix == ".jpg" else 1 / 255)
    assert source.prompt == UPLOAD_PROMPT and source.record is None and source.image_id == "xray"
    assert len(source.sha256) == 64 and not source.notes


def test_colour_upload_is_converted_with_a_note(tmp_path):
    grey = (chest(64) * 255).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB").save(tmp_path / "colour.png")
    source = load_upload(tmp_path / "colour.png")
    assert np.abs(source.pixels - grey / 255.0).max() < 2 / 255
    assert source.notes == ["converted from RGB colour to grayscale"]


def test_dicom_upload_takes_age_and_sex_from_its_header(tmp_path):
    pixels = (chest(64) * 4000).astype(np.uint16)
    write_dicom(tmp_path / "study.dcm", pixels)
    source = load_upload(tmp_path / "study.dcm")
    assert source.prompt == "Chest X-ray of 63-years old female subject"
    assert source.pixels.shape == (64, 64) and source.pixels.min() == 0.0 and source.pixels.max() == 1.0
    assert dicom_prompt({"patient_age": "", "patient_sex": "O"}) == UPLOAD_PROMPT
    assert (
        dicom_prompt({"patient_age": "018M", "patient_sex": "M"}) == "Chest X-ray of 2-years old male subject"
    )


def _bad_files(folder: Path) -> dict[str, tuple[Path, UploadLimits, str]]:
    """name -> (file, limits, a phrase its message must contain)."""
    good = folder / "good.png"
    save_image(chest(64), good)
    data = good.read_bytes()
    files: dict[str, tuple[Path, UploadLimits, str]] = {}

    def add(name: str, content: bytes | None, phrase: str, limits: UploadLimits | None = None) -> None:
        path = folder / name
        if content is not None:
            path.write_bytes(content)
        files[name] = (path, limits or UploadLimits(), phrase)

    add("notes.png", b"these are notes, not pixels\n" * 4, "notes.png is not a readable image")
    add("truncated.png", data[: len(data) // 2], "truncated.png cannot be read")
    add("report.txt", b"text", "report.txt: .txt files are not supported")
    add("empty.png", b"", "empty.png is empty")
    add("letter.dcm", b"Dear colleague" * 20, "letter.dcm is not a readable DICOM image")
    add("good.png", None, "over the 0.0 MB limit", UploadLimits(max_bytes=100))
    add("huge.png", data, "over the 0.001 megapixel limit", UploadLimits(max_pixels=1000))
    save_image(chest(16), folder / "tiny.png")
    add("tiny.png", None, "at least 32 pixels a side")
    Image.fromarray((chest(64) * 255).astype(np.uint8)).convert("CMYK").save(folder / "print.jpg")
    add("print.jpg", None, "pixel mode CMYK, which is not supported")
    frames = [Image.fromarray((chest(64, seed) * 255).astype(np.uint8)) for seed in range(2)]
    frames[0].save(folder / "movie.png", save_all=True, append_images=frames[1:])
    add("movie.png", None, "2 frames")
    return files


def test_bad_uploads_get_one_clear_message_naming_the_file(tmp_path):
    for name, (path, limits, phrase) in _bad_files(tmp_path).items():
        with pytest.raises(CfauditError) as caught:
            load_upload(path, limits)
        message = str(caught.value)
        assert phrase in message, (name, message)
        assert str(tmp_path) not in message, f"{name}: the message shows the temporary path: {message}"
        assert "--on-bad-row" not in message and "Traceback" not in message
    with pytest.raises(CfauditError, match="no image yet"):
        load_upload(None)


def test_data_source_reads_records_and_refuses_unknown_ids(phantom_index):
    data = DataSource.read(phantom_index, "all")
    assert len(data.image_ids) == 6
    image_id = data.image_ids[0]
    source = data.load(image_id)
    assert source.kind == "data" and source.image_id == image_id and source.record is not None
    assert source.prompt.startswith("Chest X-ray of ") and "years old" in source.prompt
    assert source.pixels.shape == (128, 128)
    with pytest.raises(CfauditError, match="not in split 'all'"):
        data.record("no-such-image")


# --- controls --------------------------------------------------------------------------------------------------


def test_controls_make_the_same_intervention_as_the_cli():
    findings = {finding: "unchanged" for finding in FINDINGS}
    assert intervention_from_choices(findings={**findings, "Cardiomegaly": "absent"}) == Intervention.parse(
        "Cardiomegaly=0"
    )
    both = intervention_from_choices("Female", "unchanged", 80.0, {"Pleural Effusion": "present"})
    assert both == Intervention.parse("do(sex=female, age=80, Pleural Effusion=1)")
    with pytest.raises(CfauditError, match="no intervention chosen"):
        intervention_from_choices(findings=findings)
    with pytest.raises(CfauditError, match="choose one of unchanged, present"):
        intervention_from_choices(findings={"No Finding": "absent"})
    with pytest.raises(CfauditError, match="race: choose one of unchanged, Asian, White, Black"):
        intervention_from_choices(race="Other")
    with pytest.raises(CfauditError, match="contradicts"):
        intervention_from_choices(findings={"No Finding": "present", "Edema": "present"})


def test_settings_are_checked():
    settings = make_settings("nti", 0, 5.0, "full", 3, True)
    assert settings.inversion.steps == 50 and settings.inversion.guidance_scale == 5.0
    assert settings.prompt_mode == "full" and settings.seed == 3 and settings.edit.attention.local_blend
    with pytest.raises(CfauditError, match="unknown inversion method"):
        make_settings("magic")
    with pytest.raises(CfauditError, match="guidance scale"):
        make_settings(guidance_scale=0.5)


# --- editing ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def editor():
    import torch

    from cfaudit.edit.editor import CounterfactualEditor

    torch.set_num_threads(1)
    return CounterfactualEditor.load("demo", device="cpu")


@pytest.fixture(scope="module")
def phantom_index(tmp_path_factory) -> Path:
    from cfaudit.data.adapters import build_index, write_index
    from cfaudit.data.phantom import generate_phantom, load_config

    root = tmp_path_factory.mktemp("phantom")
    generate_phantom(root / "data", load_config().with_overrides(n=6, size=128), seed=5)
    write_index(build_index("phantom", root / "data", seed=0), root / "index.csv")
    return root / "index.csv"


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    """A random (untrained) classifier: enough to check the table's layout and arithmetic."""
    import torch

    from cfaudit.models.classifier import AttributeNet
    from cfaudit.train.classifier import FORMAT, ClassifierConfig, save_classifier

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("classifier")
    config = ClassifierConfig(size=32)
    save_classifier(AttributeNet(config.arch), {"format": FORMAT, "config": config.to_dict()}, folder)
    return folder


def test_edit_then_cached_edit_and_the_download(editor, tmp_path):
    path = tmp_path / "xray.png"
    save_image(chest(160), path, bits=16)
    source = load_upload(path)
    session = EditorSession(editor, "demo", tmp_path / "work")
    intervention = Intervention.parse("Cardiomegaly=0")
    settings = make_settings(steps=STEPS)
    reports: list[tuple[float, str]] = []

    first = session.edit(source, intervention, settings, "Chest X-ray of 60-years old male subject with cardiomegaly",
                         progress=lambda fraction, text: reports.append((fraction, text)))  # fmt: skip
    size = editor.resolution
    assert first.input.shape == first.reconstruction.shape == first.counterfactual.shape == (size, size)
    assert first.target_prompt == "Chest X-ray of subject with no cardiomegaly"
    assert first.inversion_cached is None and first.scores is None
    assert np.abs(first.counterfactual - first.reconstruction).mean() > 1e-3
    assert np.allclose(first.difference, first.counterfactual - first.reconstruction)
    assert first.difference_rgb.shape == (size, size, 3) and first.diff_scale == pytest.approx(
        float(np.abs(first.difference).max())
    )
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] >= 0.0 and fractions[-1] <= 1.0
    assert any(text.startswith("inverting") for _, text in reports)
    assert any(text == f"editing (step {STEPS} of {STEPS})" for _, text in reports)

    reports.clear()
    second = session.edit(source, intervention, settings, first.source_prompt,
                          progress=lambda fraction, text: reports.append((fraction, text)))  # fmt: skip
    assert second.inversion_cached == "memory"
    assert not any(text.startswith("inverting") for _, text in reports)
    np.testing.assert_array_equal(second.counterfactual, first.counterfactual)

    other_prompt = session.edit(source, intervention, settings, "Chest X-ray of subject with cardiomegaly")
    assert other_prompt.inversion_cached is None  # the source prompt is part of the key

    with zipfile.ZipFile(first.bundle) as archive:
        names = {Path(name).name for name in archive.namelist()}
        record = json.loads(next(archive.read(n) for n in archive.namelist() if n.endswith("record.json")))
    assert names == {"input.png", "reconstruction.png", "counterfactual.png", "difference.npy",
                     "difference.png", "record.json"}  # fmt: skip
    assert record["intervention"] == "do(Cardiomegaly=0)" and record["changes"] == {"Cardiomegaly": 0}
    assert record["source_prompt"] == first.source_prompt and record["target_prompt"] == first.target_prompt
    # contrast prompts (the default): measured against what the caption says of the heart
    assert record["reference_prompt"] == first.reference_prompt == "Chest X-ray of subject with cardiomegaly"
    assert record["model"] == "demo" and record["model_fingerprint"] == session.fingerprint
    assert record["method"] == "direct" and record["steps"] == STEPS and record["seed"] == 0
    assert record["settings"]["inversion"]["method"] == "direct"
    assert record["source"]["sha256"] == source.sha256 and record["source"]["name"] == "xray.png"
    assert set(record["timings"]) == {"inversion_s", "edit_s", "scores_s", "total_s"}
    assert record["timings"]["total_s"] >= record["timings"]["edit_s"] > 0
    assert record["files"] == sorted(names)
    saved = np.asarray(Image.open(first.folder / "counterfactual.png"), dtype=np.float64) / 65535.0
    assert np.abs(saved - first.counterfactual).max() < 1e-4
    assert first.bundle.parent != second.bundle.parent  # every run keeps its own outputs


def test_inversions_on_disk_are_shared_between_sessions(editor, tmp_path):
    path = tmp_path / "xray.png"
    save_image(chest(128, seed=3), path)
    source = load_upload(path)
    settings, intervention = make_settings(steps=STEPS), Intervention.parse("sex=female")
    first = EditorSession(editor, "demo", tmp_path / "a", cache_dir=tmp_path / "cache")
    again = EditorSession(editor, "demo", tmp_path / "b", cache_dir=tmp_path / "cache")
    fresh = first.edit(source, intervention, settings)
    reused = again.edit(source, intervention, settings)
    assert fresh.inversion_cached is None and reused.inversion_cached == "disk"
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    np.testing.assert_allclose(reused.counterfactual, fresh.counterfactual, atol=1e-6)


def test_memory_cache_forgets_the_oldest():
    cache = InversionCache(slots=2)
    for key in ("a", "b", "c"):
        cache.put(key, object(), {})  # type: ignore[arg-type]
    assert len(cache) == 2 and cache.get("a") == (None, None) and cache.get("c")[1] == "memory"


def test_full_prompt_mode_uses_the_record_and_classifier_scores(
    editor, phantom_index, classifier_dir, tmp_path
):
    from cfaudit.evaluate.classifiers import load_classifier

    data = DataSource.read(phantom_index, "all")
    source = data.load(data.image_ids[0])
    session = EditorSession(editor, "demo", tmp_path, classifier=load_classifier(classifier_dir, "cpu"))
    intervention = Intervention.parse("age=90")
    outcome = session.edit(source, intervention, make_settings(steps=STEPS, prompt_mode="full"))
    assert outcome.target_prompt == intervention.target_prompt(source.record, "full")
    assert "90-years old" in outcome.target_prompt and outcome.target_prompt != source.prompt
    table = outcome.scores
    assert list(table.columns) == list(SCORE_COLUMNS) and len(table) == 2 + 4 + len(FINDINGS)
    assert "age, years (do)" in set(table["attribute"]) and "P(Male)" in set(table["attribute"])
    np.testing.assert_allclose(table["change"], table["counterfactual"] - table["reconstruction"], atol=2e-3)
    probabilities = table[table["attribute"].str.startswith("P(")][
        ["input", "reconstruction", "counterfactual"]
    ]
    assert ((probabilities >= 0) & (probabilities <= 1)).all().all()
    with zipfile.ZipFile(outcome.bundle) as archive:
        assert any(name.endswith("scores.csv") for name in archive.namelist())
        record = json.loads(next(archive.read(n) for n in archive.namelist() if n.endswith("record.json")))
    assert record["source"]["image_id"] == source.image_id and record["prompt_mode"] == "full"
    assert record["classifier"]["folder"] == str(classifier_dir)

    # An edited source prompt wins over the record: the full target is read from the caption instead.
    edited = session.edit(source, intervention, make_settings(steps=STEPS, prompt_mode="full"),
                          "Chest X-ray of 40-years old male subject with edema")  # fmt: skip
    assert edited.target_prompt == "Chest X-ray of 90-years old male subject with edema"


# --- the page's text and the command ---------------------------------------------------------------------------


def test_messages_in_the_page_are_escaped():
    from cfaudit.ui.app import error_markdown

    text = error_markdown("x_ray*1*.png <script>alert(1)</script> is not a readable image")
    assert "<script>" not in text and r"x\_ray\*1\*.png" in text


def test_cli_starts_the_app_on_localhost_with_the_options(monkeypatch, tmp_path):
    import cfaudit.ui.app as app_module
    import cfaudit.ui.session as session_module
    from cfaudit.cli import ui as cli_ui

    calls: dict[str, object] = {}

    class FakeRunning:
        url = "http://127.0.0.1:7999/"

        def close(self) -> None:
            calls["closed"] = True

    def fake_start(session, data, options, **kwargs):
        calls.update(session=session, data=data, options=options, **kwargs)
        return FakeRunning()

    monkeypatch.setattr(app_module, "start", fake_start)
    monkeypatch.setattr(
        session_module.EditorSession, "from_model", classmethod(lambda cls, model, work, **kw: (model, kw))
    )
    monkeypatch.setattr(cli_ui, "wait_until_interrupted", lambda ui: calls.setdefault("waited", True))
    app = typer.Typer()
    cli_ui.register(app)
    app.command("noop", hidden=True)(lambda: None)

    result = CliRunner().invoke(app, ["ui", "--model", "demo", "--method", "npi", "--max-upload-mb", "2"])
    assert result.exit_code == 0, result.output
    assert calls["host"] == "127.0.0.1" and calls["port"] == 7860 and calls["data"] is None
    assert calls["session"] == ("demo", {"classifier": None, "cache_dir": None, "device": None})
    options = calls["options"]
    assert (
        options.method == "npi"
        and options.default_steps == 50
        and options.limits.max_bytes == 2 * 1024 * 1024
    )
    assert calls["waited"] and calls["closed"] and "http://127.0.0.1:7999/" in result.output
    assert not Path(calls["temp_root"]).exists()  # the temporary folder goes when the app stops

    bad = CliRunner().invoke(app, ["ui", "--method", "magic"])
    assert isinstance(bad.exception, CfauditError) and "unknown inversion method" in str(bad.exception)
    missing = CliRunner().invoke(app, ["ui", "--data", str(tmp_path / "none.csv")])
    assert isinstance(missing.exception, CfauditError) and "no such index file" in str(missing.exception)


def test_start_keeps_gradio_offline_and_its_files_in_the_temporary_folder(editor, tmp_path):
    from cfaudit.ui.app import UiOptions, start

    before = os.environ.get("GRADIO_TEMP_DIR")
    session = EditorSession(editor, "demo", tmp_path / "work")
    ui = start(session, None, UiOptions(steps=STEPS), port=_free_port(), temp_root=tmp_path / "ui")
    try:
        assert ui.url.startswith("http://127.0.0.1:")
        assert os.environ["GRADIO_TEMP_DIR"] == str(tmp_path / "ui" / "gradio")
        assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and ui.app.analytics_enabled is False
        assert ui.app.share is False and ui.app.allowed_paths == []
    finally:
        ui.close()
    assert os.environ.get("GRADIO_TEMP_DIR") == before and not (tmp_path / "ui").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
