"""Shared test settings: one torch thread keeps the suite predictable on 2-core machines; the ``chromium`` and
``small_phantom`` fixtures; the ``slow`` and ``browser`` marks, given here by rule so that test files need not carry
them.

``pytest`` runs everything; ``pytest -m "not slow"`` is the fast loop (see README.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import CHROMIUM_ARGS, HOW_TO_GET_ONE, browser_required, find_chromium

os.environ.setdefault("OMP_NUM_THREADS", "1")

TESTS = Path(__file__).parent

#: Fixtures that make every test using them slow, as ``module::fixture`` (the module, relative to tests/, that
#: defines it): each trains or loads a trained model or makes a phantom of many images.
SLOW_FIXTURES = frozenset(
    {
        "conftest.py::chromium",  # a browser
        "data/test_phantom_measure.py::phantom",
        "train/test_classifier_training.py::trained",
        "scm/test_mechanisms.py::fitted",
    }
)

#: Fixtures that need Chromium (the ``browser`` mark).
BROWSER_FIXTURES = frozenset({"conftest.py::chromium"})

#: Test modules (relative to tests/) that are slow as a whole: they launch processes, train or load a trained model,
#: or make a phantom of many images. A module that is slow only in part is listed by its tests in SLOW_TESTS.
SLOW_MODULES = frozenset(
    {
        "test_crash_resume.py",
        "test_demo.py",
        "cli/test_evaluate_cli.py",
        "cli/test_train_cli.py",
        "data/test_phantom_relations.py",
        "discover/test_discover_phantom.py",
        "discover/test_distributed_discover.py",
        "discover/test_run.py",
        "edit/test_distributed_edit.py",
        "edit/test_trained_model.py",
        "models/test_sd15_architecture.py",
        "models/test_shipped_model.py",
        "review/test_review_cli.py",
        "scm/test_effectiveness.py",
        "train/test_distributed.py",
        "train/test_trainer.py",
        "train/test_vae.py",
    }
)

#: Single slow tests, as ``module::function`` (relative to tests/; every parametrized case of it): those measured
#: over ~1 s on a 2-core machine (``pytest -m "not slow" --durations=40`` finds new ones).
SLOW_TESTS = frozenset(
    {
        "cli/test_data_cli.py::test_bad_row_exits_2_naming_file_and_line_and_skip_records_it",
        "cli/test_data_cli.py::test_csv_source_with_column_map",
        "cli/test_data_cli.py::test_saved_split_with_extra_subjects_is_kept_and_counted",
        "cli/test_data_cli.py::test_stats_formats",
        "cli/test_edit_cli.py::test_edit_one_image_with_two_interventions",
        "cli/test_main.py::test_discover_errors_are_one_line",
        "data/test_phantom.py::test_byte_for_byte_reproducible_whatever_the_workers",
        "data/test_phantom.py::test_cli_writes_the_phantom_and_reports_bad_configs",
        "discover/test_api.py::test_the_command_line_says_what_is_wrong_in_one_line",
        "discover/test_dry_run.py::test_the_dry_run_prints_the_cost_and_writes_nothing",
        "discover/test_label_statistics.py::test_association_error_is_calibrated_under_a_null_and_finds_a_planted_contrast",
        "discover/test_regions.py::test_data_support_p_value_is_valid_under_a_null_and_small_for_a_planted_difference",
        "discover/test_significance.py::test_bh_over_a_simulated_run_keeps_the_false_discovery_rate",
        "edit/test_inversion.py::test_null_text_reconstruction_beats_plain_ddim_at_guidance_7_5",
        "edit/test_job.py::test_a_killed_job_resumes_to_the_same_outputs",
        "train/test_classifier_training.py::test_an_interrupted_run_resumes_to_the_same_result",
        "evaluate/test_realism.py::test_kid_is_unbiased_and_fd_is_not",
        "models/test_loading.py::test_round_trip_keeps_every_weight",
        "models/test_model_card.py::test_a_card_is_written_at_every_stage_of_a_tiny_training_run",
        "models/test_pretrained_text.py::test_vae_is_taken_from_another_model",
        "report/test_error_rates.py::test_a_discovery_made_before_error_rates_still_renders",
        "report/test_error_rates.py::test_candidates_show_p_q_and_detectable_in_their_unit",
        "report/test_error_rates.py::test_summary_line_names_benjamini_yekutieli",
        "report/test_review_section.py::test_the_section_gives_reviews_confirmed_shares_and_cohens_kappa",
        "scm/test_train.py::test_resume_continues_the_same_run",
        "train/test_latent_cache.py::test_encode_once_then_read_from_cache",
        "train/test_text_cache.py::test_training_with_the_cache_follows_the_same_loss_curve",
        "ui/test_session.py::test_edit_then_cached_edit_and_the_download",
        "ui/test_session.py::test_full_prompt_mode_uses_the_record_and_classifier_scores",
        "ui/test_session.py::test_inversions_on_disk_are_shared_between_sessions",
        "ui/test_session.py::test_start_keeps_gradio_offline_and_its_files_in_the_temporary_folder",
    }
)


def _module(path: Path) -> str:
    """A file's path relative to tests/ (``""`` outside it)."""
    return path.relative_to(TESTS).as_posix() if path.is_relative_to(TESTS) else ""


def pytest_configure(config: pytest.Config) -> None:
    """A listed module that no longer exists would silently fall into the fast loop: refuse to start instead."""
    listed = {name.split("::")[0] for name in (*SLOW_FIXTURES, *SLOW_MODULES, *SLOW_TESTS)}
    missing = sorted(name for name in listed if not (TESTS / name).is_file())
    if missing:
        raise pytest.UsageError(
            f"tests/conftest.py lists slow tests in modules that do not exist: {', '.join(missing)}"
        )


def _fixtures(item: pytest.Item) -> set[str]:
    """Every fixture a test uses, directly or through others, as ``module::fixture``."""
    info = getattr(item, "_fixtureinfo", None)
    found = set()
    for name, definitions in info.name2fixturedefs.items() if info is not None else ():
        for definition in definitions:
            found.add(f"{_module(Path(definition.func.__code__.co_filename))}::{name}")
    return found


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``slow`` and ``browser`` marks, by the fixtures a test uses, its module, or its name."""
    for item in items:
        module = _module(item.path)
        fixtures = _fixtures(item)
        if fixtures & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
        name = f"{module}::{getattr(item, 'originalname', item.name)}"
        if fixtures & SLOW_FIXTURES or module in SLOW_MODULES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright, for the whole session; skips (or fails, in CI) without one."""
    path, why = find_chromium()
    if path is None:
        message = f"browser test needs Chromium: {why}; {HOW_TO_GET_ONE}"
        if browser_required():
            pytest.fail(f"{message} (CFAUDIT_REQUIRE_BROWSER is set)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantom folder of 24 images at 64 px (the default config, seed 5), for tests that read its ground truth;
    shared, so treat it as read-only."""
    from cfaudit.data.phantom import generate_phantom, load_config

    out = tmp_path_factory.mktemp("phantom") / "run"
    generate_phantom(out, load_config().with_overrides(n=24, size=64), seed=5, workers=1)
    return out
