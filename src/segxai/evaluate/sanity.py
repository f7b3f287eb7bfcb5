"""Model-parameter randomisation sanity check (Adebayo et al., NeurIPS 2018), cascading.

The parameters of a deep copy of the model are re-drawn group by group from the output
towards the input (head → decoder → bottleneck → encoder) and the explanation is recomputed
after each group, always for the ROI and class fixed on the *original* model. A method that
depends on the model should produce maps that become less similar to the original map as
more of the model is randomised; a method that ignores the model (an edge detector) does not.

Similarity: Spearman rank correlation of the maps (signed, and of ``|map|``) and SSIM of the
min-max normalised maps.

Groups: explicit ``groups`` (a list of ``(name, [module names])`` or of module names), or,
by default, the top-level parameterised modules in reverse execution order, where a top-level
``ModuleList``/``Sequential``/``ModuleDict`` is split into its parameterised children (so a
U-Net gives ``head``, ``decoder.1``, ``decoder.0``, ``bottleneck``, ``encoder.3``, ...).
Execution order is recorded with one probe forward.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from segxai.core import stats
from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.layers import find_layer
from segxai.core.registry import get_explainer, make_generator
from segxai.core.target import Target, check_target

__all__ = ["SanityResult", "cascade_groups", "cascading_randomization", "randomize_modules",
           "spearman", "ssim"]


@dataclass
class SanityResult:
    """Similarity of the explanation after each cascading randomisation step.

    Attributes:
        method: the explainer's name.
        steps: names of the groups randomised (cumulatively), in order; ``"original"`` first.
        spearman_abs: ``(S, N)`` Spearman correlation of ``|map|`` with the original.
        spearman: ``(S, N)`` signed Spearman correlation.
        ssim: ``(S, N)`` SSIM of min-max normalised maps.
        maps: ``(S, N, H, W)`` the maps after each step.
    """

    method: str
    steps: list[str]
    spearman_abs: np.ndarray
    spearman: np.ndarray
    ssim: np.ndarray
    maps: np.ndarray = field(repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows ``{step, index, randomized, spearman_abs, spearman, ssim}`` (mean over
        images)."""
        return [{"step": s, "index": i, "spearman_abs": float(np.nanmean(self.spearman_abs[i])),
                 "spearman": float(np.nanmean(self.spearman[i])),
                 "ssim": float(np.nanmean(self.ssim[i]))} for i, s in enumerate(self.steps)]


def spearman(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened); NaN if either is constant.

    See :func:`segxai.core.stats.spearman`.
    """
    return stats.spearman(a, b)


def ssim(a: Tensor | np.ndarray, b: Tensor | np.ndarray, *, normalize: bool = True,
         sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al., 2004) of two 2-D maps.

    Gaussian window (σ 1.5, 11 taps, shrunk for small maps), data range 1, constants
    ``(0.01)²`` and ``(0.03)²``, mean over the valid region (as scikit-image with
    ``gaussian_weights=True, use_sample_covariance=False``). See
    :func:`segxai.core.stats.ssim`.

    Args:
        a: first map ``(H, W)``.
        b: second map ``(H, W)``.
        normalize: min-max both maps to ``[0, 1]`` first.
        sigma: Gaussian window σ.

    Returns:
        SSIM in ``[-1, 1]``.
    """
    sa, sb = (tuple(m.shape) if isinstance(m, Tensor) else np.shape(m) for m in (a, b))
    if len(sa) != 2 or sa != sb:
        raise SegxaiError(f"maps: expected two (H, W) maps of the same shape, got {sa} and {sb}")
    return float(stats.ssim(a, b, normalize=normalize, sigma=sigma))


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def cascade_groups(model: nn.Module, images: Tensor | None = None) -> list[tuple[str, list[str]]]:
    """The default cascade: parameterised top-level modules in reverse execution order.

    A top-level container (``ModuleList``, ``Sequential``, ``ModuleDict``) is split into its
    parameterised children. Modules that never run in the probe forward keep their
    registration order, after the executed ones (so they are randomised first).

    Args:
        model: the network.
        images: a probe batch (one image is used) to record the execution order; without it
            the registration order is used.

    Returns:
        ``[(group name, [module names]), ...]`` from the output side to the input side.
    """
    units: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if not _has_params(child):
            continue
        if isinstance(child, (nn.ModuleList, nn.Sequential, nn.ModuleDict)):
            subs = [(f"{name}.{n}", c) for n, c in child.named_children() if _has_params(c)]
            units.extend(subs)
        else:
            units.append((name, child))
    if not units:
        own = [n for n, _ in model.named_parameters(recurse=False)]
        if own:
            return [("model", [""])]
        raise SegxaiError("model: has no parameters to randomise")
    order: dict[str, int] = {}
    if images is not None:
        handles = []
        for name, mod in units:
            def hook(_m: nn.Module, _i: object, name: str = name) -> None:
                order.setdefault(name, len(order))
            handles.append(mod.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                adapt(model).logits(images[:1])
        finally:
            for h in handles:
                h.remove()
    executed = sorted((n for n, _ in units if n in order), key=lambda n: order[n])
    never = [n for n, _ in units if n not in order]
    if not order:
        executed, never = [n for n, _ in units], []
    seq = never + list(reversed(executed))
    return [(n, [n]) for n in seq]


def randomize_modules(model: nn.Module, names: Sequence[str], generator: torch.Generator) -> None:
    """Re-draw the parameters of the named modules in place.

    Each parameter becomes ``N(0, σ²)`` with σ the standard deviation of its original values
    (σ = 1 for constant or one-element parameters, such as BatchNorm scales), so the scale
    of the network is roughly kept while the learned structure is destroyed.
    """
    for name in names:
        mod = model if name == "" else find_layer(model, name)
        params = mod.parameters(recurse=True) if name != "" else model.parameters(recurse=False)
        with torch.no_grad():
            for p in params:
                std = float(p.detach().float().std()) if p.numel() > 1 else 0.0
                if not math.isfinite(std) or std <= 0:
                    std = 1.0
                draw = torch.randn(p.shape, generator=generator, dtype=torch.float32) * std
                p.copy_(draw.to(device=p.device, dtype=p.dtype))


def cascading_randomization(model: nn.Module | ModelAdapter, images: Tensor, target: Target,
                            method: str, *, params: dict[str, Any] | None = None,
                            groups: Sequence[tuple[str, Sequence[str]] | str] | None = None,
                            seed: int = 0, progress: bool = False) -> SanityResult:
    """Cascading model-parameter randomisation of one explainer.

    Args:
        model: the network (an ``nn.Module`` or an adapter around one); it is not changed.
        images: ``(N, C, H, W)`` model-space images.
        target: the :class:`Target` fixed on the original model (ROI and class).
        method: a registered explainer name.
        params: the explainer's parameters.
        groups: the cascade, output side first: ``[(name, [module names]), ...]`` or module
            names; default :func:`cascade_groups`.
        seed: seed of the random parameters.
        progress: show a progress bar.

    Returns:
        A :class:`SanityResult`; step 0 is the original model (similarity 1).
    """
    adapter = adapt(model)
    net = adapter.module
    if net is None:
        raise SegxaiTypeError("model: the sanity check needs an nn.Module (it randomises parameters)")
    target = check_target(target)
    images = adapter.check(images)
    explainer = get_explainer(method)(**(params or {}))
    if groups is None:
        with adapter.explaining():
            cascade = cascade_groups(net, images)
    else:
        cascade = []
        for g in groups:
            if isinstance(g, str):
                cascade.append((g, [g]))
            else:
                name, mods = g
                cascade.append((str(name), [str(m) for m in mods]))
        for _, mods in cascade:
            for m in mods:
                find_layer(net, m)  # unknown names raise ValueError with suggestions

    def run(adp: ModelAdapter) -> np.ndarray:
        return explainer(adp, images, target).maps.detach().cpu().double().numpy()

    original = run(adapter)
    work = copy.deepcopy(net)
    work_adapter = ModelAdapter(work, mean=adapter.mean, std=adapter.std,
                                upsample_mode=adapter.upsample_mode)
    gen = make_generator(seed)
    steps, all_maps = ["original"], [original]
    it = cascade
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(cascade, desc=f"sanity {method}", leave=False)
    for name, mods in it:
        randomize_modules(work, mods, gen)
        steps.append(name)
        all_maps.append(run(work_adapter))
    n = original.shape[0]
    sp_abs = np.empty((len(steps), n))
    sp = np.empty((len(steps), n))
    ss = np.empty((len(steps), n))
    for s, maps in enumerate(all_maps):
        for i in range(n):
            sp_abs[s, i] = spearman(np.abs(original[i]), np.abs(maps[i]))
            sp[s, i] = spearman(original[i], maps[i])
            ss[s, i] = ssim(original[i], maps[i])
    return SanityResult(method, steps, sp_abs, sp, ss, np.stack(all_maps))
