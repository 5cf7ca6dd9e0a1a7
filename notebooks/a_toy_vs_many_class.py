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
# # (a) Toy vs many-class data: accuracy, and the difference from random
#
# The paper's first claim: what works on CIFAR-10 (10 classes) need not work at ImageNet's 1000
# classes. Here CIFAR-10 stands beside Tiny-ImageNet-200 (200 ImageNet classes) at the paper's
# per-class ImageNet budgets (30 labels per class to start, 10 per class per round), both on frozen
# EfficientNet-Lite0 features with a linear probe refit each round (an L2-regularised logistic
# regression fit to convergence, its strength chosen on the validation split).
#
# Panels: test top-1 against labels; each strategy minus random, paired by seed (the same seed
# shares the validation split, the initial pool and the round-0 model), mean and 95 % interval.
# Oracle baselines (dashed) read true labels and are references, never real strategies.

# %% tags=["parameters"]
SCALE = "cpu"                          # smoke | cpu | paper (alkit.experiment.SCALES)
DATASETS = ["cifar10", "tiny-imagenet"]  # the toy data set beside the many-class one
BACKBONE = "efficientnet_lite0"        # frozen feature extractor (alkit.data.backbones)
STRATEGIES = None                      # None: every strategy of the scale; or a list of names
SEEDS = None                           # None: the scale's seeds (cpu: 0-4)
ROUNDS = None                          # None: the scale's rounds
INITIAL_SIZE = None                    # None: the scale's budgets (cpu: 1 k + 1 k/round; 6 k + 2 k/round)
ROUND_BUDGET = None
RESULTS_DIR = "results/runs/cpu"       # relative paths start at the repository root
FIGURES_DIR = None   # None: notebooks/executed/<notebook>/figures; results/figures only when asked
RUN_MISSING = False                    # True: run the sweeps first (finished runs are reused)
SOURCE = "auto"                        # auto | features | synthetic (the CI stand-in)
DATA_ROOT = None                       # folder with the archives (default $ALKIT_DATA or ../shared/data)

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
figures = report.output_dir(FIGURES_DIR, "a_toy_vs_many_class", "figures")
titles = report.dataset_titles(rows)
report.runs_inventory(rows)

# %% [markdown]
# ## Test accuracy against labelled points

# %%
fig = plots.by_dataset(rows, lambda sub, ax, title: plots.plot_metric(sub, "top1", ax, title=title),
                       DATASETS, titles)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "a_accuracy")

# %% [markdown]
# ## Difference from random (paired by seed)
# Above zero: the strategy beats random at that budget; the band is the 95 % interval over seeds.

# %%
fig = plots.by_dataset(rows, lambda sub, ax, title: plots.plot_difference_from_random(sub, "top1", ax, title=title),
                       DATASETS, titles)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "a_difference_from_random")
