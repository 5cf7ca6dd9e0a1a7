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


sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402
from compare_runs import compare  # noqa: E402

OUT = M.RESULTS / "sweep_jobs"
SCORE_BASED = "random,balanced_random,confidence,margin,entropy,mase,base"


def main(argv: list[str] | None = None) -> int:
    from alkit.experiments.catalog import CPU_PHASES
    from alkit.experiments.launch import only_phases, run_phases
    from alkit.io import provenance

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
        runs = compare(Path(tmp) / "jobs1", Path(tmp) / "jobs2")
        data["same_labelled_sets"], data["runs_compared"] = int(runs["same_labelled_sets"].sum()), len(runs)
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
    M.save(OUT, data, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
