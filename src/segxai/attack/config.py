"""Settings and result of an explanation attack (:func:`segxai.attack.attack`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from torch import Tensor

from segxai.core.checks import check_choice, check_fraction, check_positive_int
from segxai.core.errors import SegxaiError

__all__ = ["PRESETS", "AttackConfig", "AttackResult", "cosine_lr", "parse_epsilon"]

# Dombrowski et al. (NeurIPS 2019, reference code ``pankessel/adv_explanation_ref``):
# Adam (PyTorch defaults), lr 2e-4 in ImageNet-normalised units for 1,500 iterations, loss
# 1e11·MSE(h, h_t) + 1e6·MSE(softmax), β 10 → 100 geometric, after every step a clamp to the
# valid pixel range only (no ε-ball). Translated to segxai's units:
# * lr: 2e-4 normalised units = 2e-4 · 0.226 (mean ImageNet std) ≈ 4.52e-5 in pixel units, so
#   Adam steps of about lr let a pixel drift about 1,500 · 4.52e-5 ≈ 17/255 (measured 13–23/255
#   on 15 images: Adam's step exceeds lr where the gradient grows);
# * λ_e: their MSE of sum-1 maps at 224² is 1/(224²)² of segxai's MSE of mean-1 maps, so
#   1e11 → 1e11 / 224⁴ ≈ 39.7 (the same weight at every resolution);
# * λ_o: 1e6 on the mean over all softmax entries (``output_reduction="mean"``);
# * no input term (λ_p = 0).
PRESETS: dict[str, dict[str, Any]] = {
    "dombrowski": {"epsilon": None, "iterations": 1500, "lr": 2e-4 * 0.226,
                   "lr_schedule": "constant", "lambda_explanation": 1e11 / 224 ** 4,
                   "explanation_loss": "mse", "lambda_output": 1e6,
                   "output_reduction": "mean", "lambda_input": 0.0, "beta_start": 10.0,
                   "beta_end": 100.0, "select": "best", "eval_every": 100},
}


def cosine_lr(lr: float, step: int, steps: int) -> float:
    """Cosine decay from ``lr`` at step 0 to ``lr/20`` at step ``steps - 1``."""
    if steps <= 1:
        return float(lr)
    low = lr / 20
    return float(low + 0.5 * (lr - low) * (1 + math.cos(math.pi * step / (steps - 1))))


def parse_epsilon(value: float | str) -> float:
    """ε in pixel units ``[0, 1]`` from a number: values ``>= 1`` are in /255 units
    (``8`` → 8/255), values in ``(0, 1)`` are fractions of the pixel range (``0.03``).

    Raises:
        ValueError: ε is not a positive finite number, or above 255.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SegxaiError(f"epsilon: expected a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise SegxaiError(f"epsilon: expected a positive number (e.g. 8 for 8/255 or 0.03), "
                         f"got {value!r}")
    if v >= 1:
        if v > 255:
            raise SegxaiError(f"epsilon: expected at most 255 (/255 units), got {value!r}")
        return v / 255.0
    return v


@dataclass
class AttackConfig:
    """Settings of :func:`attack` (serialisable with :meth:`to_dict`).

    Attributes:
        epsilon: L∞ radius in pixel units ``[0, 1]`` (8/255 by default); ``None``: no ball,
            only the valid range ``[0, 1]`` (Dombrowski et al.).
        iterations: Adam steps.
        lr: Adam learning rate in pixel units.
        lr_schedule: ``"cosine"`` (decay from ``lr`` to ``lr/20`` over the iterations) or
            ``"constant"``.
        lambda_explanation: weight λ_e of the explanation term (MSE of mean-1 maps).
        explanation_loss: ``"mse"`` (the paper's ‖h − h_t‖², as MSE of mean-1 maps) or
            ``"pearson"`` (``1 − r(h, h_t)``, the success criterion itself).
        lambda_output: weight λ_o of the output term (per-pixel squared softmax change).
        output_reduction: ``"sum"`` (over classes, then mean over pixels) or ``"mean"`` (over
            classes and pixels: the paper's MSE of the softmax outputs).
        lambda_input: weight λ_p of the input term (mean squared pixel change).
        beta_start: initial Softplus β.
        beta_end: final Softplus β (geometric growth).
        select: ``"best"`` (evaluate on the ReLU model and keep the best iterate) or ``"last"``.
        eval_every: evaluation interval for ``select="best"``.
        min_agreement: pixel agreement required of a kept iterate and of a success.
        success_pearson: Pearson correlation with the target that counts as a success.
        defence_beta: attack and evaluate the explanation of the Softplus(β) network
            (β-smoothing defence, adaptive attacker); ``None`` = the plain ReLU explanation.
    """

    epsilon: float | None = 8 / 255
    iterations: int = 300
    lr: float = 2e-2
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    lambda_explanation: float = 1.0
    explanation_loss: Literal["mse", "pearson"] = "mse"
    lambda_output: float = 100.0
    output_reduction: Literal["sum", "mean"] = "sum"
    lambda_input: float = 1.0
    beta_start: float = 10.0
    beta_end: float = 100.0
    select: Literal["best", "last"] = "best"
    eval_every: int = 10
    min_agreement: float = 0.99
    success_pearson: float = 0.8
    defence_beta: float | None = None

    def validate(self) -> AttackConfig:
        """Check every field; return ``self``."""
        if self.epsilon is not None and (
                isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float))
                or not math.isfinite(self.epsilon) or self.epsilon <= 0):
            raise SegxaiError(f"epsilon: expected a positive number in pixel units (or None: "
                              f"the valid range only), got {self.epsilon!r}")
        check_positive_int(self.iterations, "iterations")
        check_positive_int(self.eval_every, "eval_every")
        check_fraction(self.lr, "lr", low=0.0, high=1.0, low_open=True)
        for name in ("lambda_explanation", "lambda_output", "lambda_input"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 \
                    or not math.isfinite(v):
                raise SegxaiError(f"{name}: expected a non-negative number, got {v!r}")
        for name in ("beta_start", "beta_end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise SegxaiError(f"{name}: expected a positive number, got {v!r}")
        if self.defence_beta is not None and not self.defence_beta > 0:
            raise SegxaiError(f"defence_beta: expected a positive number or None, got "
                             f"{self.defence_beta!r}")
        check_choice(self.select, "select", ("best", "last"))
        check_choice(self.lr_schedule, "lr_schedule", ("cosine", "constant"))
        check_choice(self.explanation_loss, "explanation_loss", ("mse", "pearson"))
        check_choice(self.output_reduction, "output_reduction", ("sum", "mean"))
        check_fraction(self.min_agreement, "min_agreement")
        check_fraction(self.success_pearson, "success_pearson", low=-1.0, high=1.0)
        return self

    def beta(self, step: int) -> float:
        """β at ``step`` (geometric from ``beta_start`` to ``beta_end``; constant under a
        defence)."""
        if self.defence_beta is not None:
            return float(self.defence_beta)
        if self.iterations == 1:
            return float(self.beta_end)
        frac = step / (self.iterations - 1)
        return float(self.beta_start * (self.beta_end / self.beta_start) ** frac)

    def learning_rate(self, step: int) -> float:
        """Adam's learning rate at ``step``."""
        if self.lr_schedule == "constant":
            return float(self.lr)
        return cosine_lr(self.lr, step, self.iterations)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AttackConfig:
        """The settings of a paper (see :data:`PRESETS`), with ``overrides`` (e.g. an
        ``epsilon`` for a sweep).

        Raises:
            SegxaiError: an unknown preset or setting.
        """
        check_choice(name, "preset", tuple(PRESETS))
        return cls.from_dict({**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SegxaiError(f"config: unknown attack setting(s) {unknown}")
        return cls(**data).validate()


@dataclass
class AttackResult:
    """Outcome of :func:`attack` for a batch of images.

    Attributes:
        x_adv: ``(N, C, H, W)`` adversarial images in the model's input space.
        original_map: ``h(x)`` on the evaluation model, normalised to sum 1.
        target_map: ``h_t``, normalised to sum 1.
        adversarial_map: ``h(x_adv)`` on the evaluation model (ReLU), normalised to sum 1.
        pred_original: ``(N, H, W)`` arg-max of the clean prediction.
        pred_adversarial: ``(N, H, W)`` arg-max on ``x_adv``.
        metrics: name → one value per image (see :func:`evaluate_attack`).
        history: per-iteration losses (sums over the batch), β and the target Pearson of the
            smoothed model's map (mean over images); ``eval_*`` lists hold the ReLU
            evaluations made for ``select="best"`` (mean over images).
        seconds: wall time of the whole attack (including the evaluation).
        method: the explainer's registry name.
        params: the explainer's parameters.
        config: the :class:`AttackConfig` used.
        kept_iteration: per image, the (1-based) iteration of the kept iterate.
        softplus_modules: how many ReLU/ReLU6 modules were smoothed.
        max_drift: per image, the largest L∞ distance (pixel units) of any iterate from the
            clean image: a run with a ball of radius ε ≥ this value takes exactly the same
            steps (its projection never acts).
    """

    x_adv: Tensor
    original_map: Tensor
    target_map: Tensor
    adversarial_map: Tensor
    pred_original: Tensor
    pred_adversarial: Tensor
    metrics: dict[str, list[float]]
    history: dict[str, list[float]]
    seconds: float
    method: str
    params: dict[str, Any]
    config: AttackConfig
    kept_iteration: list[int] = field(default_factory=list)
    softplus_modules: int = 0
    max_drift: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x_adv.shape[0])

    def records(self) -> list[dict[str, Any]]:
        """One JSON-friendly dict of metrics per image."""
        out = []
        for i in range(len(self)):
            rec: dict[str, Any] = {k: v[i] for k, v in self.metrics.items()}
            rec["method"] = self.method
            rec["kept_iteration"] = self.kept_iteration[i] if self.kept_iteration else None
            rec["seconds"] = self.seconds / len(self)
            out.append(rec)
        return out
