import math

import pandas as pd
import pytest

from cfaudit.data.records import INDEX_COLUMNS, DataIndex, sidecar_path, validate_index
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError


def make_table(rows: int = 3) -> pd.DataFrame:
    data = {
        "image_id": [f"img{i}" for i in range(rows)],
        "path": [f"images/img{i}.png" for i in range(rows)],
        "subject_id": [f"{10000 + i // 2}" for i in range(rows)],
        "study_id": [f"5{i}" for i in range(rows)],
        "view": ["PA"] * rows,
        "age": [40.0 + i for i in range(rows)],
        "sex": ["Male", "Female", "Male"][:rows],
        "race": ["White", "Black", "Unknown"][:rows],
        "split": ["train", "val", "test"][:rows],
    }
    for finding in FINDINGS:
        data[finding] = [math.nan] * rows
    data["Cardiomegaly"] = [1.0, -1.0, 0.0][:rows]
    return pd.DataFrame(data)


def test_write_then_read_round_trips(tmp_path):
    (tmp_path / "data").mkdir()
    index = DataIndex(make_table(), root=tmp_path / "data", meta={"source": "test"})
    index.write(tmp_path / "index.csv")
    back = DataIndex.read(tmp_path / "index.csv")
    assert list(back.table.columns) == list(INDEX_COLUMNS)
    assert back.table["subject_id"].tolist() == ["10000", "10000", "10001"]
    assert back.table["Cardiomegaly"].tolist() == [1.0, -1.0, 0.0]
    assert math.isnan(back.table["Edema"].iloc[0])
    assert back.root == (tmp_path / "data").resolve()
    assert back.meta["source"] == "test" and back.meta["rows"] == 3
    assert back.image_path(1) == (tmp_path / "data" / "images" / "img1.png").resolve()
    assert len(back.split("val")) == 1 and back.split("val").table["image_id"].iloc[0] == "img1"


def test_ids_keep_leading_zeros(tmp_path):
    table = make_table()
    table["subject_id"] = ["00012", "00012", "00013"]
    DataIndex(table, tmp_path).write(tmp_path / "index.csv")
    assert DataIndex.read(tmp_path / "index.csv").table["subject_id"].tolist() == ["00012", "00012", "00013"]


def test_without_sidecar_paths_are_relative_to_csv(tmp_path):
    DataIndex(make_table(), tmp_path).write(tmp_path / "index.csv")
    sidecar_path(tmp_path / "index.csv").unlink()
    assert DataIndex.read(tmp_path / "index.csv").root == tmp_path


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("sex", "M", "sex must be"),
        ("age", 130, "age must be"),
        ("age", "old", "age must be"),
        ("Edema", 2, "Edema must be"),
        ("Pleural Effusion", "yes", "Pleural Effusion must be"),
        ("split", "dev", "split must be"),
    ],
)
def test_bad_values_name_line_and_value(column, value, message):
    table = make_table()
    table[column] = table[column].astype(object)
    table.loc[1, column] = value
    with pytest.raises(CfauditError, match=rf"line 3: {message}.*{value!r}"):
        validate_index(table, "x.csv")


def test_missing_column_and_duplicates():
    with pytest.raises(CfauditError, match=r"missing column.*race"):
        validate_index(make_table().drop(columns="race"), "x.csv")
    table = make_table()
    table.loc[2, "image_id"] = "img0"
    with pytest.raises(CfauditError, match="line 4: image_id appears twice"):
        validate_index(table, "x.csv")


def test_unknown_split_name(tmp_path):
    with pytest.raises(CfauditError, match="unknown split"):
        DataIndex(make_table(), tmp_path).split("dev")


@pytest.mark.parametrize(
    ("age", "shown"), [(300.0, "300"), (-0.5, "-0.5"), (math.nan, "blank")], ids=["300", "fraction", "blank"]
)
def test_bad_numbers_are_shown_plainly_not_as_numpy_reprs(age, shown):
    table = make_table()
    table.loc[1, "age"] = age
    with pytest.raises(CfauditError) as caught:
        validate_index(table, "x.csv")
    assert f"x.csv, line 3: age must be a number in 0..120 (value {shown});" in str(caught.value)
    assert "np." not in str(caught.value)


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        ("[]", r'index\.json: holds a list, not the JSON object .* "root"'),
        ('"text"', r"index\.json: holds a string"),
        ('{"root": 5}', r'index\.json: "root" is 5, not a folder path'),
        ('{"root": ["a"]}', r'index\.json: "root" is \["a"\], not a folder path'),
        (
            '{"label_policy": {"uncertain": "maybe"}}',
            r"index\.json: \"label_policy\": uncertain='maybe' is not one",
        ),
        ('{"label_policy": {"certain": "yes"}}', r'index\.json: "label_policy": unknown key\(s\) certain'),
        ('{"label_policy": "U-Ones"}', r'index\.json: "label_policy": expected a mapping'),
    ],
)
def test_index_json_of_the_wrong_shape_names_the_file_and_key(tmp_path, sidecar, message):
    DataIndex(make_table(), tmp_path).write(tmp_path / "index.csv")
    sidecar_path(tmp_path / "index.csv").write_text(sidecar, encoding="utf-8")
    with pytest.raises(CfauditError, match=message) as caught:
        DataIndex.read(tmp_path / "index.csv")
    assert str(tmp_path / "index.json") in str(caught.value)
    assert "re-run `cfaudit data index`" in str(caught.value)


def test_a_root_that_is_not_a_folder_is_named_when_images_are_needed(tmp_path):
    DataIndex(make_table(), tmp_path / "gone").write(tmp_path / "index.csv")
    index = DataIndex.read(tmp_path / "index.csv")  # the table alone (Table 1, records) needs no images
    assert len(index) == 3 and index.table["image_id"].tolist() == ["img0", "img1", "img2"]
    with pytest.raises(CfauditError) as caught:
        index.split("test").image_paths()
    message = str(caught.value)
    assert message.startswith(
        f'{tmp_path / "index.json"}: "root" is {str(tmp_path / "gone")!r}, which is not a folder'
    )
    assert 'set "root" to the folder that holds the images' in message
    (tmp_path / "gone").mkdir()
    assert DataIndex.read(tmp_path / "index.csv").image_path(0) == tmp_path / "gone" / "images" / "img0.png"
