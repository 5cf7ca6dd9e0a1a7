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
# # (h) CIFAR-10: the network fine-tuned end to end, beside the linear probe
#
# The paper's CIFAR-10 results come from the other regime: each round the whole network is
# fine-tuned on the labelled images (SimCLR ResNet-18, 200 epochs), the pool is re-embedded with
# it, and the strategy picks from that embedding — VAAL, which trains on pixels, only exists here.
# It is on this regime that the paper says CIFAR-10 results mislead: what wins on the toy data set
# need not win at ImageNet's scale. Here the fine-tuning runs (`alkit.finetune`, `make
# reproduce-finetune` on a GPU: a ResNet-18 from scratch on a reduced schedule, since no SimCLR
# weights install offline) stand beside the linear probe on frozen features (notebook a), with the
# strategies both regimes have. A seed fixes the same validation split and initial pool in both.
#
# Panels: test top-1 against labels, per regime; each strategy minus random, paired by seed, per
# regime; the area under each curve minus random's, per regime (table).

# %% tags=["parameters"]
SCALE = "cpu"                          # scale of the linear runs (smoke | cpu | paper)
RESULTS_DIR = "results/runs/cpu"       # the linear runs (relative paths start at the repository root)
FINETUNE_SCALE = "gpu"                 # alkit.finetune.FINETUNE_SCALES: gpu | paper | cpu | smoke
FINETUNE_RUNS_DIR = "results/runs/finetune-gpu"   # the fine-tuning runs (python -m alkit reproduce finetune)
FIGURES_DIR = None   # None: notebooks/executed/<notebook>/figures; results/figures only when asked
RUN_MISSING = False                    # True: run both sweeps first (finished runs are reused)
SOURCE = "auto"                        # auto | features | synthetic (CI: generated images, labelled SYNTHETIC)
DATA_ROOT = None                       # folder with the archives (default $ALKIT_DATA or ../shared/data)
TORCH_THREADS = None                   # None: torch's default (the smoke run uses 1 for its tiny CNN)

# %%
import torch

from alkit import experiment, finetune, plots, report

if TORCH_THREADS:
    torch.set_num_threads(TORCH_THREADS)
tuned = experiment.results_for(["cifar10"], FINETUNE_SCALE, report.resolve_path(FINETUNE_RUNS_DIR), regime="finetune",
                               run_missing=RUN_MISSING, source=SOURCE, data_root=DATA_ROOT)
both = [s for s in tuned["strategy"].unique() if s != "vaal"]   # the linear regime has no VAAL (no images)
linear = experiment.results_for(["cifar10"], SCALE, report.resolve_path(RESULTS_DIR), run_missing=RUN_MISSING,
                                source=SOURCE, data_root=DATA_ROOT, strategies=both)
rows = report.with_regimes(linear, tuned)
regimes, titles = list(report.REGIMES), report.regime_titles(rows)
note = report.figure_note(rows) + "\n" + finetune.describe_scale(FINETUNE_SCALE)
figures = report.output_dir(FIGURES_DIR, "h_finetune_vs_linear", "figures")

# %% [markdown]
# ## Test accuracy against labelled images, per regime

# %%
fig = plots.by_dataset(rows, lambda sub, ax, title: plots.plot_metric(sub, "top1", ax, title=title), regimes,
                       titles, column="regime")
plots.stamp(fig, note)
plots.save_figure(fig, figures / "h_accuracy")

# %% [markdown]
# ## Difference from random (paired by seed), per regime
# Above zero: the strategy beats random at that budget; the band is the 95 % interval over seeds.

# %%
fig = plots.by_dataset(rows, lambda sub, ax, title: plots.plot_difference_from_random(sub, "top1", ax, title=title),
                       regimes, titles, column="regime")
plots.stamp(fig, note)
plots.save_figure(fig, figures / "h_difference_from_random")

# %% [markdown]
# ## Area under the top-1 curve minus random's, per regime
# A win (loss) when the 95 % interval over seeds lies above (below) 0, else a tie (alkit/report.py).

# %%
report.regime_summary(rows)[["regime", "strategy", "seeds", "final_labels", "auc_top1", "auc_diff", "auc_diff_low",
                             "auc_diff_high", "outcome", "final_top1", "mean_batch_entropy"]]
