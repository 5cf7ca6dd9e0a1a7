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
# # (f) Playground: your own strategy on real features
#
# By default a small sample of real features that ships with alkit (`alkit/data`, 8 MB: the
# EfficientNet-Lite0 features of 40 Tiny-ImageNet classes, 60 pool and 20 test images each), so
# it runs in about a minute on a fresh clone with no data set and no extraction. Run two registered
# strategies, then write a new strategy as a plain function `(pool, budget, rng) -> indices` in a
# cell and swap it in — no registration needed: anywhere a strategy name is accepted, a function is
# accepted too. Set `DATASET` to a data set of the sweep (`cifar10`, `tiny-imagenet`, …) to run on
# its cached features at `SCALE`. Nothing here is written to `results/`.

# %% tags=["parameters"]
DATASET = "tiny-imagenet-sample"       # the shipped sample; or cifar10, tiny-imagenet, cifar10-lt
SCALE = "smoke"                        # for a sweep data set: smoke (a slice, seconds) or cpu
BACKBONE = "efficientnet_lite0"
STRATEGIES = ["random", "margin"]      # the two to compare first
SEEDS = [0, 1, 2, 3, 4]
ROUNDS = None                          # None: the schedule's rounds
SOURCE = "auto"                        # for a sweep data set: cached real features when present
DATA_ROOT = None
FIGURES_DIR = "notebooks/executed/f_playground/figures"  # the playground's figures stay out of results/

# %%
import numpy as np
import pandas as pd

from alkit import experiment, plots, report

from alkit.experiments import samples
from alkit.probe import ProbeConfig
from alkit.scores import margin_scores

# papermill -p passes strings: lists are read here (or refused with the form that works)
STRATEGIES = report.list_parameter(STRATEGIES, "STRATEGIES")
SEEDS = report.list_parameter(SEEDS, "SEEDS", int)

if DATASET == "tiny-imagenet-sample":
    data = samples.load_sample()
    schedule = dict(samples.SAMPLE_SCHEDULE, rounds=ROUNDS or samples.SAMPLE_SCHEDULE["rounds"])
    probe, caveat = ProbeConfig(), ("Tiny-ImageNet images: the ImageNet-pretrained backbone has seen many of "
                                    "them in its supervised training.")
else:
    data = experiment.load_study_data(DATASET, SCALE, source=SOURCE, data_root=DATA_ROOT, backbone=BACKBONE)
    config = experiment.sweep_config(DATASET, SCALE, rounds=ROUNDS)
    schedule = {"initial_size": config.initial_size, "round_budget": config.round_budget, "rounds": config.rounds,
                "val_per_class": config.val_per_class}
    probe, caveat = config.probe, ""
print(data.label, data.train_features.shape, "pool,", data.test_features.shape, "test;", schedule)


def run(strategies):
    """The schedule for these strategies and SEEDS (kept in memory)."""
    return experiment.run_sweep(
        data.train_features, data.train_labels, data.test_features, data.test_labels, data.num_classes,
        strategies, SEEDS, **schedule, probe=probe, dataset=DATASET, data_source=data.source, progress=False)


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

# %% [markdown]
# Each strategy minus random, paired by seed. On a pool of 2,400 points with 800 test images, five
# seeds resolve differences of a few points at best: the sweep behind the paper's claims uses
# 10,000 test images and 5–10 seeds because the real effects are fractions of a point.

# %%
figures = report.resolve_path(FIGURES_DIR)
titles = {DATASET: data.label}
note = report.figure_note(rows) + (f"\n{caveat}" if caveat else "")
fig = plots.by_dataset(rows, lambda sub, ax, t: plots.plot_difference_from_random(sub, "top1", ax, title=t),
                       [DATASET], titles, width=7)
plots.stamp(fig, note)
plots.save_figure(fig, figures / "f_playground")

# %% [markdown]
# How balanced are the labelled sets the strategies build? (true labels; 1 = as many of each class,
# the balance random sampling reaches by chance)

# %%
fig = plots.by_dataset(rows, lambda sub, ax, t: plots.plot_metric(sub, "labeled_normalized_entropy", ax, title=t),
                       [DATASET], titles, width=7)
plots.stamp(fig, note)
plots.save_figure(fig, figures / "f_playground_balance")
