"""The middle layer of the explainers: one base class per method family.

* :class:`GradientExplainer` owns the gradient protocol: freezing the parameters (or not, for
  maps differentiable w.r.t. them), the forward, the target scores, one vector-Jacobian
  product per target reusing one graph, ``create_graph``, the clean logits and the backward
  cost. A method implements :meth:`GradientExplainer.attribute` with
  :meth:`GradientPass.vjp` (about 20 lines).
* :class:`CAMExplainer` adds layers: the layer activations are the VJP inputs, and a CAM
  variant overrides one function, :meth:`CAMExplainer.layer_cam`.
* :class:`PerturbationExplainer` owns the perturbation protocol: the fast inference path
  (:mod:`segxai.explainers._fast`), the clean forward and its scores, batching of the
  perturbations (``batch_size``), scoring every target from the same forwards, progress and
  the clean logits. A method implements :meth:`~PerturbationExplainer.plan` (what to perturb
  in one image) and :meth:`~PerturbationExplainer.finish` (maps from the score drops).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from segxai.core.adapter import ModelAdapter
from segxai.core.checks import check_positive_int
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.explanation import CostMeter
from segxai.core.layers import (
    LayerRef,
    NonTensorOutput,
    non_tensor_output_error,
    resolve_layer_refs,
)
from segxai.core.registry import Explainer, RawMaps, Wrt
from segxai.core.target import Target
from segxai.explainers._autograd import vjp_many
from segxai.explainers._fast import FastModel, prepare, score_batch
from segxai.explainers._gradcheck import check_graph, graph_checked

__all__ = ["CAMExplainer", "GradientExplainer", "GradientPass", "GradientStep", "ImageWork",
           "PerturbationExplainer", "check_graph", "differentiable_activations",
           "graph_checked"]


# ---------------------------------------------------------------------------- gradients
@contextlib.contextmanager
def differentiable_activations(layers: Sequence[nn.Module | LayerRef]
                               ) -> Iterator[list[Tensor | None]]:
    """Hooks that expose each layer's output as a tensor we can differentiate to.

    If the output carries no autograd history (parameters frozen, input without grad), it is
    replaced by a detached leaf that requires grad, so that only the part of the network
    after the layer records a graph. The rest of the network receives a clone, so in-place
    operations downstream cannot overwrite the stored activation. A :class:`LayerRef` with
    an index hooks one tensor of a tuple/list/dict output. Hooks are removed on exit.

    Raises:
        NonTensorOutput: a layer's (selected) output is not an ``(N, C, h, w)`` tensor (turn
            it into the message with alternatives with ``non_tensor_output_error``).
    """
    refs = [r if isinstance(r, LayerRef) else LayerRef(r, type(r).__name__) for r in layers]
    store: list[Tensor | None] = [None] * len(refs)
    handles = []

    def make_hook(i: int):
        def hook(_m: nn.Module, _inp: object, out: object) -> object:
            value = refs[i].select(out)
            if not isinstance(value, Tensor) or value.dim() != 4:
                raise NonTensorOutput(refs[i], value)
            a = value if value.requires_grad else value.detach().requires_grad_(True)
            store[i] = a
            return refs[i].replace(out, a.clone())
        return hook

    try:
        for i, ref in enumerate(refs):
            handles.append(ref.module.register_forward_hook(make_hook(i)))
        yield store
    finally:
        for h in handles:
            h.remove()


@dataclass
class GradientStep:
    """One forward and its per-target gradients.

    Attributes:
        logits: ``(B, K, H, W)`` logits of the forward.
        inputs: what was differentiated to (the input, or the layer activations).
        grads: per target, one gradient per entry of ``inputs``.
    """

    logits: Tensor
    inputs: list[Tensor]
    grads: list[tuple[Tensor, ...]]


class GradientPass:
    """One explanation call of a gradient method: the images, the graph settings, the
    resolved layers and what is recorded for the :class:`~segxai.core.Explanation`."""

    def __init__(self, adapter: ModelAdapter, images: Tensor, meter: CostMeter,
                 create_graph: bool, wrt: Wrt, method: str = "") -> None:
        self.adapter = adapter
        self.images = images
        self.meter = meter
        self.create_graph = create_graph
        self.wrt = wrt
        self.method = method
        self.layers: list[LayerRef] = []
        self.layer_names: list[str] = []
        self.logits: Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def resolve(self, layer: Any) -> None:
        """Find the explained layer(s) (``None``: the adapter's default layer; a name may
        index a tuple/dict output, ``"block[0]"``)."""
        self.layers = resolve_layer_refs(self.adapter, self.images, layer)
        self.layer_names = [ref.name for ref in self.layers]

    def input_leaf(self) -> Tensor:
        """The images as a tensor to differentiate to (the caller's graph kept if any)."""
        x = self.images
        if self.create_graph and x.requires_grad:
            return x  # attacks differentiate through the maps to their own input
        return x.detach().requires_grad_(True)

    def input_base(self) -> Tensor:
        """The images to build copies from: with the caller's graph when maps keep one, else
        detached (``create_graph``: a leaf that requires grad)."""
        return self.input_leaf() if self.create_graph else self.images.detach()

    def vjp(self, x: Tensor, targets: Sequence[Target], *, tile: int = 1,
            wrt: Literal["input", "layers"] = "input", clean: bool = False) -> GradientStep:
        """Forward ``x``, score each target and take each score's gradient, one graph.

        Args:
            x: ``(B, C, H, W)`` model-space images (``B = tile · N``).
            targets: the targets; with ``tile > 1`` each is tiled (``x`` holds ``tile``
                copies of the ``N`` images, image order ``0..N-1, 0..N-1, ...``).
            tile: copies of the images in ``x``.
            wrt: differentiate to ``x`` itself (which must require grad) or to the
                activations of the resolved layers.
            clean: ``x`` is the clean images: record its logits for the explanation.

        Returns:
            A :class:`GradientStep`.
        """
        adapter = self.adapter
        if wrt == "layers":
            try:
                with differentiable_activations(self.layers) as store:
                    logits = adapter(x)
            except NonTensorOutput as err:
                model = adapter.module
                assert model is not None
                raise non_tensor_output_error(model, err, lambda: model(x.detach())) from None
            inputs = [a for a in store if a is not None]
            if len(inputs) != len(self.layers):
                raise SegxaiError(f"layer: {self.layer_names} not all run by the model's forward "
                                 "pass")
        else:
            if not x.requires_grad:
                x = x.requires_grad_(True)
            logits = adapter(x)
            inputs = [x]
        check_graph(self.method, logits, inputs)
        scores = [(t.tile(tile) if tile > 1 else t).score_from_logits(
            logits, binary=adapter.binary).sum() for t in targets]
        grads = vjp_many(scores, inputs, create_graph=self.create_graph)
        self.meter.add_backward(x.shape[0] * len(targets))
        if clean:
            self.logits = logits
        return GradientStep(logits, inputs, grads)

    def upsample(self, layer_map: Tensor) -> Tensor:
        """``(N, h, w)`` → ``(N, H, W)``, bilinear (``align_corners=False``)."""
        return F.interpolate(layer_map.unsqueeze(1), size=self.size, mode="bilinear",
                             align_corners=False)[:, 0]


class GradientExplainer(Explainer):
    """Base class of the gradient methods.

    Subclasses implement :meth:`attribute`; set ``uses_layers = True`` (and ``self.layer``)
    for layer methods. Everything else (freezing, eval mode, graphs, cost, the clean logits
    and layer names of the :class:`~segxai.core.Explanation`) happens here. With
    ``differentiable_wrt="params"`` the parameters are not frozen, so the maps keep their
    graph to them.
    """

    differentiable = True
    uses_layers: ClassVar[bool] = False

    def _run(self, adapter: ModelAdapter, images: Tensor, targets: list[Target], *,
             meter: CostMeter, create_graph: bool, wrt: Wrt) -> list[RawMaps]:
        run = GradientPass(adapter, images, meter, create_graph, wrt, self.name)
        freeze = adapter.frozen_parameters() if wrt == "input" else contextlib.nullcontext()
        with freeze, graph_checked(adapter, self.name):
            if self.uses_layers:
                run.resolve(self.layer)
            results = self.attribute(run, targets)
        out = []
        for result in results:
            maps, extras = result if isinstance(result, tuple) else (result, {})
            out.append(RawMaps(maps, extras, run.logits, list(run.layer_names)))
        return out

    def attribute(self, run: GradientPass,
                  targets: list[Target]) -> list[Tensor | tuple[Tensor, dict[str, Any]]]:
        """The ``(N, H, W)`` map (optionally with extras) of each target."""
        raise SegxaiTypeError(f"{type(self).__name__}: implement attribute")


class CAMExplainer(GradientExplainer):
    """Base class of the gradient CAM variants: gradients of the score w.r.t. the layer
    activations ``A`` (one forward, one VJP per target); a subclass gives the
    layer-resolution map in :meth:`layer_cam`. Several layers give the mean of their
    upsampled maps."""

    uses_layers = True

    def layer_cam(self, activation: Tensor, grad: Tensor) -> Tensor:
        """``(N, h, w)`` map from activations and gradients ``(N, C, h, w)``."""
        raise SegxaiTypeError(f"{type(self).__name__}: implement layer_cam")

    def attribute(self, run: GradientPass,
                  targets: list[Target]) -> list[Tensor | tuple[Tensor, dict[str, Any]]]:
        step = run.vjp(run.input_base(), targets, wrt="layers", clean=True)
        out: list[Tensor | tuple[Tensor, dict[str, Any]]] = []
        for grads in step.grads:
            cams = [self.layer_cam(a, g) for a, g in zip(step.inputs, grads, strict=True)]
            maps = torch.stack([run.upsample(c) for c in cams]).mean(0)
            out.append((maps, {"layers": list(run.layer_names),
                               "layer_maps": [c.detach() for c in cams]}))
        return out


# ---------------------------------------------------------------------------- perturbations
@dataclass
class ImageWork:
    """What a perturbation method does to one image.

    Attributes:
        clean: the clean raw model output ``1×K×h×w``.
        units: the perturbations (windows, channels, ...), batched ``batch_size`` at a time.
        run: ``run(chunk, group)`` → raw outputs ``len(chunk)×K×h×w`` of the perturbed copies.
        groups: ``[None]`` when one set of forwards serves every target; else target
            indices, each with its own forwards (``group`` is passed to ``run``).
        state: anything :meth:`PerturbationExplainer.finish_image` needs.
    """

    clean: Tensor
    units: list[Any]
    run: Callable[[list[Any], int | None], Tensor]
    groups: list[int | None] = field(default_factory=lambda: [None])
    state: Any = None


class PerturbationExplainer(Explainer):
    """Base class of the forward-only perturbation methods.

    Subclasses put ``batch_size``, ``fold_bn`` and ``channels_last`` in ``self.params``
    (see :meth:`fast_params`), set ``self.progress``, and implement :meth:`score_kind`,
    :meth:`plan` (one image), :meth:`finish_image` and :meth:`finish`. The base class runs the
    fast path, the clean forward and scores, the batches of perturbations (every target
    scored from the same forwards), the progress bar and records the clean logits.
    """

    uses_gradients = False
    progress: bool = False

    @staticmethod
    def fast_params(batch_size: int, fold_bn: bool, channels_last: bool) -> dict[str, Any]:
        """Checked ``batch_size``/``fold_bn``/``channels_last`` entries for ``self.params``."""
        return {"batch_size": check_positive_int(batch_size, "batch_size"),
                "fold_bn": bool(fold_bn), "channels_last": bool(channels_last)}

    # ------------------------------------------------------------------ to implement
    def score_kind(self, target: Target) -> str:
        """The score (``"logit_sum"``, ``"prob_mean"``, ``"iou"``) measured for ``target``."""
        return target.score

    def begin(self, fm: FastModel, images: Tensor, targets: list[Target]) -> Any:
        """Per-call state (e.g. the resolved layer); default ``None``."""
        return None

    def plan(self, fm: FastModel, state: Any, x: Tensor, i: int,
             targets: list[Target]) -> ImageWork:
        """The :class:`ImageWork` for image ``i`` (``x`` is ``1×C×H×W``, detached)."""
        raise SegxaiTypeError(f"{type(self).__name__}: implement plan")

    def finish_image(self, state: Any, work: ImageWork, i: int, clean: list[Tensor],
                     scores: list[Tensor]) -> None:
        """Record image ``i``: ``clean[j]`` is target ``j``'s clean score (scalar),
        ``scores[j]`` its scores ``(len(units),)`` of the perturbed copies."""
        raise SegxaiTypeError(f"{type(self).__name__}: implement finish_image")

    def finish(self, state: Any, fm: FastModel, images: Tensor,
               targets: list[Target]) -> list[tuple[Tensor, dict[str, Any]]]:
        """The ``(maps, extras)`` of each target."""
        raise SegxaiTypeError(f"{type(self).__name__}: implement finish")

    def fast_model(self, adapter: ModelAdapter) -> FastModel:
        """The :class:`FastModel` of one call (a subclass may reuse its copy across calls)."""
        return prepare(adapter, fold_bn=self.params["fold_bn"],
                       channels_last=self.params["channels_last"])

    # ------------------------------------------------------------------ protocol
    def _explain_many(self, adapter: ModelAdapter, images: Tensor, targets: list[Target], *,
                      meter: CostMeter, create_graph: bool) -> list[RawMaps]:
        p = self.params
        fm = self.fast_model(adapter)
        n, size = images.shape[0], (int(images.shape[-2]), int(images.shape[-1]))
        kinds = [self.score_kind(t) for t in targets]
        state = self.begin(fm, images, targets)
        bar, logits = None, []
        try:
            for i in range(n):
                work = self.plan(fm, state, images[i:i + 1].detach(), i, targets)
                if bar is None:
                    bar = tqdm(total=n * len(work.units), disable=not self.progress,
                               desc=self.name)
                clean_logits = adapter.to_logits(work.clean, size)
                logits.append(clean_logits)
                classes = [int(t.class_index[i]) for t in targets]
                refs = [clean_logits[0].argmax(0) == c if kind == "iou" else None
                        for c, kind in zip(classes, kinds, strict=True)]
                clean = [score_batch(adapter, work.clean, c, t.roi[i], kind, size, ref)[0]
                         for c, t, kind, ref in zip(classes, targets, kinds, refs, strict=True)]
                scores: list[list[Tensor]] = [[] for _ in targets]
                for g in work.groups:
                    for start in range(0, len(work.units), p["batch_size"]):
                        chunk = work.units[start:start + p["batch_size"]]
                        out = work.run(chunk, g)
                        for j, t in enumerate(targets):
                            if g is None or g == j:
                                scores[j].append(score_batch(adapter, out, classes[j], t.roi[i],
                                                             kinds[j], size, refs[j]))
                        if g is None or g == work.groups[0]:
                            bar.update(len(chunk))
                self.finish_image(state, work, i, clean, [torch.cat(s) for s in scores])
        finally:
            if bar is not None:
                bar.close()
        results = self.finish(state, fm, images, targets)
        all_logits = torch.cat(logits).to(images.dtype)
        return [RawMaps(m, e, all_logits, list(e.get("layers", [])))
                for m, e in results]
