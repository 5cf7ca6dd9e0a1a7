"""``python -m alkit run``: a whole simulated active-learning experiment on a features file."""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from alkit.cli.common import UsageError, _load_array, parse_seeds, parse_strategies, probe_config


def cmd_run(args: argparse.Namespace) -> int:
    return run_from_arrays(args)


def _pool_schedule_checks(train_labels: np.ndarray, num_classes: int, args: argparse.Namespace,
                          seeds: list[int]) -> None:
    """Refuse, before any compute, a schedule the pool cannot serve: too few points for the
    initial set and the rounds, or a seed whose random initial set holds one class only."""
    from alkit.loop import first_round_split

    counts = np.bincount(train_labels, minlength=num_classes)
    n_val = int(np.minimum(args.val_per_class, counts // 2).sum())
    n_out = int(train_labels.size) - n_val
    val_note = f" ({n_val} held out by --val-per-class {args.val_per_class})" if n_val else ""
    if args.initial > n_out:
        raise UsageError(f"--initial: {args.initial} initial points, but the pool has only {n_out} outside "
                         f"validation{val_note}; lower --initial")
    need = args.initial + args.rounds * args.budget
    if need > n_out:
        raise UsageError(f"--budget: --initial {args.initial} + --rounds {args.rounds} × --budget {args.budget} = "
                         f"{need} points, but the pool has only {n_out} outside validation{val_note}: the last "
                         "rounds could not use their budget; lower --budget or --rounds")
    for seed in seeds:
        _, initial = first_round_split(train_labels, num_classes, args.val_per_class, args.initial, seed)
        present = np.unique(train_labels[initial])
        if present.size < 2:
            raise UsageError(f"--initial: the random initial set of seed {seed} ({args.initial} points) holds class "
                             f"{int(present[0])} only, and a head cannot be trained on one class; raise --initial")


def run_from_arrays(args: argparse.Namespace) -> int:
    """``python -m alkit run``: check everything, load arrays, run the sweep, write the CSV of all rows.

    Every check (lists, output path, arrays, classes, schedule) comes before the compute, so bad
    input never costs a sweep."""
    from alkit.experiments.runs import run_sweep
    from alkit.io import array_fingerprint, atomic_write, check_output_file
    from alkit.pool import check_features

    strategies = parse_strategies(args.strategies, allow_images=False)
    seeds = parse_seeds(args.seeds)
    probe = probe_config(args)
    check_output_file(args.out, "--out")
    if (args.test_features is None) != (args.test_labels is None):
        raise UsageError("--test-features and --test-labels must be given together")
    if args.test_features is None and not 0 < args.test_fraction < 1:
        raise UsageError(f"--test-fraction: must lie in (0, 1), got {args.test_fraction}")
    x = _load_array(args.features, "--features")
    if x.ndim != 2:
        raise UsageError(f"--features: must be a 2-D (N, D) array, got shape {x.shape}")
    check_features(x, "--features")
    y = np.asarray(_load_array(args.labels, "--labels"))
    if y.shape != (x.shape[0],):
        raise UsageError(f"--labels: must hold one label per row of --features ({x.shape[0]}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"--labels: must hold integer classes, got dtype {y.dtype}")
    if (y == -1).any():
        raise UsageError(f"--labels: {int((y == -1).sum())} points are -1 (unlabelled), but `run` needs the true "
                         "class of every pool point: it simulates labelling by revealing them when queried; for a "
                         "partly labelled pool choose the next batch with `python -m alkit select`")
    if y.min() < 0:
        raise UsageError(f"--labels: classes must be ≥ 0, found {y.min()}")
    num_classes = args.num_classes or int(y.max()) + 1
    if y.max() >= num_classes:
        raise UsageError(f"--num-classes: {num_classes} is too small: --labels holds class {y.max()}; drop "
                         "--num-classes or raise it")
    if args.test_features is None:
        order = np.random.default_rng(12345).permutation(x.shape[0])
        n_test = int(round(args.test_fraction * x.shape[0]))
        if not 0 < n_test < x.shape[0]:
            raise UsageError(f"--test-fraction: {args.test_fraction} of {x.shape[0]} points leaves "
                             f"{n_test} for testing and {x.shape[0] - n_test} for the pool; both need some")
        test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
        tx, ty, x, y = x[test], y[test], x[train], y[train]
        where = "the pool (after holding out --test-fraction)"
    else:
        tx = _load_array(args.test_features, "--test-features")
        if tx.ndim != 2 or tx.shape[1] != x.shape[1]:
            raise UsageError(f"--test-features: must be (M, {x.shape[1]}) like --features, got shape {tx.shape}")
        check_features(tx, "--test-features")
        ty = np.asarray(_load_array(args.test_labels, "--test-labels"))
        if ty.shape != (tx.shape[0],) or not np.issubdtype(ty.dtype, np.integer):
            raise UsageError(f"--test-labels: must hold one integer class per row of --test-features "
                             f"({tx.shape[0]}), got {ty.dtype} {ty.shape}")
        if ty.min() < 0 or ty.max() >= num_classes:
            raise UsageError(f"--test-labels: classes must lie in [0, {num_classes}), found [{ty.min()}, {ty.max()}]"
                             + (" (-1 is not a class: every test point needs its label)" if ty.min() == -1 else ""))
        where = "--labels"
    present = np.unique(y)
    if present.size < 2:
        raise UsageError(f"--labels: every point of {where} has class {int(present[0])}; active learning needs two "
                         "classes or more")
    missing = np.setdiff1d(np.arange(num_classes), present)
    if missing.size and not args.allow_missing_classes:
        shown = ", ".join(map(str, missing[:5])) + (", …" if missing.size > 5 else "")
        raise UsageError(f"--num-classes: {missing.size} of the {num_classes} classes have no point in {where}: "
                         f"class {shown}; they would enter the metrics as classes never predicted right. Give "
                         "--num-classes the classes the data has, or pass --allow-missing-classes if the pool "
                         "truly lacks them")
    _pool_schedule_checks(y, num_classes, args, seeds)

    # Every finished (strategy, seed) run is kept beside --out, so the same command run again (after an
    # interruption, or with more seeds) resumes: runs with the same settings and data are loaded.
    runs_dir = Path(args.out).with_name(Path(args.out).name + ".runs")
    data_meta = {"train_fingerprint": array_fingerprint(x, y), "test_fingerprint": array_fingerprint(tx, ty),
                 "num_classes": num_classes}
    frame = run_sweep(x, y, tx, ty, num_classes, strategies, seeds, initial_size=args.initial,
                      round_budget=args.budget, rounds=args.rounds, val_per_class=args.val_per_class,
                      probe=probe, dataset=Path(args.features).stem, progress=not getattr(args, "quiet", False),
                      out_dir=runs_dir, data_meta=data_meta, allow_missing_classes=args.allow_missing_classes)
    try:
        atomic_write(args.out, lambda tmp: frame.to_csv(tmp, index=False))
    except OSError as exc:   # checked before the sweep, yet the disk may fill: keep the rows somewhere
        fd, rescue = tempfile.mkstemp(prefix="alkit-run-", suffix=".csv")
        os.close(fd)
        frame.to_csv(rescue, index=False)
        raise UsageError(f"--out: cannot write {args.out} ({exc.strerror or exc}); the {len(frame)} rows were "
                         f"saved to {rescue} instead") from None
    print(f"wrote {len(frame)} rows -> {args.out} (each run kept in {runs_dir}/: the same command resumes)")
    print(run_summary(frame))
    return 0


def run_summary(frame) -> str:
    """A few lines saying which strategy did better: per strategy the final top-1 and, when random
    ran too, the area under the top-1 curve minus random's, paired by seed, with its 95 % interval."""
    from alkit.report import summary_table

    table = summary_table(frame.assign(dataset="run"))
    lines = ["strategy            seeds  final top-1  Δ AUC vs random [95 %]"]
    for r in table.itertuples(index=False):
        diff = ("(baseline)" if r.strategy == "random" else "" if not np.isfinite(r.auc_diff) else
                f"{r.auc_diff:+.4f} [{r.auc_diff_low:+.4f}, {r.auc_diff_high:+.4f}] {r.outcome}")
        lines.append(f"{r.strategy:<19} {r.seeds:>5}  {r.final_top1:>11.4f}  {diff}")
    if "random" not in set(table["strategy"]):
        lines.append("(add random to --strategies for the difference from random)")
    return "\n".join(lines)
