"""The discovery's statistics on simulated data with known answers: calibration, power, FDR, sample sizes, speed.

    python benchmarks/discovery_statistics.py

Seeded; no model, no images. Checks what ``cfaudit.discover.significance`` promises (the tests in
``tests/discover/test_significance.py`` check the same within tolerance):

* under a null, head p-values (sign-flip, exact and Monte Carlo) are uniform and cluster p-values are not
  anti-conservative;
* a planted effect of the size ``detectable_change`` / ``detectable_share`` reports is found in about 80% of runs;
* Benjamini-Hochberg keeps the share of false flags under alpha;
* screening on the edits and confirming on held-out real images keeps runs with any false relation under alpha
  when the editor has real quirks and the data holds no relation, and confirms relations the data does hold;
* how many images an intervention needs, for the default interventions and for a small run;
* how long the tests take.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import stats

from cfaudit.data.interventions import parse_interventions
from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.error_rates import relation_q
from cfaudit.discover.plan import default_interventions, family_size
from cfaudit.discover.significance import (
    detectable_change,
    detectable_share,
    draws_for,
    images_for_share,
    presence_p,
    q_values,
    sign_flip_p,
)


def _share(value: float) -> str:
    return f"{value:.0%}" if np.isfinite(value) else "none"


def main() -> None:
    rng = np.random.default_rng(0)
    print("| check | result |\n|---|---|")
    for n, draws in ((10, 0), (24, 999)):
        p = sign_flip_p(rng.standard_t(4, size=(n, 3000)), draws=draws, seed=3)
        kind = "exact" if not draws else f"Monte Carlo, {draws} flips"
        print(
            f"| null heads, n={n}, {kind} (3,000 tests) | KS p = {stats.kstest(p, 'uniform').pvalue:.2f}; "
            f"share p <= 0.05: {np.mean(p <= 0.05):.3f}; p <= 0.1: {np.mean(p <= 0.1):.3f} |"
        )
    p = np.array([presence_p(rng.random(20) < 0.3, rng.random(20) < 0.3, 0.3) for _ in range(3000)])
    print(f"| null clusters, n=20 (3,000 tests) | share p <= 0.05: {np.mean(p <= 0.05):.3f}; p <= 0.1: {np.mean(p <= 0.1):.3f} |")  # fmt: skip
    for n, level in ((8, 0.05), (12, 0.01), (30, 0.05)):
        effect = float(detectable_change(1.0, n, level))
        p = sign_flip_p(rng.normal(effect, 1.0, (n, 2000)), draws=999, seed=n)
        print(f"| head power, n={n}, level {level} | detectable {effect:.3f} SD, found in {np.mean(p <= level):.3f} of 2,000 runs |")  # fmt: skip
    for n, level in ((12, 0.03), (40, 0.001)):
        share = detectable_share(n, level)
        p = np.array([presence_p(rng.random(n) < share, np.zeros(n, bool), 0.0) for _ in range(3000)])
        print(f"| cluster power, n={n}, level {level} | detectable share {share:.3f}, found in {np.mean(p <= level):.3f} of 3,000 runs |")  # fmt: skip
    false_shares, found = [], []
    for run in range(60):
        effect = np.zeros(200)
        effect[:20] = 0.25
        flagged = q_values(sign_flip_p(rng.normal(effect, 0.3, (14, 200)), seed=run)) <= 0.1
        false_shares.append(flagged[20:].sum() / max(flagged.sum(), 1))
        found.append(flagged[:20].mean())
    print(f"| BH at 0.1, 60 runs x 200 tests (20 real) | mean share of false flags {np.mean(false_shares):.3f}; real ones found {np.mean(found):.2f} |")  # fmt: skip
    # Screen on the edits, confirm on real images: an editor with 20 real quirks among 200 tests, on data with
    # no relation (every real-image p uniform) vs with the 20 real in the data too (real-image z ~ 3)
    for planted in (False, True):
        any_false, found = [], []
        for _ in range(2000):
            edit_p = np.concatenate([rng.uniform(0, 1e-4, 20), rng.uniform(0, 1, 180)])
            data_p = rng.uniform(0, 1, 200)
            if planted:
                data_p[:20] = stats.norm.sf(rng.normal(3.0, 1.0, 20))
            relation = relation_q(q_values(edit_p), data_p, alpha=0.1) <= 0.1
            # no relation: is anything confirmed (all false); relations real: the share of the confirmed that is false
            any_false.append(relation[20:].sum() / max(relation.sum(), 1) if planted else relation.any())
            found.append(relation[:20].mean())
        if planted:
            print(f"| screen and confirm, 2,000 runs, 20 editor quirks of 200 tests, all 20 real in the data (z ~ 3) | mean share of false relations among the confirmed {np.mean(any_false):.3f}; real ones confirmed {np.mean(found):.2f} |")  # fmt: skip
        else:
            print(f"| screen and confirm, 2,000 runs, 20 editor quirks of 200 tests, no relation in the data | runs with any false relation {np.mean(any_false):.3f} |")  # fmt: skip
    atlas = RegionAtlas.load()
    runs = {
        "default interventions": default_interventions(),
        "3 interventions (the discovery test)": parse_interventions(["Cardiomegaly=0", "Edema=1", "age=+20"]),
    }
    for name, interventions in runs.items():
        tests = family_size(interventions, atlas)
        level = 0.1 / tests
        needed = ", ".join(f"{s:.0%}: {images_for_share(s, level)}" for s in (0.2, 0.3, 0.5))
        detectable = ", ".join(f"{n}: {_share(detectable_share(n, level))}" for n in (8, 12, 16, 24, 40))
        print(f"| {name}: {len(interventions)}, {tests} tests, level {level:.2g} | images for a share {needed}; detectable share at n {detectable} |")  # fmt: skip
    started = time.perf_counter()
    sign_flip_p(rng.normal(0, 1, (16, 20)), seed=1)
    exact = time.perf_counter() - started
    draws = draws_for(650, 0.1)
    started = time.perf_counter()
    sign_flip_p(rng.normal(0, 1, (200, 20)), draws=draws, seed=1)
    print(f"| speed | exact, n=16 x 20 heads: {exact:.2f} s; Monte Carlo, n=200 x 20 heads x {draws} flips: {time.perf_counter() - started:.2f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
