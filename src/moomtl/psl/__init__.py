"""Pareto-set learning: one preference-conditioned model for the whole front (``moomtl psl``).

* :mod:`moomtl.psl.conditioning` — FiLM / LoRA conditioning of the encoder and hypernetwork low-rank
  updates of the heads of any :class:`~moomtl.models.base.MultiTaskModel`;
* :mod:`moomtl.psl.objectives` — per-batch Dirichlet preferences and moomtl's preference methods driven by them;
* :mod:`moomtl.psl.config` — the ``psl`` config section;
* :mod:`moomtl.psl.train` — :func:`run_psl`: train, evaluate on a Das-Dennis lattice, write the sweep-style report;
* :mod:`moomtl.psl.run` — :func:`load_psl_run`: evaluate or export a finished run at any preference.
"""

from moomtl.psl.conditioning import PreferenceConditionedModel
from moomtl.psl.config import PSLConfig, load_psl_config
from moomtl.psl.run import PSLRun, load_psl_run
from moomtl.psl.train import PSLReport, run_psl

__all__ = ["PSLConfig", "PSLReport", "PSLRun", "PreferenceConditionedModel", "load_psl_config", "load_psl_run",
           "run_psl"]
