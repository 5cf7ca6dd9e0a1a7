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
# # (g) The class-count experiment: does the number of classes alone undo active learning?
#
# The paper explains its first claim by a mechanism: with many classes, active learners pick
# class-imbalanced batches, and that is why results on a 10-class toy data set do not carry over
# to ImageNet. CIFAR-10 against Tiny-ImageNet changes the images, their resolution and the number
# of classes at once. Here only the number of classes K changes: Tiny-ImageNet restricted to K of
# its 200 classes (a random subset drawn per seed), the paper's per-class budgets (30 per class
# initial, 10 per class per round, 8 rounds, 50 per class validation), the same frozen
# EfficientNet-Lite0 features and the same converged linear probe. K = 200 is the Tiny-ImageNet
# sweep itself.
#
# For each K and strategy: the area under the top-1 curve minus random's, paired by seed, with its
# 95 % t-interval; and the balance of the queried batches (true labels), averaged over rounds and
# seeds: normalised class entropy (1 = balanced), max/min class count (with one pseudo-count per
# class, so that a class the batch missed gives a large but finite ratio), and KL divergence from
# the pool's class distribution.

# %% tags=["parameters"]
SCALE = "cpu"                               # smoke | cpu
RUNS_DIR = "results/runs/class-count"       # runs with K < 200 classes
SWEEP_DIR = "results/runs/cpu"              # the cpu sweep, whose Tiny-ImageNet runs are K 200
FIGURES_DIR = None   # None: notebooks/executed/<notebook>/figures; results/figures only when asked
TABLES_DIR = None    # None: notebooks/executed/<notebook>/tables; results/tables only when asked
RUN_MISSING = False                         # True: run what is not finished yet (minutes per K)
JOBS = 1
CLASS_COUNTS = None                         # None: the scale's (10, 25, 50, 100, 200 at cpu)
STRATEGIES = None
SEEDS = None
SOURCE = "auto"
DATA_ROOT = None

# %%
import pandas as pd

from alkit.experiments import class_count

# papermill -p passes strings: lists are read here (or refused with the form that works)

from alkit import plots, report
CLASS_COUNTS = report.list_parameter(CLASS_COUNTS, "CLASS_COUNTS", int)
STRATEGIES = report.list_parameter(STRATEGIES, "STRATEGIES")
SEEDS = report.list_parameter(SEEDS, "SEEDS", int)

smoke = SCALE == "smoke"
counts = CLASS_COUNTS or (class_count.SMOKE["class_counts"] if smoke else class_count.CLASS_COUNTS)
strategies = STRATEGIES or (class_count.SMOKE["strategies"] if smoke else class_count.STRATEGIES)
seeds = SEEDS or (class_count.SMOKE["seeds"] if smoke else class_count.SEEDS)
per_class = class_count.SMOKE["per_class"] if smoke else class_count.PER_CLASS
runs_dir, sweep_dir = report.resolve_path(RUNS_DIR), report.resolve_path(SWEEP_DIR)
if RUN_MISSING:
    class_count.run_class_count(runs_dir, sweep_dir, scale=SCALE, class_counts=counts, strategies=strategies,
                                seeds=seeds, per_class=per_class, jobs=JOBS, source=SOURCE, data_root=DATA_ROOT)
rows = class_count.load_class_count(runs_dir, sweep_dir, scale=SCALE, class_counts=counts, strategies=strategies,
                                    seeds=seeds)
table = class_count.class_count_table(rows)
figures = report.output_dir(FIGURES_DIR, "g_class_count", "figures")
tables = report.output_dir(TABLES_DIR, "g_class_count", "tables")
report.write_table(table, tables / "class_count", "Class-count experiment: Tiny-ImageNet restricted to K classes")
pd.set_option("display.width", 200)
table[["num_classes", "strategy", "seeds", "auc_diff", "auc_diff_lo", "auc_diff_hi", "outcome", "batch_entropy",
       "batch_max_min_ratio_plus1", "batch_kl_from_pool"]]

# %% [markdown]
# ## Gain over random and batch imbalance against the number of classes

# %%
import matplotlib.pyplot as plt

judged = table[table["strategy"] != "random"]
fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
plots.plot_against_classes(judged, "auc_diff", axes[0], "auc_diff_lo", "auc_diff_hi", zero_line=True,
                           ylabel="Δ area under top-1 curve vs random", title="Gain over random (95 % interval)")
plots.plot_against_classes(table, "batch_max_min_ratio_plus1", axes[1], logy=True,
                           ylabel="queried batch: (max + 1) / (min + 1) class count", title="Batch imbalance")
plots.plot_against_classes(table, "batch_kl_from_pool", axes[2],
                           ylabel="queried batch: KL from pool class distribution (nats)", title="Batch imbalance (KL)")
handles, labels = axes[1].get_legend_handles_labels()
fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
fig.tight_layout()
note = (f"Tiny-ImageNet restricted to K classes (random subset per seed), EfficientNet-Lite0 features, "
        f"{per_class['initial']}/class initial + {per_class['round_budget']}/class × {per_class['rounds']} rounds; "
        f"{report.count_range(table['seeds'])} seeds per point; differences paired by seed.")
if "synthetic" in " ".join(rows["data_source"].astype(str)).lower():
    note = "SYNTHETIC DATA (stand-in): not a measurement. " + note
plots.stamp(fig, note)
plots.save_figure(fig, figures / "g_class_count")

# %% [markdown]
# ## Cost
# The wall time of the runs behind this table (appended by every class-count sweep):

# %%
times = report.sweep_times(runs_dir)
if not times.empty:
    report.write_table(times, tables / "class_count_sweep_times", "Class-count sweeps that wrote these runs (wall time)")
times
