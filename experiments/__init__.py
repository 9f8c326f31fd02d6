"""Experiments: the study of the papers' claims and the sweeps, writing tables and plots to reports/."""
