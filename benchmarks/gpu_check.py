"""The strategies that take ``device=`` on a CUDA GPU: same picks as on the CPU, and how long they take.

    python benchmarks/gpu_check.py                      # needs a CUDA device; ~5 min on one H100
    python benchmarks/gpu_check.py --agree-n 20000 --time-n 100000 --budget-s 420

Part 1, agreement: on an ImageNet-shaped pool of ``--agree-n`` points (C = 100, D = 256), each
strategy is called twice in one process, ``device="cpu"`` then ``device="cuda"``, same pool,
head and seed; the picks are compared (identical, or the share they have in common).  The fast
paths are exact on the CPU (tested against references), so a difference here is a device bug,
or a float32 near-tie broken the other way.
Part 2, time: on the ImageNet-shaped pool of ``--time-n`` points (C = 1000, D = 2048, the
round of ``bench_scale.py`` at that size), each strategy on ``cuda`` in a fresh process: wall
time, peak GPU memory, and whether the picks equal the committed 2-core CPU run of
``bench_scale.py`` at that size (results/benchmarks/scale.json; the head is retrained on the
GPU machine, so strategies that read it may differ for that reason alone).

Nothing here runs in CI (no GPU).  Results go to results/benchmarks/gpu_check.{json,md}, or
``--out``; each part is written as soon as it ends, so a run cut short keeps what finished.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

DEVICE_STRATEGIES = ("coreset", "partitioned_coreset", "typiclust", "badge", "partitioned_badge", "balancing",
                     "probcover")


def _digest(picks) -> str:
    return hashlib.sha256(np.ascontiguousarray(picks, np.int64).tobytes()).hexdigest()[:16]


def _call(state, name: str, budget: int, seed: int, device: str) -> tuple[np.ndarray, float]:
    import torch

    from alkit.strategies import resolve_strategy, select

    # The pool carries no StrategyCache: every call builds ProbCover's graph and TypiClust's clustering afresh.
    fn = resolve_strategy(name).fn
    _sync(device)
    started = time.perf_counter()
    picks = select(state, lambda p, k, r: fn(p, k, r, device=device), budget, seed)
    _sync(device)
    return picks, time.perf_counter() - started


def _sync(device: str) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _warm_up(device: str) -> None:
    """Create the CUDA context (and load cuBLAS) before anything is timed."""
    import torch

    if torch.device(device).type == "cuda":
        torch.ones(8, 8, device=device) @ torch.ones(8, 8, device=device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _round(n_total: int, num_classes: int, dim: int):
    pool = M.imagenet_like(n_total, num_classes, dim)
    n_labeled, budget = M.schedule(n_total)
    if num_classes != 1000:   # as bench_scale.py: small pools still get a few labels per class
        n_labeled, budget = max(n_labeled, 2 * num_classes), max(budget, num_classes)
    labeled, weight, bias = M.labeled_and_head(pool, n_labeled)
    return pool, M.pool_state(pool, labeled, weight, bias), budget


def agreement_task(n_total: int, num_classes: int, dim: int, strategy: str, seed: int, device: str = "cuda") -> dict:
    """``strategy`` on cpu then ``device``, one process: picks compared."""
    import torch

    pool, state, budget = _round(n_total, num_classes, dim)
    _warm_up(device)
    cpu, cpu_s = _call(state, strategy, budget, seed, "cpu")
    gpu, gpu_s = _call(state, strategy, budget, seed, device)
    return {"strategy": strategy, "n_total": n_total, "budget": budget, "cpu_seconds": cpu_s, "cuda_seconds": gpu_s,
            "identical": bool(np.array_equal(cpu, gpu)),
            "shared": float(np.intersect1d(cpu, gpu).size / max(cpu.size, 1)),
            "first_difference": int(np.flatnonzero(cpu != gpu)[0]) if cpu.size == gpu.size and not np.array_equal(cpu, gpu) else None,
            "cpu_digest": _digest(cpu), "cuda_digest": _digest(gpu), "torch_threads": torch.get_num_threads()}


def timing_task(n_total: int, strategy: str, seed: int, device: str = "cuda") -> dict:
    """``strategy`` on ``device`` at ImageNet shape (fresh process): time, memory, digest."""
    import torch

    pool, state, budget = _round(n_total, 1000, 2048)
    _warm_up(device)
    record: dict = {"strategy": strategy, "n_total": n_total, "budget": budget}
    with M.section(record):
        picks, seconds = _call(state, strategy, budget, seed, device)
    on_gpu = torch.device(device).type == "cuda"
    record.update(cuda_seconds=seconds, digest=_digest(picks),
                  peak_gpu_bytes=int(torch.cuda.max_memory_allocated()) if on_gpu else 0,
                  distinct_classes=int(np.unique(pool.labels[picks]).size))
    return record


def _cpu_reference(n_total: int) -> dict:
    path = M.RESULTS / "scale.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text()).get("rows", {})
    return {name: rows.get(f"{name}@{n_total}", {}) for name in DEVICE_STRATEGIES}


def markdown(data: dict) -> str:
    env = data.get("machine", {})
    lines = ["# Strategies on a CUDA GPU against the CPU", "",
             f"GPU: {env.get('gpu')}; CPU: {env.get('cpu')} ({env.get('cpu_count')} cores); torch {data.get('torch')}.",
             f"Command: `{data.get('command')}` (commit {data.get('commit')}).", ""]
    agree = data.get("agreement", {})
    if agree:
        lines += [f"## Same picks on cpu and cuda (ImageNet-shaped pool, N = {data['agree_n']:,}, C = 100, D = 256)", "",
                  "| strategy | budget | identical | picks shared | cpu s | cuda s |", "|---|---|---|---|---|---|"]
        for name, r in agree.items():
            if "error" in r:
                lines.append(f"| {name} | | error: {r['error'][-160:]!r} | | | |")
                continue
            lines.append(f"| {name} | {r['budget']} | {'yes' if r['identical'] else 'no'} | {100 * r['shared']:.1f} % | "
                         f"{r['cpu_seconds']:.2f} | {r['cuda_seconds']:.2f} |")
        lines.append("")
    timing = data.get("timing", {})
    if timing:
        lines += [f"## Time on cuda (ImageNet-shaped pool, N = {data['time_n']:,}, C = 1000, D = 2048)", "",
                  "cpu column: the committed `bench_scale.py` run on the 2-core development machine (another machine).", "",
                  "| strategy | budget | cuda | peak GPU memory | 2-core CPU (committed) | same picks as that run |",
                  "|---|---|---|---|---|---|"]
        ref = data.get("cpu_reference", {})
        for name, r in timing.items():
            cpu = ref.get(name, {})
            cpu_cell = f"{cpu['seconds']:.1f} s" if "seconds" in cpu else (cpu.get("error") or "not run")
            if "error" in r:
                lines.append(f"| {name} | | error: {r['error'][-160:]!r} | | {cpu_cell} | |")
                continue
            same = "" if "digest" not in cpu else ("yes" if cpu["digest"] == r["digest"] else "no")
            lines.append(f"| {name} | {r['budget']} | {r['cuda_seconds']:.2f} s | {M.fmt_bytes(r['peak_gpu_bytes'])} | "
                         f"{cpu_cell} | {same} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    from alkit.io import git_commit, write_json, write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agree-n", type=int, default=20_000)
    parser.add_argument("--time-n", type=int, default=100_000)
    parser.add_argument("--strategies", default=",".join(DEVICE_STRATEGIES))
    parser.add_argument("--timeout", type=float, default=180, help="seconds per strategy and part")
    parser.add_argument("--budget-s", type=float, default=420, help="stop starting new work after this many seconds")
    parser.add_argument("--commit", default=None, help="commit to record (for a copied tree, whose .git may be missing or stale)")
    parser.add_argument("--out", default=str(M.RESULTS / "gpu_check"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda", help="device under test ('cpu': a dry run of this script)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device visible to torch; run it on a machine with an NVIDIA GPU")
    names = args.strategies.split(",")
    unknown = sorted(set(names) - set(DEVICE_STRATEGIES))
    if unknown:
        raise SystemExit(f"--strategies: {', '.join(unknown)} take no device=; choose from {', '.join(DEVICE_STRATEGIES)}")
    out = Path(args.out)
    commit = git_commit()
    data = {"command": "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            # a copied tree's .git can be stale: the commit the caller names wins
            "commit": args.commit or commit,
            "torch": torch.__version__, "device": args.device, "machine": M.machine(), "agree_n": args.agree_n, "time_n": args.time_n,
            "agreement": {}, "timing": {}, "cpu_reference": _cpu_reference(args.time_n)}
    started = time.perf_counter()

    def save():
        data["wall_seconds"] = time.perf_counter() - started
        write_json(out.with_suffix(".json"), data)
        write_text(out.with_suffix(".md"), markdown(data))

    M.imagenet_like(args.agree_n, 100, 256, progress=False)
    for name in names:
        if time.perf_counter() - started > args.budget_s:
            data["agreement"][name] = {"error": "not run: --budget-s spent"}
            continue
        print(f"agreement {name} @ {args.agree_n:,} ...", flush=True)
        data["agreement"][name] = M.run_isolated(agreement_task, timeout=args.timeout, n_total=args.agree_n,
                                                 num_classes=100, dim=256, strategy=name, seed=args.seed,
                                                 device=args.device)
        print("   ", {k: data["agreement"][name].get(k) for k in ("identical", "shared", "cpu_seconds", "cuda_seconds",
                                                                 "error")}, flush=True)
        save()
    M.imagenet_like(args.time_n, progress=False)
    for name in names:
        if time.perf_counter() - started > args.budget_s:
            data["timing"][name] = {"error": "not run: --budget-s spent"}
            continue
        print(f"timing {name} @ {args.time_n:,} ...", flush=True)
        data["timing"][name] = M.run_isolated(timing_task, timeout=args.timeout, n_total=args.time_n, strategy=name,
                                              seed=args.seed, device=args.device)
        print("   ", {k: data["timing"][name].get(k) for k in ("cuda_seconds", "peak_gpu_bytes", "error")}, flush=True)
        save()
    save()
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
