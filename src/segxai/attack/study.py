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

With a ``checkpoint_dir`` the study is a :class:`~segxai.core.runstore.RunStore` of kind
``"attack-study"`` whose settings are the :class:`StudyConfig`, the seed and the number of
images: each finished (image, attacked method) and (image, transfer method) is appended as one
row to ``results.jsonl`` as soon as it is done (the x_adv of ``transfer_from`` is stored
beside it, so the transfer rows of an image can resume without re-attacking), and a rerun
with the same settings skips the finished rows; other settings are refused with the
differing keys named.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor
from tqdm.auto import tqdm

from segxai.attack.attack import AttackConfig, AttackResult, attack, evaluate_attack
from segxai.attack.evaluation import choose_target
from segxai.attack.targets import TARGET_KINDS, make_target_map
from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.checks import check_choice
from segxai.core.errors import SegxaiError
from segxai.core.registry import explain, get_explainer, list_explainers
from segxai.core.runstore import RunStore
from segxai.core.target import Target

__all__ = ["StudyConfig", "StudyResult", "choose_target", "robustness_study",
           "summarize_records"]

DEFAULT_TRANSFER = ("occlusion", "seg-ablation-cam")
KIND = "attack-study"
ROWS = "results"  # one row per finished (image, method)


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
    target_kind: Literal["shift", "mirror", "box", "other-image"] = "shift"
    attack: AttackConfig = field(default_factory=AttackConfig)
    defence_beta: float = 3.0
    defence: Literal["transfer", "adaptive", "none"] = "transfer"
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
            raise SegxaiError(f"defence_beta: expected a positive number, got {self.defence_beta!r}")
        if not self.methods:
            raise SegxaiError("methods: expected at least one explainer to attack")
        for m in self.methods:
            cls = get_explainer(m)
            if not cls.differentiable:
                raise SegxaiError(f"methods: {m!r} is not differentiable; list it in "
                                 "transfer_methods instead")
        for m in self.transfer_methods or ():
            get_explainer(m)
        if self.transfer_methods and self.transfer_from not in self.methods:
            raise SegxaiError(f"transfer_from: {self.transfer_from!r} must be one of the attacked "
                             f"methods {list(self.methods)}")
        self.attack.validate()
        for m in self.attack_overrides:
            if m not in self.methods:
                raise SegxaiError(f"attack_overrides: {m!r} is not an attacked method")
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


def _target_for(adapter: ModelAdapter, other: Tensor | None, other_target: Target | None,
                cfg: StudyConfig, method: str, params: dict[str, Any],
                beta: float | None) -> Tensor | str:
    """The attack's target: a kind name, or for ``"other-image"`` the next image's map."""
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


def _attack_entry(adapter: ModelAdapter, x: Tensor, target: Target, other: Tensor | None,
                  other_target: Target | None, cfg: StudyConfig, method: str, seed: int,
                  progress: bool) -> tuple[dict[str, Any], AttackResult]:
    """One attacked method on one image (with the defence of ``cfg``)."""
    succ, mina = cfg.attack.success_pearson, cfg.attack.min_agreement
    params = _params(cfg, method, seed)
    acfg = cfg.attack_config(method)
    res = attack(adapter, x, target, method, _target_for(adapter, other, other_target, cfg,
                                                          method, params, None),
                 acfg, explainer_params=params, progress=progress)
    entry = {**_one(res.metrics), "seconds": res.seconds, "kept_iteration": res.kept_iteration[0]}
    if cfg.defence == "transfer":
        ev = evaluate_attack(adapter, x, res.x_adv, target,
                             _target_for(adapter, other, other_target, cfg, method, params,
                                         cfg.defence_beta), method,
                             explainer_params=params, defence_beta=cfg.defence_beta,
                             success_pearson=succ, min_agreement=mina)
        entry["defended"] = _one(ev["metrics"])
    elif cfg.defence == "adaptive":
        t0 = time.perf_counter()
        dres = attack(adapter, x, target, method,
                      _target_for(adapter, other, other_target, cfg, method, params,
                                  cfg.defence_beta),
                      acfg, explainer_params=params, progress=progress,
                      defence_beta=cfg.defence_beta)
        entry["defended"] = {**_one(dres.metrics), "seconds": time.perf_counter() - t0}
    return entry, res


def _transfer_entry(adapter: ModelAdapter, x: Tensor, x_adv: Tensor, target: Target,
                    other: Tensor | None, other_target: Target | None, cfg: StudyConfig,
                    method: str, seed: int) -> dict[str, Any]:
    """How far ``method``'s map moves towards its target on the transferred ``x_adv``."""
    params = _params(cfg, method, seed)
    t0 = time.perf_counter()
    tmap: Tensor | str = cfg.target_kind
    if cfg.target_kind == "other-image":
        assert other is not None and other_target is not None
        tmap = explain(adapter, other, other_target, method=method, **params).maps
    ev = evaluate_attack(adapter, x, x_adv, target, tmap, method, explainer_params=params,
                         success_pearson=cfg.attack.success_pearson,
                         min_agreement=cfg.attack.min_agreement)
    return {**_one(ev["metrics"]), "from": cfg.transfer_from,
            "seconds": time.perf_counter() - t0}


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


def _null_to_nan(entry: dict[str, Any]) -> dict[str, Any]:
    # rows store non-finite metrics as JSON null; records hold NaN either way
    return {k: _null_to_nan(v) if isinstance(v, dict) else
            (float("nan") if v is None and k != "kept_iteration" else v)
            for k, v in entry.items()}


def _x_adv_name(index: int) -> str:
    return f"x_adv/{index:04d}.safetensors"


def _study_image(adapter: ModelAdapter, images: Tensor, targets: Target, i: int,
                 cfg: StudyConfig, seed: int, progress: bool, store: RunStore | None,
                 done: dict[tuple[int, str, str], dict[str, Any]],
                 ) -> tuple[dict[str, Any], dict[str, AttackResult]]:
    """The record of image ``i`` (rows in ``done`` reused, the others computed and stored)
    and the attacks computed in this call."""
    x = images[i:i + 1]
    j = (i + 1) % images.shape[0]
    other = images[j:j + 1] if cfg.target_kind == "other-image" else None
    other_t = targets[j] if cfg.target_kind == "other-image" else None
    target = targets[i]
    rec: dict[str, Any] = {"index": i, "class_index": int(target.class_index[0]),
                           "attacks": {}, "transfer": {}}
    transfer = cfg.resolved_transfer()
    fresh: dict[str, AttackResult] = {}

    def finish(part: str, method: str, entry: dict[str, Any]) -> None:
        row = {"index": i, "class_index": rec["class_index"], "part": part, "method": method,
               "entry": entry}
        if store is not None:
            store.append_row(ROWS, row)
        done[(i, part, method)] = row

    for method in cfg.methods:
        if (i, "attack", method) not in done:
            entry, res = _attack_entry(adapter, x, target, other, other_t, cfg, method, seed,
                                       progress)
            fresh[method] = res
            if store is not None and transfer and method == cfg.transfer_from:
                store.write_tensors(_x_adv_name(i), {"x_adv": res.x_adv})
            finish("attack", method, entry)
        rec["attacks"][method] = _null_to_nan(done[(i, "attack", method)]["entry"])
    for method in transfer:
        if (i, "transfer", method) not in done:
            if cfg.transfer_from in fresh:
                x_adv = fresh[cfg.transfer_from].x_adv
            else:  # attacked before a resume: its x_adv was stored with its row
                assert store is not None
                x_adv = store.read_tensors(_x_adv_name(i))["x_adv"].to(x.device)
            finish("transfer", method, _transfer_entry(adapter, x, x_adv, target, other,
                                                       other_t, cfg, method, seed))
        rec["transfer"][method] = _null_to_nan(done[(i, "transfer", method)]["entry"])
    return rec, fresh


def robustness_study(model: Any, images: Tensor, config: StudyConfig | None = None, *,
                     checkpoint_dir: str | Path | None = None, progress: bool = True,
                     device: str = "cpu", seed: int = 0) -> StudyResult:
    """Attack success rates per explainer, with the β-smoothing defence and transfer to
    perturbation explainers (see the module docstring).

    Args:
        model: a segmentation ``nn.Module`` (or :class:`ModelAdapter`).
        images: ``(N, C, H, W)`` clean model-space images (``N >= 2`` for ``"other-image"``).
        config: a :class:`StudyConfig`.
        checkpoint_dir: the run directory (a :class:`~segxai.core.runstore.RunStore` of kind
            ``"attack-study"``): one row per finished (image, method) in ``results.jsonl``,
            the transferred x_adv in ``x_adv/``; rerun with the same settings it skips the
            finished rows, with other settings it is refused.
        progress: progress bars.
        device: torch device of the model and images.
        seed: seed of the SmoothGrad noise draws (unless given in ``explainer_params``).

    Returns:
        A :class:`StudyResult`.

    Raises:
        SegxaiError: bad settings, or ``checkpoint_dir`` holds a study with other settings
            (the message names the differing keys).
    """
    t0 = time.perf_counter()
    cfg = (config or StudyConfig()).validate()
    adapter = adapt(model, device=device) if not isinstance(model, ModelAdapter) else model
    images = adapter.check(images)
    n = images.shape[0]
    if cfg.target_kind == "other-image" and n < 2:
        raise SegxaiError("images: the 'other-image' target needs at least 2 images")
    targets = choose_target(adapter, images)
    cfg_dict = {**cfg.to_dict(), "seed": seed, "n_images": n}
    store = RunStore(checkpoint_dir, kind=KIND, settings=cfg_dict) \
        if checkpoint_dir is not None else None
    done: dict[tuple[int, str, str], dict[str, Any]] = {}
    for row in store.rows(ROWS) if store is not None else ():
        done[(int(row["index"]), row["part"], row["method"])] = row
    records: list[dict[str, Any]] = []
    examples: dict[str, AttackResult] = {}
    for i in tqdm(range(n), disable=not progress, desc="attack study"):
        rec, fresh = _study_image(adapter, images, targets, i, cfg, seed, progress, store, done)
        if not examples and len(fresh) == len(cfg.methods):
            examples = fresh
        records.append(rec)
    return StudyResult(records, summarize_records(records), cfg_dict, examples,
                       time.perf_counter() - t0)
