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
# # (d) ImageNet linear evaluation at the paper's schedule
#
# The paper's main setting: a linear head on frozen features of ImageNet-1k's 1.28 M training
# images, 30 k random labels to start, then 8 rounds of 10 k (30 and 10 per class).
#
# * With your own ImageNet copy: `DATASET = "imagenet"`, `DATA_ROOT` = its folder (train/ and val/),
#   `BACKBONE = "moco_v2_resnet50"` with the authors' checkpoint, `SCALE = "paper"` — on a GPU.
# * Without it (this machine, CI): `DATASET = "imagenet-synthetic"`, a **synthetic** pool of
#   ImageNet's shape (alkit.data.imagenet_pool: confusable superclasses, ImageNet's class-size spread,
#   ambiguous points). At `SCALE = "cpu"` it is reduced (100 classes, 512-d) with the paper's
#   per-class budgets; `SCALE = "paper"` uses the full 1.28 M × 2048 × 1000 pool and 30 k + 8 × 10 k.
#   Every figure says when the data are synthetic.

# %% tags=["parameters"]
SCALE = "cpu"
DATASET = "imagenet-synthetic"         # "imagenet" with your own copy (DATA_ROOT) and backbone
BACKBONE = "efficientnet_lite0"        # paper: "moco_v2_resnet50" (needs its checkpoint)
STRATEGIES = None                      # cpu: the score-based strategies + baselines
SEEDS = None
ROUNDS = None
INITIAL_SIZE = None                    # paper: 30_000
ROUND_BUDGET = None                    # paper: 10_000
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
figures = report.output_dir(FIGURES_DIR, "d_imagenet_linear_eval", "figures")
title = report.dataset_titles(rows)[DATASET]
synthetic = rows["data_source"].str.contains("synthetic", case=False).any()
banner = "SYNTHETIC ImageNet-shaped pool — not ImageNet data" if synthetic else "ImageNet-1k"

# %% [markdown]
# ## Top-1 against labels

# %%
fig = plots.by_dataset(rows, lambda sub, ax, t: plots.plot_metric(sub, "top1", ax, title=t), [DATASET],
                       {DATASET: title}, width=7, suptitle=banner)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "d_imagenet_accuracy")

# %% [markdown]
# ## Difference from random (paired by seed)

# %%
fig = plots.by_dataset(rows, lambda sub, ax, t: plots.plot_difference_from_random(sub, "top1", ax, title=t),
                       [DATASET], {DATASET: title}, width=7, suptitle=banner)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "d_imagenet_difference_from_random")

# %% [markdown]
# ## Balance of each queried batch

# %%
queried = rows[rows["round"] > 0]
fig = plots.by_dataset(queried, lambda sub, ax, t: plots.plot_metric(sub, "batch_normalized_entropy", ax, x="round",
                                                                     title=t),
                       [DATASET], {DATASET: title}, width=7, suptitle=banner)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "d_imagenet_batch_balance")
