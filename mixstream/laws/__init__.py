"""Data Mixing Laws (Ye et al., ICLR 2025): fit, predict and propose mixtures offline.

* :class:`DataMixingLaw` — the explicit per-domain law ``L_i(r) = c_i + k_i exp(Σ_j t_ij r_j)``
  (``fit`` / ``predict`` / ``propose`` under availability caps);
* :func:`fit_two_domain` — the two-domain discovery law ``c + exp(k r + b)`` fitted as in the
  authors' notebook; :func:`critical_proportion` for continual pre-training;
* :func:`prepare_table` — nesting with step and model-size scaling laws;
* :func:`read_table` — the CSV table format (see :mod:`mixstream.laws.table`);
* :func:`sample_mixtures` — the sample mixtures to train (halving grid with zeros);
* :class:`ImplicitMixingLaw`, :func:`compare_laws` — the authors' implicit (MLP) law and the
  held-out comparison with the explicit law.

Guard rails (refusal below ``M + 2`` mixtures, leave-one-out errors, extrapolation warnings,
a trust region in ``propose``) are described in ``docs/methods/laws.md``.
"""

from mixstream.laws.continual import critical_proportion
from mixstream.laws.design import sample_mixtures
from mixstream.laws.huber_lbfgs import FitResult, fit_huber_lbfgs
from mixstream.laws.implicit import ImplicitMixingLaw, compare_laws
from mixstream.laws.mixture import DataMixingLaw, LawWarning, MixtureLawParams, check_mixtures
from mixstream.laws.nested import extrapolate_sizes, extrapolate_steps, prepare_table
from mixstream.laws.propose import halving_grid, project_capped_simplex, propose_mixture
from mixstream.laws.scaling import SIZE_LAW, STEP_LAW, PowerLaw, PowerLawSettings, fit_power_law
from mixstream.laws.table import LawTable, TableError, format_table, parse_table, read_table
from mixstream.laws.two_domain import TwoDomainLaw, fit_two_domain

__all__ = [
    "DataMixingLaw", "FitResult", "ImplicitMixingLaw", "LawTable", "LawWarning", "MixtureLawParams", "PowerLaw", "PowerLawSettings",
    "SIZE_LAW", "STEP_LAW", "TableError", "TwoDomainLaw", "check_mixtures", "compare_laws", "critical_proportion",
    "extrapolate_sizes", "extrapolate_steps", "fit_huber_lbfgs", "fit_power_law",
    "fit_two_domain", "format_table", "halving_grid", "parse_table", "prepare_table",
    "project_capped_simplex", "propose_mixture", "read_table", "sample_mixtures",
]
