"""Settings and result types of the evaluation runner (:func:`~segxai.evaluate.evaluate_methods`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from segxai.core.checks import check_choice, check_positive_int
from segxai.core.errors import SegxaiError
from segxai.core.registry import get_explainer, list_explainers
from segxai.evaluate.curves import CURVE_SCORES, SUBSTRATES
from segxai.evaluate.substrates import Substrate

__all__ = ["METHOD_VARIANTS", "METRIC_DIRECTION", "RANDOM_BASELINE", "EvalConfig", "EvalResult",
           "Substrate", "split_method"]

RANDOM_BASELINE = "random-baseline"
METHOD_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hirescam": ("seg-grad-cam", {"weighting": "hirescam"}),
    "xgradcam": ("seg-grad-cam", {"weighting": "xgradcam"}),
}
"""Method names of the runner that are a registered explainer with fixed parameters."""


def split_method(name: str) -> tuple[str, dict[str, Any]]:
    """The registered explainer and its fixed parameters behind a runner method name.

    A runner method is ``NAME`` or ``NAME@LAYER``: ``NAME`` a registered explainer, a
    :data:`METHOD_VARIANTS` alias or :data:`RANDOM_BASELINE`; ``@LAYER`` explains that layer
    (a dotted name, passed as ``layer=``), as the layer study does.

    Example:
        >>> split_method("hirescam@decoder.2")
        ('seg-grad-cam', {'weighting': 'hirescam', 'layer': 'decoder.2'})
    """
    base, sep, layer = name.partition("@")
    if sep and not layer:
        raise SegxaiError(f"methods: expected NAME@LAYER with a layer name, got {name!r}")
    explainer, fixed = METHOD_VARIANTS.get(base, (base, {}))
    params = dict(fixed)
    if layer:
        params["layer"] = layer
    return explainer, params
# direction of each metric in the summary: +1 higher is better, -1 lower is better
METRIC_DIRECTION = {"deletion_auc": -1, "insertion_auc": 1, "context_deletion_auc": -1,
                    "pointing_game": 1, "energy_pointing_game": 1, "seconds": -1,
                    "max_sensitivity": -1}


@dataclass
class EvalConfig:
    """Settings of an evaluation run (:meth:`run_settings` are fingerprinted in ``OUT/run.json``).

    Attributes:
        methods: explainer names (``None`` = every registered explainer).
        method_params: per-method explainer parameters.
        steps: deletion/insertion steps.
        batch_size: images per forward in the curves.
        score: tracked curve score (``prob_mean``, ``logit_ratio``, ``iou``).
        deletion_substrate: substrate of deletion (default ``road``, ROAD's noisy linear
            imputation; ``dataset-mean``, ``mean`` (the image's own), ``blur``, ``black``,
            ``noise``: see :mod:`segxai.evaluate.substrates`).
        insertion_substrate: substrate insertion starts from (default ``blur``).
        dataset_mean: pixel-space colour of ``dataset-mean`` (``None``: the mean colour of the
            evaluated images, computed by the runner).
        context_deletion: also compute context-only deletion.
        pointing_tolerance: pointing-game tolerance in pixels.
        sensitivity_samples: max-sensitivity samples per explanation (0 = skip).
        sensitivity_radius: max-sensitivity noise radius (pixel units).
        random_baseline: evaluate the ``random-baseline`` pseudo-method too.
        warmup: run each explainer once, untimed, before its first timed explanation in a
            process (first calls pay one-off import/allocation costs of seconds, which would
            otherwise be charged to the first image).
        seed: seed of tie-breaking, noise and the random baseline.
    """

    methods: list[str] | None = None
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: int = 100
    batch_size: int = 32
    score: Literal["prob_mean", "logit_ratio", "iou"] = "prob_mean"
    deletion_substrate: Substrate = "road"
    insertion_substrate: Substrate = "blur"
    dataset_mean: list[float] | None = None
    context_deletion: bool = True
    pointing_tolerance: float = 0.0
    sensitivity_samples: int = 0
    sensitivity_radius: float = 0.2
    random_baseline: bool = True
    warmup: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        check_choice(self.score, "score", CURVE_SCORES)
        check_choice(self.deletion_substrate, "deletion_substrate", SUBSTRATES)
        check_choice(self.insertion_substrate, "insertion_substrate", SUBSTRATES)
        if self.sensitivity_samples < 0:
            raise SegxaiError(f"sensitivity_samples: expected >= 0, got {self.sensitivity_samples}")
        if self.pointing_tolerance < 0:
            raise SegxaiError(f"pointing_tolerance: expected >= 0, got {self.pointing_tolerance}")

    def resolved_methods(self) -> list[str]:
        names = list(self.methods) if self.methods is not None else list_explainers()
        for m in names:
            if m != RANDOM_BASELINE:
                get_explainer(split_method(m)[0])  # unknown names raise with suggestions
        if self.random_baseline and RANDOM_BASELINE not in names:
            names.append(RANDOM_BASELINE)
        if not names:
            raise SegxaiError("methods: expected at least one method")
        return names

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"] = self.resolved_methods()
        return d

    def run_settings(self) -> dict[str, Any]:
        """The settings that determine the results: :meth:`to_dict` without ``warmup``
        (it changes timings only). A resumed run may add ``methods``; everything else must
        match (see :class:`~segxai.core.runstore.RunStore`)."""
        d = self.to_dict()
        d.pop("warmup")
        return d


@dataclass
class EvalResult:
    """Everything an evaluation produced.

    Attributes:
        rows: tidy rows ``{"image", "method", "metric", "value"}``.
        curves: ``{method: {kind: [curve per image]}}``.
        summary: one dict per method with the mean of every metric (and ``images``).
        failures: ``{"image", "method", "error"}`` for pairs that raised.
        computed: number of (image, method) pairs computed in this call (the rest were
            loaded from the checkpoint).
        config: the :class:`EvalConfig`.
        skipped: ``{"image", "method", "reason"}`` for images without anything to explain
            (the model predicts no foreground class).
    """

    rows: list[dict[str, Any]]
    curves: dict[str, dict[str, list[list[float]]]]
    summary: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    computed: int
    config: EvalConfig
    skipped: list[dict[str, Any]] = field(default_factory=list)
