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
# # (i) The mechanism: is class imbalance *why* uncertainty sampling stops working at many classes?
#
# Notebook g shows that confidence, margin and entropy lose their gain over random as the number of
# classes K grows, at the same per-class budgets. The paper says this happens *because* their
# batches are class-imbalanced. Here class balance and class composition are knobs, for each
# uncertainty strategy S:
#
# * **`S_class_matched`** (an oracle control): S's batch, its *true*-class counts, and then that many
#   points drawn at random from each class. It keeps S's class composition and drops S's choice
#   within classes.
# * **`S_balanced`** (a real strategy): S's scores with per-class quotas ⌊b/C⌋ on the *predicted*
#   class.
#
# Paired by seed, S's gain over random splits exactly into **class composition**
# (`S_class_matched` − random) and **choice within classes** (S − `S_class_matched`).
# `S_balanced` − S asks whether the same scores do better with balanced batches. If imbalance is the
# cause, at K = 200 the composition part is negative and balancing recovers the loss. Two other
# explanations get their own checks: **labels per class** (half, the paper's 30 + 8 × 10, and double
# the per-class schedule, at K = 10 and K = 200) and **the toy data set** itself (CIFAR-10 with the
# same wrappers). Claim 1's verdict (notebook e) is judged on these numbers.

# %% tags=["parameters"]
SCALE = "cpu"                               # smoke | cpu
RUNS_DIR = "results/runs/mechanism"         # this experiment's own runs
CLASS_COUNT_DIR = "results/runs/class-count"   # the class-count runs it shares (plain strategies)
SWEEP_DIR = "results/runs/cpu"              # the cpu sweep it shares (all 200 classes, and CIFAR-10)
FIGURES_DIR = None   # None: notebooks/executed/<notebook>/figures; results/figures only when asked
TABLES_DIR = None    # None: notebooks/executed/<notebook>/tables; results/tables only when asked
RUN_MISSING = False                         # True: run what is not finished yet
JOBS = 1
SOURCE = "auto"
DATA_ROOT = None

# %%
import pandas as pd

from alkit.experiments import mechanism


from alkit import plots, report
runs_dir, class_count_dir, sweep_dir = (report.resolve_path(p) for p in (RUNS_DIR, CLASS_COUNT_DIR, SWEEP_DIR))
if RUN_MISSING:
    mechanism.run_mechanism(runs_dir, class_count_dir, sweep_dir, scale=SCALE, jobs=JOBS, source=SOURCE,
                            data_root=DATA_ROOT)
rows = mechanism.load_mechanism(runs_dir, class_count_dir, sweep_dir, scale=SCALE)
table = mechanism.mechanism_table(rows)
parts = mechanism.parts_table(rows)
evidence = mechanism.claim1_evidence(rows)
figures = report.output_dir(FIGURES_DIR, "i_mechanism", "figures")
tables = report.output_dir(TABLES_DIR, "i_mechanism", "tables")
report.write_table(table, tables / "mechanism", "Mechanism experiment: Δ AUC vs random and batch balance per cell")
report.write_table(parts, tables / "mechanism_parts", "Mechanism experiment: the parts of each uncertainty "
                   "strategy's gain over random (paired by seed)")
pd.set_option("display.width", 200)
table[["data", "strategy", "seeds", "auc_diff", "auc_diff_lo", "auc_diff_hi", "batch_kl_from_pool",
       "batch_max_min_ratio_plus1", "labeled_entropy_final"]]

# %% [markdown]
# ## The parts of the gain against the number of classes
# Black: S's total gain over random. Red: what its class composition alone does (the oracle control).
# Blue: what its choice within classes adds. Green (dashed): S's scores with balanced quotas.
# Bars: 95 % t-intervals over seeds, paired by seed.

# %%
import matplotlib.pyplot as plt

strategies = [s for s in mechanism.SCORE_STRATEGIES if s in set(parts["strategy"])]
labels_cells = table[table["schedule"].isin(["half", "paper", "double"])]
labels_ks = sorted(k for k in labels_cells["num_classes"].unique()
                   if labels_cells[labels_cells["num_classes"] == k]["schedule"].nunique() > 1)
toy = parts[parts["cell"] == mechanism.TOY_DATASET]
width = max(len(strategies), len(labels_ks) + 1)
fig, axes = plt.subplots(2, width, figsize=(5.2 * width, 9.2), squeeze=False)
for ax, s in zip(axes[0], strategies):
    plots.plot_parts_against_classes(parts, s, ax)
for ax, k in zip(axes[1], labels_ks):
    sub = labels_cells[(labels_cells["num_classes"] == k)
                       & labels_cells["strategy"].isin(mechanism.SCHEDULE_STRATEGIES)]
    plots.plot_against_labels(sub, ax, title=f"labels per class, K = {k}")
    ax.legend(fontsize=7, loc="best")
if not toy.empty:
    plots.plot_parts_bars(toy, axes[1][len(labels_ks)], title="CIFAR-10 (toy data set): the same parts")
for ax in axes.flat[len(strategies):width] if len(strategies) < width else []:
    ax.axis("off")
for ax in axes[1][len(labels_ks) + (0 if toy.empty else 1):]:
    ax.axis("off")
handles, names = axes[0][0].get_legend_handles_labels()
fig.legend(handles, names, loc="upper center", ncol=2, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
fig.tight_layout(rect=(0, 0, 1, 0.94))
note = ("Tiny-ImageNet restricted to K classes (random subset per seed; K = 200: all), EfficientNet-Lite0 features, "
        "converged linear probe; per-class schedules half 15 + 8×5, paper 30 + 8×10, double 60 + 8×20. "
        f"Seeds per cell: {report.count_range(table['seeds'])}; differences paired by seed.")
if "synthetic" in " ".join(rows["data_source"].astype(str)).lower():
    note = "SYNTHETIC DATA (stand-in): not a measurement. " + note
plots.stamp(fig, note)
plots.save_figure(fig, figures / "i_mechanism")

# %% [markdown]
# ## What claim 1's verdict is judged on
# One row per uncertainty strategy (the rule: `alkit.report`, claim 1).

# %%
verdict, why = report.claim1_verdict(evidence)
if not evidence.empty:
    report.write_table(evidence, tables / "mechanism_claim1", "Claim 1: the numbers its verdict is judged on")
print(f"claim 1: {verdict}\n{why}")
evidence

# %% [markdown]
# ## Cost
# The wall time of the sweeps that made this experiment's own runs:

# %%
times = report.sweep_times(runs_dir)
if not times.empty:
    report.write_table(times, tables / "mechanism_sweep_times", "Mechanism sweeps that wrote these runs (wall time)")
times
