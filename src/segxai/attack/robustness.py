"""The robustness map: per differentiable explainer, attack success and map similarity vs ε.

For every explainer of :attr:`MapConfig.methods` and every ε of :attr:`MapConfig.epsilons`
(``None`` = the valid range only), the attack of :attr:`MapConfig.preset` (Dombrowski et al.'s
setting by default) runs on all images in batches of :attr:`MapConfig.batch_size`; the
target is, by default, the same explainer's map of the next image (``"other-image"``).
Then, from the x_adv of :attr:`MapConfig.transfer_from` (when it is attacked):

* **transfer** to explainers that cannot be attacked by gradient (occlusion,
  Seg-Ablation-CAM): how far their own map moves to their map of the next image;
* **defences** at :attr:`MapConfig.defence_epsilon`: β-smoothing (explanations of the
  Softplus(β) network) against a non-adaptive attacker (each attacked method's x_adv
  re-explained) and an adaptive one (an attack on the smoothed explanation itself, for
  ``transfer_from``); SmoothGrad against a non-adaptive attacker (SmoothGrad of the gradient
  attack's x_adv; the adaptive attacker is the ``smoothgrad`` row of the map itself).

Every finished (part, method, ε, image) is one row of the :class:`RunStore` (kind
``"attack-map"``), the transferred x_adv stored beside it, so a run cut anywhere resumes
without recomputing a finished batch; other settings are refused with the differing keys.
An ε whose ball is never touched by the unconstrained run of the same batch (its largest
drift, :attr:`AttackResult.max_drift`, is within ε for every image) takes exactly the same
steps, so its rows are copied from that run (marked ``"same_as": "none"``) instead of rerun.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from segxai.attack.attack import attack
from segxai.attack.config import PRESETS, AttackConfig, AttackResult
from segxai.attack.evaluation import (
    choose_target,
    evaluate_attack,
    make_explainer,
    other_image_map,
)
from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.checks import check_choice, check_positive_int
from segxai.core.errors import SegxaiError
from segxai.core.intervals import bootstrap_mean
from segxai.core.registry import get_explainer, list_explainers
from segxai.core.runstore import RunStore

__all__ = ["MapConfig", "eps_key", "quick_map_config", "robustness_map", "study_map_config",
           "summarize_map"]

KIND = "attack-map"
#: The explainers of the full map (every differentiable one).
METHODS = ("gradient", "smoothgrad", "integrated-gradients", "seg-grad-cam", "grad-cam++")
ROWS = "rows"
METRICS = ("success", "target_pearson", "target_ssim", "target_mse", "pixel_agreement",
           "clean_target_pearson", "moved", "linf")


def eps_key(eps: float | None) -> str:
    """``8/255`` → ``"8/255"``, ``None`` → ``"none"`` (row keys and table labels)."""
    return "none" if eps is None else f"{eps * 255:g}/255"


@dataclass
class MapConfig:
    """Settings of :func:`robustness_map` (JSON-serialisable; the run store's settings).

    ``method_epsilons`` and ``method_images`` size the costly explainers down (SmoothGrad
    and Integrated Gradients cost one gradient step per draw/node): a method listed in
    ``method_epsilons`` is attacked only at those of :attr:`epsilons`, one listed in
    ``method_images`` only on the first that many images (in the same fixed batches). Both
    empty = the full map, every method at every ε on every image.
    """

    methods: tuple[str, ...] = METHODS
    epsilons: tuple[float | None, ...] = (2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255, None)
    preset: Literal["dombrowski", "none"] = "dombrowski"
    attack_overrides: dict[str, Any] = field(default_factory=dict)
    target_kind: Literal["other-image", "shift", "mirror", "box"] = "other-image"
    batch_size: int = 16
    transfer_from: str = "gradient"
    transfer_methods: tuple[str, ...] = ("occlusion", "seg-ablation-cam")
    defence_beta: float = 3.0
    defence_epsilon: float | None = 8 / 255
    adaptive: bool = True
    explainer_params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"smoothgrad": {"n_samples": 8},
                                 "integrated-gradients": {"n_steps": 8}})
    method_epsilons: dict[str, tuple[float | None, ...]] = field(default_factory=dict)
    method_images: dict[str, int] = field(default_factory=dict)

    def epsilons_for(self, method: str) -> tuple[float | None, ...]:
        """The ε values ``method`` is attacked at (:attr:`epsilons`, or the subset given in
        :attr:`method_epsilons`)."""
        if method not in self.method_epsilons:
            return tuple(self.epsilons)
        allowed = list(self.method_epsilons[method])
        return tuple(e for e in self.epsilons if e in allowed)

    def images_for(self, method: str, n: int) -> int:
        """How many of the ``n`` images ``method`` is attacked on."""
        return min(n, int(self.method_images.get(method, n)))

    def attack_config(self) -> AttackConfig:
        base = dict(PRESETS[self.preset]) if self.preset != "none" else {}
        return AttackConfig.from_dict({**base, **self.attack_overrides})

    def validate(self) -> MapConfig:
        check_choice(self.preset, "preset", (*PRESETS, "none"))
        check_choice(self.target_kind, "target_kind", ("other-image", "shift", "mirror", "box"))
        check_positive_int(self.batch_size, "batch_size")
        if not self.methods:
            raise SegxaiError("methods: expected at least one explainer to attack")
        for m in self.methods:
            if not get_explainer(m).differentiable:
                raise SegxaiError(f"methods: {m!r} is not differentiable; list it in "
                                  "transfer_methods instead")
        for m in self.transfer_methods:
            get_explainer(m)
        if not self.epsilons:
            raise SegxaiError("epsilons: expected at least one ε (None = valid range only)")
        for e in self.epsilons:
            AttackConfig(epsilon=e).validate()
        allowed = self.epsilons_for(self.transfer_from) if self.transfer_from in self.methods \
            else self.epsilons
        if self.defence_epsilon not in allowed:
            raise SegxaiError(f"defence_epsilon: expected one of epsilons "
                              f"{[eps_key(e) for e in allowed]}, got "
                              f"{eps_key(self.defence_epsilon)}")
        for m in {*self.method_epsilons, *self.method_images}:
            if m not in self.methods:
                continue
            if not self.epsilons_for(m):
                raise SegxaiError(f"method_epsilons: {m!r} would be attacked at no ε of "
                                  f"{[eps_key(e) for e in self.epsilons]}")
            k = self.method_images.get(m, 2)
            if isinstance(k, bool) or not isinstance(k, int) or k < 2:
                raise SegxaiError(f"method_images: expected an integer >= 2 for {m!r}, got "
                                  f"{k!r}")
        if not self.defence_beta > 0:
            raise SegxaiError(f"defence_beta: expected a positive number, got "
                              f"{self.defence_beta!r}")
        self.attack_config()
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"], d["transfer_methods"] = list(self.methods), list(self.transfer_methods)
        d["epsilons"] = list(self.epsilons)
        d["method_epsilons"] = {m: list(v) for m, v in self.method_epsilons.items()}
        return d


def quick_map_config() -> MapConfig:
    """The ``--quick`` pipeline (CLI ``segxai attack --study --quick`` and the demo section):
    the gradient and Seg-Grad-CAM at ε = 8/255 and unconstrained, segxai's own attack (Adam
    lr 2e-2 with cosine decay, 30 steps: the paper's 1,500 steps of 4.5e-5 cannot move a map
    in a minute), batches of 4; transfer, defences and the adaptive attacker as in the full
    map."""
    return MapConfig(methods=("gradient", "seg-grad-cam"), epsilons=(8 / 255, None),
                     preset="none", attack_overrides={"iterations": 30}, batch_size=4)


def study_map_config() -> MapConfig:
    """The default of ``segxai attack --study``: the map sized to finish within an hour on
    one core (docs/attack.md, "Sizing --study", gives the measured cost per image-step):
    every explainer at ε = 8/255 with the preset, the gradient (and the transfer, the
    defences and the adaptive attacker built on it) on all images, the CAMs on the first
    16, SmoothGrad and Integrated Gradients (8 draws/nodes, ten times a gradient step) on
    the first 2. ``MapConfig()`` is the issue's full map."""
    return MapConfig(epsilons=(8 / 255,),
                     method_images={"seg-grad-cam": 16, "grad-cam++": 16, "smoothgrad": 2,
                                    "integrated-gradients": 2})


def _entry(metrics: dict[str, list[Any]], i: int, **extra: Any) -> dict[str, Any]:
    return {**{k: v[i] for k, v in metrics.items()}, **extra}


class _Run:
    """One robustness map in progress: the rows done, the store, the model and images."""

    def __init__(self, adapter: ModelAdapter, images: Tensor, cfg: MapConfig,
                 store: RunStore | None, seed: int, progress: bool) -> None:
        self.adapter, self.images, self.cfg = adapter, images, cfg
        self.store, self.seed, self.progress = store, seed, progress
        self.n = images.shape[0]
        self.targets = choose_target(adapter, images)
        self.other = torch.roll(torch.arange(self.n), -1)  # image i's target: image i + 1
        self.done: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        for row in store.rows(ROWS) if store is not None else ():
            self.done[(row["part"], row["method"], row["eps"], int(row["index"]))] = row["entry"]
        self.examples: dict[str, AttackResult] = {}
        self.fresh_x_adv: dict[tuple[str, str, int], Tensor] = {}

    def params(self, method: str) -> dict[str, Any]:
        p = dict(self.cfg.explainer_params.get(method, {}))
        if method == "smoothgrad":
            p.setdefault("seed", self.seed)
        return p

    def add(self, part: str, method: str, eps: str, i: int, entry: dict[str, Any]) -> None:
        if (part, method, eps, i) in self.done:  # a batch rerun after a cut inside it
            return
        if self.store is not None:
            self.store.append_row(ROWS, {"part": part, "method": method, "eps": eps,
                                         "index": i, "entry": entry})
        self.done[(part, method, eps, i)] = entry

    def chunks(self, part: str, method: str, eps: str, n: int | None = None
               ) -> list[list[int]]:
        """The fixed batches (images ``[kB, (k+1)B)`` of the first ``n``) with a row missing:
        a batch is always run whole, so a resumed run computes every row in the same batch
        as an uncut one."""
        b, n = self.cfg.batch_size, self.n if n is None else n
        groups = [list(range(k, min(k + b, n))) for k in range(0, n, b)]
        return [g for g in groups if any((part, method, eps, i) not in self.done for i in g)]

    def target_map(self, method: str, idx: list[int], beta: float | None) -> Tensor | str:
        if self.cfg.target_kind != "other-image":
            return self.cfg.target_kind
        j = self.other[idx]
        exp = make_explainer(method, self.params(method))
        return other_image_map(self.adapter, exp, self.images[idx], self.images[j],
                               self.targets[j], beta)

    def x_adv(self, method: str, eps: str, idx: list[int]) -> Tensor:
        out = []
        for i in idx:
            if (method, eps, i) in self.fresh_x_adv:
                out.append(self.fresh_x_adv[(method, eps, i)])
            else:
                assert self.store is not None
                name = f"x_adv/{method}/{eps.replace('/', '_')}/{i:04d}.safetensors"
                out.append(self.store.read_tensors(name)["x_adv"].to(self.images.device))
        return torch.cat(out)

    def keep_x_adv(self, method: str, eps: str, idx: list[int], x_adv: Tensor) -> None:
        for k, i in enumerate(idx):
            self.fresh_x_adv[(method, eps, i)] = x_adv[k:k + 1]
            if self.store is not None:
                name = f"x_adv/{method}/{eps.replace('/', '_')}/{i:04d}.safetensors"
                self.store.write_tensors(name, {"x_adv": x_adv[k:k + 1].contiguous()})

    def attack_rows(self, method: str) -> None:
        base = self.cfg.attack_config()
        # the unconstrained run first: a larger ε its drift never reaches reuses its rows
        order = sorted(self.cfg.epsilons_for(method), key=lambda e: -1.0 if e is None else -e)
        n = self.cfg.images_for(method, self.n)
        for eps in order:
            key = eps_key(eps)
            # x_adv needed later: transfer (all ε) and the non-adaptive defences
            keep = method == self.cfg.transfer_from or eps == self.cfg.defence_epsilon \
                or (eps is None and self.cfg.defence_epsilon is not None)
            for idx in self.chunks("attack", method, key, n):
                none_rows = [self.done.get(("attack", method, "none", i)) for i in idx]
                if eps is not None and all(r is not None and r["max_drift"] <= eps
                                           for r in none_rows):
                    for i, r in zip(idx, none_rows, strict=True):
                        assert r is not None
                        self.add("attack", method, key, i, {**r, "same_as": "none"})
                    if keep:
                        self.keep_x_adv(method, key, idx, self.x_adv(method, "none", idx))
                    continue
                t0 = time.perf_counter()
                cfg = AttackConfig.from_dict({**base.to_dict(), "epsilon": eps})
                res = attack(self.adapter, self.images[idx], self.targets[torch.tensor(idx)],
                             method, self.target_map(method, idx, None), cfg,
                             explainer_params=self.params(method), progress=self.progress)
                sec = (time.perf_counter() - t0) / len(idx)
                if keep:
                    self.keep_x_adv(method, key, idx, res.x_adv)
                self.examples.setdefault(method, res)
                for k, i in enumerate(idx):
                    self.add("attack", method, key, i,
                             _entry(res.metrics, k, max_drift=res.max_drift[k], seconds=sec,
                                    batch=len(idx)))

    def evaluate_rows(self, part: str, method: str, source: str, eps: float | None,
                      beta: float | None) -> None:
        """``method``'s maps on the x_adv of ``source`` (transfer / non-adaptive defence),
        on the images ``source`` was attacked on."""
        key = eps_key(eps)
        for idx in self.chunks(part, method, key, self.cfg.images_for(source, self.n)):
            t0 = time.perf_counter()
            ev = evaluate_attack(self.adapter, self.images[idx], self.x_adv(source, key, idx),
                                 self.targets[torch.tensor(idx)],
                                 self.target_map(method, idx, beta), method,
                                 explainer_params=self.params(method), defence_beta=beta)
            sec = (time.perf_counter() - t0) / len(idx)
            for k, i in enumerate(idx):
                self.add(part, method, key, i, _entry(ev["metrics"], k, source=source,
                                                      seconds=sec))

    def adaptive_rows(self, method: str, eps: float | None) -> None:
        key = eps_key(eps)
        for idx in self.chunks("beta-adaptive", method, key,
                               self.cfg.images_for(method, self.n)):
            t0 = time.perf_counter()
            cfg = AttackConfig.from_dict({**self.cfg.attack_config().to_dict(), "epsilon": eps,
                                          "defence_beta": self.cfg.defence_beta})
            res = attack(self.adapter, self.images[idx], self.targets[torch.tensor(idx)],
                         method, self.target_map(method, idx, self.cfg.defence_beta), cfg,
                         explainer_params=self.params(method), progress=self.progress)
            sec = (time.perf_counter() - t0) / len(idx)
            for k, i in enumerate(idx):
                self.add("beta-adaptive", method, key, i, _entry(res.metrics, k, seconds=sec))


def bootstrap_ci(values: list[float]) -> tuple[float, float]:
    """The default interval of :func:`summarize_map`: a 95 % percentile bootstrap of the mean
    (:func:`segxai.core.intervals.bootstrap_mean`, seed 0)."""
    iv = bootstrap_mean(values, seed=0)
    return iv.lo, iv.hi


def robustness_map(model: Any, images: Tensor, config: MapConfig | None = None, *,
                   checkpoint_dir: str | Path | None = None, progress: bool = False,
                   device: str = "cpu", seed: int = 0,
                   interval: Callable[[list[float]], tuple[float, float]] | None = bootstrap_ci,
                   ) -> dict[str, Any]:
    """Run (or resume) the robustness map; see the module docstring.

    Args:
        model: a segmentation ``nn.Module`` or :class:`ModelAdapter`.
        images: ``(N, C, H, W)`` model-space images (``N >= 2`` for ``"other-image"``).
        config: a :class:`MapConfig`.
        checkpoint_dir: the run store (resumable; other settings refused).
        progress: progress bars of the attacks.
        device: torch device.
        seed: SmoothGrad's noise seed.
        interval: the summary's interval function (see :func:`summarize_map`).

    Returns:
        ``{"config", "rows": [{"part", "method", "eps", "index", "entry"}], "summary":
        summarize_map(rows, interval), "examples": {method: AttackResult of its first batch run},
        "seconds"}``.
    """
    t0 = time.perf_counter()
    cfg = (config or MapConfig()).validate()
    adapter = model if isinstance(model, ModelAdapter) else adapt(model, device=device)
    images = adapter.check(images).detach()
    if cfg.target_kind == "other-image" and images.shape[0] < 2:
        raise SegxaiError("images: the 'other-image' target needs at least 2 images")
    settings = {**cfg.to_dict(), "seed": seed, "n_images": int(images.shape[0])}
    store = RunStore(checkpoint_dir, kind=KIND, settings=settings) \
        if checkpoint_dir is not None else None
    run = _Run(adapter, images, cfg, store, seed, progress)
    for method in cfg.methods:
        run.attack_rows(method)
    d, source = cfg.defence_epsilon, cfg.transfer_from
    for method in (m for m in cfg.methods if d in cfg.epsilons_for(m)):
        run.evaluate_rows("beta-nonadaptive", method, method, d, cfg.defence_beta)
    if source in cfg.methods:  # transfer and the attackers that build on its x_adv
        for eps in cfg.epsilons_for(source):
            for method in cfg.transfer_methods:
                run.evaluate_rows("transfer", method, source, eps, None)
        if "smoothgrad" in list_explainers() and source != "smoothgrad":
            run.evaluate_rows("smoothgrad-nonadaptive", "smoothgrad", source, d, None)
        if cfg.adaptive:
            run.adaptive_rows(source, d)
    rows = [{"part": p, "method": m, "eps": e, "index": i, "entry": entry}
            for (p, m, e, i), entry in sorted(run.done.items(), key=lambda kv: kv[0][3])]
    return {"config": settings, "rows": rows, "summary": summarize_map(rows, interval),
            "examples": run.examples, "seconds": time.perf_counter() - t0}


def summarize_map(rows: list[dict[str, Any]],
                  interval: Callable[[list[float]], tuple[float, float]] | None = bootstrap_ci,
                  ) -> list[dict[str, Any]]:
    """One row per (part, method, ε): image count and, for each metric of :data:`METRICS`,
    the mean over images and ``interval(values)`` as ``NAME_ci`` (``None`` below 2 images).

    Args:
        rows: the rows of :func:`robustness_map`.
        interval: ``values → (lo, hi)`` (default :func:`bootstrap_ci`); ``None``: no
            intervals.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["part"], r["method"], r["eps"]), []).append(r["entry"])
    out = []
    for (part, method, eps), entries in groups.items():
        row: dict[str, Any] = {"part": part, "method": method, "eps": eps,
                               "images": len(entries)}
        for name in METRICS:
            vals = [float(e[name]) for e in entries if e.get(name) is not None]
            if not vals:
                continue
            mean = sum(vals) / len(vals)
            row[name] = mean
            if interval is not None and len(vals) >= 2 and all(v == v for v in vals):
                row[f"{name}_ci"] = list(interval(vals))
            else:
                row[f"{name}_ci"] = None
        row["seconds"] = sum(float(e.get("seconds", 0.0)) for e in entries) / len(entries)
        out.append(row)
    return out
