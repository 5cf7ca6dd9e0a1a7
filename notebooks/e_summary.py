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
# # (e) Summary: every data set × strategy, and a verdict per claim of the paper
#
# Per data set and strategy: the area under the top-1 curve against labelled points (an average
# accuracy over the budget range), its difference from random paired by seed with the 95 %
# interval and the number of seeds won, the final accuracy, and the final class balance of the
# labelled set and the mean balance of the batches. Then one verdict per claim, computed from
# those numbers by the rule printed below (the docstring of `alkit/report.py`).

# %% tags=["parameters"]
SCALE = "cpu"
DATASETS = ["cifar10", "tiny-imagenet", "cifar10-lt", "imagenet-synthetic"]  # those with results are used
TOY_DATASET = "cifar10"                # claims 2-3 are judged on the toy data set ...
MANY_CLASS_DATASET = "tiny-imagenet"   # ... and the many-class one; claim 1 on the mechanism runs (notebook i)
BACKBONE = "efficientnet_lite0"
STRATEGIES = None
SEEDS = None
ROUNDS = None
INITIAL_SIZE = None
ROUND_BUDGET = None
RESULTS_DIR = "results/runs/cpu"
BEFORE_RESULTS_DIR = "results/runs/cpu-adam-probe"   # the same sweep with the earlier probe (None: skip)
MECHANISM_DIR = "results/runs/mechanism"       # claim 1's interventions (None: claim 1 inconclusive)
CLASS_COUNT_DIR = "results/runs/class-count"   # the class-count runs the mechanism experiment shares
FIGURES_DIR = None   # None: notebooks/executed/<notebook>/figures; results/figures only when asked
TABLES_DIR = None    # None: notebooks/executed/<notebook>/tables; results/tables only when asked
RUN_MISSING = False
SOURCE = "auto"
DATA_ROOT = None

# %%
import pandas as pd

from alkit import experiment, plots, report

# papermill -p passes strings: lists are read here (or refused with the form that works)

from alkit.experiments import mechanism
DATASETS = report.list_parameter(DATASETS, "DATASETS")
STRATEGIES = report.list_parameter(STRATEGIES, "STRATEGIES")
SEEDS = report.list_parameter(SEEDS, "SEEDS", int)

available = [d for d in DATASETS
             if RUN_MISSING or experiment.finished_runs(report.resolve_path(RESULTS_DIR), d)]
rows = experiment.results_for(
    available, SCALE, report.resolve_path(RESULTS_DIR), run_missing=RUN_MISSING, source=SOURCE,
    data_root=DATA_ROOT, backbone=BACKBONE, strategies=STRATEGIES, seeds=SEEDS, rounds=ROUNDS,
    initial_size=INITIAL_SIZE, round_budget=ROUND_BUDGET)
figures = report.output_dir(FIGURES_DIR, "e_summary", "figures")
tables = report.output_dir(TABLES_DIR, "e_summary", "tables")
summary = report.summary_table(rows)
report.write_table(summary, tables / "summary", "Per data set × strategy (full)")
report.write_table(report.compact_summary(summary), tables / "summary_compact", "Per data set × strategy")
report.write_table(report.runs_inventory(rows), tables / "runs_inventory", "Finished runs behind every number")
sweeps = report.sweep_times(report.resolve_path(RESULTS_DIR))
if not sweeps.empty:   # the real wall time of the sweeps that wrote these runs
    report.write_table(sweeps, tables / "sweep_times", "Sweeps that wrote these runs (wall time)")
pd.set_option("display.max_colwidth", 200)
report.compact_summary(summary)

# %% [markdown]
# ## Difference from random: area under the top-1 curve, paired by seed

# %%
fig = plots.by_dataset(summary[summary["strategy"] != "random"],
                       lambda sub, ax, t: plots.plot_bars(sub, "auc_diff", ax, "auc_diff_low", "auc_diff_high", title=t,
                                                          xlabel="Δ area under top-1 curve vs random"),
                       available, report.dataset_titles(rows), width=4.6, height=5.0, legend=False)
plots.stamp(fig, report.figure_note(rows))
plots.save_figure(fig, figures / "e_auc_difference")

# %% [markdown]
# ## Verdicts
# The rule, exactly as applied:

# %%
print(report.VERDICT_RULE)

# %%
mechanism_rows = (mechanism.load_mechanism(report.resolve_path(MECHANISM_DIR), report.resolve_path(CLASS_COUNT_DIR),
                                           report.resolve_path(RESULTS_DIR), scale=SCALE)
                  if MECHANISM_DIR else pd.DataFrame())
evidence = mechanism.claim1_evidence(mechanism_rows) if not mechanism_rows.empty else None
verdicts = report.claim_verdicts(summary, toy=TOY_DATASET, many=MANY_CLASS_DATASET, mechanism=evidence)
report.write_table(verdicts, tables / "claims", "Claims of the paper: verdicts from the measured numbers")
verdicts

# %% [markdown]
# ## What changed with the converged probe
# The same sweep was run before with the earlier probe (Adam, early stopping after a few epochs;
# `ProbeConfig.named("adam_early_stopping")`), whose heads were barely trained. Per data set and
# strategy: the difference from random under both probes, then each claim's verdict under both
# (the same rule).

# %%
before_dir = report.resolve_path(BEFORE_RESULTS_DIR) if BEFORE_RESULTS_DIR else None
if before_dir is not None and any(experiment.finished_runs(before_dir, d) for d in available):
    before_rows = experiment.results_for([d for d in available if experiment.finished_runs(before_dir, d)], SCALE,
                                         before_dir, run_missing=False)
    before = report.summary_table(before_rows)
    labels = ("adam", "logreg")
    changes = report.change_table(before, summary, labels)
    report.write_table(changes, tables / "probe_change",
                       "Δ AUC vs random under the earlier probe (adam) and the converged one (logreg)")
    claim_changes = report.claims_change(before, summary, labels, toy=TOY_DATASET, many=MANY_CLASS_DATASET,
                                         mechanism_after=evidence)
    report.write_table(claim_changes, tables / "claims_change", "Claims: verdicts under both probes")
    display(claim_changes[["claim", "verdict_adam", "verdict_logreg"]])
    changes[changes["outcome_changed"]]

