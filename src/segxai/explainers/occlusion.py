"""Occlusion sensitivity for segmentation (Zeiler & Fergus 2014; Gipiškis & Kurasova 2023).

A window slides over the image with a stride; each position is filled (black, grey, the
dataset or image mean colour, a Gaussian-blurred copy of the patch, or seeded noise) and the
drop of the target score is recorded. Every pixel gets the mean drop over the windows that
cover it. Fills are defined in pixel space ``[0, 1]`` and mapped through the model's input
normalisation (0 in a normalised input is the mean colour, not black).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from segxai.core.adapter import ModelAdapter, _unwrap
from segxai.core.checks import check_choice, check_fraction, check_positive_int
from segxai.core.errors import SegxaiError
from segxai.core.ops import gaussian_blur
from segxai.core.registry import make_generator, register_explainer
from segxai.core.target import Target
from segxai.explainers._fast import FastModel, ReusedCopy
from segxai.explainers._incremental import IncrementalRunner, trace
from segxai.explainers.base import ImageWork, PerturbationExplainer

__all__ = ["FILLS", "Occlusion", "fill_image", "gaussian_blur", "parse_pair", "window_starts"]

FILLS = ("black", "grey", "dataset-mean", "image-mean", "blur", "noise")
Fill = Literal["black", "grey", "dataset-mean", "image-mean", "blur", "noise"]
OCCLUSION_SCORES = ("target", "logit_sum", "prob_mean", "iou")
NOISES = ("uniform", "gaussian")


def parse_pair(value: Any, name: str) -> tuple[int, int]:
    """``8``, ``(8, 16)``, ``"8"``, ``"8,16"`` or ``"8x16"`` → ``(8, 16)``-style pair of ints >= 1."""
    if isinstance(value, str):
        parts = value.replace("x", ",").split(",")
        try:
            value = tuple(int(p) for p in parts) if len(parts) > 1 else int(parts[0])
        except ValueError:
            raise SegxaiError(f"{name}: expected an integer or 'h,w', got {value!r}") from None
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise SegxaiError(f"{name}: expected one integer or a pair (h, w), got {value!r}")
        return (check_positive_int(value[0], name), check_positive_int(value[1], name))
    v = check_positive_int(value, name)
    return v, v


def parse_colour(value: Any, name: str) -> tuple[float, ...] | None:
    """``None``, a number, a sequence of numbers or ``"0.4,0.5,0.6"`` in ``[0, 1]``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = tuple(float(v) for v in value.split(","))
        except ValueError:
            raise SegxaiError(f"{name}: expected numbers in [0, 1], got {value!r}") from None
    if isinstance(value, (int, float)):
        value = (value,)
    if not isinstance(value, Sequence) or not value:
        raise SegxaiError(f"{name}: expected a number or one number per channel, got {value!r}")
    return tuple(check_fraction(v, name) for v in value)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window start positions along one axis: ``0, s, 2s, ...`` plus a last window flush with
    the border when the stride does not reach it, so that every pixel is covered."""
    if window > length:
        raise SegxaiError(f"window: {window} is larger than the image side {length}")
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def fill_image(adapter: ModelAdapter, image: Tensor, fill: Fill, *,
               dataset_mean: Sequence[float] | None = None, noise: Tensor | None = None,
               blur_sigma: float = 5.0, blur_kernel: int = 11) -> Tensor:
    """The model-space image ``1×C×H×W`` whose patches replace the occluded windows.

    Args:
        adapter: gives the input normalisation.
        image: ``1×C×H×W`` model-space image.
        fill: one of :data:`FILLS`.
        dataset_mean: pixel-space colour for ``"dataset-mean"`` (default: the adapter's
            normalisation mean).
        noise: ``C×H×W`` pixel-space noise field for ``"noise"``.
        blur_sigma: Gaussian sigma in pixels for ``"blur"``.
        blur_kernel: Gaussian kernel size for ``"blur"``.
    """
    c = image.shape[1]
    if fill == "black":
        colour = adapter.colour(0.0, image)
    elif fill == "grey":
        colour = adapter.colour(0.5, image)
    elif fill == "dataset-mean":
        mean = dataset_mean if dataset_mean is not None else adapter.mean
        if mean is None:
            raise SegxaiError("fill: 'dataset-mean' needs dataset_mean=... (pixel-space colour) "
                             "or a model adapter with a normalisation mean")
        mean = tuple(mean) * c if len(mean) == 1 else tuple(mean)
        colour = adapter.colour(mean, image)
    elif fill == "image-mean":
        colour = adapter.from_pixels(adapter.to_pixels(image).mean(dim=(2, 3), keepdim=True))
    elif fill == "blur":
        return adapter.from_pixels(gaussian_blur(adapter.to_pixels(image), sigma=blur_sigma,
                                                 kernel_size=blur_kernel))
    elif fill == "noise":
        if noise is None:
            raise SegxaiError("fill: 'noise' needs a noise field")
        return adapter.from_pixels(noise.unsqueeze(0).to(image))
    else:
        raise SegxaiError(f"fill: expected one of {', '.join(FILLS)}, got {fill!r}")
    return colour.expand_as(image)


@register_explainer("occlusion")
class Occlusion(PerturbationExplainer):
    """Occlusion sensitivity: mean drop of the target score over the windows covering a pixel.

    For window ``p`` the score drop is ``Δ_p = m(x) − m(x_p)`` where ``x_p`` has the window
    filled; pixel ``u`` gets ``mean_{p ∋ u} Δ_p``. Windows start at ``0, s, 2s, ...`` along
    each axis, plus one window flush with the far border if the stride does not reach it.
    Any callable mapping images to logits works (no gradients). Forward passes run through
    the shared fast path (no autograd, batched windows, optional BatchNorm folding on a copy
    and channels-last), and every target given to :meth:`explain_many` is scored from the
    same perturbed forwards.

    Args:
        window: window size, an int or ``(h, w)`` (also ``"h,w"``).
        stride: step between windows (default: half the window, at least 1).
        fill: ``"black"``, ``"grey"`` (0.5, default), ``"dataset-mean"``, ``"image-mean"``,
            ``"blur"`` (the patch of a Gaussian-blurred copy) or ``"noise"``.
        score: ``"target"`` (the target's own score, default), ``"logit_sum"``,
            ``"prob_mean"`` or ``"iou"`` (IoU of the predicted class mask with the clean
            prediction's class mask: the "evaluation metric" variant).
        batch_size: perturbed images per forward pass.
        dataset_mean: pixel-space colour for ``fill="dataset-mean"`` (default: the
            adapter's normalisation mean).
        noise: ``"uniform"`` (U(0, 1) pixels) or ``"gaussian"`` (0.5 + σ·N(0, 1), clipped).
        noise_std: σ of the Gaussian noise fill (pixel units).
        blur_sigma: Gaussian sigma (pixels) of the blur fill.
        blur_kernel: kernel size of the blur fill.
        seed: seeds the noise field (one field per call, shared by all images, so that each
            image's map does not depend on the others).
        fold_bn: fold BatchNorm into convolutions on a copy of the model.
        channels_last: run the copy in channels-last memory format (measured 2x faster on
            CPU for MobileNet-style networks).
        incremental: recompute, for each window, only the boxes of the feature maps that the
            window can change (Krypton, Nakandala et al. 2019; exact, see
            ``docs/perturbation.md``). ``"auto"`` (default): when the model can be traced and
            the first batch of windows saves at least 30% of the convolution work; ``True``:
            whenever the model can be traced (else a warning and full forwards); ``False``:
            full forward passes.
        progress: show a progress bar.
    """

    def __init__(self, window: Any = 8, stride: Any = None,
                 fill: Literal["black", "grey", "dataset-mean", "image-mean", "blur",
                               "noise"] = "grey",
                 score: Literal["target", "logit_sum", "prob_mean", "iou"] = "target",
                 batch_size: int = 32, dataset_mean: Any = None,
                 noise: Literal["uniform", "gaussian"] = "uniform", noise_std: float = 0.25,
                 blur_sigma: float = 5.0,
                 blur_kernel: int = 11, seed: int = 0, fold_bn: bool = True,
                 channels_last: bool = True, incremental: bool | Literal["auto"] = "auto",
                 progress: bool = False) -> None:
        super().__init__()
        if incremental not in (True, False, "auto"):
            raise SegxaiError(f"incremental: expected True, False or 'auto', got {incremental!r}")
        win = parse_pair(window, "window")
        if stride is None:
            st = (max(1, win[0] // 2), max(1, win[1] // 2))
        else:
            st = parse_pair(stride, "stride")
        if not isinstance(blur_sigma, (int, float)) or isinstance(blur_sigma, bool) \
                or not math.isfinite(blur_sigma) or blur_sigma <= 0:
            raise SegxaiError(f"blur_sigma: expected a positive number, got {blur_sigma!r}")
        if not isinstance(noise_std, (int, float)) or isinstance(noise_std, bool) \
                or not math.isfinite(noise_std) or noise_std <= 0:
            raise SegxaiError(f"noise_std: expected a positive number, got {noise_std!r}")
        self.params = {
            "window": list(win), "stride": list(st),
            "fill": check_choice(fill, "fill", FILLS),
            "score": check_choice(score, "score", OCCLUSION_SCORES),
            "dataset_mean": None if dataset_mean is None else
            list(parse_colour(dataset_mean, "dataset_mean") or ()),
            "noise": check_choice(noise, "noise", NOISES), "noise_std": float(noise_std),
            "blur_sigma": float(blur_sigma),
            "blur_kernel": check_positive_int(blur_kernel, "blur_kernel"),
            "seed": int(seed), **self.fast_params(batch_size, fold_bn, channels_last),
            "incremental": incremental,
        }
        self.progress = bool(progress)
        self._reuse = ReusedCopy()  # the fast copy and its trace, kept across calls

    # ------------------------------------------------------------------ helpers
    def _noise(self, shape: tuple[int, int, int]) -> Tensor:
        g = make_generator(self.params["seed"])
        if self.params["noise"] == "uniform":
            return torch.rand(shape, generator=g)
        return (0.5 + self.params["noise_std"] * torch.randn(shape, generator=g)).clamp(0, 1)

    def windows(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """Top-left corners ``(row, col)`` of all windows for an image of ``size``."""
        (kh, kw), (sh, sw) = self.params["window"], self.params["stride"]
        try:
            rows = window_starts(size[0], kh, sh)
            cols = window_starts(size[1], kw, sw)
        except ValueError:
            raise SegxaiError(f"window: {(kh, kw)} is larger than the image size "
                             f"{tuple(size)}") from None
        return [(r, c) for r in rows for c in cols]

    # ------------------------------------------------------------------ protocol
    def score_kind(self, target: Target) -> str:
        return target.score if self.params["score"] == "target" else self.params["score"]

    def fast_model(self, adapter: ModelAdapter) -> FastModel:
        """The fast copy of the previous call while the model is the same one with unchanged
        parameters and buffers (then its trace is reused too), else a new one."""
        return self._reuse.prepare(adapter, fold_bn=self.params["fold_bn"],
                                   channels_last=self.params["channels_last"])

    def begin(self, fm: FastModel, images: Tensor, targets: list[Target]) -> dict[str, Any]:
        _, c, h, w = images.shape
        p = self.params
        wins = self.windows((h, w))
        kh, kw = p["window"]
        counts = torch.zeros(h, w, dtype=images.dtype, device=images.device)
        for r, col in wins:
            counts[r:r + kh, col:col + kw] += 1
        return {"windows": wins, "counts": counts, **self._incremental(fm, images),
                "noise": self._noise((c, h, w)) if p["fill"] == "noise" else None,
                "maps": [torch.zeros(images.shape[0], h, w, dtype=images.dtype,
                                     device=images.device) for _ in targets],
                "clean": [torch.zeros(images.shape[0], dtype=images.dtype) for _ in targets]}

    def plan(self, fm: FastModel, state: dict[str, Any], x: Tensor, i: int,
             targets: list[Target]) -> ImageWork:
        p = self.params
        kh, kw = p["window"]
        fill = fill_image(fm.adapter, x, p["fill"], dataset_mean=p["dataset_mean"],
                          noise=state["noise"], blur_sigma=p["blur_sigma"],
                          blur_kernel=p["blur_kernel"])
        clean = fm.raw(x)
        if state["incremental"]:
            run = self._incremental_run(fm, state, x, fill, clean)
            if run is not None:
                return ImageWork(clean, state["windows"], run)
        return ImageWork(clean, state["windows"],
                         lambda chunk, _g: fm.raw(_occlude(x, fill, chunk, kh, kw)))

    # ------------------------------------------------------------------ incremental
    def _incremental(self, fm: FastModel, images: Tensor) -> dict[str, Any]:
        """Trace the model for incremental occlusion (``runner`` is ``None`` when off)."""
        mode = self.params["incremental"]
        off = {"runner": None, "incremental": False, "checked": False, "traced": False}
        if mode is False:
            return {**off, "incremental_note": "off"}
        example = fm.prepare_input(images[:1].detach())
        key = (tuple(example.shape), example.dtype, example.device, example.stride())
        kept = self._reuse.derived if fm.copied else {}
        if kept.get("key") != key:
            kept.clear()
            kept["key"], off["traced"] = key, True
            try:
                # the graph keeps the copy's BatchNorms (folding them in the graph changed
                # FCN-ResNet50's output at 224² by 1.7e-4 of its maximum, above the 1e-4
                # check below, and was not faster: docs/perturbation.md)
                kept["runner"] = IncrementalRunner(trace(fm.call, example))
            except Exception as exc:  # tracing arbitrary models fails in many ways
                kept["runner"], kept["failed"] = None, f"the model could not be traced ({exc})"
        if kept["runner"] is None:
            state = {**off, "incremental_note": ""}
            self._stop(state, kept["failed"])
            return state
        runner: IncrementalRunner = kept["runner"]
        runner.reset()
        if not runner.has_conv and mode == "auto":
            return {**off, "incremental_note": "no convolution"}
        if mode == "auto" and "auto_full" in kept:  # an earlier call found no gain
            return {**off, "incremental_note": kept["auto_full"]}
        return {**off, "runner": runner, "incremental": True, "incremental_note": "on",
                "kept": kept}

    def _stop(self, state: dict[str, Any], why: str) -> None:
        """Use full forward passes from now on (with a warning if asked for incremental)."""
        state["incremental"], state["incremental_note"] = False, why
        if self.params["incremental"] is True:
            warnings.warn(f"occlusion: {why}; using full forward passes", RuntimeWarning,
                          stacklevel=5)

    def _incremental_run(self, fm: FastModel, state: dict[str, Any], x: Tensor, fill: Tensor,
                         clean: Tensor) -> Any:
        """The ``run`` of :class:`ImageWork` with incremental recomputation, or ``None``.

        Two checks guard against graphs that do not generalise (values that left torch were
        frozen into the trace): the graph must reproduce the model's clean output for every
        image, and the first window of a call must match a full forward pass (counted).
        """
        kh, kw = self.params["window"]
        runner: IncrementalRunner = state["runner"]
        xin, fill_in = fm.prepare_input(x), fm.prepare_input(fill)
        with torch.inference_mode():
            graph_clean = _unwrap(runner.clean(xin))
        if not _close(graph_clean, clean):
            self._stop(state, "the traced graph does not reproduce the model's output")
            return None

        def run(chunk: list[tuple[int, int]], _g: int | None) -> Tensor:
            if state["incremental"]:
                try:
                    data = torch.cat([fill_in[:, :, r:r + kh, c:c + kw] for r, c in chunk])
                    with torch.inference_mode():
                        out = fm.output(runner.run(data, [r for r, _ in chunk],
                                                   [c for _, c in chunk]), len(chunk))
                except Exception as exc:  # an operation the trace did not foresee
                    self._stop(state, f"incremental recomputation failed ({exc})")
                else:
                    ok = True
                    if not state["checked"]:
                        state["checked"] = True
                        ok = _close(out[:1], fm.raw(_occlude(x, fill, chunk[:1], kh, kw)))
                        if not ok:
                            self._stop(state, "the incremental output differs from a full "
                                              "forward pass on the first window")
                        self._check_gain(state, runner)
                    if ok:
                        return out
            return fm.raw(_occlude(x, fill, chunk, kh, kw))

        return run

    def _check_gain(self, state: dict[str, Any], runner: IncrementalRunner) -> None:
        """``"auto"``: after the first batch, keep incremental mode only if it saves at least
        30% of the convolution work (below that, the smaller, less efficient convolutions
        and the copies eat the gain: FCN-ResNet50 at 224² does 76-87% of the work in
        93-115% of the time of full forwards)."""
        if self.params["incremental"] == "auto" and state["incremental"] \
                and runner.work_fraction() > 0.7:
            state["incremental"] = False
            state["incremental_note"] = (f"footprints cover {runner.work_fraction():.0%} of "
                                         "the convolution work: full forward passes")
            state["kept"]["auto_full"] = state["incremental_note"]

    def finish_image(self, state: dict[str, Any], work: ImageWork, i: int, clean: list[Tensor],
                     scores: list[Tensor]) -> None:
        kh, kw = self.params["window"]
        for j, (base, s) in enumerate(zip(clean, scores, strict=True)):
            state["clean"][j][i] = base.detach().cpu()
            acc = state["maps"][j][i]
            delta = (base - s).to(acc.dtype)
            for d, (r, col) in zip(delta.tolist(), work.units, strict=True):
                acc[r:r + kh, col:col + kw] += d

    def finish(self, state: dict[str, Any], fm: FastModel, images: Tensor,
               targets: list[Target]) -> list[tuple[Tensor, dict[str, Any]]]:
        runner = state["runner"]
        common = {"windows": len(state["windows"]), "fill_mode": self.params["fill"],
                  "incremental": state["incremental"],
                  "incremental_note": state["incremental_note"],
                  "incremental_work": None if runner is None else runner.work_fraction(),
                  "incremental_full_from": None if runner is None else runner.full_from,
                  "incremental_check_forwards": int(state["checked"]),
                  "incremental_traced": state["traced"],
                  **fm.describe()}
        if runner is not None:
            runner.clean_env, runner.cache = {}, {}  # keep the graph, not the activations
        return [(m / state["counts"], {**common, "score": self.score_kind(t),
                                       "clean_score": c})
                for m, c, t in zip(state["maps"], state["clean"], targets, strict=True)]


def _close(a: Tensor, b: Tensor) -> bool:
    """Equal up to float rounding: ``1e-4`` of the output's largest magnitude (measured
    ``2e-5`` between batch sizes 1 and 32 on FCN-ResNet50; a value frozen into the trace
    gives differences of the order of the output)."""
    if a.shape != b.shape or not bool(torch.isfinite(b).all()):
        return False  # non-finite outputs: the full path reports them (check_model_output)
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * scale + 1e-7))


def _occlude(x: Tensor, fill: Tensor, corners: Sequence[tuple[int, int]], kh: int,
             kw: int) -> Tensor:
    """``len(corners)`` copies of ``x`` (``1×C×H×W``), copy ``j`` with window ``j`` replaced by
    the same window of ``fill``."""
    batch = x.expand(len(corners), -1, -1, -1).clone()
    for j, (r, c) in enumerate(corners):
        batch[j, :, r:r + kh, c:c + kw] = fill[0, :, r:r + kh, c:c + kw]
    return batch

