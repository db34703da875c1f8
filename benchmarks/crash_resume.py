"""Kill `cfaudit train`, `edit` and `discover` with SIGKILL at random moments, resume, compare with a whole run.

    OMP_NUM_THREADS=1 python benchmarks/crash_resume.py                          # 10 kills each, ~15-20 min
    OMP_NUM_THREADS=1 python benchmarks/crash_resume.py --jobs edit --kills 2    # a quick look
    OMP_NUM_THREADS=1 python benchmarks/crash_resume.py --markdown crash.md --work runs/crash --keep

Each job is the real command line in a fresh process, on small inputs: a 160-image phantom at 64 px, the shipped
``demo`` model (128 px) and classifier.

* ``train``: the demo model fine-tuned for 24 steps of 4 images (text encoder, EMA, min-SNR, caption dropout, cosine
  schedule: every piece of state a resume must restore), a checkpoint every 4 steps, ``--resume latest``;
* ``edit``: 4 test images, 2 interventions and the identity check, batches of 2, 6 steps;
* ``discover``: 3 images per intervention for 2 interventions (6 images edited in batches of 2), then the analysis.

For every job the benchmark first makes an uninterrupted *reference* run and a second uninterrupted *control* run
(two whole runs must agree before a resumed one can be asked to). Then, ``--kills`` times per job, it kills a run
with SIGKILL and re-runs the same command until it finishes; ``--kills-per-run`` kills land in one run before it
is left to finish (the later ones kill a run that is itself resuming). Every output of the finished run is then
compared with the reference's:

* ``.safetensors`` (weights, optimizer / EMA / RNG state, inversions): every tensor bit for bit;
* ``.png`` pixels and ``.npy`` arrays: exactly;
* ``.csv`` tables: row by row, every cell as written; ``.json``: the parsed values;
* other files byte for byte;

after writing the run's own folder as ``<run>`` (provenance records name it). Not compared, because they record
when and how long rather than what: the ``seconds`` and ``inversion_cached`` columns of edit rows (a
resumed batch reads the inversions the killed run cached), ``wall_seconds`` and ``command`` of provenance records,
``train``'s TensorBoard event files (``logs/``: wall-clock stamps, and the steps a kill made the run redo are
logged twice) and the model card (``README.md``: rendered from the provenance record beside it, which is
compared; it quotes the wall time and the command line). No numeric tolerance is applied: every job is
deterministic on a CPU given its inputs, which the control run checks. The latent cache of ``train`` is filled
before any of its runs, as a first launch does: a process that encodes latents and trains on them rounds ~1e-7
apart from one that reads them (oneDNN picks other kernels; Adam amplifies it), so a kill during encoding would
differ by that, not by the resume.

Kill moments are random (seeded by ``--seed``), fall where the work is, and are measured on each process's own
CPU clock (user + system seconds from ``/proc``; the wall clock where there is none), which other jobs on a
shared machine stretch far less than the wall clock. The reference run's timeline gives the moment it first wrote
anything (what came before, imports and model loading, is the same in every run and risks nothing) and the moments
it passed each milestone (an image's row file, a checkpoint, ``edits.csv``, ``discovery.json``, the final model). A
run that has passed ``k`` milestones is killed at that start-up time plus a uniform share of the time the reference
spent from its ``k``-th milestone to its exit. So kills land anywhere in the remaining work, in proportion to its
duration: mid-step, mid-write, between a batch's row files, during the analysis, after the last file while the
process winds down. A run that finishes before its moment is counted as such (its kill is not sent).

Reported per job: kills sent, runs that were still running when killed, how far they were (share of milestones),
runs resumed to completion (exit 0), items compared (files and table rows), and those lost (in the reference, not
after the resume), extra (after the resume, not in the reference), differing, and temporary files a killed writer
left behind. The goal is 0 lost, extra and differing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from safetensors import safe_open

from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config

#: Fields that record when and how long, not what (see the module docstring).
IGNORED_KEYS = frozenset({"seconds", "inversion_cached", "wall_seconds", "command"})
#: Folders not compared: TensorBoard event files (wall-clock stamps, redone steps logged twice).
SKIPPED_DIRS = frozenset({"logs"})
#: Files not compared: a model card is rendered from the provenance record beside it (compared) and quotes its
#: wall time and command line.
SKIPPED_FILES = frozenset({"README.md"})
POLL_SECONDS = 0.02


# ---------------------------------------------------------------------------------------------------------------
# Comparing two output folders


@dataclass
class Comparison:
    """What a run's outputs hold that the reference's do not, and the reverse."""

    items: int = 0  # files and table rows compared
    lost: list[str] = field(default_factory=list)  # in the reference, missing from the run
    extra: list[str] = field(default_factory=list)  # in the run, not in the reference
    differ: list[str] = field(default_factory=list)  # in both, not identical
    leftovers: list[str] = field(default_factory=list)  # temporary files of a killed writer

    @property
    def identical(self) -> bool:
        return not (self.lost or self.extra or self.differ)

    def summary(self, limit: int = 3) -> str:
        parts = []
        for name in ("lost", "extra", "differ", "leftovers"):
            found = getattr(self, name)
            if found:
                parts.append(
                    f"{len(found)} {name} ({', '.join(found[:limit])}{', ...' if len(found) > limit else ''})"
                )
        return "; ".join(parts) or "identical"


def is_temporary(relative: Path) -> bool:
    """A file or folder a writer stages before renaming it into place (``.name.XXXX.part``, ``.step-N.part``)."""
    return any(
        part.startswith(".") and (part.endswith(".part") or part.endswith(".old")) for part in relative.parts
    )


def output_files(root: Path) -> tuple[list[Path], list[Path]]:
    """(compared files, temporary leftovers) under ``root``, as relative paths, sorted."""
    files, leftovers = [], []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] in SKIPPED_DIRS or relative.name in SKIPPED_FILES:
            continue
        if is_temporary(relative):
            if path.is_file() or not any(path.iterdir()):
                leftovers.append(relative)
        elif path.is_file():
            files.append(relative)
    return files, leftovers


def _text(path: Path, root: Path) -> str:
    return path.read_text(encoding="utf-8").replace(str(root.resolve()), "<run>").replace(str(root), "<run>")


def _drop_ignored(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_ignored(v) for k, v in value.items() if k not in IGNORED_KEYS}
    if isinstance(value, list):
        return [_drop_ignored(v) for v in value]
    return value


def _same_tensors(a: Path, b: Path) -> bool:
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        keys = sorted(fa.keys())
        if keys != sorted(fb.keys()):
            return False
        for key in keys:
            x, y = fa.get_tensor(key), fb.get_tensor(key)
            if (
                x.dtype != y.dtype
                or x.shape != y.shape
                or not bool(((x == y) | (x.isnan() & y.isnan())).all())
            ):
                return False
    return True


def _same_arrays(x: np.ndarray, y: np.ndarray) -> bool:
    return (
        x.shape == y.shape
        and x.dtype == y.dtype
        and bool(np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))
    )


def _compare_tables(name: str, a: Path, b: Path, ra: Path, rb: Path, result: Comparison) -> None:
    """Row by row (each row one item); cells as written, the ignored columns left out."""
    ta = pd.read_csv(StringIO(_text(a, ra)), dtype=str, keep_default_na=False)
    tb = pd.read_csv(StringIO(_text(b, rb)), dtype=str, keep_default_na=False)
    columns = [c for c in ta.columns if c not in IGNORED_KEYS]
    if [c for c in tb.columns if c not in IGNORED_KEYS] != columns:
        result.items += 1
        result.differ.append(f"{name} (columns)")
        return
    for i in range(max(len(ta), len(tb))):
        result.items += 1
        if i >= len(tb):
            result.lost.append(f"{name} row {i + 1}")
        elif i >= len(ta):
            result.extra.append(f"{name} row {i + 1}")
        elif not ta.loc[i, columns].equals(tb.loc[i, columns]):
            result.differ.append(f"{name} row {i + 1}")


def _same_file(a: Path, b: Path, ra: Path, rb: Path) -> bool:
    suffix = a.suffix.lower()
    if suffix == ".safetensors":
        return _same_tensors(a, b)
    if suffix == ".png":
        with Image.open(a) as ia, Image.open(b) as ib:
            return ia.mode == ib.mode and _same_arrays(np.asarray(ia), np.asarray(ib))
    if suffix == ".npy":
        return _same_arrays(np.load(a, allow_pickle=False), np.load(b, allow_pickle=False))
    if suffix == ".json":
        return _drop_ignored(json.loads(_text(a, ra))) == _drop_ignored(json.loads(_text(b, rb)))
    if suffix in (".md", ".txt", ".yaml"):
        return _text(a, ra) == _text(b, rb)
    return a.read_bytes() == b.read_bytes()


def compare_outputs(reference: Path, run: Path) -> Comparison:
    """Every output of ``run`` against ``reference`` (see the module docstring for what counts as identical)."""
    result = Comparison()
    ref_files, _ = output_files(reference)
    run_files, result.leftovers = output_files(run)
    present = set(run_files)
    for relative in ref_files:
        name = str(relative)
        if relative not in present:
            result.items += 1
            result.lost.append(name)
        elif relative.suffix.lower() == ".csv":
            _compare_tables(name, reference / relative, run / relative, reference, run, result)
        else:
            result.items += 1
            if not _same_file(reference / relative, run / relative, reference, run):
                result.differ.append(name)
    result.extra += [str(p) for p in sorted(present - set(ref_files))]
    result.leftovers = [str(p) for p in result.leftovers]
    return result


# ---------------------------------------------------------------------------------------------------------------
# The jobs


@dataclass(frozen=True)
class Job:
    """One resumable command: how to run it into a folder and how far a folder shows it got."""

    name: str
    command: Callable[[Path], list[str]]  # the same command starts and resumes it
    progress: Callable[[Path], int]  # milestones passed so far (monotone while it runs)


def cfaudit(*args: object) -> list[str]:
    return [sys.executable, "-m", "cfaudit", *map(str, args)]


def _count_files(folder: Path, suffix: str) -> int:
    if not folder.is_dir():
        return 0
    return sum(
        1 for entry in os.scandir(folder) if entry.name.endswith(suffix) and not entry.name.startswith(".")
    )


def edit_progress(out: Path) -> int:
    """Images done (their row file written) and then ``edits.csv``."""
    return _count_files(out / "rows", ".json") + (out / "edits.csv").is_file()


def discover_progress(out: Path) -> int:
    """The edit job's milestones, then ``discovery.json`` (the analysis writes it last)."""
    return edit_progress(out / "edits") + (out / "discovery.json").is_file()


def train_progress(out: Path, every: int) -> int:
    """Checkpoints passed (the newest one's step over the interval; older ones are pruned), then the model."""
    steps = [
        int(p.name.split("-")[1])
        for p in (out / "checkpoints").glob("step-*")
        if (p / "training_state.json").is_file()
    ]
    return max(steps, default=0) // every + (out / "model" / "model_index.json").is_file()


@dataclass(frozen=True)
class Inputs:
    index: Path
    train_config: Path
    checkpoint_every: int


def make_inputs(work: Path, seed: int) -> Inputs:
    """The phantom, its index and the training config (whose latent cache :func:`main` fills first)."""
    settings = load_config(default_config_path("default")).with_overrides(n=160, size=64)
    phantom = generate_phantom(work / "phantom", settings, seed=seed, workers=1)
    index = work / "index.csv"
    write_index(build_index("phantom", phantom.out, seed=seed), index)
    every = 4
    config = {
        "model": "demo", "index": str(index), "split": "train", "output_dir": str(work / "train" / "unused"),
        "resolution": 128, "train_text_encoder": True, "text_encoder_lr": 1e-3, "snr_gamma": 5.0,
        "caption_dropout": 0.1, "max_steps": 24, "batch_size": 4, "learning_rate": 1e-3, "lr_schedule": "cosine",
        "lr_warmup_steps": 2, "use_ema": True, "ema_decay": 0.9, "seed": seed, "log_every": 1,
        "checkpoint_every": every, "keep_checkpoints": 2, "latent_cache_dir": str(work / "latents"),
    }  # fmt: skip
    path = work / "train.json"  # JSON is YAML
    path.write_text(json.dumps(config, indent=1), encoding="utf-8")
    return Inputs(index, path, every)


def make_jobs(inputs: Inputs) -> dict[str, Job]:
    every = inputs.checkpoint_every
    return {
        "train": Job(
            "train",
            lambda out: cfaudit("train", "--config", inputs.train_config, "--output-dir", out, "--resume", "latest", "--no-progress"),
            lambda out: train_progress(out, every),
        ),
        "edit": Job(
            "edit",
            lambda out: cfaudit("edit", "--model", "demo", "--index", inputs.index, "--split", "test", "--limit", 4,
                                "--do", "Cardiomegaly=0", "--do", "sex=female", "--steps", 6, "--batch-size", 2,
                                "--check-identity", "--device", "cpu", "--out", out),
            edit_progress,
        ),
        "discover": Job(
            "discover",
            lambda out: cfaudit("discover", "--index", inputs.index, "--out", out, "--images", 3, "--do", "Cardiomegaly=0",
                                "--do", "Edema=1", "--steps", 6, "--batch-size", 2, "--device", "cpu", "--top", 1),
            discover_progress,
        ),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Running, timing and killing


def launch(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log, "ab") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


class Clock:
    """A process's own clock: the CPU seconds it has used (user + system, from ``/proc``), which other jobs on a
    shared machine stretch far less than the wall clock; the wall clock since launch where ``/proc`` is missing."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.stat = Path(f"/proc/{process.pid}/stat")
        self.started = time.perf_counter()
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.use_cpu = self.stat.is_file()
        self.last = 0.0

    def now(self) -> float:
        if not self.use_cpu:
            return time.perf_counter() - self.started
        try:
            fields = self.stat.read_text().rsplit(")", 1)[1].split()
            self.last = (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
        except (OSError, IndexError, ValueError):
            pass  # ended: its last reading stands
        return self.last


@dataclass
class Timeline:
    """On an uninterrupted run's own clock (:class:`Clock`): when it first wrote anything (its work began; what came
    before, imports and model loading, is the same in every run), when it passed each milestone, when it ended."""

    work_start: float
    milestones: list[float]
    end: float

    def kill_moment(self, passed: int, rng: np.random.Generator) -> float:
        """A moment on a run's clock, uniform over the work a run that has passed ``passed`` milestones has left
        (after the start-up every run repeats)."""
        done_at = self.milestones[passed - 1] if passed else self.work_start
        return self.work_start + float(rng.uniform(0.0, max(self.end - done_at, 0.0)))


def _wrote_anything(out: Path) -> bool:
    return out.is_dir() and any(path.is_file() for path in out.rglob("*"))


def run_whole(job: Job, out: Path, log: Path) -> Timeline:
    """Run ``job`` into ``out`` uninterrupted, noting when it began to write and when each milestone appeared."""
    process = launch(job.command(out), log)
    clock = Clock(process)
    work_start: float | None = None
    milestones: list[float] = []
    while process.poll() is None:
        now = clock.now()
        if work_start is None and _wrote_anything(out):
            work_start = now
        milestones += [now] * (job.progress(out) - len(milestones))
        time.sleep(POLL_SECONDS)
    end = clock.now()
    milestones += [end] * (job.progress(out) - len(milestones))
    if process.returncode != 0:
        raise SystemExit(
            f"{job.name}: the uninterrupted run failed (exit {process.returncode}):\n{_tail(log)}"
        )
    return Timeline(end if work_start is None else work_start, milestones, end)


@dataclass
class Kill:
    sent: bool  # False: the run finished before its kill moment
    progress: float  # share of milestones passed when it was killed


def run_and_kill(job: Job, out: Path, log: Path, timeline: Timeline, rng: np.random.Generator) -> Kill:
    """Start (or resume) ``job`` and SIGKILL it at a random moment of its remaining work."""
    moment = timeline.kill_moment(job.progress(out), rng)
    process = launch(job.command(out), log)
    clock = Clock(process)
    while process.poll() is None and clock.now() < moment:
        time.sleep(POLL_SECONDS)
    total = len(timeline.milestones)
    if process.poll() is not None:
        return Kill(False, job.progress(out) / total)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return Kill(True, job.progress(out) / total)


def finish(job: Job, out: Path, log: Path) -> bool:
    """Re-run the same command to the end; True when it exits 0."""
    process = launch(job.command(out), log)
    return process.wait() == 0


@dataclass
class JobReport:
    job: str
    kills: list[Kill] = field(default_factory=list)
    runs: int = 0
    resumed: int = 0
    comparisons: list[Comparison] = field(default_factory=list)
    control: Comparison | None = None
    seconds: float = 0.0


def exercise(
    job: Job, work: Path, kills: int, per_run: int, rng: np.random.Generator, control: bool
) -> JobReport:
    """The reference (and control) run, then runs killed ``per_run`` times each until ``kills`` kills are sent."""
    started = time.perf_counter()
    report = JobReport(job.name)
    folder = work / job.name
    reference = folder / "reference" / "run"
    timeline = run_whole(job, reference, folder / "reference.log")
    moments = ", ".join(f"{t:.1f}" for t in timeline.milestones)
    print(
        f"{job.name}: uninterrupted run, on its clock: wrote first at {timeline.work_start:.1f} s, "
        f"milestones at {moments}, ended at {timeline.end:.1f} s",
        flush=True,
    )
    if control:
        run_whole(job, folder / "control" / "run", folder / "control.log")
        report.control = compare_outputs(reference, folder / "control" / "run")
        print(f"{job.name}: a second uninterrupted run: {report.control.summary()}", flush=True)
    while len(report.kills) < kills:
        report.runs += 1
        name = f"kill-{report.runs:02d}"
        out, log = folder / name / "run", folder / f"{name}.log"
        these: list[Kill] = []
        for _ in range(min(per_run, kills - len(report.kills))):
            if job.progress(out) >= len(timeline.milestones):
                break
            these.append(run_and_kill(job, out, log, timeline, rng))
        report.kills += these
        done = finish(job, out, log)
        report.resumed += done
        comparison = (
            compare_outputs(reference, out) if done else Comparison(lost=["(the resumed run failed)"])
        )
        report.comparisons.append(comparison)
        at = ", ".join(f"{k.progress:.0%}" if k.sent else "finished first" for k in these)
        print(
            f"{job.name} {name}: killed at {at}; resumed {'ok' if done else 'FAILED'}; {comparison.summary()}",
            flush=True,
        )
        if not done:
            print(_tail(log), flush=True)
    report.seconds = time.perf_counter() - started
    return report


# ---------------------------------------------------------------------------------------------------------------
# The table


def table(reports: list[JobReport]) -> str:
    header = (
        "| job | kills sent | killed while running | killed at (share of milestones) | runs | resumed to the end | "
        "items compared | lost | extra | differ | temp files left | whole run twice | minutes |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for r in reports:
        sent = [k for k in r.kills if k.sent]
        at = f"{min(k.progress for k in sent):.0%} to {max(k.progress for k in sent):.0%}" if sent else "-"
        control = "-" if r.control is None else ("identical" if r.control.identical else r.control.summary(1))
        lines.append(
            f"| {r.job} | {len(r.kills)} | {len(sent)} | {at} | {r.runs} | {r.resumed} | "
            f"{sum(c.items for c in r.comparisons)} | {_total(r, 'lost')} | {_total(r, 'extra')} | "
            f"{_total(r, 'differ')} | {_total(r, 'leftovers')} | {control} | {r.seconds / 60:.1f} |"
        )
    return "\n".join(lines)


def _total(report: JobReport, name: str) -> int:
    return sum(len(getattr(c, name)) for c in report.comparisons)


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"
    except OSError:
        return f"{os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs", default="train,edit,discover", help="comma-separated: train, edit, discover"
    )
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs per job (default 10)")
    parser.add_argument("--kills-per-run", type=int, default=2, help="kills in one run before it may finish")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments and of the jobs")
    parser.add_argument("--no-control", action="store_true", help="skip the second uninterrupted run")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temporary one, removed)")
    parser.add_argument("--keep", action="store_true", help="keep --work after the benchmark")
    parser.add_argument("--markdown", type=Path, help="also write the table (and how it was made) here")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.jobs.split(",") if n.strip()]
    unknown = [n for n in names if n not in ("train", "edit", "discover")]
    if unknown or args.kills < 1 or args.kills_per_run < 1:
        parser.error(
            f"unknown job(s) {unknown}" if unknown else "--kills and --kills-per-run must be at least 1"
        )
    with _work_folder(args.work.resolve() if args.work else None, args.keep) as work:
        started = time.perf_counter()
        load_before = _load()
        inputs = make_inputs(work, args.seed)
        jobs = make_jobs(inputs)
        if "train" in names:  # fill the latent cache first (see the module docstring)
            run_whole(jobs["train"], work / "train" / "warm-up", work / "train" / "warm-up.log")
        rng = np.random.default_rng(args.seed)
        reports = [
            exercise(jobs[name], work, args.kills, args.kills_per_run, rng, not args.no_control)
            for name in names
        ]
        minutes = (time.perf_counter() - started) / 60
        command = "OMP_NUM_THREADS=1 python benchmarks/crash_resume.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        text = "\n".join([
            table(reports), "",
            f"`{command.strip()}`: {minutes:.1f} min; before: {load_before}; after: {_load()}; "
            f"torch threads per process: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}.",
        ])  # fmt: skip
        print("\n" + text)
        if args.markdown:
            args.markdown.write_text(text + "\n", encoding="utf-8")
        bad = any(not c.identical for r in reports for c in r.comparisons) or any(
            r.resumed < r.runs for r in reports
        )
    return 1 if bad else 0


@contextlib.contextmanager
def _work_folder(work: Path | None, keep: bool) -> Iterator[Path]:
    folder = work or Path(tempfile.mkdtemp(prefix="cfaudit-crash-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"runs kept in {folder}")


if __name__ == "__main__":
    sys.exit(main())
