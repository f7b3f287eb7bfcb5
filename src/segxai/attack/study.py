"""Robustness study: which explainers resist explanation attacks, with and without defence.

For every image (class = the most frequent predicted non-background class, ROI = its
predicted pixels, both fixed from the clean image):

1. each differentiable explainer is attacked (:func:`~segxai.attack.attack`); a success is a
   Pearson correlation with the target of at least ``success_pearson`` while the pixel
   agreement with the clean prediction stays at least ``min_agreement`` (99 %);
2. the β-smoothing defence (Dombrowski et al. 2019): explanations are computed on the
   Softplus(``defence_beta``) network. ``defence="transfer"`` re-explains the x_adv found
   against the ReLU explanation; ``defence="adaptive"`` runs a second attack that targets the
   smoothed explanation directly (β constant, twice the cost);
3. explainers that cannot return differentiable maps (occlusion, Seg-Ablation-CAM, ...) are
   evaluated on the x_adv of the ``transfer_from`` attack: how far their map moves towards
   the target of the same kind built from their own clean map.

Per-image records are written to ``checkpoint_dir/images/NNNN.json`` as soon as an image is
done; a rerun with the same settings skips finished images (resume).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from segxai.attack.attack import AttackConfig, AttackResult, attack, evaluate_attack
from segxai.attack.targets import TARGET_KINDS, make_target_map
from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.checks import check_choice
from segxai.core.registry import explain, get_explainer, list_explainers
from segxai.core.target import Target

__all__ = ["StudyConfig", "StudyResult", "choose_target", "robustness_study",
           "summarize_records"]

DEFAULT_TRANSFER = ("occlusion", "seg-ablation-cam")


def choose_target(model: Any, images: Tensor) -> Target:
    """Per image: the most frequent predicted class other than 0 (background), or class 0 if
    nothing else is predicted; ROI = its predicted pixels on the clean image."""
    adapter = adapt(model)
    images = adapter.check(images)
    pred = adapter.predict(images)
    k = adapter.num_classes(images)
    classes = []
    for p in pred:
        counts = torch.bincount(p.flatten().cpu(), minlength=k)
        fg = counts.clone()
        fg[0] = 0
        classes.append(int(fg.argmax()) if int(fg.sum()) > 0 else 0)
    return Target.from_prediction(adapter, images, classes)


@dataclass
class StudyConfig:
    """Settings of :func:`robustness_study` (JSON-serialisable).

    Attributes:
        methods: differentiable explainers to attack.
        transfer_methods: non-differentiable explainers evaluated on the transferred x_adv;
            ``None`` = those of :data:`DEFAULT_TRANSFER` that are registered.
        transfer_from: the attacked method whose x_adv is transferred.
        target_kind: ``"shift"``, ``"mirror"``, ``"box"`` or ``"other-image"`` (the next image's
            explanation).
        attack: the :class:`AttackConfig` (its ``success_pearson``/``min_agreement`` define a
            success).
        defence_beta: β of the smoothing defence.
        defence: ``"transfer"``, ``"adaptive"`` or ``"none"``.
        explainer_params: per-method parameters, e.g. ``{"smoothgrad": {"n_samples": 8}}``.
        attack_overrides: per-method :class:`AttackConfig` fields, e.g.
            ``{"smoothgrad": {"iterations": 50}}`` (SmoothGrad costs n_samples × more a step).
    """

    methods: tuple[str, ...] = ("gradient", "smoothgrad", "seg-grad-cam")
    transfer_methods: tuple[str, ...] | None = None
    transfer_from: str = "gradient"
    target_kind: str = "shift"
    attack: AttackConfig = field(default_factory=AttackConfig)
    defence_beta: float = 3.0
    defence: str = "transfer"
    explainer_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    attack_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def attack_config(self, method: str) -> AttackConfig:
        """The attack settings of ``method`` (``attack`` with its overrides)."""
        over = self.attack_overrides.get(method, {})
        return AttackConfig.from_dict({**self.attack.to_dict(), **over}) if over else self.attack

    def validate(self) -> StudyConfig:
        check_choice(self.target_kind, "target_kind", TARGET_KINDS)
        check_choice(self.defence, "defence", ("transfer", "adaptive", "none"))
        if not self.defence_beta > 0:
            raise ValueError(f"defence_beta: expected a positive number, got {self.defence_beta!r}")
        if not self.methods:
            raise ValueError("methods: expected at least one explainer to attack")
        for m in self.methods:
            cls = get_explainer(m)
            if not cls.differentiable:
                raise ValueError(f"methods: {m!r} is not differentiable; list it in "
                                 "transfer_methods instead")
        for m in self.transfer_methods or ():
            get_explainer(m)
        if self.transfer_methods and self.transfer_from not in self.methods:
            raise ValueError(f"transfer_from: {self.transfer_from!r} must be one of the attacked "
                             f"methods {list(self.methods)}")
        self.attack.validate()
        for m in self.attack_overrides:
            if m not in self.methods:
                raise ValueError(f"attack_overrides: {m!r} is not an attacked method")
            self.attack_config(m)
        return self

    def resolved_transfer(self) -> tuple[str, ...]:
        if self.transfer_methods is not None:
            return tuple(self.transfer_methods)
        names = set(list_explainers())
        if self.transfer_from not in self.methods:
            return ()
        return tuple(m for m in DEFAULT_TRANSFER if m in names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"] = list(self.methods)
        d["transfer_methods"] = list(self.resolved_transfer())
        return d


@dataclass
class StudyResult:
    """Per-image records, the summary table and the settings of a study.

    Attributes:
        records: one dict per image (``index``, ``class_index``, ``attacks`` per method,
            ``transfer`` per transfer method).
        summary: aggregated rows (see :func:`summarize_records`).
        config: the :class:`StudyConfig` as a dict.
        examples: the :class:`AttackResult` of the first image per attacked method (for
            figures; absent for images loaded from a checkpoint).
        seconds: wall time of this run (finished images skipped on resume cost nothing).
    """

    records: list[dict[str, Any]]
    summary: dict[str, list[dict[str, Any]]]
    config: dict[str, Any]
    examples: dict[str, AttackResult] = field(default_factory=dict)
    seconds: float = 0.0


def _first(values: list[Any]) -> Any:
    return values[0]


def _one(metrics: dict[str, list[Any]]) -> dict[str, Any]:
    return {k: _first(v) for k, v in metrics.items()}


def _params(cfg: StudyConfig, method: str, seed: int) -> dict[str, Any]:
    params = dict(cfg.explainer_params.get(method, {}))
    if method == "smoothgrad":
        params.setdefault("seed", seed)
    return params


def _study_image(adapter: ModelAdapter, x: Tensor, target: Target, other: Tensor | None,
                 other_target: Target | None, cfg: StudyConfig, seed: int,
                 progress: bool) -> tuple[dict[str, Any], dict[str, AttackResult]]:
    rec: dict[str, Any] = {"class_index": int(target.class_index[0]), "attacks": {},
                           "transfer": {}}
    results: dict[str, AttackResult] = {}
    succ, mina = cfg.attack.success_pearson, cfg.attack.min_agreement

    def target_for(method: str, params: dict[str, Any], beta: float | None) -> Tensor | str:
        if cfg.target_kind != "other-image":
            return cfg.target_kind
        assert other is not None and other_target is not None
        if beta is None:
            maps = explain(adapter, other, other_target, method=method, **params).maps
        else:
            from segxai.attack.softplus import softplus_model

            assert adapter.module is not None
            with softplus_model(adapter.module, beta):
                maps = explain(adapter, other, other_target, method=method, **params).maps
        return make_target_map("other-image", maps, other_maps=maps)

    for method in cfg.methods:
        params = _params(cfg, method, seed)
        acfg = cfg.attack_config(method)
        res = attack(adapter, x, target, method, target_for(method, params, None), acfg,
                     explainer_params=params, progress=progress)
        results[method] = res
        entry = {**_one(res.metrics), "seconds": res.seconds,
                 "kept_iteration": res.kept_iteration[0]}
        if cfg.defence == "transfer":
            ev = evaluate_attack(adapter, x, res.x_adv, target,
                                 target_for(method, params, cfg.defence_beta), method,
                                 explainer_params=params, defence_beta=cfg.defence_beta,
                                 success_pearson=succ, min_agreement=mina)
            entry["defended"] = _one(ev["metrics"])
        elif cfg.defence == "adaptive":
            t0 = time.perf_counter()
            dres = attack(adapter, x, target, method, target_for(method, params, cfg.defence_beta),
                          acfg, explainer_params=params, progress=progress,
                          defence_beta=cfg.defence_beta)
            entry["defended"] = {**_one(dres.metrics), "seconds": time.perf_counter() - t0}
        rec["attacks"][method] = entry
    transfer = cfg.resolved_transfer()
    if transfer:
        x_adv = results[cfg.transfer_from].x_adv
        for method in transfer:
            params = _params(cfg, method, seed)
            t0 = time.perf_counter()
            tmap: Tensor | str = cfg.target_kind
            if cfg.target_kind == "other-image":
                assert other is not None and other_target is not None
                tmap = explain(adapter, other, other_target, method=method, **params).maps
            ev = evaluate_attack(adapter, x, x_adv, target, tmap, method,
                                 explainer_params=params, success_pearson=succ,
                                 min_agreement=mina)
            rec["transfer"][method] = {**_one(ev["metrics"]), "from": cfg.transfer_from,
                                       "seconds": time.perf_counter() - t0}
    return rec, results


def summarize_records(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Aggregate per-image records: one row per attacked method (success rates with and
    without defence, mean metrics) and one per transfer method (mean move to the target)."""
    def mean(values: list[float]) -> float:
        return float(sum(values) / len(values)) if values else float("nan")

    attacked: dict[str, list[dict[str, Any]]] = {}
    transferred: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        for m, e in rec["attacks"].items():
            attacked.setdefault(m, []).append(e)
        for m, e in rec.get("transfer", {}).items():
            transferred.setdefault(m, []).append(e)
    rows = []
    for m, es in attacked.items():
        row = {"method": m, "images": len(es),
               "success_rate": mean([float(e["success"]) for e in es]),
               "clean_target_pearson": mean([e["clean_target_pearson"] for e in es]),
               "target_pearson": mean([e["target_pearson"] for e in es]),
               "original_pearson": mean([e["original_pearson"] for e in es]),
               "pixel_agreement": mean([e["pixel_agreement"] for e in es]),
               "linf_255": mean([e["linf"] * 255 for e in es]),
               "psnr": mean([e["psnr"] for e in es]),
               "seconds": mean([e["seconds"] for e in es])}
        defended = [e["defended"] for e in es if "defended" in e]
        if defended:
            row["defended_success_rate"] = mean([float(d["success"]) for d in defended])
            row["defended_target_pearson"] = mean([d["target_pearson"] for d in defended])
        rows.append(row)
    trows = []
    for m, es in transferred.items():
        trows.append({"method": m, "from": es[0]["from"], "images": len(es),
                      "success_rate": mean([float(e["success"]) for e in es]),
                      "clean_target_pearson": mean([e["clean_target_pearson"] for e in es]),
                      "target_pearson": mean([e["target_pearson"] for e in es]),
                      "moved": mean([e["moved"] for e in es]),
                      "original_pearson": mean([e["original_pearson"] for e in es]),
                      "seconds": mean([e["seconds"] for e in es])})
    return {"attacked": rows, "transferred": trows}


def robustness_study(model: Any, images: Tensor, config: StudyConfig | None = None, *,
                     checkpoint_dir: str | Path | None = None, progress: bool = True,
                     device: str = "cpu", seed: int = 0) -> StudyResult:
    """Attack success rates per explainer, with the β-smoothing defence and transfer to
    perturbation explainers (see the module docstring).

    Args:
        model: a segmentation ``nn.Module`` (or :class:`ModelAdapter`).
        images: ``(N, C, H, W)`` clean model-space images (``N >= 2`` for ``"other-image"``).
        config: a :class:`StudyConfig`.
        checkpoint_dir: write one JSON per finished image there and skip finished images when
            rerun with the same settings.
        progress: progress bars.
        device: torch device of the model and images.
        seed: seed of the SmoothGrad noise draws (unless given in ``explainer_params``).

    Returns:
        A :class:`StudyResult`.
    """
    t0 = time.perf_counter()
    cfg = (config or StudyConfig()).validate()
    adapter = adapt(model, device=device) if not isinstance(model, ModelAdapter) else model
    images = adapter.check(images)
    n = images.shape[0]
    if cfg.target_kind == "other-image" and n < 2:
        raise ValueError("images: the 'other-image' target needs at least 2 images")
    targets = choose_target(adapter, images)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    cfg_dict = {**cfg.to_dict(), "seed": seed, "n_images": n}
    fingerprint = hashlib.sha256(json.dumps(cfg_dict, sort_keys=True, default=str)
                                 .encode()).hexdigest()[:16]
    if ckpt is not None:
        (ckpt / "images").mkdir(parents=True, exist_ok=True)
        meta = ckpt / "study_config.json"
        if meta.exists():
            old = json.loads(meta.read_text())
            if old.get("fingerprint") != fingerprint:
                raise ValueError(f"checkpoint_dir: {ckpt} holds a study with other settings; "
                                 "use another directory or delete it")
        else:
            meta.write_text(json.dumps({"fingerprint": fingerprint, "config": cfg_dict},
                                       indent=2, default=str))
    records: list[dict[str, Any]] = []
    examples: dict[str, AttackResult] = {}
    for i in tqdm(range(n), disable=not progress, desc="attack study"):
        path = ckpt / "images" / f"{i:04d}.json" if ckpt is not None else None
        if path is not None and path.exists():
            records.append(json.loads(path.read_text()))
            continue
        j = (i + 1) % n
        other = images[j:j + 1] if cfg.target_kind == "other-image" else None
        other_t = targets[j] if cfg.target_kind == "other-image" else None
        rec, results = _study_image(adapter, images[i:i + 1], targets[i], other, other_t, cfg,
                                    seed, progress)
        rec = {"index": i, **rec}
        if not examples:
            examples = results
        if path is not None:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rec, indent=2))
            tmp.replace(path)
        records.append(rec)
    return StudyResult(records, summarize_records(records), cfg_dict, examples,
                       time.perf_counter() - t0)
