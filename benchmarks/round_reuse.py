"""Work carried from one round to the next: coreset's lazy distances and balancing's class products.

    .venv/bin/python benchmarks/round_reuse.py                 # Tiny-ImageNet, 3 coreset rounds
    .venv/bin/python benchmarks/round_reuse.py --dataset cifar10 --rounds 2

On a data set's cached features (in-memory float32, as a sweep reads them), from the first round of
the cpu sweep's seed-0 run (its validation rows and initial labelled set) with its round budget, one
torch thread (as one sweep worker):

* coreset: ``rounds`` rounds in which each round's picks become centres, once starting every round
  afresh (every candidate against every labelled centre) and once with ``carry`` (the previous
  round's lazy state, compared with the new centres only); both must pick the same points;
* balancing: one round with a nearest-class-mean predictor for the batch's picks, once streaming
  the features for every distance (``gram=False``) and once from the kept products with the class
  sums (``gram=True``); both must pick the same points.

Both variants run in this process, alternately, so the ratios share the machine's state.  Needs the
data set's cached features.  Results: results/benchmarks/round_reuse.{json,md}.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

OUT = M.RESULTS / "round_reuse"


def coreset_rounds(x, held, labelled, budget, rounds) -> list[dict]:
    from alkit.strategies.coreset import k_center_greedy

    rows, carry, centres = [], {}, labelled
    for r in range(rounds):
        cand = np.setdiff1d(np.arange(x.shape[0]), np.concatenate([held, centres]))
        seconds, picks = {}, {}
        for mode in ("afresh", "carried"):
            started = time.perf_counter()
            picks[mode] = k_center_greedy(x, centres, cand, budget, np.random.default_rng(r),
                                          carry=carry if mode == "carried" else None)
            seconds[mode] = time.perf_counter() - started
        rows.append({"round": r + 1, "centres": int(centres.size), "candidates": int(cand.size),
                     "afresh_s": seconds["afresh"], "carried_s": seconds["carried"],
                     "same_picks": bool(np.array_equal(picks["afresh"], picks["carried"]))})
        print(rows[-1], flush=True)
        centres = np.sort(np.concatenate([centres, picks["afresh"]]))
    return rows


def balancing_round(x, labels, num_classes, held, labelled, budget) -> dict:
    from alkit.strategies.balancing import balancing_greedy

    cand = np.setdiff1d(np.arange(x.shape[0]), np.concatenate([held, labelled]))
    means = np.stack([x[labelled[labels[labelled] == c]].mean(0) for c in range(num_classes)])
    xt, mt = torch.from_numpy(x), torch.from_numpy(means.astype(np.float32))
    predicted = torch.cdist(xt, mt).argmin(1).numpy()   # nearest labelled class mean
    row = {"candidates": int(cand.size), "labelled": int(labelled.size)}
    picks = {}
    for gram in (False, True):
        reports = []
        started = time.perf_counter()
        picks[gram] = balancing_greedy(x, labelled, labels[labelled], cand, num_classes, budget,
                                       np.random.default_rng(0), predicted, gram=gram, report=reports.append)
        row["gram_s" if gram else "streamed_s"] = time.perf_counter() - started
        (stats,) = reports
        row.update(balancing_steps=stats.balancing_steps, random_steps=stats.random_steps)
        row["full_passes_" + ("gram" if gram else "streamed")] = stats.full_passes
    row["same_picks"] = bool(np.array_equal(picks[False], picks[True]))
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    from alkit import experiment
    from alkit.io import provenance
    from alkit.loop import first_round_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="tiny-imagenet")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = experiment.sweep_config(args.dataset, "cpu")
    data = experiment.load_study_data(args.dataset, "cpu", extract=False, progress=False)
    x, _ = data.loop_features()
    labels = np.asarray(data.train_labels)
    num_classes = int(labels.max()) + 1
    held_out, labelled = first_round_split(labels, num_classes, config.val_per_class, config.initial_size, seed=0)
    held = np.flatnonzero(held_out)
    result = {"command": "python benchmarks/round_reuse.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "dataset": args.dataset, "round_budget": config.round_budget, "torch_threads": 1,
              "rows": coreset_rounds(x, held, labelled, config.round_budget, args.rounds),
              "balancing": balancing_round(x, labels, num_classes, held, labelled, config.round_budget)}
    result["provenance"] = provenance(machine=M.machine())
    lines = [f"# Work carried between rounds ({args.dataset}, budget {config.round_budget}, 1 torch thread)", "",
             f"Command: `{result['command']}`; commit {result['provenance']['git_commit']}.", "",
             "Coreset (k-center greedy), each round's picks becoming centres (round 1 has nothing to carry yet):", "",
             "| round | labelled centres | candidates | afresh s | carried s | ratio | same picks |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['round']} | {row['centres']} | {row['candidates']} | {row['afresh_s']:.1f} | "
                     f"{row['carried_s']:.1f} | {row['afresh_s'] / row['carried_s']:.1f}× | {row['same_picks']} |")
    b = result["balancing"]
    lines += ["", "Balancing, one round (nearest-class-mean predictions for the batch's picks):", "",
              "| balancing steps | random steps | streamed s | kept products s | ratio | same picks |",
              "|---|---|---|---|---|---|",
              f"| {b['balancing_steps']} | {b['random_steps']} | {b['streamed_s']:.1f} | {b['gram_s']:.1f} | "
              f"{b['streamed_s'] / b['gram_s']:.1f}× | {b['same_picks']} |"]
    M.save(OUT, result, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
