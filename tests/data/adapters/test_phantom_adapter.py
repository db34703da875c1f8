from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfaudit.data.adapters import build_index, load_source
from cfaudit.data.adapters.phantom import PHANTOM_COLUMNS, load_phantom
from cfaudit.data.records import INDEX_COLUMNS
from cfaudit.errors import CfauditError


def test_phantom_metadata_becomes_records(phantom_dataset, fake):
    folder = phantom_dataset()
    result = load_phantom(folder)
    table = result.table
    rows = fake.phantom_rows()
    assert list(table.columns) == list(INDEX_COLUMNS)
    assert list(table["image_id"]) == [r["image_id"] for r in rows]
    assert list(table["path"]) == [r["path"] for r in rows]
    assert list(table["subject_id"]) == [r["subject_id"] for r in rows]  # "00000": leading zeros kept
    assert list(table["study_id"]) == [r["study_id"] for r in rows]
    assert list(table["view"]) == [r["ViewPosition"] for r in rows]
    assert list(table["sex"]) == ["Male" if r["sex"] == "M" else "Female" for r in rows]
    assert list(table["race"]) == [r["race"] for r in rows]
    assert list(table["age"]) == [float(r["age"]) for r in rows]
    assert list(table["Pleural Effusion"]) == [r["Pleural Effusion"] for r in rows]
    assert table.loc[1, "Cardiomegaly"] == -1.0
    assert result.root == folder
    assert result.provenance["source"] == "phantom"
    assert result.provenance["column_map"]["columns"]["view"] == "ViewPosition"
    assert (result.summary.rows_read, result.summary.rows_kept, result.summary.rows_skipped) == (12, 12, 0)


def test_registry_dispatches_and_rejects_options_a_source_does_not_take(phantom_dataset, tmp_path):
    folder = phantom_dataset()
    assert len(load_source("phantom", folder).table) == 12
    with pytest.raises(CfauditError, match=r"the phantom source does not take --mimic-iv"):
        load_source("phantom", folder, mimic_iv=tmp_path)
    with pytest.raises(CfauditError) as caught:
        load_source("mimic", folder, demographics=tmp_path)
    # the flags of `cfaudit data index`, not the adapter's parameter names
    assert str(caught.value) == (
        "the mimic source does not take --demographics; it takes --check-images, --mimic-iv, --on-bad-row"
    )
    assert len(load_source("phantom", folder, mimic_iv=None).table) == 12  # None means "not given"
    with pytest.raises(
        CfauditError, match=r"unknown source 'dicom'; choose one of mimic, chexpert, csv, phantom"
    ):
        load_source("dicom", folder)
    with pytest.raises(CfauditError, match=r"no such folder"):
        load_phantom(tmp_path / "absent")


def test_a_folder_that_is_not_a_finished_phantom_says_to_run_cfaudit_phantom(phantom_dataset, tmp_path):
    folder = tmp_path / "half"
    folder.mkdir()
    with pytest.raises(CfauditError) as caught:
        load_phantom(folder)
    assert str(caught.value).startswith(f"{folder}: not a phantom folder (no metadata.csv); write one with")
    assert f"`cfaudit phantom --out {folder}`" in str(caught.value)
    (folder / "phantom.json").write_text('{"status": "incomplete"}')
    with pytest.raises(
        CfauditError, match=r"not a complete phantom .*re-run the same `cfaudit phantom --out"
    ):
        load_phantom(folder)
    assert "column map" not in str(caught.value)
    full = phantom_dataset()
    (full / "metadata.csv").write_text(
        (full / "metadata.csv").read_text().replace("ViewPosition", "view", 1), encoding="utf-8"
    )
    with pytest.raises(CfauditError) as caught:
        load_phantom(full)
    assert (
        "metadata.csv: missing column(s) 'ViewPosition'; the phantom folder's metadata.csv is not as"
        in str(caught.value)
    )
    assert "column map" not in str(caught.value)


def test_phantom_equals_generic_csv_with_the_built_in_map(phantom_dataset):
    folder = phantom_dataset()
    generic = load_source("csv", folder, columns=PHANTOM_COLUMNS.to_dict()).table
    pd.testing.assert_frame_equal(load_phantom(folder).table, generic)


def test_decode_check_finds_a_corrupt_png(phantom_dataset):
    folder = phantom_dataset()
    (folder / "images" / "ph0003.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert len(load_phantom(folder, check_images="exists").table) == 12
    with pytest.raises(CfauditError, match=r"metadata\.csv, line 5: image file unreadable .*ph0003\.png"):
        load_phantom(folder, check_images="decode")
    result = load_phantom(folder, check_images="decode", on_bad_row="skip")
    assert "ph0003" not in set(result.table["image_id"])
    assert result.summary.skipped["image file unreadable"]["count"] == 1


def test_decode_check_skips_degenerate_images_with_one_hint(phantom_dataset):
    folder = phantom_dataset()
    Image.fromarray(np.full((8, 64), 100, dtype=np.uint8)).save(folder / "images" / "ph0002.png")
    with pytest.raises(CfauditError) as caught:
        load_phantom(folder, check_images="decode")
    message = str(caught.value)
    assert "metadata.csv, line 4: image file unreadable" in message and "64x8 pixels" in message
    # the loader's own hint (which names this command) is not repeated inside the bad-row message
    assert message.count("--on-bad-row skip") == 1 and "cfaudit data index" not in message
    result = load_phantom(folder, check_images="decode", on_bad_row="skip")
    assert result.summary.skipped["image file unreadable"]["count"] == 1


def test_empty_result_is_an_error_not_an_empty_index(phantom_dataset, fake):
    rows = [dict(r, ViewPosition="LL") for r in fake.phantom_rows(2, 1)]
    folder = phantom_dataset(rows)
    with pytest.raises(CfauditError, match=r"no rows kept \(not a frontal AP/PA view: 2\)"):
        build_index("phantom", folder)


def test_bad_choices_are_clear_errors(phantom_dataset):
    folder = phantom_dataset()
    with pytest.raises(CfauditError, match=r"--check-images 'md5' is not one of exists, decode, none"):
        load_phantom(folder, check_images="md5")
    with pytest.raises(CfauditError, match=r"--on-bad-row 'ignore' is not one of error, skip"):
        load_phantom(folder, on_bad_row="ignore")
