"""Explanation-guided architecture search (CAM-NAS-style) for small segmentation students.

* :mod:`~segxai.nas.space`: the U-Net search space (genes, mutation, crossover, measures).
* :mod:`~segxai.nas.counting`: exact parameter and FLOP counts.
* :mod:`~segxai.nas.camscore`: the fixed CAM fitness (batch statistics, several
  initialisations, maps without ReLU at the default layer, Pearson / |Pearson| / Gram).
* :mod:`~segxai.nas.fitness`: the probe set and the first CAM fitness
  ``1 / (ε + mean ‖CAM_T − CAM_S‖₂)`` (kept as ``cam-l2``).
* :mod:`~segxai.nas.zeroshot`: Zen score and a DisWOT-style proxy.
* :mod:`~segxai.nas.proxies`: CAM (training-free and few-shot) and baseline proxies.
* :mod:`~segxai.nas.band`: size bands (fractions of the teacher's parameters).
* :mod:`~segxai.nas.rankstats`: τ, ρ and partial τ with bootstrap intervals.
* :mod:`~segxai.nas.study`: validation + searches per proxy + winners in one run.
* :mod:`~segxai.nas.evolution`: the Zen-NAS-style evolutionary loop, checkpointed.
* :mod:`~segxai.nas.backends`: in-process or Ray scoring.
* :mod:`~segxai.nas.search`, :mod:`~segxai.nas.validate`, :mod:`~segxai.nas.student`: search
  driver, proxy validation (Kendall τ / Spearman ρ vs trained mIoU), student training.

Example:
    >>> import numpy as np
    >>> from segxai.nas import SearchSpace
    >>> space = SearchSpace()
    >>> child = space.mutate(space.initial(), 1, np.random.default_rng(0))
    >>> space.contains(child)
    True
"""

from segxai.nas.backends import InProcessBackend, RayBackend, make_backend
from segxai.nas.band import band_budget, band_initial, parse_band
from segxai.nas.camscore import batch_statistics, cam_scores
from segxai.nas.counting import count_flops, count_params
from segxai.nas.evolution import Budget, EvolutionSettings, SearchResult, evolve
from segxai.nas.fitness import ProbeSet, build_probe, cam_distance, cam_fitness, distill
from segxai.nas.proxies import PROXIES, compute_proxy, grad_norm, naswot, synflow
from segxai.nas.rankstats import partial_tau, proxy_statistics
from segxai.nas.search import ScoringTask, make_probe, run_search, score_candidates
from segxai.nas.space import SearchSpace, build_unet
from segxai.nas.student import (
    SaliencyMatching,
    StudentConfig,
    cpu_latency_ms,
    student_terms,
    train_student,
)
from segxai.nas.study import StudySettings, run_study
from segxai.nas.validate import (
    ValidationTask,
    correlations,
    run_validation,
    sample_architectures,
)
from segxai.nas.zeroshot import diswot_reference, diswot_score, zen_score

__all__ = [
    "PROXIES",
    "Budget",
    "EvolutionSettings",
    "InProcessBackend",
    "ProbeSet",
    "RayBackend",
    "ScoringTask",
    "SaliencyMatching",
    "SearchResult",
    "SearchSpace",
    "StudentConfig",
    "StudySettings",
    "band_budget",
    "band_initial",
    "batch_statistics",
    "cam_scores",
    "diswot_reference",
    "diswot_score",
    "parse_band",
    "partial_tau",
    "proxy_statistics",
    "run_study",
    "zen_score",
    "ValidationTask",
    "build_probe",
    "build_unet",
    "cam_distance",
    "cam_fitness",
    "compute_proxy",
    "correlations",
    "count_flops",
    "count_params",
    "cpu_latency_ms",
    "distill",
    "evolve",
    "grad_norm",
    "make_backend",
    "make_probe",
    "naswot",
    "run_search",
    "run_validation",
    "sample_architectures",
    "score_candidates",
    "synflow",
    "student_terms",
    "train_student",
]
