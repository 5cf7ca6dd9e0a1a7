"""Two folders of runs of the same sweep: which runs label the same points, and how far apart they end.

    git archive <old commit> results/runs/cpu | tar -x -C /tmp/old
    .venv/bin/python benchmarks/compare_runs.py --old /tmp/old/results/runs/cpu --new results/runs/cpu \
        --old-label "<old commit>" --new-label "rerun"

For every run present in both folders: whether every round labelled the same set of points (the
order inside a round may differ on exact score ties), the difference of the final top-1, and each
run's wall time (provenance).  Per data set × strategy: runs compared, runs with identical labelled
sets, the largest |Δ final top-1|, the torch thread counts on each side and the summed wall minutes.
Results: results/benchmarks/rerun_comparison.{json,md}, or ``--out STEM``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

OUT = M.RESULTS / "rerun_comparison"


def compare(old: Path, new: Path) -> pd.DataFrame:
    rows = []
    for meta in sorted(new.rglob("*__seed*.json")):
        stem = meta.with_suffix("")
        rel = stem.relative_to(new)
        before = old / rel
        if not before.with_suffix(".json").exists():
            continue
        a, b = pd.read_csv(before.with_suffix(".csv")), pd.read_csv(stem.with_suffix(".csv"))
        with np.load(before.with_suffix(".npz")) as x, np.load(stem.with_suffix(".npz")) as y:
            rounds = sorted(k for k in y.files if k.startswith("picks_round"))
            same = set(rounds) == {k for k in x.files if k.startswith("picks_round")} and all(
                set(x[k].tolist()) == set(y[k].tolist()) for k in rounds)
        prov_old = json.loads(before.with_suffix(".json").read_text())["provenance"]
        prov_new = json.loads(meta.read_text())["provenance"]
        rows.append({"dataset": rel.parts[0], "strategy": rel.name.split("__")[0], "same_labelled_sets": same,
                     "final_top1_diff": float(b["top1"].iloc[-1] - a["top1"].iloc[-1]),
                     "threads_old": prov_old.get("torch_threads"), "threads_new": prov_new.get("torch_threads"),
                     "wall_old": prov_old.get("wall_seconds"), "wall_new": prov_new.get("wall_seconds")})
    return pd.DataFrame(rows)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    def threads(s):
        return ",".join(str(int(v)) for v in sorted(set(s.dropna())))

    return (runs.groupby(["dataset", "strategy"])
            .agg(runs=("same_labelled_sets", "size"), same=("same_labelled_sets", "sum"),
                 max_abs_final_top1_diff=("final_top1_diff", lambda s: s.abs().max()),
                 threads_old=("threads_old", threads), threads_new=("threads_new", threads),
                 wall_min_old=("wall_old", lambda s: s.sum() / 60), wall_min_new=("wall_new", lambda s: s.sum() / 60))
            .reset_index())


def main(argv: list[str] | None = None) -> int:
    from alkit.io import provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True)
    parser.add_argument("--new", required=True)
    parser.add_argument("--old-label", default="old")
    parser.add_argument("--new-label", default="new")
    parser.add_argument("--out", default=str(OUT), help="stem of the .json and .md written (default: the rerun "
                        "comparison page)")
    args = parser.parse_args(argv)
    runs = compare(Path(args.old), Path(args.new))
    if runs.empty:
        raise SystemExit(f"--old / --new: no run is in both {args.old} and {args.new}")
    table = summarise(runs)
    from alkit.io import command_line   # absolute paths among the arguments made portable (committed page)

    command = "python " + command_line([str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])])
    lines = [f"# The same sweep twice: {args.old_label} against {args.new_label}", "",
             f"Command: `{command}`.", "",
             f"Runs compared: {len(runs)}; every round labelled the same points in {int(runs['same_labelled_sets'].sum())}.",
             f"Largest |Δ final top-1| over all runs: {runs['final_top1_diff'].abs().max():.4f}; over the runs with "
             f"different labelled sets: {runs.loc[~runs['same_labelled_sets'], 'final_top1_diff'].abs().max() if (~runs['same_labelled_sets']).any() else 0:.4f}.",
             f"Summed wall time of the runs: {runs['wall_old'].sum() / 60:.0f} min ({args.old_label}), "
             f"{runs['wall_new'].sum() / 60:.0f} min ({args.new_label}); each side's provenance says how many threads "
             "and the sweep's provenance says on what machine.", "",
             "| data set | strategy | runs | same labelled sets | max abs Δ final top-1 | threads (old) | threads (new) | "
             "wall min (old) | wall min (new) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.dataset} | {r.strategy} | {r.runs} | {r.same} | {r.max_abs_final_top1_diff:.4f} | "
                     f"{r.threads_old} | {r.threads_new} | {r.wall_min_old:.1f} | {r.wall_min_new:.1f} |")
    M.save(Path(args.out), {"command": command, "runs": runs.to_dict("records"), "provenance": provenance()},
           "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
