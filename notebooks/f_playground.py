# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # (f) Playground: your own strategy on cached features
#
# Load the cached features of a data set, run two registered strategies, then write a new
# strategy as a plain function `(pool, budget, rng) -> indices` in a cell and swap it in — no
# registration needed: anywhere a strategy name is accepted, a function is accepted too.
# Nothing here is written to `results/`.

# %% tags=["parameters"]
SCALE = "smoke"                        # smoke: a small slice, seconds; cpu: the full schedule
DATASET = "cifar10"
BACKBONE = "efficientnet_lite0"
STRATEGIES = ["random", "margin"]      # the two to compare first
SEEDS = [0, 1]
ROUNDS = None                          # None: the scale's rounds
SOURCE = "auto"                        # auto: cached real features when ../shared/data is there
DATA_ROOT = None
FIGURES_DIR = "notebooks/executed/figures"  # playground figures stay out of results/

# %%
import numpy as np
import pandas as pd

from alkit import experiment, plots, report
from alkit.scores import margin_scores

data = experiment.load_study_data(DATASET, SCALE, source=SOURCE, data_root=DATA_ROOT, backbone=BACKBONE)
config = experiment.sweep_config(DATASET, SCALE, seeds=SEEDS, rounds=ROUNDS)
print(data.label, data.train_features.shape, "pool,", data.test_features.shape, "test")


def run(strategies):
    """The configured schedule for these strategies (kept in memory)."""
    return experiment.run_sweep(
        data.train_features, data.train_labels, data.test_features, data.test_labels, data.num_classes,
        strategies, config.seeds, initial_size=config.initial_size, round_budget=config.round_budget,
        rounds=config.rounds, val_per_class=config.val_per_class, probe=config.probe, dataset=DATASET,
        data_source=data.source, progress=False)


rows = run(STRATEGIES)
rows.groupby(["strategy", "n_labeled"])["top1"].mean().unstack(0)

# %% [markdown]
# ## A new strategy, in one cell
# Margin sampling, but with at most ⌈b / C⌉ picks per *predicted* class: a home-made balanced
# margin (it never reads a true label of an unlabelled point). Edit it and run the cells below.

# %%
def margin_per_predicted_class(pool, budget, rng):
    """Smallest margins, at most ceil(budget / C) per predicted class, the rest by plain margin."""
    idx = pool.eligible_indices()
    logits = pool.logits_of(idx)
    margins = margin_scores(logits) + 1e-9 * rng.random(idx.size)   # seeded tie-breaking
    predicted = logits.argmax(axis=1)
    cap = -(-budget // pool.num_classes)
    order = np.argsort(margins, kind="stable")
    taken, per_class = [], np.zeros(pool.num_classes, int)
    for i in order:
        if per_class[predicted[i]] < cap:
            taken.append(i)
            per_class[predicted[i]] += 1
            if len(taken) == budget:
                break
    if len(taken) < budget:                                       # fill up by margin
        rest = np.setdiff1d(order, taken, assume_unique=True)
        taken.extend(rest[np.argsort(margins[rest], kind="stable")][: budget - len(taken)])
    return idx[np.asarray(taken, dtype=np.int64)]


rows = pd.concat([rows, run([margin_per_predicted_class])], ignore_index=True)

# %% [markdown]
# ## Compare

# %%
figures = report.resolve_path(FIGURES_DIR)
fig = plots.by_dataset(rows, lambda sub, ax, t: plots.plot_difference_from_random(sub, "top1", ax, title=t),
                       [DATASET], report.dataset_titles(rows), width=7)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "f_playground")

# %%
fig = plots.by_dataset(rows[rows["round"] > 0],
                       lambda sub, ax, t: plots.plot_metric(sub, "batch_normalized_entropy", ax, x="round", title=t),
                       [DATASET], report.dataset_titles(rows), width=7)
plots.save_figure(fig, figures / "f_playground_batch_balance")
