"""The README is a user's guide whose numbers come from the generated tables."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
TABLES = REPO / "results" / "tables"


def markdown_table(text: str, first_header: str) -> list[list[str]]:
    """Body rows (cells stripped) of the first Markdown table whose header starts with ``first_header``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            rows = []
            for body in lines[i + 2:]:
                if not body.startswith("|"):
                    break
                rows.append([c.strip() for c in body.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"README has no table headed {first_header!r}")


def test_readme_is_a_short_users_guide_without_logs():
    assert len(README) <= 15_000, len(README)
    assert "<!--" not in README, "an unfilled placeholder is left in the README"
    assert not re.search(r"load average|\bissue \d|\bcommit [0-9a-f]{7}", README, re.I)


def test_readme_claims_table_matches_the_generated_verdicts():
    rows = markdown_table(README, "claim")
    changes = pd.read_csv(TABLES / "claims_change.csv").set_index("claim")
    assert [int(r[0][0]) for r in rows] == list(changes.index)
    for row in rows:
        claim = int(row[0][0])
        assert row[1].strip("*") == changes.loc[claim, "verdict_logreg"], row
        assert row[2] == changes.loc[claim, "verdict_adam"], row


def _interval(cell: str) -> tuple[float, float, float]:
    mean, low, high = (float(v) for v in re.findall(r"[-+]\d+\.\d+", cell))
    return mean, low, high


def test_readme_differences_from_random_match_the_summary():
    summary = pd.read_csv(TABLES / "summary.csv").set_index(["dataset", "strategy"])
    rows = markdown_table(README, "Δ AUC vs random [95 %]")
    header = next(line for line in README.splitlines() if line.startswith("| Δ AUC vs random [95 %]"))
    datasets = [c.strip() for c in header.strip().strip("|").split("|")][1:]
    assert rows
    for row in rows:
        strategy = row[0].strip("`")
        for dataset, cell in zip(datasets, row[1:]):
            mean, low, high = _interval(cell)
            want = summary.loc[(dataset, strategy)]
            assert (mean, low, high) == pytest.approx((want["auc_diff"], want["auc_diff_low"], want["auc_diff_high"]),
                                                      abs=6e-5), (dataset, strategy)


@pytest.mark.slow
def test_readme_python_examples_run_as_written():
    """Every ```python block of the README, in order, on small stand-ins for the reader's arrays."""
    import numpy as np

    from alkit.data.synthetic import gaussian_mixture
    from alkit.strategies.registry import _REGISTRY

    data = gaussian_mixture(1000, 30, 12, separation=3.0, seed=0, n_test_per_class=2)
    labels = np.full(data.train_labels.size, -1)
    labels[::2] = data.train_labels[::2]                      # half labelled: 15 per class
    namespace = {"features": data.train_features.astype(np.float16), "labels": labels,
                 "val_features": data.test_features, "val_labels": data.test_labels}
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    before = set(_REGISTRY)
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)   # noqa: S102 - the README's own examples
    finally:
        for name in set(_REGISTRY) - before:   # the example registers a strategy: leave the registry as found
            _REGISTRY.pop(name)
    picks = namespace["picks"]
    assert len(set(picks.tolist())) == len(picks) and (labels[picks] == -1).all()


@pytest.mark.slow
def test_readme_image_folder_walk_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's shell lines from a folder of images to to_label.csv, with MY_PHOTOS and ENTRY
    filled in (and the user's labelling step done by the test)."""
    import shlex

    import numpy as np
    import pandas as pd
    from PIL import Image

    from alkit.cli import main as alkit_main

    block = next(b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if "--dataset images" in b)
    commands = [shlex.split(line.split("#")[0]) for line in block.splitlines() if line.startswith("python -m alkit")]
    assert [c[3] for c in commands] == ["features", "select", "select"]
    photos = tmp_path / "photos"
    photos.mkdir()
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    rng = np.random.default_rng(1)
    truth = {}
    for i in range(240):
        name = list(colours)[i % 3]
        pixels = np.clip(np.array(colours[name])[None, None] + rng.normal(0, 30, (32, 32, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(photos / f"p{i:03d}.png")
        truth[f"p{i:03d}.png"] = name
    monkeypatch.setenv("ALKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    entry = None
    for argv in commands:
        argv = [str(photos) if a == "MY_PHOTOS" else (entry or a) if a == "ENTRY" else a for a in argv[3:]]
        if "--labels" in argv:   # the user labels the first batch: labels.csv with lines path,label
            first = pd.read_csv(tmp_path / "to_label_1.csv")
            pd.DataFrame({"path": first["path"], "label": [truth[p] for p in first["path"]]}).to_csv(
                tmp_path / "labels.csv", index=False)
        assert alkit_main(argv) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        if argv[0] == "features":
            entry = next(line.split()[1] for line in out.splitlines() if line.startswith("entry:"))
    picks = pd.read_csv(tmp_path / "to_label_2.csv")
    assert len(picks) == 100 and set(picks.columns) == {"rank", "index", "path"}
    assert not set(picks["path"]) & set(pd.read_csv(tmp_path / "labels.csv")["path"])


def test_readme_mechanism_numbers_match_the_parts_table():
    parts = pd.read_csv(TABLES / "mechanism_parts.csv")
    parts = parts[parts["schedule"].isin(["paper", "cpu"])].set_index(["strategy", "data", "part"])
    rows = markdown_table(README, "S on")
    header = next(line for line in README.splitlines() if line.startswith("| S on"))
    columns = {"gain over random": "total", "class composition": "composition", "choice within classes":
               "within_classes", "balancing its scores": "balancing_gain"}
    names = [c.strip() for c in header.strip().strip("|").split("|")][1:]
    assert {columns[n.split(":")[0].strip()] for n in names} >= {"total", "composition", "within_classes"}
    assert len(rows) >= 6
    for row in rows:
        strategy, data = (p.strip().strip("`") for p in row[0].split(",", 1))
        for name, cell in zip(names, row[1:]):
            mean, low, high = _interval(cell)
            want = parts.loc[(strategy, data, columns[name.split(":")[0].strip()])]
            assert (mean, low, high) == pytest.approx((want["mean"], want["lo"], want["hi"]), abs=6e-5), (row[0], name)


#: A measured time or speed-up: "12.3 s", "4 min", "250 ms", "5.5×" (numbers of the pool's design,
#: like N = 1,281,167 or 2048 dimensions, are no measurement).
MEASURED = re.compile(r"\b\d[\d,.]*\s?(?:(?:s|ms|min|h)(?![\w-])|×(?!\s?\d))")


def prose(text: str) -> str:
    """``text`` without its fenced code blocks (commands may carry numbers as flags)."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


@pytest.mark.parametrize("page", ["docs/scale.md", "results/benchmarks/README.md"])
def test_pages_that_summarise_benchmarks_copy_no_measured_number(page):
    # A measured number has one home, its generated page: these two link to those pages.
    found = MEASURED.findall(prose((REPO / page).read_text()))
    assert not found, f"{page} copies measured numbers {found[:5]}: link the benchmark page instead"


def test_the_measured_number_pattern_catches_what_it_should():
    assert MEASURED.findall("took 94.9 s, 109.3 s and 2.5 min, 5.5× and 250 ms") == ["94.9 s", "109.3 s", "2.5 min",
                                                                                  "5.5×", "250 ms"]
    assert not MEASURED.findall("N = 1,281,167, D = 2048, 4,096 rows, 16 MB, `--sizes 1281167`, 10 k picks, "
                                "GEMMs of 256 × 2048 × 1000")
