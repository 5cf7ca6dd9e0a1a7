"""From a folder of images to the list of images to label next.

A feature-cache entry (``python -m alkit features --dataset images --root FOLDER``) records each
row's image path (:attr:`alkit.data.features.FeatureSet.paths`).  The labels you have are a CSV of
``path,label`` lines (the class as a name); rows it does not list are unlabelled.  The picks come
back as a CSV of ``rank,index,path``: rank 1 is the strategy's first pick (for the score-based
strategies, the most informative point).

    entry = alkit.data.features.load_feature_set(ENTRY_DIR)
    labels, classes = read_labels_csv("labels.csv", entry.paths)
    pool = alkit.make_pool(entry.features, labels, len(classes), fit_head=True)
    write_picks_csv("to_label.csv", alkit.select(pool, "base", 100, seed=0), entry.paths)
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from alkit.io import atomic_write


def read_labels_csv(path: str | Path, paths: Sequence[str] | None, argument: str = "labels"
                    ) -> tuple[np.ndarray, list[str]]:
    """(labels with -1 for rows the CSV does not list, class names in label order: sorted).

    The CSV has a header ``path,label``; ``path`` as in the feature cache (relative to the folder
    the images were read from), ``label`` the class name.  A path listed twice with two classes,
    a path not in the pool, or a missing column raise a ValueError naming ``argument``."""
    if paths is None:
        raise ValueError(f"{argument}: a labels CSV needs the pool's image paths; pass a feature-cache entry "
                         "(which records them) as the features, or give labels as an .npy")
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:   # -sig: a spreadsheet's byte-order mark
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{argument}: cannot read {path} as CSV ({exc})") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise ValueError(f"{argument}: {path} must have a header `path,label` and one line per labelled image")
    row_of = {p: i for i, p in enumerate(paths)}
    given: dict[int, str] = {}
    for line, row in enumerate(rows, start=2):
        name, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if name not in row_of:
            raise ValueError(f"{argument}: line {line} of {path} names {name!r}, which is not an image of the pool "
                             f"(paths are relative, e.g. {paths[0]!r})")
        if not label:
            raise ValueError(f"{argument}: line {line} of {path} gives no label for {name!r}")
        if given.get(row_of[name], label) != label:
            raise ValueError(f"{argument}: {name!r} is labelled twice, as {given[row_of[name]]!r} and {label!r}")
        given[row_of[name]] = label
    classes = sorted(set(given.values()))
    labels = np.full(len(paths), -1, np.int64)
    index = {c: k for k, c in enumerate(classes)}
    for row, label in given.items():
        labels[row] = index[label]
    return labels, classes


def picks_table(picks: np.ndarray, paths: Sequence[str] | None = None) -> pd.DataFrame:
    """``rank`` (1 = first pick), ``index`` (the pool row) and, when known, ``path`` of each pick."""
    picks = np.asarray(picks, np.int64)
    table = pd.DataFrame({"rank": np.arange(1, picks.size + 1), "index": picks})
    if paths is not None:
        table["path"] = [paths[i] for i in picks]
    return table


def write_picks_csv(out: str | Path, picks: np.ndarray, paths: Sequence[str] | None = None) -> Path:
    """The picks as ``rank,index[,path]`` lines, written atomically."""
    table = picks_table(picks, paths)
    return atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
