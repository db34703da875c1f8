"""``cfaudit classifiers train`` / ``cfaudit classifiers report``: the attribute classifiers that score edits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cfaudit.cli.options import (
    BlankOverride,
    Device,
    Seed,
    UncertainOverride,
    command_group,
    label_policy_overrides,
)

classifiers_app = command_group(
    "classifiers",
    "Train and score the attribute classifiers (sex, race, age, 14 findings) used by CPG and effectiveness.",
)


def _print_report(report: dict[str, Any], title: str) -> None:
    from cfaudit.data.vocabulary import FINDINGS

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    table = Table(title=title)
    for column in ("head", "metric", "value", "n"):
        table.add_column(column, justify="left" if column in ("head", "metric") else "right")
    table.add_row("sex", "AUC", number(report["sex"]["auc"]), str(report["sex"]["n"]))
    table.add_row("race", "macro AUC", number(report["race"]["macro_auc"]), str(report["race"]["n"]))
    table.add_row("race", "accuracy", number(report["race"]["accuracy"]), str(report["race"]["n"]))
    table.add_row("age", "MAE (years)", number(report["age"]["mae"]), str(report["age"]["n"]))
    for finding in FINDINGS:
        entry = report[finding]
        if entry["n"]:
            table.add_row(finding, "AUC", number(entry["auc"]), f"{entry['n']} ({entry['positives']} pos)")
    Console().print(table)


@classifiers_app.command("train")
def train_command(
    index: Annotated[Path, typer.Option(help="index.csv written by `cfaudit data index`.")],
    out: Annotated[Path, typer.Option(help="Folder for model.safetensors and classifier.json.")],
    arch: Annotated[str, typer.Option(help="resnet-small or densenet121.")] = "resnet-small",
    size: Annotated[int, typer.Option(help="Square input resolution in pixels.")] = 128,
    epochs: Annotated[int, typer.Option(help="Most epochs (early stopping on val may end sooner).")] = 30,
    seed: Seed = 0,
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = 32,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better val loss.")] = 8,
    uncertain: UncertainOverride = None,
    blank: BlankOverride = None,
    device: Device = None,
    report: Annotated[
        bool, typer.Option(help="Score the finished classifier once on the test split.")
    ] = True,
) -> None:
    """Train on the train split, early-stop on val, calibrate on val, save; then report test figures."""
    from cfaudit.data.labels import LabelPolicy
    from cfaudit.data.records import DataIndex
    from cfaudit.errors import CfauditError
    from cfaudit.evaluate.classifiers import report_classifier
    from cfaudit.train.classifier import ClassifierConfig, train_classifier

    console = Console()
    data = DataIndex.read(index)
    if report and len(data.split("test")) == 0:
        raise CfauditError(
            f"{index}: the test split is empty, so there is nothing to report after training; re-index with a "
            "test fraction (`cfaudit data index --fractions`) or train with --no-report"
        )
    policy = label_policy_overrides(data.meta.get("label_policy"), uncertain, blank)
    config = ClassifierConfig(
        arch=arch,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        seed=seed,
        label_policy=LabelPolicy.from_dict(policy).to_dict(),
    )

    def log(message: str) -> None:
        console.print(message, highlight=False, soft_wrap=True)

    record = train_classifier(index, out, config, device=device, log=log)
    _print_report(
        record["metrics"]["val"], f"validation ({record['index']['rows']['val']} images, calibrated)"
    )
    if report:
        test = report_classifier(out, index, "test", device=device, log=log)
        _print_report(test, f"test ({record['index']['rows']['test']} images)")
    log(f"wrote {out / 'model.safetensors'} and {out / 'classifier.json'}")


@classifiers_app.command("report")
def report_command(
    classifier: Annotated[Path, typer.Option(help="Folder written by `cfaudit classifiers train`.")],
    index: Annotated[
        Path | None, typer.Option(help="The training index (default: the recorded path).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to score: test (default) or val.")] = "test",
    device: Device = None,
) -> None:
    """Score a trained classifier on a split of its index; the figures go into classifier.json."""
    from cfaudit.errors import CfauditError
    from cfaudit.evaluate.classifiers import report_classifier

    if split not in ("test", "val"):
        raise CfauditError(f"--split {split!r}: score test or val (the classifier was trained on train)")
    result = report_classifier(classifier, index, split, device=device)
    _print_report(result, f"{split} split")


def register(app: typer.Typer) -> None:
    app.add_typer(classifiers_app, name="classifiers")
