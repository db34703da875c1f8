"""The causal graph over a record's metadata, read from a config, and the encoding of records into node values.

A graph names its **nodes** (index attributes: ``age``, ``sex``, ``race`` or one of the 14 CheXpert findings),
their **types** and the **edges** between them; the image is a child of every node unless ``image_parents`` says
otherwise. The default (:func:`default_graph`, ``presets/graph_default.yaml``) is the one of Ribeiro et al.
(2023) reduced to what the phantom plants: sex, race and age are roots, ``age -> Pleural Effusion``, and all four
cause the image. A YAML graph looks like::

    nodes:
      sex: binary          # Male = 1, Female = 0
      race: categorical    # Asian, White, Black, Other, Unknown (Unknown is what the record says)
      age: continuous      # years
      Pleural Effusion: binary   # made binary by the run's label policy
    edges:
      - age -> Pleural Effusion
    image_parents: all     # or a list of nodes

Each attribute has one type (age continuous, sex binary, race categorical, findings binary); declaring another is
an error naming the node. Node values travel as a mapping name -> tensor ``[N]``: binary nodes as float 0/1,
categorical nodes as ``long`` category indices, continuous nodes as float in the attribute's unit (years).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cfaudit.config_files import read_yaml
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.vocabulary import FINDINGS, RACES, SEXES, UNKNOWN, UnknownValueError, canonical_finding
from cfaudit.errors import CfauditError

KINDS: tuple[str, ...] = ("binary", "categorical", "continuous")
IMAGE = "image"
#: Categories of the categorical attributes (race keeps "Unknown": it is what a record can say).
RACE_CATEGORIES: tuple[str, ...] = (*RACES, UNKNOWN)
_EDGE = re.compile(r"^\s*(.+?)\s*->\s*(.+?)\s*$")


def attribute_kind(name: str) -> str:
    """The one type an attribute's node can have."""
    if name == "age":
        return "continuous"
    if name == "race":
        return "categorical"
    return "binary"  # sex and the findings


def canonical_node(name: str, origin: str = "graph") -> str:
    """``AGE`` -> ``age``, ``pleural_effusion`` -> ``Pleural Effusion``; anything else is an error."""
    key = str(name).strip()
    if key.lower() in ("age", "sex", "race"):
        return key.lower()
    try:
        return canonical_finding(key)
    except UnknownValueError:
        raise CfauditError(
            f"{origin}: {name!r} is not a node the graph can hold; use age, sex, race or a finding "
            f"({', '.join(FINDINGS)})"
        ) from None


@dataclass(frozen=True)
class Node:
    """One variable of the graph: its name (an index attribute) and type."""

    name: str
    kind: str

    @property
    def categories(self) -> tuple[str, ...]:
        """Category names of a categorical node (index = value); binary nodes: the names of 0 and 1."""
        if self.name == "race":
            return RACE_CATEGORIES
        if self.name == "sex":
            return ("Female", "Male")
        if self.kind == "binary":
            return ("absent", "present")
        return ()

    @property
    def feature_dim(self) -> int:
        """Width of the node's value when it is a parent: one-hot for categorical, one number otherwise."""
        return len(self.categories) if self.kind == "categorical" else 1


@dataclass(frozen=True)
class CausalGraph:
    """Nodes in a topological order, directed edges between them, and the nodes that cause the image."""

    nodes: tuple[Node, ...]
    edges: tuple[tuple[str, str], ...]
    image_parents: tuple[str, ...]

    # --- structure ------------------------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise CfauditError(
            f"{name!r} is not a node of the model's causal graph (nodes: {', '.join(self.names)}); "
            "intervene on one of those, or add it to the graph config and train again"
        )

    def parents(self, name: str) -> tuple[str, ...]:
        """Parents of ``name`` in the graph's node order (the image's parents for :data:`IMAGE`)."""
        if name == IMAGE:
            return self.image_parents
        found = {cause for cause, effect in self.edges if effect == name}
        return tuple(n for n in self.names if n in found)

    def descendants(self, name: str) -> tuple[str, ...]:
        """Every node reachable from ``name`` (not the image), in node order."""
        reached: set[str] = set()
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for cause, effect in self.edges:
                if cause == current and effect not in reached:
                    reached.add(effect)
                    frontier.append(effect)
        return tuple(n for n in self.names if n in reached)

    def parent_dim(self, name: str) -> int:
        return sum(self.node(parent).feature_dim for parent in self.parents(name))

    # --- config ---------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], origin: str = "graph") -> CausalGraph:
        """Build and check a graph from its config mapping (see the module docstring)."""
        if not isinstance(data, Mapping):
            raise CfauditError(f"{origin}: a graph is a mapping with nodes, edges and image_parents")
        unknown = sorted(set(data) - {"nodes", "edges", "image_parents"})
        if unknown:
            raise CfauditError(
                f"{origin}: unknown key(s) {', '.join(unknown)}; valid: nodes, edges, image_parents"
            )
        raw_nodes = data.get("nodes")
        if isinstance(raw_nodes, list) and all(
            isinstance(n, Mapping) and set(n) == {"name", "type"} for n in raw_nodes
        ):
            raw_nodes = {n["name"]: n["type"] for n in raw_nodes}  # the saved form (order kept in JSON)
        if not isinstance(raw_nodes, Mapping) or not raw_nodes:
            raise CfauditError(f"{origin}: `nodes` must map each node to its type ({', '.join(KINDS)})")
        declared: dict[str, str] = {}
        for raw_name, kind in raw_nodes.items():
            name = canonical_node(raw_name, origin)
            if name in declared:
                raise CfauditError(f"{origin}: node {name!r} is declared twice")
            kind = str(kind).strip().lower()
            if kind not in KINDS:
                raise CfauditError(
                    f"{origin}: node {name!r} has type {kind!r}; choose one of {', '.join(KINDS)}"
                )
            if kind != attribute_kind(name):
                raise CfauditError(
                    f"{origin}: node {name!r} is {attribute_kind(name)} in the index, not {kind}; "
                    f"declare it as `{name}: {attribute_kind(name)}`"
                )
            declared[name] = kind
        edges = tuple(_parse_edge(edge, declared, origin) for edge in data.get("edges") or [])
        if len(set(edges)) != len(edges):
            raise CfauditError(f"{origin}: an edge is listed twice")
        order = _topological_order(list(declared), edges, origin)
        image_parents = data.get("image_parents", "all")
        if image_parents == "all" or image_parents is None:
            chosen = set(declared)
        elif isinstance(image_parents, list):
            chosen = set()
            for raw in image_parents:
                name = canonical_node(raw, origin)
                if name not in declared:
                    raise CfauditError(f"{origin}: image parent {name!r} is not a declared node")
                chosen.add(name)
        else:
            raise CfauditError(
                f"{origin}: image_parents must be `all` or a list of nodes, got {image_parents!r}"
            )
        if not chosen:
            raise CfauditError(f"{origin}: the image needs at least one parent")
        nodes = tuple(Node(name, declared[name]) for name in order)
        return cls(nodes, edges, tuple(name for name in order if name in chosen))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> CausalGraph:
        data = read_yaml(path, missing="no such graph file")
        return cls.from_dict(data or {}, origin=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The config mapping, nodes as a list in the graph's order (a JSON writer may sort mapping keys, and
        the order of the image's parent features follows the node order); ``from_dict(to_dict())`` is the graph."""
        return {
            "nodes": [{"name": node.name, "type": node.kind} for node in self.nodes],
            "edges": [f"{cause} -> {effect}" for cause, effect in self.edges],
            "image_parents": list(self.image_parents),
        }

    # --- records <-> values ---------------------------------------------------------------------------------

    def encode(
        self, table: pd.DataFrame, policy: LabelPolicy = DEFAULT_POLICY, origin: str = "index"
    ) -> dict[str, torch.Tensor]:
        """Node values of index rows (``[N]`` tensors); a value the graph cannot hold is an error naming the row."""
        missing = [name for name in self.names if name not in table.columns]
        if missing:
            raise CfauditError(
                f"{origin}: no column(s) {', '.join(missing)}, which the causal graph's nodes need"
            )
        values: dict[str, torch.Tensor] = {}
        binary = None
        for node in self.nodes:
            if node.name == "age":
                ages = pd.to_numeric(table["age"], errors="coerce").to_numpy(dtype=np.float64)
                _fail_rows(np.isnan(ages), table, "age", origin, "is not a number of years")
                values["age"] = torch.tensor(ages, dtype=torch.float32)
            elif node.name == "sex":
                sexes = table["sex"].astype(str).to_numpy()
                _fail_rows(~np.isin(sexes, SEXES), table, "sex", origin, f"is not one of {', '.join(SEXES)}")
                values["sex"] = torch.tensor(sexes == "Male", dtype=torch.float32)
            elif node.name == "race":
                races = table["race"].astype(str).to_numpy()
                _fail_rows(
                    ~np.isin(races, RACE_CATEGORIES), table, "race", origin,
                    f"is not one of {', '.join(RACE_CATEGORIES)}",
                )  # fmt: skip
                lookup = {race: i for i, race in enumerate(RACE_CATEGORIES)}
                values["race"] = torch.tensor([lookup[r] for r in races], dtype=torch.long)
            else:
                if binary is None:
                    binary = policy.binarize(table.reindex(columns=list(FINDINGS)))  # absent columns: blank
                states = binary[node.name].to_numpy(dtype=np.float64)
                _fail_rows(
                    np.isnan(states), table, node.name, origin,
                    "is blank under the label policy; the causal model needs 0 or 1 (use blank: negative)",
                )  # fmt: skip
                values[node.name] = torch.tensor(states, dtype=torch.float32)
        return values

    def encode_value(self, name: str, value: Any) -> float | int:
        """One canonical intervention value (``Male``, ``Black``, 80.0, 1) as the node's number."""
        node = self.node(name)
        if node.kind == "continuous":
            return float(value)
        if node.kind == "categorical":
            if value not in node.categories:
                raise CfauditError(f"{name}={value!r}: choose one of {', '.join(node.categories)}")
            return node.categories.index(value)
        if name == "sex":
            return 1.0 if value == "Male" else 0.0
        return float(int(value))

    def decode(self, values: Mapping[str, torch.Tensor], row: int) -> dict[str, Any]:
        """The record fields of one row of node values (``sex`` -> ``Male``, findings -> 1.0 / 0.0)."""
        record: dict[str, Any] = {}
        for node in self.nodes:
            value = values[node.name][row].item()
            if node.kind == "continuous":
                record[node.name] = float(value)
            elif node.kind == "categorical":
                record[node.name] = node.categories[int(value)]
            elif node.name == "sex":
                record["sex"] = "Male" if value >= 0.5 else "Female"
            else:
                record[node.name] = 1.0 if value >= 0.5 else 0.0
        return record


def default_graph_path() -> Path:
    return Path(__file__).parent / "presets" / "graph_default.yaml"


def default_graph() -> CausalGraph:
    """sex, race, age roots; age -> Pleural Effusion; all four cause the image."""
    return CausalGraph.from_yaml(default_graph_path())


def _parse_edge(edge: Any, declared: Mapping[str, str], origin: str) -> tuple[str, str]:
    if isinstance(edge, str):
        match = _EDGE.match(edge)
        if not match:
            raise CfauditError(f"{origin}: edge {edge!r} is not written as 'cause -> effect'")
        pair = (match.group(1), match.group(2))
    elif isinstance(edge, (list, tuple)) and len(edge) == 2:
        pair = (str(edge[0]), str(edge[1]))
    else:
        raise CfauditError(f"{origin}: edge {edge!r} is not written as 'cause -> effect' or [cause, effect]")
    if pair[1].strip().lower() == IMAGE:
        raise CfauditError(f"{origin}: edges into the image are set by image_parents, not by {edge!r}")
    cause, effect = (canonical_node(name, origin) for name in pair)
    for name in (cause, effect):
        if name not in declared:
            raise CfauditError(f"{origin}: edge {edge!r} uses {name!r}, which is not a declared node")
    if cause == effect:
        raise CfauditError(f"{origin}: edge {edge!r} is a self-loop")
    return cause, effect


def _topological_order(names: list[str], edges: Iterable[tuple[str, str]], origin: str) -> list[str]:
    """Kahn's algorithm, ties broken by declaration order (so one config gives one order)."""
    edges = list(edges)
    incoming = {name: {c for c, e in edges if e == name} for name in names}
    order: list[str] = []
    while len(order) < len(names):
        ready = [n for n in names if n not in order and incoming[n] <= set(order)]
        if not ready:
            stuck = [n for n in names if n not in order]
            raise CfauditError(
                f"{origin}: the edges make a cycle through {', '.join(stuck)}; a causal graph is acyclic"
            )
        order.append(ready[0])
    return order


def _fail_rows(bad: np.ndarray, table: pd.DataFrame, column: str, origin: str, what: str) -> None:
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        value = table[column].iloc[position]
        image = table["image_id"].iloc[position] if "image_id" in table.columns else position
        shown = "blank" if isinstance(value, float) and math.isnan(value) else repr(value)
        raise CfauditError(f"{origin}, image {image}: {column} {what} (value {shown}); fix or remove the row")
