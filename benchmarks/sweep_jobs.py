"""One process or two worker processes for the cpu sweep: the same runs, their wall times.

    .venv/bin/python benchmarks/sweep_jobs.py                      # CIFAR-10-LT, the 7 score-based strategies, 5 seeds
    .venv/bin/python benchmarks/sweep_jobs.py --datasets cifar10 --strategies margin,badge

Runs the chosen part of the cpu sweep twice into fresh temporary folders, first with ``--jobs 1``
(one process, torch's default threads: all cores) and then with ``--jobs 2`` (two workers, cpu
count // 2 threads each), and compares the wall times and the labelled sets (the same points
must be labelled in every round; the order of picks inside a round may differ on exact score
ties, and strategies whose random draws depend on the last bits of distances — BADGE — may differ
with the thread count, which the table counts).  Needs the data sets' cached features.
Results: results/benchmarks/sweep_jobs.{json,md}.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

OUT = M.RESULTS / "sweep_jobs"
SCORE_BASED = "random,balanced_random,confidence,margin,entropy,mase,base"


def same_labelled_sets(a: Path, b: Path) -> tuple[int, int]:
    """(runs whose every round labels the same set of points in both folders, runs compared)."""
    same = total = 0
    for npz in sorted(a.rglob("*__seed*.npz")):
        other = b / npz.relative_to(a)
        with np.load(npz) as x, np.load(other) as y:
            rounds = sorted(k for k in x.files if k.startswith("picks_round"))
            total += 1
            same += all(set(x[k].tolist()) == set(y[k].tolist()) for k in rounds)
    return same, total


def main(argv: list[str] | None = None) -> int:
    from alkit.io import provenance, write_json, write_text
    from alkit.reproduce import CPU_PHASES, only_phases, run_phases

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="cifar10-lt")
    parser.add_argument("--strategies", default=SCORE_BASED)
    args = parser.parse_args(argv)
    phases = only_phases(CPU_PHASES, "cpu", args.datasets.split(","), args.strategies.split(","))
    data = {"command": "python benchmarks/sweep_jobs.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "phases": phases, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, 2):
            out = Path(tmp) / f"jobs{jobs}"
            started = time.perf_counter()
            run_phases(phases, "cpu", str(out), extract=False, jobs=jobs)
            data["rows"].append({"jobs": jobs, "wall_seconds": time.perf_counter() - started,
                                 "runs": len(list(out.rglob("*__seed*.json")))})
            print(data["rows"][-1], flush=True)
        data["same_labelled_sets"], data["runs_compared"] = same_labelled_sets(Path(tmp) / "jobs1", Path(tmp) / "jobs2")
    data["provenance"] = provenance(machine=M.machine())
    one, two = data["rows"]
    lines = ["# The cpu sweep on one process or two worker processes", "",
             f"Command: `{data['command']}`; commit {data['provenance']['git_commit']}; "
             f"{data['provenance']['cpu_count']} CPUs.", "",
             "| jobs | runs | wall s | speed-up |", "|---|---|---|---|"]
    for row in data["rows"]:
        lines.append(f"| {row['jobs']} | {row['runs']} | {row['wall_seconds']:.0f} | "
                     f"{one['wall_seconds'] / row['wall_seconds']:.2f}× |")
    lines += ["", f"Runs labelling the same points in every round with 1 and 2 jobs: "
                  f"{data['same_labelled_sets']} of {data['runs_compared']}."]
    write_json(OUT.with_suffix(".json"), data)
    write_text(OUT.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
