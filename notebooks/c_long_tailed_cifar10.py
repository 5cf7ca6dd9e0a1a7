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
# # (c) Long-tailed CIFAR-10 (ρ = 0.1)
#
# The paper's imbalanced CIFAR-10: the training pool is cut with an exponential profile
# n_c = 5000·ρ^(c/9) (ρ = 0.1: 20,431 images, class 0 the largest), the test set stays balanced.
# When the pool itself is imbalanced, random sampling inherits the imbalance, and a learner that
# balances its picks can raise balanced accuracy. The linear probe uses class-weighted
# cross-entropy, as the authors' recipe for this setting.
#
# Panels: top-1; balanced accuracy (mean per-class recall); balanced accuracy minus random
# (paired by seed); balance of the labelled set.

# %% tags=["parameters"]
SCALE = "cpu"
DATASET = "cifar10-lt"                 # the long-tailed pool (alkit.experiment.DATASETS)
BACKBONE = "efficientnet_lite0"
STRATEGIES = None
SEEDS = None
ROUNDS = None
INITIAL_SIZE = None
ROUND_BUDGET = None
RESULTS_DIR = "results/runs/cpu"
FIGURES_DIR = None   # None: notebooks/executed/<notebook>/figures; results/figures only when asked
RUN_MISSING = False
SOURCE = "auto"
DATA_ROOT = None

# %%
from alkit import experiment, plots, report

# papermill -p passes strings: lists are read here (or refused with the form that works)
STRATEGIES = report.list_parameter(STRATEGIES, "STRATEGIES")
SEEDS = report.list_parameter(SEEDS, "SEEDS", int)

rows = experiment.results_for(
    [DATASET], SCALE, report.resolve_path(RESULTS_DIR), run_missing=RUN_MISSING, source=SOURCE,
    data_root=DATA_ROOT, backbone=BACKBONE, strategies=STRATEGIES, seeds=SEEDS, rounds=ROUNDS,
    initial_size=INITIAL_SIZE, round_budget=ROUND_BUDGET)
figures = report.output_dir(FIGURES_DIR, "c_long_tailed_cifar10", "figures")
title = report.dataset_titles(rows)[DATASET]
metrics = [("top1", "c_accuracy"), ("balanced_accuracy", "c_balanced_accuracy"),
           ("labeled_normalized_entropy", "c_labelled_set_balance")]

# %% [markdown]
# ## Top-1 accuracy (balanced test set)

# %%
fig = plots.by_dataset(rows, lambda sub, ax, t: plots.plot_metric(sub, "top1", ax, title=t), [DATASET],
                       {DATASET: title}, width=7)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "c_accuracy")

# %% [markdown]
# ## Balanced accuracy

# %%
fig = plots.by_dataset(rows, lambda sub, ax, t: plots.plot_metric(sub, "balanced_accuracy", ax, title=t), [DATASET],
                       {DATASET: title}, width=7)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "c_balanced_accuracy")

# %% [markdown]
# ## Balanced accuracy minus random (paired by seed)

# %%
fig = plots.by_dataset(rows, lambda sub, ax, t: plots.plot_difference_from_random(sub, "balanced_accuracy", ax,
                                                                                  title=t),
                       [DATASET], {DATASET: title}, width=7)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "c_balanced_accuracy_difference")

# %% [markdown]
# ## Balance of the labelled set (the pool itself has entropy well below 1)

# %%
fig = plots.by_dataset(rows, lambda sub, ax, t: plots.plot_metric(sub, "labeled_normalized_entropy", ax, title=t),
                       [DATASET], {DATASET: title}, width=7)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "c_labelled_set_balance")
