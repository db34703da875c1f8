import math

import pandas as pd
import pytest
import torch

from cfaudit.data.labels import LabelPolicy
from cfaudit.errors import CfauditError
from cfaudit.scm.graph import IMAGE, CausalGraph, Node, default_graph


def _table(**overrides):
    row = {
        "image_id": "a",
        "age": 63.0,
        "sex": "Male",
        "race": "Black",
        "Pleural Effusion": 1.0,
        "No Finding": math.nan,
    }
    row.update(overrides)
    frame = pd.DataFrame(
        [row, {**row, "image_id": "b", "sex": "Female", "race": "Unknown", "Pleural Effusion": -1.0}]
    )
    for finding in ("Cardiomegaly", "Edema"):
        frame[finding] = math.nan
    return frame


def test_default_graph_has_three_roots_age_to_effusion_and_all_cause_the_image():
    graph = default_graph()
    assert graph.names == ("sex", "race", "age", "Pleural Effusion")
    assert [node.kind for node in graph.nodes] == ["binary", "categorical", "continuous", "binary"]
    assert graph.edges == (("age", "Pleural Effusion"),)
    for root in ("sex", "race", "age"):
        assert graph.parents(root) == ()
    assert graph.parents("Pleural Effusion") == ("age",)
    assert graph.parents(IMAGE) == graph.names
    assert graph.descendants("age") == ("Pleural Effusion",)
    assert graph.descendants("sex") == ()
    # one-hot race (5) + sex + age + effusion
    assert graph.parent_dim(IMAGE) == 8


def test_round_trip_and_topological_order_from_any_declaration_order():
    data = {
        "nodes": {
            "pleural_effusion": "binary",
            "Cardiomegaly": "binary",
            "AGE": "continuous",
            "sex": "binary",
        },
        "edges": ["age -> Pleural Effusion", ["sex", "cardiomegaly"], "cardiomegaly -> pleural effusion"],
        "image_parents": ["age", "Cardiomegaly"],
    }
    graph = CausalGraph.from_dict(data)
    order = graph.names
    assert order.index("age") < order.index("Pleural Effusion")
    assert order.index("Cardiomegaly") < order.index("Pleural Effusion")
    assert graph.parents("Pleural Effusion") == tuple(n for n in order if n in ("age", "Cardiomegaly"))
    assert set(graph.image_parents) == {"age", "Cardiomegaly"}
    assert graph.descendants("sex") == ("Cardiomegaly", "Pleural Effusion")
    assert CausalGraph.from_dict(graph.to_dict()) == graph


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nodes": {"height": "continuous"}}, "'height' is not a node"),
        ({"nodes": {"age": "binary"}}, "node 'age' is continuous in the index, not binary"),
        ({"nodes": {"sex": "ordinal"}}, "type 'ordinal'"),
        ({"nodes": {"age": "continuous"}, "edges": ["age => sex"]}, "not written as 'cause -> effect'"),
        ({"nodes": {"age": "continuous"}, "edges": ["age -> sex"]}, "'sex', which is not a declared node"),
        ({"nodes": {"age": "continuous"}, "edges": ["age -> age"]}, "self-loop"),
        ({"nodes": {"age": "continuous"}, "edges": ["age -> image"]}, "set by image_parents"),
        (
            {
                "nodes": {"Edema": "binary", "Cardiomegaly": "binary"},
                "edges": ["edema -> cardiomegaly", "cardiomegaly -> edema"],
            },
            "cycle",
        ),
        ({"nodes": {"age": "continuous"}, "colour": 1}, "unknown key(s) colour"),
        ({"nodes": {}}, "`nodes` must map"),
        ({"nodes": {"age": "continuous"}, "image_parents": []}, "at least one parent"),
    ],
)
def test_bad_graph_configs_are_errors_that_say_what_is_wrong(data, message):
    with pytest.raises(CfauditError, match="mygraph") as error:
        CausalGraph.from_dict(data, origin="mygraph")
    assert message in str(error.value)


def test_yaml_file(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(
        "nodes:\n  age: continuous\n  Edema: binary\nedges:\n  - age -> Edema\n", encoding="utf-8"
    )
    graph = CausalGraph.from_yaml(path)
    assert graph.parents("Edema") == ("age",)
    with pytest.raises(CfauditError, match="no such graph file"):
        CausalGraph.from_yaml(tmp_path / "missing.yaml")


def test_encode_and_decode_records():
    graph = default_graph()
    values = graph.encode(_table())
    assert values["sex"].tolist() == [1.0, 0.0]
    assert values["race"].tolist() == [2, 4]  # Black, Unknown
    assert values["race"].dtype == torch.long
    assert values["age"].tolist() == [63.0, 63.0]
    assert values["Pleural Effusion"].tolist() == [1.0, 0.0]  # uncertain -> 0 under the default policy
    ones = graph.encode(_table(), LabelPolicy(uncertain="positive"))
    assert ones["Pleural Effusion"].tolist() == [1.0, 1.0]
    assert graph.decode(values, 1) == {
        "sex": "Female",
        "race": "Unknown",
        "age": 63.0,
        "Pleural Effusion": 0.0,
    }
    assert graph.encode_value("sex", "Female") == 0.0
    assert graph.encode_value("race", "Asian") == 0
    assert graph.encode_value("Pleural Effusion", 1) == 1.0
    assert Node("race", "categorical").feature_dim == 5


def test_encode_errors_name_the_image_and_value():
    graph = default_graph()
    with pytest.raises(CfauditError, match=r"image a: sex is not one of Male, Female \(value 'M'\)"):
        graph.encode(_table(sex="M"))
    with pytest.raises(CfauditError, match="blank under the label policy"):
        graph.encode(_table(), LabelPolicy(uncertain="blank"))
    with pytest.raises(CfauditError, match="'Cardiomegaly' is not a node of the model's causal graph"):
        graph.encode_value("Cardiomegaly", 1)


def test_saved_form_keeps_the_node_order_through_sorted_json():
    import json

    graph = default_graph()
    saved = json.loads(json.dumps(graph.to_dict(), sort_keys=True))
    assert CausalGraph.from_dict(saved) == graph
    assert CausalGraph.from_dict(saved).image_parents == ("sex", "race", "age", "Pleural Effusion")


def test_missing_node_column_is_an_error():
    with pytest.raises(CfauditError, match=r"my.csv: no column\(s\) Pleural Effusion"):
        default_graph().encode(_table().drop(columns=["Pleural Effusion"]), origin="my.csv")
