"""Where the mechanism sweep's time goes: two of its costliest runs, profiled side by side.

    .venv/bin/python benchmarks/probe_cost.py                       # k200-double, margin, seeds 0 and 1
    .venv/bin/python benchmarks/probe_cost.py --cell k200 --strategy random --seeds 0,1
    .venv/bin/python benchmarks/probe_cost.py --search-every 4     # the cheaper recipe, same two runs

Runs two committed runs of ``python -m alkit reproduce mechanism`` again, each in its own one-thread
process at the same time (as the sweep's two workers run on 2 cores), under cProfile; needs the
cached Tiny-ImageNet features.  Per run: its wall time against the time the committed run
recorded, whether it picks the committed run's points each round, and the share of its time in
the probe's feature products (``torch.mm`` / ``torch.addmm``: the L-BFGS products X·p and Xᵀ·G),
in the rest of the probe's arithmetic (softmax, line search, standardising), in selection and
elsewhere.  Then the sweep's wall time on an idle machine, projected from every committed run's
recorded time scaled by the ratio measured here: what the ≤ 90 minute target is judged against.

``--search-every K`` makes the same runs with the probe walking its λ grid only every K rounds
(:attr:`alkit.probe.ProbeConfig.search_every`; the committed runs walk it every round): their
picks then differ from the committed ones, and the page sets each run's final and mean test top-1
beside the committed run's, so that the cost of the cheaper recipe is seen with what it changes.
The projection scales every committed run by the ratio measured on this cell.  Cells with fewer
labels spend a smaller share of their time in the probe and save less, so for them it is
optimistic; the K = 200 cells, this one among them, hold most of the recorded time.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

TARGET_MINUTES = 90
PRODUCTS = ("{built-in method torch.mm}", "{built-in method torch.addmm}")
#: The probe's other arithmetic: elementwise work over the n × C logits, the standardisation.
PROBE_REST = ("{built-in method torch.log_softmax}", "{method 'exp_' of 'torch._C.TensorBase' objects}",
              "{built-in method torch.add}", "{method 'sum' of 'torch._C.TensorBase' objects}",
              "{built-in method torch.sum}", "{method 'float' of 'torch._C.TensorBase' objects}",
              "{built-in method torch.dot}", "{method 'std' of 'torch._C.TensorBase' objects}",
              "{method 'add_' of 'torch._C.TensorBase' objects}", "{method 'to' of 'torch._C.TensorBase' objects}")


def profiled_run(cell_name: str, strategy: str, seed: int, search_every: int = 1) -> dict:
    """One mechanism run in this process (one torch thread), profiled; its picks against the committed run."""
    from dataclasses import replace

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from alkit.experiments import catalog, class_count, loading, mechanism

    if search_every != 1:   # this process's sweeps train the probe with the cheaper recipe
        from alkit.experiments import runs

        configured = catalog.sweep_config

        def sweep_config(*args, **kwargs):
            config = configured(*args, **kwargs)
            return replace(config, probe=replace(config.probe, search_every=search_every))

        # runs.py holds its own reference (the cpu sweep's path: the K = 200 and CIFAR-10 cells)
        catalog.sweep_config = runs.sweep_config = sweep_config

    cell = {c.name: c for c in mechanism.cells("cpu")}[cell_name]
    data = loading.load_study_data(cell.dataset, "cpu", extract=False, progress=False)
    # What a sweep's worker does once per data set, not per run: the float32 copy and the fingerprints.
    data.loop_features()
    data.fingerprints()
    committed = mechanism.run_folder(cell, strategy, "cpu", M.ROOT / mechanism.RUNS_DIR,
                                     M.ROOT / class_count.RUNS_DIR, M.ROOT / class_count.SWEEP_DIR)
    import pandas as pd

    recorded = pd.read_csv(committed / f"{strategy}__seed{seed}.csv")
    with tempfile.TemporaryDirectory() as out:
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        frame = mechanism.run_one(data, cell, strategy, seed, "cpu", out, Path(out) / "cc", Path(out) / "sweep", {})
        profile.disable()
        wall = time.perf_counter() - started
        new = next(Path(out).rglob(f"{strategy}__seed{seed}.npz"))
        old = np.load(committed / new.name)
        fresh = np.load(new)
        # The same points each round: runs of the cpu sweep (the K = 200 and CIFAR-10 cells) were
        # saved with each round's picks in another order than the loop keeps them today.
        picks = sorted(k for k in old.files if k.startswith("picks_"))
        same = picks == sorted(k for k in fresh.files if k.startswith("picks_")) and \
            all(np.array_equal(np.sort(fresh[k]), np.sort(old[k])) for k in picks)
    stats = pstats.Stats(profile).stats
    own = {pstats.func_std_string(f): v[2] for f, v in stats.items()}   # tottime per function
    products = sum(own.get(name, 0.0) for name in PRODUCTS)
    rest = sum(own.get(name, 0.0) for name in PROBE_REST)
    selection = float(frame["selection_seconds"].sum())
    return {"cell": cell_name, "strategy": strategy, "seed": seed, "wall_s": wall, "same_picks": bool(same),
            "measured_s": selection + float(frame["training_seconds"].sum()),
            "recorded_s": float(recorded["selection_seconds"].sum() + recorded["training_seconds"].sum()),
            "products_s": products, "probe_rest_s": rest, "selection_s": selection,
            "other_s": max(wall - products - rest - selection, 0.0), "search_every": search_every,
            "final_top1": float(frame["top1"].iloc[-1]), "committed_final_top1": float(recorded["top1"].iloc[-1]),
            "mean_top1": float(frame["top1"].mean()), "committed_mean_top1": float(recorded["top1"].mean())}


def committed_cpu_seconds() -> float:
    """Selection plus training seconds recorded by every run the mechanism sweep made itself."""
    import pandas as pd

    from alkit.experiments import mechanism

    total = 0.0
    for csv in sorted((M.ROOT / mechanism.RUNS_DIR).glob("*/*.csv")):
        rows = pd.read_csv(csv, usecols=["selection_seconds", "training_seconds"])
        total += float(rows.to_numpy().sum())
    return total


def page(rows: list[dict], projection: dict, command: str) -> str:
    every = rows[0].get("search_every", 1)
    recipe = "the committed probe (λ walked every round)" if every == 1 else \
        f"the probe walking its λ grid every {every} rounds (the committed runs walk it every round)"
    lines = [f"# Where the mechanism sweep's time goes{'' if every == 1 else f': λ walked every {every} rounds'}", "",
             f"Command: `{command}`.  Two committed runs made again side by side with {recipe}, one torch thread "
             "each (as the sweep's two workers), under cProfile.", "",
             "| run | wall | selection + training: now | recorded by the sweep | same picks | feature products | "
             "rest of the probe | selection | other | final top-1: now / committed | mean top-1: now / committed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        share = {k: r[k] / r["wall_s"] for k in ("products_s", "probe_rest_s", "selection_s", "other_s")}
        lines.append(f"| {r['cell']} {r['strategy']} seed {r['seed']} | {M.fmt_seconds(r['wall_s'])} | "
                     f"{M.fmt_seconds(r['measured_s'])} | {M.fmt_seconds(r['recorded_s'])} | {'yes' if r['same_picks'] else '**no**'} | "
                     f"{share['products_s']:.0%} | {share['probe_rest_s']:.0%} | {share['selection_s']:.0%} | "
                     f"{share['other_s']:.0%} | {r['final_top1']:.4f} / {r['committed_final_top1']:.4f} | "
                     f"{r['mean_top1']:.4f} / {r['committed_mean_top1']:.4f} |")
    lines += ["", f"Every run of the sweep recorded {projection['recorded_minutes']:.1f} CPU-minutes of selection and "
              f"training; scaled by the ratio measured here ({projection['ratio']:.2f}) and shared by 2 workers, "
              f"the sweep takes about **{projection['idle_minutes']:.0f} minutes** on this machine when idle "
              f"(target ≤ {TARGET_MINUTES}; load average at the start {projection['load']:.2f})."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", default="k200-double", help="a mechanism cell (alkit.experiments.mechanism.cells)")
    parser.add_argument("--strategy", default="margin")
    parser.add_argument("--seeds", default="0,1", help="two seeds, run side by side")
    parser.add_argument("--search-every", type=int, default=1,
                        help="walk the probe's λ grid every K rounds (1: as the committed runs)")
    parser.add_argument("--out", default=None,
                        help="stem of the .json and .md written (default results/benchmarks/probe_cost[_every<K>])")
    args = parser.parse_args(argv)
    if args.search_every < 1:
        parser.error("--search-every must be ≥ 1")
    out = args.out or str(M.RESULTS / ("probe_cost" if args.search_every == 1 else f"probe_cost_every{args.search_every}"))
    seeds = [int(s) for s in args.seeds.split(",")]
    load = M.machine()["loadavg"][0]
    with ProcessPoolExecutor(len(seeds)) as pool:
        rows = list(pool.map(profiled_run, [args.cell] * len(seeds), [args.strategy] * len(seeds), seeds,
                             [args.search_every] * len(seeds)))
    ratio = sum(r["measured_s"] for r in rows) / sum(r["recorded_s"] for r in rows)
    recorded = committed_cpu_seconds() / 60
    projection = {"recorded_minutes": recorded, "ratio": ratio, "idle_minutes": recorded * ratio / 2, "load": load}
    command = M.command(__file__, argv)
    M.save(Path(out), {"command": command, "rows": rows, "projection": projection},
           page(rows, projection, command))
    return 0 if args.search_every != 1 or all(r["same_picks"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
