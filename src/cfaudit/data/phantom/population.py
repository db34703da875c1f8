"""The phantom's patients and studies: metadata sampled from the label table, with the planted relations on top.

Subjects have 1-4 studies (config), their ages increase with study order, and each study's sex, view and
findings come from the label table (the first study: any row by count; later studies: rows of the subject's
sex whose age bin holds the new age). Race comes from the config's proportions; a subject recorded as
``Unknown`` still has a true group (drawn from the known groups), which drives the hidden texture cue and is
kept in the ground truth only. Identifiers look like MIMIC-CXR's: 8-digit subject and study ids, and image ids
of five dash-separated 8-hex-digit groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cfaudit.data.phantom.anatomy import SubjectIdentity
from cfaudit.data.phantom.config import PhantomConfig
from cfaudit.data.phantom.label_table import LabelTable
from cfaudit.data.phantom.relations import apply_finding_relations
from cfaudit.data.vocabulary import FINDINGS, RACES

#: ``metadata.csv``'s columns: what a real data set's metadata would hold, nothing more.
METADATA_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "subject_id",
    "study_id",
    "ViewPosition",
    "age",
    "sex",
    "race",
    *FINDINGS,
)

# Spawn keys of the run's SeedSequence: one stream for the population, one per subject and one per image.
POPULATION_STREAM, SUBJECT_STREAM, IMAGE_STREAM = 0, 1, 2


def stream(seed: int, *key: int) -> np.random.Generator:
    """The RNG of one stream of a run (``seed`` and a spawn key), independent of every other stream."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


@dataclass(frozen=True)
class Population:
    metadata: pd.DataFrame  # METADATA_COLUMNS
    hidden: pd.DataFrame  # per image: subject_index, true_race
    identities: tuple[SubjectIdentity, ...]


def sample_population(
    config: PhantomConfig, table: LabelTable, seed: int, extension: str = "png"
) -> Population:
    """Sample ``config.population.n`` images' metadata (and the subjects behind them)."""
    n = config.population.n
    rng = stream(seed, POPULATION_STREAM)
    studies_p = np.asarray(config.population.studies_per_subject)
    low_gap, high_gap = config.population.years_between_studies
    race_names = list(config.population.race)
    race_p = np.asarray([config.population.race[name] for name in race_names])
    known_p = np.asarray([config.population.race[name] for name in RACES])
    known_p = known_p / known_p.sum()
    _, max_age = table.age_range
    frame = table.frame

    rows: list[int] = []
    ages: list[int] = []
    subject_of: list[int] = []
    races: list[str] = []
    true_races: list[str] = []
    subject = 0
    while len(rows) < n:
        studies = int(rng.choice(len(studies_p), p=studies_p)) + 1
        race = race_names[int(rng.choice(len(race_names), p=race_p))]
        true_race = race if race in RACES else RACES[int(rng.choice(len(RACES), p=known_p))]
        row = table.sample_any(rng)
        sex = str(frame.at[row, "sex"])
        age = float(rng.integers(frame.at[row, "age_low"], frame.at[row, "age_high"] + 1))
        for study in range(min(studies, n - len(rows))):
            if study > 0:
                age = min(age + rng.uniform(low_gap, high_gap), float(max_age))
                row = table.sample_given(sex, age, rng)
            rows.append(row)
            ages.append(int(age))
            subject_of.append(subject)
            races.append(race)
            true_races.append(true_race)
        subject += 1

    subject_ids = _unique_numbers(rng, subject, 10_000_000, 19_999_999)
    study_ids = _unique_numbers(rng, n, 50_000_000, 59_999_999)
    image_ids = _image_ids(rng, n)
    picked = frame.iloc[rows].reset_index(drop=True)
    metadata = pd.DataFrame(
        {
            "image_id": image_ids,
            "path": [f"images/{image_id}.{extension}" for image_id in image_ids],
            "subject_id": [str(subject_ids[s]) for s in subject_of],
            "study_id": [str(s) for s in study_ids],
            "ViewPosition": picked["view"].to_numpy(),
            "age": np.asarray(ages, dtype=np.int64),
            "sex": picked["sex"].to_numpy(),
            "race": races,
        }
    )
    for finding in FINDINGS:
        metadata[finding] = picked[finding].to_numpy(float)
    metadata = apply_finding_relations(metadata, config.relations, rng)
    identities = tuple(SubjectIdentity.sample(stream(seed, SUBJECT_STREAM, s)) for s in range(subject))
    hidden = pd.DataFrame({"subject_index": subject_of, "true_race": true_races})
    return Population(metadata.loc[:, list(METADATA_COLUMNS)], hidden, identities)


def _unique_numbers(rng: np.random.Generator, count: int, low: int, high: int) -> list[int]:
    numbers = rng.choice(high - low + 1, size=count, replace=False) + low
    return [int(v) for v in numbers]


def _image_ids(rng: np.random.Generator, count: int) -> list[str]:
    words = rng.integers(0, 2**32, size=(count, 5), dtype=np.uint64)
    ids = ["-".join(f"{int(w):08x}" for w in row) for row in words]
    if len(set(ids)) != len(ids):  # 160 random bits: practically never
        raise RuntimeError("image id collision; choose another seed")
    return ids
