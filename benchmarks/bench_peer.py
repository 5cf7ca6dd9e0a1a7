"""alkit beside a general active-learning library: scikit-activeml, same pool, same labels, same head.

    .venv/bin/pip install -r benchmarks/requirements-peer.txt   # the peer (benchmark only)
    .venv/bin/python benchmarks/bench_peer.py                   # the default shapes; results/benchmarks/peer.*
    .venv/bin/python benchmarks/bench_peer.py --shapes 5000x64 --out /tmp/peer   # a quick look

Shapes: N × D, each with the strategies run on it (``20000x64:all``); by default 20 k × 64 and 100 k × 64
with every strategy, and 100 k × 2048 (ImageNet-sized features) with the deterministic ones, where
the peer's BADGE, TypiClust and ProbCover would take hours.

Pool: a Gaussian mixture (``alkit.data.synthetic.gaussian_mixture``) of N points in D dimensions and C
classes, sized so that the peer finishes; 1 % of it labelled at random; a budget of 500 picks.
Head: alkit's converged logistic regression on the labelled points; the peer's classifier is a
scikit-learn ``LogisticRegression`` fitted on the same points and then given alkit's weights and
bias, so both score the same probabilities (the peer in float64, alkit in float32).

Per strategy: wall time of a selection on each side (one process, alkit first, then the peer):
the fastest of three calls where a call takes under :data:`REPEAT_BELOW_S` seconds (so that
neither side's first-call costs or a busy moment decide a ratio of sub-second calls), else one
call; their ratio, and the overlap of the picks (|A ∩ B| / b).  Margin, least confidence, entropy
and CoreSet are deterministic: the overlap says whether they pick the same points (exact ties
aside).  BADGE draws at random on both sides (other streams: overlap is not expected).  TypiClust
and ProbCover are defined differently by the peer (noted on the page).  The peer's ProbCover holds
an N × N distance matrix: it runs at the smaller N only.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

#: A side whose first call takes less than this is called twice more, and its fastest call counts.
REPEAT_BELOW_S = 5.0


def fastest(fn) -> tuple[float, object]:
    """(seconds, result) of ``fn()``: its fastest of three calls if the first takes under
    :data:`REPEAT_BELOW_S`, else of one; the result is the first call's."""
    started = time.perf_counter()
    out = fn()
    times = [time.perf_counter() - started]
    while times[0] < REPEAT_BELOW_S and len(times) < 3:
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times), out

#: alkit's name -> (the peer's class, its options), in the order they run.
STRATEGIES = ("margin", "confidence", "entropy", "coreset", "badge", "typiclust", "probcover")
#: The deterministic ones: the same picks are expected on both sides.
DETERMINISTIC = ("margin", "confidence", "entropy", "coreset")
DEFAULT_SHAPES = "20000x64:all,100000x64:all,100000x2048:" + "+".join(DETERMINISTIC)


def parse_shapes(text: str) -> list[tuple[int, int, tuple[str, ...]]]:
    """``"20000x64:all,100000x2048:margin+coreset"`` → [(N, D, strategies), ...]."""
    shapes = []
    for item in text.split(","):
        size, _, names = item.partition(":")
        n, _, dim = size.partition("x")
        chosen = STRATEGIES if names in ("", "all") else tuple(names.split("+"))
        unknown = sorted(set(chosen) - set(STRATEGIES))
        if not n.isdigit() or not dim.isdigit() or unknown:
            raise SystemExit(f"--shapes: {item!r} is not N x D[:all | name+name...] (strategies: {', '.join(STRATEGIES)})")
        shapes.append((int(n), int(dim), chosen))
    return shapes
#: How the peer defines a method differently (the page says so beside its row).
DIFFERENCES = {
    "badge": "both draw k-means++ seeds on the gradient embeddings at random, from other random streams: "
             "the overlap is chance, the work the same",
    "typiclust": "the peer clusters with scikit-learn's KMeans (its own seeding, no fixed fit sample) and "
                 "measures typicality with its own neighbour count: other clusters, other picks",
    "probcover": "the peer chooses δ by its own search on the raw features (alkit: the purity rule on "
                 "unit-normalised rows), breaks gain ties by index and builds an N × N distance matrix",
}


def pool_and_head(n: int, dim: int, classes: int, labelled_share: float, seed: int = 0):
    """(features float32, labels with -1 for unlabelled, true labels, alkit pool with its head)."""
    import alkit
    from alkit.data.synthetic import gaussian_mixture

    data = gaussian_mixture(classes, n // classes, dim, separation=2.0, seed=seed)
    x = data.train_features.astype(np.float32)
    truth = data.train_labels
    rng = np.random.default_rng(seed + 1)
    labels = np.full(truth.size, -1, np.int64)
    chosen = rng.choice(truth.size, size=max(int(labelled_share * truth.size), 2 * classes), replace=False)
    labels[chosen] = truth[chosen]
    pool = alkit.make_pool(x, labels, classes, fit_head=True)
    return x, labels, truth, pool


def peer_classifier(x: np.ndarray, labels: np.ndarray, pool, classes: int):
    """A fitted peer classifier whose probabilities are alkit's head's (its weights copied in)."""
    from sklearn.linear_model import LogisticRegression
    from skactiveml.classifier import SklearnClassifier

    y = np.where(labels >= 0, labels, np.nan)
    clf = SklearnClassifier(LogisticRegression(max_iter=200), classes=np.arange(classes))
    clf.fit(x, y)
    clf.estimator_.coef_ = pool.weight.astype(np.float64)
    clf.estimator_.intercept_ = pool.bias.astype(np.float64)
    return clf, y


def run_peer(name: str, x, y, clf, budget: int, seed: int):
    from skactiveml.pool import Badge, CoreSet, ProbCover, TypiClust, UncertaintySampling

    methods = {"margin": "margin_sampling", "confidence": "least_confident", "entropy": "entropy"}
    if name in methods:
        return UncertaintySampling(method=methods[name], random_state=seed).query(x, y, clf, fit_clf=False,
                                                                                 batch_size=budget)
    if name == "coreset":
        return CoreSet(random_state=seed).query(x, y, batch_size=budget)
    if name == "badge":
        return Badge(random_state=seed).query(x, y, clf, fit_clf=False, batch_size=budget)
    if name == "typiclust":
        return TypiClust(random_state=seed).query(x, y, batch_size=budget)
    return ProbCover(random_state=seed).query(x, y, batch_size=budget)


def measure(n: int, dim: int, classes: int, budget: int, seed: int, peer_max_n_probcover: int,
            strategies: tuple[str, ...] = STRATEGIES) -> dict:
    import alkit

    x, labels, truth, pool = pool_and_head(n, dim, classes, 0.01)
    clf, y = peer_classifier(x, labels, pool, classes)
    # Warm both sides up (imports, first-call set-up) on one pick, untimed.
    alkit.select(pool, "margin", 1, seed)
    run_peer("margin", x, y, clf, 1, seed)
    rows = {}
    for name in strategies:
        ours_s, ours = fastest(lambda: alkit.select(pool, name, budget, seed))
        if name == "probcover" and n > peer_max_n_probcover:
            rows[name] = {"alkit_s": ours_s, "peer_s": None, "note": f"peer not run: N × N = {n:,}² distances"}
            continue
        peer_s, theirs = fastest(lambda: run_peer(name, x, y, clf, budget, seed))
        theirs = np.asarray(theirs, np.int64)
        overlap = len(set(ours.tolist()) & set(theirs.tolist())) / budget
        rows[name] = {"alkit_s": ours_s, "peer_s": peer_s, "speedup": peer_s / max(ours_s, 1e-9),
                      "overlap": overlap, "peer_unique": int(np.unique(theirs).size)}
        print(f"N={n:,} D={dim} {name}: alkit {ours_s:.2f} s, peer {peer_s:.2f} s, overlap {overlap:.3f}", flush=True)
    return {"n": n, "dim": dim, "classes": classes, "budget": budget, "labelled": int((labels >= 0).sum()),
            "rows": rows}


def page(results: list[dict], info: dict, command: str) -> str:
    import skactiveml

    lines = ["# alkit beside scikit-activeml: same pool, same labels, same head", "",
             f"Command: `{command}`; scikit-activeml {skactiveml.__version__}; machine: {info['cpu']}, "
             f"{info['cpu_count']} cores, torch threads {info['torch_threads']}, load {info['loadavg'][0]:.2f}.",
             f"Per side the fastest of three selections where one takes under {REPEAT_BELOW_S:g} s, else one; "
             "one process; overlap = |alkit ∩ peer| / b.", ""]
    for r in results:
        lines += [f"## N = {r['n']:,}, D = {r['dim']}, C = {r['classes']}, {r['labelled']} labelled, "
                  f"b = {r['budget']}", "", "| strategy | alkit | scikit-activeml | peer / alkit | overlap |",
                  "|---|---|---|---|---|"]
        for name, row in r["rows"].items():
            if row.get("peer_s") is None:
                lines.append(f"| {name} | {M.fmt_seconds(row['alkit_s'])} | {row['note']} | | |")
                continue
            lines.append(f"| {name} | {M.fmt_seconds(row['alkit_s'])} | {M.fmt_seconds(row['peer_s'])} | "
                         f"{row['speedup']:.1f}× | {row['overlap']:.3f} |")
        lines.append("")
    lines += ["Where the peer defines a method differently:", ""]
    lines += [f"- **{name}**: {text}." for name, text in DIFFERENCES.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default=DEFAULT_SHAPES,
                        help="N x D[:strategies], comma-separated; strategies 'all' or joined by '+'")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probcover-max-n", type=int, default=20_000,
                        help="largest N at which the peer's ProbCover (an N × N matrix) is run")
    parser.add_argument("--out", default=str(M.RESULTS / "peer"), help="stem of the .json and .md written")
    args = parser.parse_args(argv)
    info = M.machine()
    results = [measure(n, dim, args.classes, args.budget, args.seed, args.probcover_max_n, names)
               for n, dim, names in parse_shapes(args.shapes)]
    command = M.command(__file__, argv)
    M.save(Path(args.out), {"command": command, "machine": info, "results": results},
           page(results, info, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
