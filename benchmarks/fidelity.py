"""Demo models side by side: what survives the autoencoder, what the prompts edit, how real it looks, what it costs.

    python benchmarks/fidelity.py --model old=runs/old-demo --model new=demo --out runs/fidelity

On a phantom no model saw (``--seed``, the default config at 128 px), for each model:

* **reconstruction** of ``--images`` test images through the model's autoencoder (``cfaudit.evaluate.fidelity``):
  L1 (0-255) and LPIPS at 192 px against the image and against the same picture drawn without grain (the
  phantom's truth: ``PhantomReplay.render(grain=False)``), the contrast each device kind keeps inside its
  ground-truth mask, the share of the race grating kept, and the attribute classifier's drift (mean |change| per
  head) between image and reconstruction, beside its drift between image and grain-free picture (the part a
  perfect autoencoder of the picture would cost: the judge reading the grain), and its drift between the
  grain-free picture and that picture's own reconstruction (the autoencoder against a noise-free render);
* **prompt effects** in each ``--prompt-mode`` (``cfaudit.evaluate.prompt_effects``): the share of
  cardiomegaly cases whose heart shrinks under ``do(Cardiomegaly=0)``, the flip rates of ``do(Cardiomegaly=1)``
  and ``do(sex)``, the share of ``do(age=+20)`` edits that move the phantom's age cues the right way, and the
  share of ``do(race)`` edits that go at least half as far as the phantom's own swap of the race gratings
  (``--effect`` picks some), and the seconds and UNet evaluations per edit;
* **race in samples** (``--race-samples``): ``cfaudit.evaluate.prompt_effects.race_sample_share`` of samples of
  the same patients prompted ``white`` and ``black`` (same seeds), against real White and Black patients;
* **realism** (``cfaudit.evaluate.realism``): Frechet distance and KID of the effects run's counterfactuals and
  reconstructions against up to 500 real images of the phantom that were not edited, on the classifier's features.

``--vae FOLDER`` scores an autoencoder alone (a pipeline folder, a training checkpoint's folder holding
``vae/``, an AutoencoderKL folder, or a preset with a shipped one: ``tiny-f4``): the reconstruction rows only.
Results go to ``OUT/fidelity.md`` and ``OUT/fidelity.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfaudit.atomic_io import write_json, write_text
from cfaudit.data.adapters import build_index
from cfaudit.data.images import load_image, load_model_tensor, to_model_tensor
from cfaudit.data.interventions import PROMPT_MODES, source_prompt
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
from cfaudit.data.phantom.ground_truth import PhantomReplay, read_masks
from cfaudit.data.records import DataIndex
from cfaudit.edit.editor import CounterfactualEditor
from cfaudit.edit.job import JobSettings
from cfaudit.evaluate.classifiers import load_classifier
from cfaudit.evaluate.fidelity import measure_fidelity
from cfaudit.evaluate.prompt_effects import EFFECTS, measure_prompt_effects, race_sample_share
from cfaudit.evaluate.realism_distances import frechet_distance, kid
from cfaudit.evaluate.realism_features import ClassifierFeatures
from cfaudit.models.components import PipelineComponents
from cfaudit.models.loading import load_components
from cfaudit.models.sampling import sample_images
from cfaudit.train.vae import autoencode

DEVICES = ("pacemaker", "chest_tube", "central_line", "endotracheal_tube", "nasogastric_tube", "ecg_leads")


def fresh_phantom(out: Path, seed: int, n: int) -> tuple[Path, DataIndex]:
    root = out / f"phantom-{seed}"
    if not (root / "index.csv").is_file():
        settings = load_config(default_config_path("default")).with_overrides(n=n, size=128)
        generate_phantom(root, settings, seed=seed, workers=2)
        build_index("phantom", root, seed=seed).write(root / "index.csv")
    return root, DataIndex.read(root / "index.csv")


def load_vae(path: str) -> Any:
    from diffusers import AutoencoderKL

    from cfaudit.models.presets import ARCHITECTURES
    from cfaudit.models.shipped_model import shipped_autoencoder

    folder = Path(path)
    if (folder / "model_index.json").is_file() or path == "demo":
        return load_components(path).vae
    if path in ARCHITECTURES:  # the autoencoder shipped for that preset
        folder = shipped_autoencoder(path)
    return AutoencoderKL.from_pretrained(
        str(folder if (folder / "config.json").is_file() else folder / "vae")
    )


def reconstruct(vae: Any, images: list[np.ndarray], size: int) -> list[np.ndarray]:
    """``[0, 1]`` images through the autoencoder, back as ``[0, 1]`` arrays of ``size`` pixels."""
    pixels = torch.stack([to_model_tensor(image, size) for image in images])
    return [((d[0].numpy() + 1.0) / 2.0).clip(0.0, 1.0) for d in autoencode(vae, pixels)]


def reconstruction_rows(
    vae: Any, root: Path, index: DataIndex, classifier: Any, images: int
) -> dict[str, Any]:
    test = index.split("test")
    rows = test.table.head(images)
    replay = PhantomReplay(root)
    size = replay.size
    originals = [load_image(test.image_path(row)) for _, row in rows.iterrows()]
    began = time.perf_counter()
    reconstructions = reconstruct(vae, originals, size)
    seconds = (time.perf_counter() - began) / len(rows)
    references = [replay.render(str(i), grain=False) / 255.0 for i in rows["image_id"]]
    masks = [
        {k.split(".", 1)[1]: v for k, v in read_masks(root, str(i)).items() if k.startswith("device.")}
        for i in rows["image_id"]
    ]
    fidelity = measure_fidelity(
        originals,
        reconstructions,
        references=references,
        reference_reconstructions=reconstruct(vae, references, size) if classifier is not None else None,
        masks=masks,
        classifier=classifier,
    )
    texture = texture_kept(vae, replay, [str(i) for i in rows["image_id"]])
    return {**fidelity.to_dict(), "race_texture_kept": texture, "seconds_per_image": seconds}


def texture_kept(vae: Any, replay: PhantomReplay, image_ids: list[str]) -> float:
    """The share of the phantom's race grating the autoencoder keeps: each grain-free picture is drawn with and
    without its grating, both are reconstructed, and the difference of the reconstructions is projected on the
    grating itself (1: kept exactly; 0: gone), summed over images."""
    along = power = 0.0
    for image_id in image_ids:
        pictures = [
            replay.render(image_id, grain=False),
            replay.render(image_id, grain=False, texture_amplitude=0.0),
        ]
        grating = pictures[0].astype(np.float64) - pictures[1]
        pixels = torch.from_numpy(np.stack(pictures).astype(np.float32))[:, None] / 127.5 - 1.0
        decoded = [d[0].numpy().astype(np.float64) * 127.5 for d in autoencode(vae, pixels)]
        along += float(((decoded[0] - decoded[1]) * grating).sum())
        power += float((grating * grating).sum())
    return along / power if power else float("nan")


def realism_rows(classifier: Any, index: DataIndex, effects: Any) -> dict[str, dict[str, float]]:
    """FD and KID (classifier features) of the effects run's counterfactuals and reconstructions against up to
    500 real images of the phantom that were not edited."""
    edited = set(effects.rows["image_id"])
    real_table = index.table[~index.table["image_id"].isin(edited)].head(500)
    features = ClassifierFeatures(classifier)
    real = features([load_image(index.image_path(row)) for _, row in real_table.iterrows()])
    out: dict[str, dict[str, float]] = {}
    for name, images in (
        ("counterfactuals", effects.counterfactuals),
        ("reconstructions", effects.reconstructions),
    ):
        generated = features(images)
        out[name] = {"FD": frechet_distance(generated, real), "KID": kid(generated, real), "n": len(images),
                     "n_real": len(real)}  # fmt: skip
    return out


def race_sample_row(
    components: PipelineComponents,
    root: Path,
    index: DataIndex,
    images: int,
    groups: tuple[str, str] = ("White", "Black"),
) -> dict[str, float]:
    """Sample the first ``images`` White or Black test patients once as each group (25 DDIM steps, guidance 7.5,
    seed = position) and score the gratings against as many real patients of each group."""
    table = index.table[index.table["split"] == "test"]
    records = table[table["race"].isin(groups)].head(images).to_dict("records")
    if not records:
        return {"share": float("nan"), "n": 0}
    size = components.resolution

    def unit(row: Any) -> np.ndarray:
        return (load_model_tensor(index.image_path(row), size)[0].numpy() + 1.0) / 2.0

    real = {g: [unit(row) for _, row in table[table["race"] == g].head(images).iterrows()] for g in groups}
    seeds = list(range(len(records)))
    generated = {}
    for g in groups:
        prompts = [source_prompt({**record, "race": g}) for record in records]
        generated[g] = [image[0].numpy() for image in sample_images(components, prompts, seeds, steps=25)]
    share = race_sample_share(PhantomReplay(root), real, generated, groups)
    return {"share": share, "n": len(records)}


def markdown(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    lines = ["| | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, cell) -> None:
        cells = [cell(results[n]) for n in names]
        if any(c != "-" for c in cells):  # a row no model has (--no-reconstruction, --effect) is left out
            lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def get(r: dict[str, Any], *keys: str) -> Any:
        for key in keys:
            r = r.get(key, {}) if isinstance(r, dict) else {}
        return r if r != {} else None

    def fmt(value: Any, pattern: str) -> str:
        return (
            "-" if value is None or (isinstance(value, float) and np.isnan(value)) else pattern.format(value)
        )

    row("reconstruction L1 (0-255), vs image", lambda r: fmt(get(r, "reconstruction", "l1"), "{:.2f}"))
    row("... vs the grain-free picture", lambda r: fmt(get(r, "reconstruction", "l1_reference"), "{:.2f}"))
    row("LPIPS at 192 px, vs image", lambda r: fmt(get(r, "reconstruction", "lpips"), "{:.3f}"))
    row("... vs the grain-free picture", lambda r: fmt(get(r, "reconstruction", "lpips_reference"), "{:.3f}"))
    for kind in DEVICES:
        row(
            f"contrast kept: {kind}",
            lambda r, k=kind: fmt(get(r, "reconstruction", "contrast_kept", k), "{:.0%}"),
        )
    row("race grating kept", lambda r: fmt(get(r, "reconstruction", "race_texture_kept"), "{:.0%}"))
    heads = sorted({h for r in results.values() for h in (get(r, "reconstruction", "drift") or {})})
    for head in heads:
        row(
            f"classifier drift: {head}", lambda r, h=head: fmt(get(r, "reconstruction", "drift", h), "{:.3f}")
        )
        row(
            f"... from the grain alone: {head}",
            lambda r, h=head: fmt(get(r, "reconstruction", "grain_drift", h), "{:.3f}"),
        )
        row(
            f"... the grain-free picture through the autoencoder: {head}",
            lambda r, h=head: fmt(get(r, "reconstruction", "reference_drift", h), "{:.3f}"),
        )
    for effect in EFFECTS:

        def cell(r: dict[str, Any], e: str = effect) -> str:
            s = get(r, "effects", e)
            if not s:
                return "-"
            return f"{s['rate']:.0%} [{s['low']:.0%}, {s['high']:.0%}] (n={s['n']}, {s['mean_effect']:+.3f})"

        row(f"prompt effect: {effect}", cell)
    row(
        "race in samples: White-vs-Black grating gap, share of the real one",
        lambda r: fmt(get(r, "race_samples"), "{0[share]:+.2f} (n={0[n]} each)"),
    )
    for key in ("FD", "KID"):
        for which in ("counterfactuals", "reconstructions"):
            row(f"realism {key}, {which}", lambda r, k=key, w=which: fmt(get(r, "realism", w, k), "{:.3g}"))
    row("seconds per edit", lambda r: fmt(get(r, "seconds_per_edit"), "{:.2f}"))
    row("UNet evaluations per edit", lambda r: fmt(get(r, "unet_evals_per_edit"), "{:.0f}"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="NAME=MODEL (demo, a folder); repeat")
    parser.add_argument(
        "--vae", action="append", default=[], help="NAME=FOLDER: an autoencoder alone; repeat"
    )
    parser.add_argument("--classifier", default="demo")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=21, help="seed of the fresh phantom")
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--images", type=int, default=32, help="test images reconstructed")
    parser.add_argument("--effect-images", type=int, default=24, help="images per prompt effect")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--effect", action="append", choices=list(EFFECTS), help="prompt effect(s) to measure (default: all)"
    )
    parser.add_argument(
        "--no-reconstruction", action="store_true", help="skip the reconstruction rows (the effects alone)"
    )
    parser.add_argument(
        "--race-samples",
        type=int,
        default=12,
        help="patients sampled as each of two groups (0: skip the row)",
    )
    parser.add_argument(
        "--prompt-mode",
        action="append",
        choices=PROMPT_MODES,
        help="prompt mode(s) of the effects (default: edit's)",
    )
    args = parser.parse_args(argv)
    modes = args.prompt_mode or [JobSettings().prompt_mode]
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    root, index = fresh_phantom(args.out, args.seed, args.n)
    classifier = load_classifier(args.classifier, device="cpu")
    results: dict[str, dict[str, Any]] = {}
    for spec in args.vae:
        name, _, path = spec.partition("=")
        results[name] = {
            "reconstruction": reconstruction_rows(load_vae(path), root, index, classifier, args.images)
        }
        print(f"{name}: reconstruction done", flush=True)
    for spec in args.model:
        name, _, path = spec.partition("=")
        components = load_components(path, device="cpu")
        reconstruction = (
            {}
            if args.no_reconstruction
            else reconstruction_rows(components.vae, root, index, classifier, args.images)
        )
        editor = CounterfactualEditor.from_components(components)
        race_samples = (
            race_sample_row(components, root, index, args.race_samples) if args.race_samples > 0 else {}
        )
        for mode in modes:
            effects = measure_prompt_effects(
                editor,
                root,
                index,
                classifier,
                images=args.effect_images,
                mode=mode,
                effects=args.effect or tuple(EFFECTS),
                keep_images=True,
            )
            column = name if len(modes) == 1 else f"{name}, {mode}"
            results[column] = {
                "reconstruction": reconstruction,
                "effects": {s.effect: s.to_dict() for s in effects.summaries},
                "realism": realism_rows(classifier, index, effects),
                "seconds_per_edit": effects.seconds_per_edit,
                "unet_evals_per_edit": float(effects.rows["unet_evals"].mean()),
                "race_samples": race_samples,
            }
            print(f"{column}: done\n{effects.table()}", flush=True)
    text = markdown(results)
    header = f"Phantom seed {args.seed} (n={args.n}, 128 px, never seen by the models); classifier `{args.classifier}`.\n\n"
    write_text(args.out / "fidelity.md", header + text + "\n")
    write_json(
        args.out / "fidelity.json", {"args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
