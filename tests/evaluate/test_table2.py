"""Table 2 and the axioms from folders of tiny PNG pairs, scored by a fake classifier with known outputs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfaudit.data.images import save_image
from cfaudit.data.interventions import Intervention
from cfaudit.errors import CfauditError
from cfaudit.evaluate import metrics
from cfaudit.evaluate.evaluation import evaluate_edits
from cfaudit.evaluate.reading import changes_record, column_order, paper_column, read_edit_folder

SIZE = 64


class BrightnessClassifier:
    """P(male) = the image's mean brightness m; age = 20 + 60 m years; P(Cardiomegaly) = 1 - m; race and
    "No Finding" constant. Known outputs make every CPG, flip and kept rate computable by hand."""

    def predict(self, images):
        means = np.array([image.mean() for image in metrics.image_list(images)], dtype=np.float64)
        n = len(means)
        return {
            "sex": means,
            "race": np.tile([0.1, 0.6, 0.2, 0.1], (n, 1)),
            "age": 20.0 + 60.0 * means,
            "Cardiomegaly": 1.0 - means,
            "No Finding": np.full(n, 0.3),
        }


def flat(value: float) -> np.ndarray:
    return np.full((SIZE, SIZE), value, dtype=np.float32)


def write_pairs(folder: Path, pairs: list[tuple[str, float, float, str]], bits: int = 16) -> Path:
    """``pairs.csv`` with one row per (image id, original gray, counterfactual gray, intervention)."""
    rows = []
    for image_id, before, after, intervention in pairs:
        save_image(flat(before), folder / "originals" / f"{image_id}.png", bits=bits)
        name = f"{image_id}-{Intervention.parse(intervention).slug}.png"
        save_image(flat(after), folder / "counterfactuals" / name, bits=bits)
        rows.append({"image_id": image_id, "original": f"originals/{image_id}.png",
                     "counterfactual": f"counterfactuals/{name}", "intervention": intervention})  # fmt: skip
    pd.DataFrame(rows).to_csv(folder / "pairs.csv", index=False)
    return folder


def run(folders, out, **options):
    defaults = {"size": SIZE, "n_boot": 200, "device": "cpu", "model_axioms": False}
    return evaluate_edits(folders, BrightnessClassifier(), out, **{**defaults, **options})


def cell(table: pd.DataFrame, column: str, metric: str, method: str | None = None) -> pd.Series:
    rows = table[(table["column"] == column) & (table["metric"] == metric)]
    if method is not None:
        rows = rows[rows["method"] == method]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_interventions_fall_into_the_papers_columns():
    columns = {
        text: paper_column(Intervention.parse(text))
        for text in ["sex=female", "Cardiomegaly=0", "No Finding=1", "Edema=1, Pneumonia=1", "race=Black",
                     "age=80", "age=80, sex=male", "race=White, Cardiomegaly=1"]
    }  # fmt: skip
    assert columns == {
        "sex=female": "do(sex)",
        "Cardiomegaly=0": "do(disease)",
        "No Finding=1": "do(disease)",
        "Edema=1, Pneumonia=1": "do(disease)",
        "race=Black": "do(race)",
        "age=80": "do(age)",
        "age=80, sex=male": "do(sex, age)",
        "race=White, Cardiomegaly=1": "do(disease, race)",
    }
    assert column_order(["do(sex, age)", "do(race)", "do(age)", "do(sex)"]) == [
        "do(sex)", "do(race)", "do(age)", "do(sex, age)"
    ]  # fmt: skip


def test_known_distances_and_prediction_gains(tmp_path):
    folder = write_pairs(
        tmp_path / "pairs",
        [
            ("a", 0.1, 0.9, "sex=male"),  # P(male) 0.1 -> 0.9: CPG 0.8 towards the target
            ("b", 0.5, 0.5, "race=Black"),  # an unchanged copy: LPIPS 0, L1 0, CPG 0
            ("c", 0.5, 0.75, "age=80"),  # age 50 -> 65 years: CPG 15, 15 years closer to 80
            ("d", 0.2, 0.3, "Cardiomegaly=1"),  # P(Cardiomegaly) 0.8 -> 0.7: away from the target
        ],
    )
    result = run([folder], tmp_path / "out")
    table = result.table
    assert set(table["method"]) == {"pairs"}  # no method column: the folder's name
    assert column_order(table["column"].unique()) == ["do(sex)", "do(disease)", "do(race)", "do(age)"]
    assert cell(table, "do(sex)", "L1")["mean"] == pytest.approx(0.8 * 255, abs=0.01)
    assert cell(table, "do(sex)", "CPG")["mean"] == pytest.approx(0.8, abs=1e-4)
    assert cell(table, "do(sex)", "CPG signed")["mean"] == pytest.approx(0.8, abs=1e-4)
    assert cell(table, "do(race)", "LPIPS")["mean"] == pytest.approx(0.0, abs=1e-6)
    assert cell(table, "do(race)", "L1")["mean"] == 0.0 and cell(table, "do(race)", "CPG")["mean"] == 0.0
    assert cell(table, "do(race)", "LPIPS")["mean"] < cell(table, "do(sex)", "LPIPS")["mean"]
    age = cell(table, "do(age)", "CPG")
    assert age["mean"] == pytest.approx(15.0, abs=0.01) and age["unit"] == "years"
    assert cell(table, "do(age)", "CPG signed")["mean"] == pytest.approx(15.0, abs=0.01)
    assert cell(table, "do(disease)", "CPG")["mean"] == pytest.approx(0.1, abs=1e-4)
    assert cell(table, "do(disease)", "CPG signed")["mean"] == pytest.approx(-0.1, abs=1e-4)
    assert (table["size"] == SIZE).all() and (table["n"] == 1).all()
    # pairs without reconstructions
    assert not {"CPG null edit", "LPIPS null edit", "L1 null edit"} & set(table["metric"])
    scores = pd.read_csv(result.paths["scores_csv"])
    sex = scores[scores["attribute"] == "sex"].iloc[0]
    assert (sex["before"], sex["after"]) == (pytest.approx(0.1, abs=1e-4), pytest.approx(0.9, abs=1e-4))


def test_an_edit_of_several_attributes_gets_a_combined_column_with_one_cpg_per_attribute(tmp_path):
    folder = write_pairs(tmp_path / "p", [("a", 0.1, 0.9, "age=80, sex=male"), ("b", 0.1, 0.5, "sex=male")])
    result = run([folder], tmp_path / "out")
    combined = result.table[(result.table["column"] == "do(sex, age)") & (result.table["metric"] == "CPG")]
    assert combined.set_index("attribute")["mean"].to_dict() == {
        "sex": pytest.approx(0.8, abs=1e-4),
        "age": pytest.approx(48.0, abs=0.01),  # 20 + 60 m: 26 -> 74 years
    }
    assert cell(result.table, "do(sex, age)", "L1")["n"] == 1  # one edit, not one per attribute
    assert cell(result.table, "do(sex)", "CPG")["mean"] == pytest.approx(0.4, abs=1e-4)
    assert "sex 0.800" in result.markdown and "age 48.000" in result.markdown


def test_l1_of_a_copy_shifted_by_ten_gray_levels_is_ten_on_the_0_255_scale(tmp_path):
    folder = write_pairs(tmp_path / "p", [("a", 100 / 255, 110 / 255, "sex=male")], bits=8)
    table = run([folder], tmp_path / "out").table
    assert cell(table, "do(sex)", "L1")["mean"] == pytest.approx(10.0, abs=1e-3)
    assert cell(table, "do(sex)", "L1")["unit"] == "0-255"


def test_effectiveness_flip_and_kept_rates(tmp_path):
    folder = write_pairs(
        tmp_path / "p",
        [("a", 0.1, 0.9, "sex=male"), ("b", 0.2, 0.45, "sex=male"), ("c", 0.7, 0.8, "sex=male")],
    )
    axioms = run([folder], tmp_path / "out").axioms
    sex = axioms[axioms["intervention"] == "do(sex=Male)"].set_index("measure")
    # a flips (0.1 -> 0.9), b stays below 0.5, c was already male
    assert sex.loc["rate", "mean"] == pytest.approx(2 / 3) and sex.loc["rate", "n"] == 3
    assert sex.loc["flip rate", "mean"] == pytest.approx(1 / 2) and sex.loc["flip rate", "n"] == 2
    # kept: race and No Finding are constant; age moves 48 / 15 / 6 years (> 5: changed); Cardiomegaly's
    # decision (1 - m >= 0.5) flips for a only
    assert sex.loc["kept: race", "mean"] == 1.0 and sex.loc["kept: No Finding", "mean"] == 1.0
    assert sex.loc["kept: age", "mean"] == 0.0
    assert sex.loc["kept: Cardiomegaly", "mean"] == pytest.approx(2 / 3)
    assert sex.loc["kept rate", "mean"] == pytest.approx((2 / 4 + 3 / 4 + 3 / 4) / 3)
    assert "kept: sex" not in sex.index


def test_bootstrap_intervals_and_counts(tmp_path):
    gains = [0.2, 0.4, 0.5, 0.7, 0.8, 0.9]
    folder = write_pairs(tmp_path / "p", [(f"i{k}", 0.05, 0.05 + g, "sex=male") for k, g in enumerate(gains)])
    table = run([folder], tmp_path / "out", n_boot=500).table
    cpg = cell(table, "do(sex)", "CPG")
    assert cpg["n"] == len(gains) and cpg["mean"] == pytest.approx(np.mean(gains), abs=1e-3)
    assert min(gains) < cpg["ci_low"] < cpg["mean"] < cpg["ci_high"] < max(gains)
    again = run([folder], tmp_path / "again", n_boot=500).table
    assert cell(again, "do(sex)", "CPG")["ci_low"] == cpg["ci_low"]  # seeded
    none = run([folder], tmp_path / "none", n_boot=0).table
    assert math.isnan(cell(none, "do(sex)", "CPG")["ci_low"]) and cell(none, "do(sex)", "CPG")["n"] == 6


def test_outputs_record_what_they_came_from(tmp_path):
    folder = write_pairs(tmp_path / "p", [("a", 0.1, 0.9, "sex=male"), ("b", 0.3, 0.35, "Cardiomegaly=0")])
    result = run([folder], tmp_path / "out", command="cfaudit evaluate --edits p")
    for path in result.paths.values():
        assert path.is_file() and path.stat().st_size > 0, path
    long = pd.read_csv(result.paths["table2_csv"])
    assert {"method", "column", "metric", "mean", "ci_low", "ci_high", "n", "size", "classifier"} <= set(long)
    markdown = result.paths["table2_md"].read_text()
    assert (
        "| | do(sex) | do(disease) |" in markdown and "| n | 1 | 1 |" in markdown and "64 x 64 px" in markdown
    )
    assert markdown == result.markdown
    provenance = json.loads(result.paths["evaluation_json"].read_text())
    assert provenance["size"] == SIZE and provenance["bootstrap"]["resamples"] == 200
    assert provenance["command"] == "cfaudit evaluate --edits p"
    assert provenance["edits"][0]["kind"] == "pairs" and provenance["edits"][0]["rows"] == 2
    assert provenance["classifier"]["name"] == "BrightnessClassifier"
    assert result.paths["table2_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def write_job(
    folder: Path, caption: str, rows: list[tuple[str, float, float, str]], model: str, shift: float = 0.0
) -> Path:
    """An editing job's layout (edits.csv + job.json) made by hand; reconstructions are originals + ``shift``."""
    records = []
    for image_id, before, after, intervention in rows:
        save_image(flat(before), folder / "src" / f"{image_id}.png", bits=16)
        slug = Intervention.parse(intervention).slug
        save_image(flat(after), folder / "images" / image_id / f"{slug}.png", bits=16)
        save_image(flat(before + shift), folder / "images" / image_id / "reconstruction.png", bits=16)
        records.append({"image_id": image_id, "intervention": intervention, "source_prompt": caption,
                        "method": "direct", "reconstruction_l1": 0.0, "identity_l1": "",
                        "original": str((folder / "src" / f"{image_id}.png").resolve()),
                        "counterfactual": f"images/{image_id}/{slug}.png",
                        "reconstruction": f"images/{image_id}/reconstruction.png"})  # fmt: skip
    pd.DataFrame(records).to_csv(folder / "edits.csv", index=False)
    (folder / "job.json").write_text(json.dumps({"model": model, "settings": {}}))
    return folder


WOMAN = "Chest X-ray of 63-years old white female subject with cardiomegaly"


def test_null_edits_leave_table2_and_become_identity_measures(tmp_path):
    job = write_job(tmp_path / "job", WOMAN, [("a", 0.6, 0.2, "sex=female"), ("a", 0.6, 0.6, "sex=male"),
                                               ("b", 0.6, 0.1, "Cardiomegaly=0")], model="", shift=0.1)  # fmt: skip
    assert not changes_record(Intervention.parse("sex=female"), {"sex": "Female"})
    assert changes_record(Intervention.parse("Cardiomegaly=0"), {"Cardiomegaly": -1.0}) is False  # U-zeros
    result = run([job], tmp_path / "out")
    assert cell(result.table, "do(sex)", "L1")["n"] == 1  # only do(sex=Male) of a woman
    assert cell(result.table, "do(sex)", "L1")["mean"] == 0.0
    # she has cardiomegaly: do(Cardiomegaly=0) changes her record
    assert cell(result.table, "do(disease)", "L1")["n"] == 1
    # the reconstruction (0.6 -> 0.7) moves P(male) by 0.1 and P(Cardiomegaly) = 1 - m by 0.1
    assert cell(result.table, "do(sex)", "CPG null edit")["mean"] == pytest.approx(0.1, abs=1e-4)
    assert cell(result.table, "do(disease)", "CPG null edit")["mean"] == pytest.approx(0.1, abs=1e-4)
    # the reconstruction's own share of L1 and LPIPS: flat images 0.1 apart
    assert cell(result.table, "do(disease)", "L1 null edit")["mean"] == pytest.approx(25.5, abs=0.01)
    recon, edit = (cell(result.table, "do(disease)", m)["mean"] for m in ("LPIPS null edit", "LPIPS"))
    assert 0.0 < recon < edit  # 0.1 apart vs 0.5 apart
    assert "L1 of the null edit" in result.markdown and "LPIPS of the null edit" in result.markdown
    minimality = result.axioms[result.axioms["intervention"] == "do(Cardiomegaly=0)"].set_index("measure")[
        "mean"
    ]
    assert minimality["reconstruction L1"] == pytest.approx(25.5, abs=0.01)
    assert minimality["excess L1"] == pytest.approx(0.5 * 255 - 25.5, abs=0.01)
    identity = result.axioms[result.axioms["measure"] == "null intervention L1"]
    assert identity["intervention"].tolist() == ["do(sex=Female)"]
    assert identity["mean"].iloc[0] == pytest.approx(0.4 * 255, abs=0.01)
    assert "1 null edit(s)" in result.markdown
    kept = run([job], tmp_path / "all", include_null_edits=True).table
    assert cell(kept, "do(sex)", "L1")["n"] == 2


def test_a_relative_age_edit_aims_at_each_images_own_age(tmp_path):
    # WOMAN is 63: do(age=+20) aims at 83; the classifier reads 20 + 60 m years
    job = write_job(
        tmp_path / "job", WOMAN, [("a", 0.5, 0.75, "age=+20"), ("b", 0.5, 0.25, "age=+20")], model=""
    )
    result = run([job], tmp_path / "out")
    # a: 50 -> 65 years, 15 closer to 83; b: 50 -> 35, 15 further away
    assert cell(result.table, "do(age)", "CPG")["mean"] == pytest.approx(15.0, abs=0.01)
    assert cell(result.table, "do(age)", "CPG signed")["mean"] == pytest.approx(0.0, abs=0.01)
    scores = pd.read_csv(result.paths["scores_csv"])
    assert scores["target"].astype(float).tolist() == [83.0, 83.0]


def test_model_axioms_are_noted_when_the_model_cannot_be_loaded(tmp_path):
    job = write_job(tmp_path / "job", WOMAN, [("a", 0.6, 0.2, "sex=male")], model=str(tmp_path / "gone"))
    warnings: list[str] = []
    result = run([job], tmp_path / "out", model_axioms=None, warn=warnings.append)
    notes = result.axioms[result.axioms["axiom"].isin(["composition", "reversibility"])]
    assert len(notes) == 2 and notes["note"].str.startswith("not measured: model").all()
    assert len(warnings) == 1 and "composition and reversibility not measured" in warnings[0]
    with pytest.raises(CfauditError, match="model axioms requested but model"):
        run([job], tmp_path / "strict", model_axioms=True)


def test_methods_sharing_a_name_but_not_a_model_are_told_apart(tmp_path):
    one = write_job(tmp_path / "one", WOMAN, [("a", 0.6, 0.2, "sex=male")], model="m1")
    two = write_job(tmp_path / "two", WOMAN, [("a", 0.6, 0.3, "sex=male")], model="m2")
    table = run([one, two], tmp_path / "out").table
    assert set(table["method"]) == {"direct [one]", "direct [two]"}


def test_one_model_edited_with_other_settings_is_two_methods(tmp_path):
    def job(name: str, steps: int, batch_size: int) -> Path:
        folder = write_job(tmp_path / name, WOMAN, [("a", 0.6, 0.2, "sex=male")], model="m")
        settings = {"inversion": {"method": "direct", "steps": steps}, "batch_size": batch_size}
        (folder / "job.json").write_text(json.dumps({"model": "m", "settings": settings}))
        return folder

    # steps change the edits; the batch size does not
    table = run([job("s12", 12, 1), job("s20", 20, 1)], tmp_path / "out").table
    assert set(table["method"]) == {"direct [s12]", "direct [s20]"}
    table = run([job("b1", 12, 1), job("b4", 12, 4)], tmp_path / "same").table
    assert set(table["method"]) == {"direct"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: (f / "pairs.csv").write_text("original,counterfactual\na.png,b.png\n"),
         "pairs.csv: no column(s) intervention"),
        (lambda f: (f / "pairs.csv").write_text(
            "original,counterfactual,intervention\noriginals/a.png,counterfactuals/a-sex-male.png,height=3\n"),
         "pairs.csv, line 2: intervention 'height=3': unknown attribute 'height'"),
        (lambda f: (f / "originals" / "a.png").unlink(), "pairs.csv, line 2: original image 'originals/a.png' not found"),
        (lambda f: (f / "pairs.csv").unlink(), "neither edits.csv"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_error(tmp_path, mutate, message):
    folder = write_pairs(tmp_path / "p", [("a", 0.1, 0.9, "sex=male")])
    mutate(folder)
    with pytest.raises(CfauditError, match=re.escape(message)):
        run([folder], tmp_path / "out")


def test_a_corrupt_image_names_the_file_and_row(tmp_path):
    folder = write_pairs(tmp_path / "p", [("a", 0.1, 0.9, "sex=male"), ("b", 0.1, 0.9, "sex=male")])
    (folder / "counterfactuals" / "b-sex-male.png").write_bytes(b"not a png")
    with pytest.raises(CfauditError, match=r"pairs.csv, line 3: counterfactual image cannot be read"):
        run([folder], tmp_path / "out")
    assert not (tmp_path / "out" / "table2.csv").exists()


def test_a_job_without_job_json_is_refused(tmp_path):
    job = write_job(tmp_path / "job", WOMAN, [("a", 0.6, 0.2, "sex=male")], model="")
    (job / "job.json").unlink()
    with pytest.raises(CfauditError, match=r"job\.json: missing"):
        read_edit_folder(job)


def test_a_relative_age_edit_without_a_recorded_age_aims_at_the_classifiers_reading_moved():
    from cfaudit.data.interventions import AgeShift
    from cfaudit.evaluate.scoring import _shifted_ages

    goals = _shifted_ages(AgeShift(20.0), [{"age": 63}, {"age": None}, None], np.array([50.0, 40.0, 30.0]))
    assert goals.tolist() == [83.0, 60.0, 50.0]


def test_age_edits_report_the_right_way_and_the_dose_of_the_intended_change(tmp_path):
    # age = 20 + 60 m: 0.5 reads 50 years; no records, so each edit means 20 years from the reading
    folder = write_pairs(
        tmp_path / "p",
        [("a", 0.5, 0.75, "age=+20"), ("b", 0.5, 0.3, "age=+20"), ("c", 0.5, 0.1, "age=-20")],
    )
    result = run([folder], tmp_path / "out")
    axioms = result.axioms.set_index(["intervention", "measure"])
    assert axioms.loc[("do(age=+20)", "right way"), "mean"] == pytest.approx(1 / 2)  # a older, b younger
    assert axioms.loc[("do(age=+20)", "dose"), "mean"] == pytest.approx((15 / 20 - 12 / 20) / 2, abs=1e-3)
    assert axioms.loc[("do(age=-20)", "dose"), "mean"] == pytest.approx(
        24 / 20, abs=1e-3
    )  # 50 -> 26: too far
    assert ("do(age=+20)", "beyond the data") not in axioms.index  # no index: no data range to compare with
    assert "| p | do(age=-20) | 1.00 [1.00, 1.00] | 1.20 [1.20, 1.20] | - |" in result.markdown


def test_age_dose_leaves_out_small_and_out_of_range_intentions():
    from cfaudit.evaluate.summaries import age_dose

    edits = pd.DataFrame(
        {
            "factual": [60.0, 60.0, 85.0, None, 60.0],
            "target": [80.0, 40.0, 105.0, 70.0, 62.0],  # the third aims past the data; the last means 2 years
            "before": [58.0, 62.0, 80.0, 50.0, 60.0],
            "after": [98.0, 52.0, 10.0, 60.0, 70.0],
        }
    )
    right_way, dose, beyond = age_dose(edits, age_range=(18.0, 90.0))
    assert right_way.tolist()[:2] == [1.0, 1.0] and dose.tolist()[:2] == [2.0, 0.5]
    assert math.isnan(dose[2]) and beyond.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert dose[3] == pytest.approx(0.5)  # no record: the intended change is from the reading (50 -> 70)
    assert math.isnan(right_way[4]) and math.isnan(dose[4])
    assert age_dose(edits)[1][2] == pytest.approx(-70 / 20)  # without a range it counts


def test_age_edits_that_go_too_far_get_a_note_naming_the_option_that_sets_their_strength(tmp_path):
    # age = 20 + 60 m: do(age=+20) from 0.3 (38 years) to 1.0 (80) moves 42 years of 20 (dose 2.1: a note);
    # do(age=-20) from 0.5 (50) to 0.1 (26) moves 24 of 20 (dose 1.2, inside the band: none)
    pairs = [(f"a{k}", 0.3, 1.0, "age=+20") for k in range(5)] + [
        (f"b{k}", 0.5, 0.1, "age=-20") for k in range(5)
    ]
    result = run([write_pairs(tmp_path / "p", pairs)], tmp_path / "out")
    notes = [w for w in result.warnings if "intended age change" in w]
    assert len(notes) == 1 and "do(age=+20): the classifier reads 2.10x" in notes[0], notes
    assert "--attribute-guidance age=SCALE" in notes[0]


def test_a_repeated_edit_is_refused_with_the_review_queues_words(tmp_path):
    job = write_job(
        tmp_path / "job", WOMAN, [("a", 0.6, 0.2, "sex=male"), ("b", 0.6, 0.3, "sex=male")], model=""
    )
    lines = (job / "edits.csv").read_text().splitlines()
    (job / "edits.csv").write_text("\n".join([*lines, lines[1]]) + "\n")  # line 2 again, as line 4
    with pytest.raises(
        CfauditError,
        match=r"edits\.csv, line 4: repeats the edit of line 2 \(a, sex=male\); re-run the edit job",
    ):
        run([job], tmp_path / "out")
    # the same edit spelt another way is the same edit
    (job / "edits.csv").write_text("\n".join([*lines, lines[1].replace("sex=male", "do(Sex=Male)")]) + "\n")
    with pytest.raises(CfauditError, match=r"line 4: repeats the edit of line 2"):
        read_edit_folder(job)
    assert not (tmp_path / "out" / "table2.csv").exists()


@pytest.mark.parametrize(
    ("job_json", "progress", "command"),
    [
        ({"model": "m", "settings": {}, "images": 3}, "1 of 3 images done", "cfaudit edit"),
        ({"method": "scm-hvae", "settings": {}, "images": 2}, "1 of 2 images done", "cfaudit scm edit"),
        ({"model": "m", "settings": {}}, "1 image(s) done", "cfaudit edit"),  # job.json of an older version
    ],
)
def test_an_unfinished_edit_job_says_how_far_it_got_and_how_to_finish_it(
    tmp_path, job_json, progress, command
):
    folder = tmp_path / "job"
    (folder / "rows").mkdir(parents=True)
    (folder / "rows" / "a.json").write_text("[]")
    (folder / "job.json").write_text(json.dumps(job_json))
    message = f"{folder}: unfinished edit job ({progress}); re-run the same `{command}` command to finish it"
    with pytest.raises(CfauditError, match=re.escape(message)):
        read_edit_folder(folder)
