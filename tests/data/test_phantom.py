"""Tests for cfaudit.data.phantom.generate (and the CLI): files, reproducibility, resume, metadata, masks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfaudit.cli.main import main
from cfaudit.data.phantom import (
    DEVICE_KINDS,
    MASK_BITS,
    METADATA_COLUMNS,
    default_config_path,
    generate_phantom,
    load_config,
    stable_provenance,
)
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "phantom.json"
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "run"
    generate_phantom(out, load_config().with_overrides(n=60, size=64), seed=3, workers=1)
    return out


def test_writes_the_documented_files(small: Path) -> None:
    metadata = pd.read_csv(small / "metadata.csv", dtype={"subject_id": str, "study_id": str})
    assert len(metadata) == 60
    for path in metadata["path"]:
        image = Image.open(small / path)
        assert image.mode == "L" and image.size == (64, 64)
    image_ids = metadata["image_id"].tolist()
    for image_id in image_ids:
        assert (small / "ground_truth" / f"{image_id}.json").is_file()
        mask = Image.open(small / "ground_truth" / f"{image_id}_mask.png")
        assert mask.size == (64, 64) and np.asarray(mask).dtype == np.uint16
    legend = json.loads((small / "ground_truth" / "legend.json").read_text())
    assert legend["bits"] == MASK_BITS
    summary = pd.read_csv(small / "ground_truth" / "summary.csv")
    assert summary["image_id"].tolist() == image_ids
    assert all(f"device_{kind}" in summary.columns for kind in DEVICE_KINDS)
    provenance = json.loads((small / "phantom.json").read_text())
    assert provenance["status"] == "complete" and provenance["seed"] == 3 and provenance["n"] == 60
    assert provenance["size"] == 64 and provenance["cfaudit_version"]
    assert len(provenance["label_table"]["sha256"]) == 64
    assert provenance["config"]["relations"][0]["effect"] == "device.pacemaker"
    sheet = Image.open(small / "contact_sheet.png")
    assert sheet.width == 4 * 256 and sheet.height > 4 * 256


def test_metadata_holds_exactly_a_real_data_sets_columns_and_no_device_kinds(small: Path) -> None:
    metadata = pd.read_csv(small / "metadata.csv", dtype={"subject_id": str, "study_id": str})
    assert tuple(metadata.columns) == METADATA_COLUMNS
    assert not any(
        kind in " ".join(metadata.columns).lower() for kind in ("pacemaker", "tube", "line", "ecg")
    )
    assert set(metadata["ViewPosition"]) <= {"AP", "PA"} and set(metadata["sex"]) <= {"M", "F"}
    assert metadata["age"].between(18, 90).all() and (metadata["age"] == metadata["age"].round()).all()
    for finding in FINDINGS:
        assert metadata[finding].dropna().isin([1.0, 0.0, -1.0]).all()
    assert (
        metadata["subject_id"].str.fullmatch(r"\d{8}").all()
        and metadata["study_id"].str.fullmatch(r"\d{8}").all()
    )
    assert metadata["image_id"].str.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}").all()
    assert metadata["subject_id"].nunique() < len(metadata)  # subjects have several studies
    # A subject keeps its sex and race, and ages do not go down with study order.
    for _, studies in metadata.groupby("subject_id", sort=False):
        assert studies["sex"].nunique() == 1 and studies["race"].nunique() == 1
        assert studies["age"].is_monotonic_increasing
    # Support Devices = 1 exactly when a device is drawn.
    summary = pd.read_csv(small / "ground_truth" / "summary.csv")
    drawn = summary[[f"device_{kind}" for kind in DEVICE_KINDS]].sum(axis=1) > 0
    assert ((metadata["Support Devices"] == 1.0) == drawn).all()
    assert drawn.any() and (~drawn).any()


def test_masks_agree_with_the_ground_truth_json(small: Path) -> None:
    metadata = pd.read_csv(small / "metadata.csv")
    heart_bit, device_checked = 1 << MASK_BITS["heart"], 0
    for image_id in metadata["image_id"]:
        truth = json.loads((small / "ground_truth" / f"{image_id}.json").read_text())
        mask = np.asarray(Image.open(small / "ground_truth" / f"{image_id}_mask.png")).astype(np.int64)
        heart_rows = ((mask & heart_bit) > 0).sum(axis=1)
        assert abs(heart_rows.max() - truth["heart_width_px"]) <= 2.5
        assert truth["cardiothoracic_ratio"] == pytest.approx(
            truth["heart_width_px"] / truth["thorax_width_px"]
        )
        for device in truth["devices"]:
            bit = 1 << MASK_BITS[f"device.{device['kind']}"]
            ys, xs = np.nonzero(mask & bit)
            assert ys.size > 0
            assert device["bbox_px"] == [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
            device_checked += 1
        drawn = {d["kind"] for d in truth["devices"]}
        for kind in DEVICE_KINDS:
            if kind not in drawn:
                assert not (mask & (1 << MASK_BITS[f"device.{kind}"])).any()
    assert device_checked > 0


def test_pacemaker_generator_lies_where_the_json_says(tmp_path: Path) -> None:
    path = tmp_path / "pacemakers.yaml"
    path.write_text("devices: {probability: {pacemaker: 1.0}}\nrelations: []\n")
    out = tmp_path / "pm"
    generate_phantom(out, load_config(path).with_overrides(n=20, size=64), seed=2)
    found = 0
    for truth_path in sorted((out / "ground_truth").glob("*.json")):
        if truth_path.name == "legend.json":
            continue
        truth = json.loads(truth_path.read_text())
        for device in truth["devices"]:
            if device["kind"] == "pacemaker":
                x, y = device["landmarks"]["generator"]
                px, py = (x + 1) * 32 - 0.5, (y + 1) * 32 - 0.5  # pose shifts are a pixel or two at 64 px
                x0, y0, x1, y1 = device["bbox_px"]
                assert x0 - 3 <= px <= x1 + 3 and y0 - 3 <= py <= y1 + 3
                assert y < -0.2  # upper chest
                assert (x > 0) == (device["side"] == "left")
                found += 1
    assert found >= 5


def test_byte_for_byte_reproducible_whatever_the_workers(tmp_path: Path, small: Path) -> None:
    config = load_config().with_overrides(n=60, size=64)
    again = generate_phantom(tmp_path / "two_workers", config, seed=3, workers=2)
    assert again.rendered == 60
    assert digests(tmp_path / "two_workers") == digests(small)
    assert stable_provenance(tmp_path / "two_workers") == stable_provenance(small)


def test_another_seed_gives_other_images(tmp_path: Path, small: Path) -> None:
    generate_phantom(tmp_path / "seed4", load_config().with_overrides(n=60, size=64), seed=4, workers=1)
    assert digests(tmp_path / "seed4")["metadata.csv"] != digests(small)["metadata.csv"]


def test_resume_skips_finished_images_and_refuses_another_config(tmp_path: Path) -> None:
    out = tmp_path / "resume"
    config = load_config().with_overrides(n=12, size=32)
    first = generate_phantom(out, config, seed=1)
    before = digests(out)
    assert first.rendered == 12
    victim = sorted((out / "ground_truth").glob("*_mask.png"))[0].name.replace("_mask.png", "")
    (out / "ground_truth" / f"{victim}.json").unlink()  # as if killed before the image was finished
    second = generate_phantom(out, config, seed=1)
    assert (second.n, second.rendered) == (12, 1)
    assert digests(out) == before
    with pytest.raises(CfauditError, match="different n"):
        generate_phantom(out, config.with_overrides(n=13), seed=1)
    with pytest.raises(CfauditError, match="different seed"):
        generate_phantom(out, config, seed=2)
    with pytest.raises(CfauditError, match="different config"):
        generate_phantom(out, load_config(default_config_path("null")).with_overrides(n=12, size=32), seed=1)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(CfauditError, match="not empty"):
        generate_phantom(stranger, config, seed=1)


def test_jpeg_format(tmp_path: Path) -> None:
    path = tmp_path / "jpeg.yaml"
    path.write_text("image: {format: jpeg, jpeg_quality: 90}\n")
    generate_phantom(tmp_path / "out", load_config(path).with_overrides(n=4, size=32))
    metadata = pd.read_csv(tmp_path / "out" / "metadata.csv")
    assert metadata["path"].str.endswith(".jpg").all()
    assert Image.open(tmp_path / "out" / metadata["path"][0]).format == "JPEG"


def test_cli_writes_the_phantom_and_reports_bad_configs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(["phantom", "--out", str(out), "--n", "6", "--size", "32", "--seed", "5", "--workers", "1"])
    assert code == 0
    assert "wrote 6 images" in capsys.readouterr().out
    assert len(list((out / "images").glob("*.png"))) == 6
    assert (out / "metadata.csv").is_file() and (out / "contact_sheet.png").is_file()
    assert json.loads((out / "phantom.json").read_text())["seed"] == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "relations:\n  - {cause: Cardiomegaly, effect: device.pacemaker, p_if_present: 2, p_if_absent: 0}\n"
    )
    code = main(["phantom", "--out", str(tmp_path / "bad"), "--config", str(bad), "--n", "2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "relations[0].p_if_present" in err and "Traceback" not in err
    null = main(
        [
            "phantom",
            "--out",
            str(tmp_path / "null"),
            "--config",
            "null",
            "--n",
            "3",
            "--size",
            "32",
            "--workers",
            "1",
        ]
    )
    assert null == 0
    assert json.loads((tmp_path / "null" / "phantom.json").read_text())["config"]["relations"] == []
