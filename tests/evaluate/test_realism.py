"""Realism (FD and KID with bootstrap intervals): the formulas, the feature extractors, bad input, and
``realism.csv`` from ``evaluate_edits`` on a tiny editing job."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import linalg, ndimage

from cfaudit.data.images import save_image
from cfaudit.data.interventions import Intervention
from cfaudit.data.records import INDEX_COLUMNS, DataIndex
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError
from cfaudit.evaluate.classifiers import load_classifier
from cfaudit.evaluate.evaluation import evaluate_edits
from cfaudit.evaluate.realism import (
    REALISM_COLUMNS,
    RealImages,
    plan_realism,
    real_rows,
    sample_images,
    samples_realism,
)
from cfaudit.evaluate.realism_distances import frechet_distance, kid, realism_intervals
from cfaudit.evaluate.realism_features import ClassifierFeatures, XRVFeatures
from cfaudit.evaluate.xrv_classifier import XRVDenseNet, xrv_input
from cfaudit.models.classifier import DenseNet121, head_outputs

SIZE = 64


@pytest.fixture(scope="module")
def demo() -> object:
    return load_classifier("demo", device="cpu")


def textures(n: int, seed: int, blur: float = 0.0) -> list[np.ndarray]:
    """Images of one distribution: soft blobs, a few sharp-edged bright bars and fine grain; ``blur`` smooths
    them with a Gaussian of that sigma (pixels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = []
    for _ in range(n):
        image = np.full((SIZE, SIZE), 0.3)
        for _ in range(3):
            cy, cx, r = rng.uniform(10, 54), rng.uniform(10, 54), rng.uniform(6, 14)
            image += 0.25 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        for _ in range(4):
            top, left = rng.integers(0, SIZE - 8, size=2)
            image[top : top + rng.integers(2, 8), left : left + rng.integers(8, 30)] += 0.3
        image += rng.normal(0, 0.05, (SIZE, SIZE))
        if blur:
            image = ndimage.gaussian_filter(image, blur)
        images.append(np.clip(image, 0, 1).astype(np.float32))
    return images


# --- the formulas --------------------------------------------------------------------------------------------


def fd_with_scipy(a: np.ndarray, b: np.ndarray) -> float:
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(root))


@pytest.mark.parametrize(("na", "nb", "d"), [(200, 300, 8), (30, 60, 16), (12, 40, 32)])
def test_frechet_distance_is_the_fid_formula_also_with_fewer_images_than_dimensions(na, nb, d):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(na, d)), rng.normal(size=(nb, d)) * 1.3 + 0.2
    assert frechet_distance(a, b) == pytest.approx(fd_with_scipy(a, b), rel=1e-6)


def test_identical_sets_score_about_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(120, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # KID of a set with itself: each image meets itself in the cross term (not in the within-set means), so
    # it is -O(1/n) on the kernel's scale rather than exactly 0
    n, kernel = len(a), (a @ a.T / a.shape[1] + 1.0) ** 3
    total, diagonal = kernel.sum(), np.trace(kernel)
    same = kid(a, a, subset_size=n)
    assert same == pytest.approx(2 * (total - diagonal) / (n * (n - 1)) - 2 * total / n**2, rel=1e-9)
    assert abs(same) < 2 * diagonal / n**2 and abs(kid(a, a)) < 0.2 * kid(a, a + 0.5)
    assert frechet_distance(a, a + 0.5) == pytest.approx(8 * 0.25, rel=1e-6)
    assert math.isnan(frechet_distance(a[:1], a)) and math.isnan(kid(a[:1], a))


def test_kid_is_unbiased_and_fd_is_not():
    rng = np.random.default_rng(2)
    kids, fds = [], []
    for _ in range(300):
        a, b = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))  # one distribution
        kids.append(kid(a, b, seed=int(rng.integers(1 << 30))))
        fds.append(frechet_distance(a, b))
    kids = np.asarray(kids)
    assert abs(kids.mean()) < 3 * kids.std() / math.sqrt(len(kids))
    assert (kids < 0).sum() > 50  # negative values are how an unbiased estimate averages to 0
    assert min(fds) > 0 and np.mean(fds) > 0.5  # FD's small-n bias: always above the true 0


def test_kid_averages_subsets_of_at_most_100_images():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(250, 4)) + 0.4
    one = kid(a, b, subsets=1, seed=0)
    assert kid(a, b, seed=0) == kid(a, b, seed=0)  # seeded
    assert kid(a, b, seed=0) != one  # an average, not one subset
    assert kid(a, b, seed=0) == pytest.approx(kid(a, b, subsets=400, seed=5), rel=0.1)


def test_intervals_hold_the_estimate_and_are_seeded():
    rng = np.random.default_rng(4)
    for n, shift in [(15, 0.0), (40, 0.3), (120, 0.1)]:
        generated, real = rng.normal(size=(n, 8)) + shift, rng.normal(size=(80, 8))
        values = realism_intervals(generated, real, n_boot=200, seed=0)
        for v in values.values():
            assert v.low <= v.value <= v.high, v
            assert (v.n_generated, v.n_real) == (n, 80)
    again = realism_intervals(generated, real, n_boot=200, seed=0)
    assert again["FD"] == values["FD"] and again["KID"] == values["KID"]
    none = realism_intervals(generated, real, n_boot=0)
    assert math.isnan(none["KID"].low) and not math.isnan(none["KID"].value)


# --- features ------------------------------------------------------------------------------------------------


def test_classifier_features_are_what_its_heads_read(demo):
    images = [*textures(3, seed=0), np.full((80, 50), 0.4, np.float32)]  # any size, as predict takes them
    features = ClassifierFeatures(demo)(images)
    assert features.shape == (4, demo.model.backbone.out_features) and features.dtype == np.float64
    logits = demo.model.head(torch.from_numpy(features).float())
    expected = demo.predict(images)
    got = head_outputs(logits, demo.model.temperature)
    np.testing.assert_allclose(got["sex"].detach().numpy(), expected["sex"], rtol=1e-4, atol=1e-5)


def test_blurred_images_score_worse_than_sharp_ones_against_held_out_sharp_images(demo):
    extract = ClassifierFeatures(demo)
    real = extract(textures(40, seed=10))
    sharp = extract(textures(40, seed=11))
    blurred = extract(textures(40, seed=12, blur=2.0))
    sharp_scores = realism_intervals(sharp, real, n_boot=100)
    blurred_scores = realism_intervals(blurred, real, n_boot=100)
    assert blurred_scores["FD"].value > 1.5 * sharp_scores["FD"].value
    assert blurred_scores["KID"].value > sharp_scores["KID"].high


def test_xrv_features_are_the_penultimate_layer(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = XRVDenseNet().eval()
    path = tmp_path / "xrv.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    extract = XRVFeatures.load(path, device="cpu")
    images = textures(2, seed=0)
    features = extract(images)
    assert features.shape == (2, 1024)
    with torch.no_grad():
        expected = DenseNet121.forward(model, xrv_input(images)).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    assert extract.provenance()["sha256"] and "1024-d" in extract.name


# --- real images and bad input -------------------------------------------------------------------------------


def write_index(path: Path, images: dict[str, tuple[Path, str]]) -> Path:
    """An index of ``image_id -> (image file, split)``; every record a 60-year-old white woman, no findings."""
    rows = []
    for image_id, (file, split) in images.items():
        row = {c: "" for c in INDEX_COLUMNS}
        row.update(image_id=image_id, path=str(file), subject_id=image_id, study_id=image_id, view="PA",
                   age=60.0, sex="Female", race="White", split=split)  # fmt: skip
        row.update({finding: np.nan for finding in FINDINGS})
        rows.append(row)
    DataIndex(pd.DataFrame(rows), path.parent).write(path)
    return path


def test_real_images_are_a_fixed_choice_of_the_split():
    table = pd.DataFrame(
        {"image_id": [f"i{k:02d}" for k in range(30)], "split": ["test"] * 20 + ["train"] * 10}
    )
    chosen = real_rows(table, "test", 8, seed=0)
    shuffled = real_rows(table.sample(frac=1.0, random_state=3), "test", 8, seed=0)
    assert chosen["image_id"].tolist() == shuffled["image_id"].tolist() and len(chosen) == 8
    assert set(chosen["image_id"]) <= {f"i{k:02d}" for k in range(20)}
    assert len(real_rows(table, "train", 500)) == 10


def test_a_samples_folder_without_images_or_with_a_broken_one_is_one_clear_error(tmp_path, demo):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images")
    with pytest.raises(CfauditError, match=r"--samples .*empty: no PNG images in it; give the --out folder"):
        sample_images(empty)
    with pytest.raises(CfauditError, match=r"--samples .*gone: no such folder"):
        sample_images(tmp_path / "gone")
    broken = tmp_path / "broken"
    for k, image in enumerate(textures(2, seed=0)):
        save_image(image, broken / f"sample-{k}.png")
    (broken / "sample-9.png").write_bytes(b"not a png")
    real_dir = tmp_path / "real"
    files = {f"r{k}": (real_dir / f"r{k}.png", "test") for k in range(3)}
    for file, _ in files.values():
        save_image(textures(1, seed=5)[0], file)
    real = RealImages(DataIndex.read(write_index(tmp_path / "index.csv", files)), ClassifierFeatures(demo))
    with pytest.raises(
        CfauditError, match=r"sample-9\.png: cannot decode image .*; remove it from the folder"
    ):
        samples_realism(broken, real, "test", n_boot=10)


def test_xrv_weights_that_do_not_fit_are_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file(
        {"classifier.weight": torch.zeros(18, 10), "features.conv0.weight": torch.zeros(3, 3)}, str(wrong)
    )
    with pytest.raises(
        CfauditError, match=r"--realism-features: .*wrong\.safetensors: weights do not fit DenseNet-121"
    ):
        XRVFeatures.load(wrong)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(
        CfauditError,
        match=r"garbage\.safetensors: not a readable safetensors file.*give --realism-features classifier",
    ):
        XRVFeatures.load(garbage)
    with pytest.raises(CfauditError, match=r"--realism-features .*missing\.safetensors: no such file"):
        XRVFeatures.load(tmp_path / "missing.safetensors")


class NoTrunk:
    def predict(self, images):
        return {}


def test_realism_options_that_cannot_work_are_refused(tmp_path, demo):
    index = write_index(tmp_path / "index.csv", {"a": (tmp_path / "a.png", "test")})
    with pytest.raises(CfauditError, match="needs real images: give --index"):
        plan_realism(True, demo, index=None)
    with pytest.raises(CfauditError, match="drop --no-realism"):
        plan_realism(False, demo, index=index, samples=[tmp_path])
    with pytest.raises(CfauditError, match="NoTrunk has no network trunk"):
        plan_realism(True, NoTrunk(), index=index)
    notes: list[str] = []
    off = plan_realism(None, NoTrunk(), index=index, warn=notes.append)
    assert not off.enabled and len(notes) == 1 and "--realism-features" in notes[0]
    assert not plan_realism(None, demo, index=None).enabled  # no index: off, no error
    assert plan_realism(None, demo, index=index).enabled


# --- in evaluate_edits ---------------------------------------------------------------------------------------


def write_job(folder: Path, image_ids: list[str]) -> Path:
    """An editing job (edits.csv + job.json, as test_table2 makes one) with textured originals, their
    reconstructions (slightly blurred) and one sex-swap counterfactual each (strongly blurred)."""
    records = []
    for k, image_id in enumerate(image_ids):
        original = textures(1, seed=100 + k)[0]
        save_image(original, folder / "src" / f"{image_id}.png", bits=16)
        slug = Intervention.parse("sex=male").slug
        save_image(
            ndimage.gaussian_filter(original, 3.0), folder / "images" / image_id / f"{slug}.png", bits=16
        )
        save_image(ndimage.gaussian_filter(original, 0.7), folder / "images" / image_id / "reconstruction.png",
                   bits=16)  # fmt: skip
        records.append({"image_id": image_id, "intervention": "sex=male", "method": "direct",
                        "source_prompt": "", "reconstruction_l1": 0.0, "identity_l1": "",
                        "original": str((folder / "src" / f"{image_id}.png").resolve()),
                        "counterfactual": f"images/{image_id}/{slug}.png",
                        "reconstruction": f"images/{image_id}/reconstruction.png"})  # fmt: skip
    pd.DataFrame(records).to_csv(folder / "edits.csv", index=False)
    (folder / "job.json").write_text(json.dumps({"model": "", "settings": {}}))
    return folder


def test_evaluate_edits_writes_realism_csv(tmp_path, demo):
    edited = [f"e{k}" for k in range(4)]
    job = write_job(tmp_path / "job", edited)
    files = {image_id: (job / "src" / f"{image_id}.png", "test") for image_id in edited}
    for k in range(6):  # more real test images, and train images that must not be used
        for split in ("test", "train"):
            file = tmp_path / "real" / f"{split}{k}.png"
            save_image(textures(1, seed=200 + k)[0], file)
            files[f"{split}{k}"] = (file, split)
    index = write_index(tmp_path / "index.csv", files)
    samples = tmp_path / "samples"
    for k, image in enumerate(textures(3, seed=300)):
        save_image(image, samples / f"sample-{k:04d}-seed{k}.png")
    result = evaluate_edits([job], demo, tmp_path / "out", size=SIZE, n_boot=50, device="cpu",
                            model_axioms=False, index=index, samples=[samples], real_images=8)  # fmt: skip
    realism = pd.read_csv(result.paths["realism_csv"])
    assert realism.columns.tolist() == list(REALISM_COLUMNS)
    assert realism[["set", "metric"]].apply(tuple, axis=1).tolist() == [
        ("counterfactuals", "FD"), ("counterfactuals", "KID"), ("reconstructions", "FD"),
        ("reconstructions", "KID"), ("samples", "FD"), ("samples", "KID"),
    ]  # fmt: skip
    assert (realism["n_real"] == 8).all() and (realism["split"] == "test").all()
    assert realism["n_generated"].tolist() == [4, 4, 4, 4, 3, 3]
    assert realism["method"].tolist()[:4] == ["direct"] * 4 and realism["method"].iloc[-1] == "samples"
    assert (realism["ci_low"] <= realism["value"]).all() and (realism["value"] <= realism["ci_high"]).all()
    fd = realism[realism["metric"] == "FD"].set_index("set")["value"]
    assert fd["counterfactuals"] > fd["reconstructions"]  # heavily blurred vs lightly blurred
    assert realism["features"].str.startswith("classifier trunk (resnet-small").all()
    assert "## Realism: generated vs real images" in result.markdown
    assert re.search(r"\| direct \| reconstructions \| [0-9.]+ \[", result.markdown)
    provenance = json.loads(result.paths["evaluation_json"].read_text())
    assert provenance["realism"]["enabled"] and provenance["realism"]["features"]["kind"] == "classifier"
    assert provenance["realism"]["real_images"]["max"] == 8

    off = evaluate_edits([job], demo, tmp_path / "off", size=SIZE, n_boot=0, device="cpu", model_axioms=False)
    assert "realism_csv" not in off.paths and not (tmp_path / "off" / "realism.csv").exists()
    assert "Realism (FD, KID): not measured: it needs real images, give --index." in off.markdown
    assert json.loads(off.paths["evaluation_json"].read_text())["realism"]["enabled"] is False
