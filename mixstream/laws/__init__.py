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

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "critical_proportion": ".continual",
    "sample_mixtures": ".design",
    "FitResult": ".huber_lbfgs",
    "fit_huber_lbfgs": ".huber_lbfgs",
    "ImplicitMixingLaw": ".implicit",
    "compare_laws": ".implicit",
    "DataMixingLaw": ".mixture",
    "LawWarning": ".mixture",
    "MixtureLawParams": ".mixture",
    "check_mixtures": ".mixture",
    "extrapolate_sizes": ".nested",
    "extrapolate_steps": ".nested",
    "prepare_table": ".nested",
    "halving_grid": ".propose",
    "project_capped_simplex": ".propose",
    "propose_mixture": ".propose",
    "SIZE_LAW": ".scaling",
    "STEP_LAW": ".scaling",
    "PowerLaw": ".scaling",
    "PowerLawSettings": ".scaling",
    "fit_shared_alpha_power_law": ".scaling",
    "LawTable": ".table",
    "TableError": ".table",
    "format_table": ".table",
    "parse_table": ".table",
    "read_table": ".table",
    "TwoDomainLaw": ".two_domain",
    "fit_two_domain": ".two_domain",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .continual import critical_proportion  # noqa: F401
    from .design import sample_mixtures  # noqa: F401
    from .huber_lbfgs import FitResult, fit_huber_lbfgs  # noqa: F401
    from .implicit import ImplicitMixingLaw, compare_laws  # noqa: F401
    from .mixture import DataMixingLaw, LawWarning, MixtureLawParams, check_mixtures  # noqa: F401
    from .nested import extrapolate_sizes, extrapolate_steps, prepare_table  # noqa: F401
    from .propose import halving_grid, project_capped_simplex, propose_mixture  # noqa: F401
    from .scaling import SIZE_LAW, STEP_LAW, PowerLaw, PowerLawSettings, fit_shared_alpha_power_law  # noqa: F401
    from .table import LawTable, TableError, format_table, parse_table, read_table  # noqa: F401
    from .two_domain import TwoDomainLaw, fit_two_domain  # noqa: F401

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
