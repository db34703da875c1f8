"""The CI discovery checks (``tests/discover/test_discover_phantom.py``) run with any model, to try a candidate demo
model before it is shipped:

    PYTHONPATH=. python benchmarks/discovery_check.py --model runs/demo-f4-race-alone/model --out runs/check

``default`` (seed 3): the planted pacemaker relation, as the test asks for it. Where does the `do(Cardiomegaly=0)`
change cluster in the pacemaker's place rank, what is its status, and how often does it occur against the other
edits? ``null`` (seed 4): what is flagged on a phantom with no planted relation (the test asks for nothing). Each
takes about 40 s on 2 cores (figures: docs/BENCHMARKS.md, "Race with the rest of the model anchored").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cfaudit.edit.editor import CounterfactualEditor
from cfaudit.evaluate.classifiers import load_classifier
from tests.discover.test_discover_phantom import PACEMAKER_BIT, TUBE_BITS, discovery, mask_share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="demo", help="demo or a pipeline folder")
    parser.add_argument("--classifier", default="demo")
    parser.add_argument("--check", choices=["default", "null", "both"], default="both")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    models = (CounterfactualEditor.load(args.model, device="cpu"), load_classifier(args.classifier, "cpu"))
    if args.check in ("default", "both"):
        out = args.out / "default"
        root, result = discovery(out, models, "default", seed=3)
        top = result.candidates.head(3)
        backed = top["status"].isin(["hidden", "not significant"])
        found = top[(top["kind"] == "region") & (top["intervention"] == "do(Cardiomegaly=0)") & backed]
        heart = result.candidates[(result.candidates["kind"] == "region")
                                  & (result.candidates["intervention"] == "do(Cardiomegaly=0)")]  # fmt: skip
        for row in heart.head(3).itertuples(index=False):
            print(f"rank {row.rank} {row.status}: {row.description}")
        if found.empty:
            print("default (seed 3): FAILS, no do(Cardiomegaly=0) region candidate held up in the top 3")
        else:
            cluster = int(found.iloc[0]["target"].split()[-1])
            members = pd.read_csv(out / "discovery" / "cluster_members.csv")
            members = members[
                (members["intervention"] == "do(Cardiomegaly=0)") & (members["cluster"] == cluster)
            ]
            on_pacemakers = mask_share(root, members, (PACEMAKER_BIT,))
            on_tubes = mask_share(root, members, TUBE_BITS, excluding=(PACEMAKER_BIT,))
            print(
                f"default (seed 3): found; change on pacemakers {on_pacemakers:.2f}, on tubes {on_tubes:.2f}"
            )
    if args.check in ("null", "both"):
        _, result = discovery(args.out / "null", models, "null", seed=4)
        print(f"null (seed 4): {len(result.flagged)} flagged")
        if len(result.flagged):
            print(result.flagged[["intervention", "target", "status", "q_value"]].to_string())


if __name__ == "__main__":
    main()
