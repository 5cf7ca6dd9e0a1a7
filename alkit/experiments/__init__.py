"""Experiments: the study's data sets and scales, and the sweeps that make the committed runs.

:mod:`~alkit.experiments.catalog` says what each data set and scale is and loads nothing;
:mod:`~alkit.experiments.loading` turns a data set into the pool and test arrays;
:mod:`~alkit.experiments.runs` runs and stores sweeps, :mod:`~alkit.experiments.launch` spreads them
over processes or SLURM; :mod:`~alkit.experiments.class_count` and :mod:`~alkit.experiments.mechanism`
are the claim-1 experiments; :mod:`~alkit.experiments.reproduce` makes every run and figure.
Notebooks import the common names from :mod:`alkit.experiment`.
"""
