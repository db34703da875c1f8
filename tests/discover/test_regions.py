import numpy as np
import pandas as pd
import pytest

from cfaudit.data.interventions import Intervention
from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.clusters import (
    Cluster,
    Component,
    RegionSettings,
    cluster_components,
    clusters_of,
    collect_components,
    components,
    describe_position,
    local_detail,
    presence,
    share_near,
)
from cfaudit.discover.real_images import data_support
from cfaudit.errors import CfauditError

GRID = 32


def blob(x, y, amplitude=-0.4, radius=2.5, grid=GRID):
    rows, cols = np.mgrid[0:grid, 0:grid]
    return amplitude * (((cols + 0.5 - x * grid) ** 2 + (rows + 0.5 - y * grid) ** 2) <= radius**2)


def test_shipped_atlas_loads_and_maps_attributes():
    atlas = RegionAtlas.load()
    heart = atlas.mask(["Cardiomegaly"], 64)
    assert heart.dtype == bool and 0.2 < heart.mean() < 0.5
    assert heart[50, 35] and not heart[10, 45]  # lower centre yes, upper patient's left no
    assert atlas.is_global(["sex"]) and atlas.is_global(["unknown attribute"])
    assert not atlas.is_global(["Cardiomegaly"]) and atlas.mask(["age"], 8).all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("boxes: {a: [0, 0, 2, 1]}\n", "must satisfy"),
        ("boxes: {a: [0, 0, 1]}\n", "must be"),
        ("boxes: {a: [0, 0, 1, 1]}\nattributes: {Edema: [b]}\n", "unknown box"),
        ("colours: {}\n", "keys"),
    ],
)
def test_bad_atlas_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "regions.yaml"
    path.write_text(text)
    with pytest.raises(CfauditError, match=message):
        RegionAtlas.load(path)


def test_components_find_a_compact_change_and_ignore_diffuse_shading():
    settings = RegionSettings(grid=GRID)
    diffuse = np.linspace(0, 0.3, GRID)[None, :].repeat(GRID, 0)  # a broad gradient, no object
    assert components("a", diffuse.astype(np.float32), settings) == []
    found = components("a", (diffuse + blob(0.7, 0.25)).astype(np.float32), settings)
    assert len(found) == 1
    part = found[0]
    assert (
        part.sign == -1 and part.x == pytest.approx(0.7, abs=0.04) and part.y == pytest.approx(0.25, abs=0.04)
    )
    outside = np.ones((GRID, GRID), dtype=bool)
    outside[:, GRID // 2 :] = False  # the blob's half of the image is expected to change
    assert components("a", blob(0.7, 0.25).astype(np.float32), settings, outside) == []


def test_clusters_group_changes_at_one_place_across_images():
    settings = RegionSettings(grid=GRID)
    rng = np.random.default_rng(0)
    parts = []
    for k in range(6):
        x, y = 0.7 + rng.normal(0, 0.02), 0.25 + rng.normal(0, 0.02)
        parts += components(f"i{k}", blob(x, y).astype(np.float32), settings)
    parts += components("i9", blob(0.2, 0.7).astype(np.float32), settings)
    parts += components("i8", blob(0.7, 0.25, amplitude=0.4).astype(np.float32), settings)  # other sign
    clusters = cluster_components(parts, radius=0.12)
    sizes = sorted(len(c.images) for c in clusters)
    assert sizes == [1, 1, 6]
    by_image = {p.image_id: [p] for p in parts}
    assert share_near(by_image, 0.7, 0.25, -1, 0.1) == pytest.approx(6 / 8)


def test_find_clusters_reports_frequency_controls_and_data_support():
    settings = RegionSettings(grid=GRID, min_images=3)
    removal = Intervention.parse("Cardiomegaly=0")
    other = Intervention.parse("Edema=1")
    rows, maps = [], []
    for k in range(8):  # removal: 6 of 8 images lose a bright spot at the upper patient's left
        rows.append({"image_id": f"i{k}", "intervention": str(removal)})
        maps.append((blob(0.72, 0.22) if k < 6 else np.zeros((GRID, GRID))).astype(np.float32))
    for k in range(8):  # the other edit never touches it
        rows.append({"image_id": f"i{k}", "intervention": str(other)})
        maps.append(np.zeros((GRID, GRID), dtype=np.float32))
    edits = pd.DataFrame(rows)
    null = {f"i{k}": np.zeros((GRID, GRID), dtype=np.float32) for k in range(8)}
    # Real images: cardiomegaly cases are brighter there (the relation is in the data)
    rng = np.random.default_rng(1)
    states = (np.arange(60) % 2).astype(float)
    data_table = pd.DataFrame({"age": 60.0, "sex": "Male", "race": "White", "Cardiomegaly": states})
    details = np.stack([-blob(0.72, 0.22) * s + rng.normal(0, 0.01, (GRID, GRID)) for s in states])
    records = {f"i{k}": {"age": 60.0, "sex": "Male", "race": "White", "Cardiomegaly": 1.0} for k in range(8)}
    atlas = RegionAtlas.load()
    found = collect_components(edits, {"edit": maps, "null": null}, [removal, other], atlas, settings)
    clusters, members = clusters_of(
        edits, found, [removal, other], atlas, settings, None, (data_table, details), records
    )
    assert len(clusters) == 1
    row = clusters.iloc[0]
    assert row["intervention"] == str(removal) and row["frequency"] == pytest.approx(0.75)
    assert row["null_control"] == 0 and row["offtarget_control"] == 0 and row["sign"] == -1
    assert row["data_support"] < -1.0  # real images without cardiomegaly are darker there
    assert row["data_p"] < 1e-6  # ... far beyond chance, in the cluster's direction
    assert row["p_value"] == pytest.approx(0.5**6)  # 6 images gain the change, no null edit has it
    assert describe_position(row["x"], row["y"]) == "upper patient's left chest"
    assert set(members["image_id"]) == {f"i{k}" for k in range(6)}


def test_presence_is_judged_at_the_place_the_other_images_set():
    settings = RegionSettings(grid=GRID)
    edit_parts = {
        f"i{k}": components(f"i{k}", blob(0.7, 0.25).astype(np.float32), settings) for k in range(3)
    }
    edit_parts["i3"] = components("i3", blob(0.2, 0.7).astype(np.float32), settings)  # elsewhere
    null_parts = {"i1": components("i1", blob(0.7, 0.27).astype(np.float32), settings)}
    (cluster,) = [
        c for c in cluster_components([p for v in edit_parts.values() for p in v], 0.12) if len(c.images) == 3
    ]
    edit, null = presence(cluster, ["i0", "i1", "i2", "i3"], edit_parts, null_parts, 0.12)
    assert edit.tolist() == [True, True, True, False] and null.tolist() == [False, True, False, False]
    # A cluster of one image sets no place for that image: it cannot count itself
    (single,) = cluster_components(edit_parts["i3"], 0.12)
    assert presence(single, ["i3"], edit_parts, null_parts, 0.12)[0].tolist() == [False]


def _data_p(planted: float, seed: int, n: int = 120) -> float:
    """data_support's p-value for a cluster that darkens a spot under do(Cardiomegaly=0), on real images whose
    spot is ``planted`` darker without cardiomegaly (0: unrelated), beyond an unrelated label (age)."""
    settings = RegionSettings(grid=GRID)
    (cluster,) = cluster_components(components("i0", blob(0.72, 0.22).astype(np.float32), settings), 0.12)
    rng = np.random.default_rng(seed)
    states = (rng.random(n) < 0.4).astype(float)
    table = pd.DataFrame(
        {"age": rng.uniform(20, 90, n), "sex": "Male", "race": "White", "Cardiomegaly": states}
    )
    details = rng.normal(0, 0.05, (n, GRID, GRID)) + planted * 0.05 * (states[:, None, None] - 1) * (
        blob(0.72, 0.22) != 0
    )
    record = {"age": 60.0, "sex": "Male", "race": "White", "Cardiomegaly": 1.0}
    _, p = data_support(cluster, Intervention.parse("Cardiomegaly=0"), (table, details), [record], GRID)
    return p


def test_data_support_p_value_is_valid_under_a_null_and_small_for_a_planted_difference():
    null = np.array([_data_p(0.0, seed) for seed in range(300)])
    # Valid (Bonferroni over three summaries: conservative, never above the level) but not degenerate
    for level in (0.05, 0.1, 0.3):
        assert np.mean(null <= level) <= level + 0.04
    assert np.mean(null <= 0.3) >= 0.1
    assert max(_data_p(1.0, seed) for seed in range(10)) < 0.01  # 1 SD darker without: found
    assert min(_data_p(-1.0, seed) for seed in range(10)) > 0.5  # brighter without: the wrong way


def test_a_halo_of_the_high_pass_beside_a_growing_structure_is_not_real_image_support():
    """Real images whose big bright block grows with the attribute: beside it the local detail darkens (the
    window's median brightens) though no pixel there changes. The plain intensity says so."""
    settings = RegionSettings(grid=GRID)
    (cluster,) = cluster_components(components("i0", blob(0.5, 0.3).astype(np.float32), settings), 0.12)
    rng = np.random.default_rng(0)
    n = 120
    states = (np.arange(n) % 2).astype(float)
    rows, cols = np.mgrid[0:GRID, 0:GRID]
    grids = []
    for state in states:
        top = 0.5 - 0.08 * state  # the block reaches higher with the attribute, never into the spot
        block = (rows >= top * GRID) & (cols >= 0.3 * GRID) & (cols < 0.7 * GRID)
        grids.append(0.6 * block + rng.normal(0, 0.02, (GRID, GRID)))
    grids = np.stack(grids).astype(np.float32)
    details = np.stack([local_detail(g, settings) for g in grids])
    table = pd.DataFrame({"age": 60.0, "sex": "Male", "race": "White", "Cardiomegaly": states})
    record = {"age": 60.0, "sex": "Male", "race": "White", "Cardiomegaly": 0.0}
    do = Intervention.parse("Cardiomegaly=1")
    support, detail_only = data_support(cluster, do, (table, details), [record], GRID)
    assert support < -0.3 and detail_only < 0.01  # the high-pass alone would back a "fading" spot there
    _, both = data_support(cluster, do, (table, details, grids), [record], GRID)
    assert both > 0.1


def test_a_device_anywhere_in_a_wide_footprint_is_found_by_the_footprints_maximum():
    """Real images: a small bright device at a different place in each patient with the attribute, inside a
    footprint drawn around all of them, on images whose overall brightness varies; the footprint's mean
    drowns it, its maximum does not."""
    from cfaudit.data.labels import DEFAULT_POLICY
    from cfaudit.discover.real_images import _contrast_p, label_design

    pixels = np.flatnonzero(blob(0.5, 0.5, amplitude=1.0, radius=6.0) != 0)
    cluster = Cluster(
        1, [Component("i0", 1, 0.5, 0.5, pixels.size / GRID**2, 1.0, (0.3, 0.3, 0.7, 0.7), pixels)]
    )
    rng = np.random.default_rng(2)
    n = 60
    states = (np.arange(n) % 2).astype(float)
    details = rng.normal(0, 0.01, (n, GRID, GRID)) + rng.normal(0, 0.03, (n, 1, 1))
    for k in np.flatnonzero(states):
        details[k] += 0.2 * (blob(*rng.uniform(0.4, 0.6, 2), amplitude=1.0, radius=1.0) != 0)
    table = pd.DataFrame({"age": 60.0, "sex": "Male", "race": "White", "Cardiomegaly": states})
    record = {"age": 60.0, "sex": "Male", "race": "White", "Cardiomegaly": 0.0}
    _, p = data_support(cluster, Intervention.parse("Cardiomegaly=1"), (table, details), [record], GRID)
    assert p < 1e-4
    names, design = label_design(table, DEFAULT_POLICY)
    contrast = np.array([1.0 if name == "Cardiomegaly" else 0.0 for name in names])
    mean = details.reshape(n, -1)[:, pixels].mean(axis=1)
    assert _contrast_p(design, mean - mean.mean(), contrast, 1.0) > 0.01  # the mean alone would miss it


def test_a_thin_line_among_brighter_structures_is_found_by_the_clusters_own_shape():
    """Real images: a faint line along the path the edits changed, in the patients with the attribute, inside a
    wide footprint that also holds a bright structure at a different place in every patient (another device, a
    clavicle). The footprint's plain mean and its maximum drown the line; its mean weighted by how often the
    edits changed each cell (the cluster's shape) does not."""
    from cfaudit.data.labels import DEFAULT_POLICY
    from cfaudit.discover.real_images import _contrast_p, label_design

    path = np.array([row * GRID + 12 + row // 4 for row in range(4, 24)])  # a slanted line, one cell wide
    wide = np.flatnonzero(blob(0.45, 0.45, amplitude=1.0, radius=9.0) != 0)
    members = [
        Component(f"i{k}", 1, 0.45, 0.4, path.size / GRID**2, 1.0, (0.3, 0.1, 0.6, 0.8), path)
        for k in range(6)
    ]
    members.append(Component("i9", 1, 0.45, 0.45, wide.size / GRID**2, 1.0, (0.2, 0.2, 0.7, 0.7), wide))
    cluster = Cluster(1, members)
    rng = np.random.default_rng(3)
    n = 120
    states = (np.arange(n) % 2).astype(float)
    details = rng.normal(0, 0.01, (n, GRID, GRID)) + rng.normal(0, 0.03, (n, 1, 1))
    for k in range(n):
        centre = (rng.uniform(0.62, 0.7), rng.uniform(0.35, 0.55))  # beside the line, never on it
        details[k] += 1.0 * (blob(*centre, amplitude=1.0, radius=1.5) != 0)
        if states[k]:
            details[k].flat[path] += 0.05
    table = pd.DataFrame({"age": 60.0, "sex": "Male", "race": "White", "Cardiomegaly": states})
    record = {"age": 60.0, "sex": "Male", "race": "White", "Cardiomegaly": 0.0}
    support, p = data_support(cluster, Intervention.parse("Cardiomegaly=1"), (table, details), [record], GRID)
    assert p < 1e-3 and support > 0.3
    names, design = label_design(table, DEFAULT_POLICY)
    contrast = np.array([1.0 if name == "Cardiomegaly" else 0.0 for name in names])
    footprint = np.zeros(GRID * GRID, dtype=bool)
    footprint[path] = footprint[wide] = True
    pixels = details.reshape(n, -1)[:, footprint]
    for summary in (pixels.mean(axis=1), pixels.max(axis=1)):  # what the footprint's plain summaries see
        assert _contrast_p(design, summary - summary.mean(), contrast, 1.0) > 0.01
