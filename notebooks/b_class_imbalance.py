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
# # (b) Class imbalance of what active learners pick: toy vs many-class
#
# The paper's mechanism: with many classes, uncertainty-based learners pick class-imbalanced
# batches, and that is why they fail there. Imbalance is measured on the true labels of the
# labelled set (after each round) and of each queried batch, by the normalised class entropy
# (1 = perfectly balanced) and the KL divergence of the batch's class distribution from the pool's.
# The last panel puts the two together: each strategy's mean batch balance against its
# difference from random (area under the accuracy curve, paired by seed).

# %% tags=["parameters"]
SCALE = "cpu"                          # smoke | cpu | paper
DATASETS = ["cifar10", "tiny-imagenet"]
BACKBONE = "efficientnet_lite0"
STRATEGIES = None                      # None: every strategy of the scale
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
DATASETS = report.list_parameter(DATASETS, "DATASETS")
STRATEGIES = report.list_parameter(STRATEGIES, "STRATEGIES")
SEEDS = report.list_parameter(SEEDS, "SEEDS", int)

rows = experiment.results_for(
    DATASETS, SCALE, report.resolve_path(RESULTS_DIR), run_missing=RUN_MISSING, source=SOURCE,
    data_root=DATA_ROOT, backbone=BACKBONE, strategies=STRATEGIES, seeds=SEEDS, rounds=ROUNDS,
    initial_size=INITIAL_SIZE, round_budget=ROUND_BUDGET)
figures = report.output_dir(FIGURES_DIR, "b_class_imbalance", "figures")
titles = report.dataset_titles(rows)
queried = rows[rows["round"] > 0]      # round 0 is the random initial pool, not a query

# %% [markdown]
# ## Balance of the labelled set, round by round

# %%
fig = plots.by_dataset(rows, lambda sub, ax, title: plots.plot_metric(sub, "labeled_normalized_entropy", ax,
                                                                      title=title), DATASETS, titles)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "b_labelled_set_balance")

# %% [markdown]
# ## Balance of each queried batch

# %%
fig = plots.by_dataset(queried, lambda sub, ax, title: plots.plot_metric(sub, "batch_normalized_entropy", ax,
                                                                         x="round", title=title), DATASETS, titles)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "b_batch_balance")

# %% [markdown]
# ## How far each batch's classes are from the pool's (KL, nats)

# %%
fig = plots.by_dataset(queried, lambda sub, ax, title: plots.plot_metric(sub, "batch_kl_from_pool", ax,
                                                                         x="round", title=title), DATASETS, titles)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "b_batch_kl_from_pool")

# %% [markdown]
# ## Balance against benefit
# One point per strategy: mean batch entropy (x) against the paired difference from random in the
# area under the accuracy curve (y, with its 95 % interval).

# %%
summary = report.summary_table(rows)
fig = plots.by_dataset(summary, lambda sub, ax, title: plots.plot_balance_vs_benefit(sub, ax, title=title),
                       DATASETS, titles)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "b_balance_vs_benefit")
