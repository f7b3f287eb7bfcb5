"""The attack's graph is never broken: the explanation loss has a non-zero, finite input
gradient for every differentiable explainer (CAMs at the default layer), and bad input is
refused with a SegxaiError naming the argument."""

from __future__ import annotations

import pytest
import torch

import segxai
from models_for_tests import calibrated
from segxai.attack import AttackConfig, attack, softplus_model
from segxai.attack.evaluation import choose_target, make_explainer
from segxai.attack.loss import attack_loss
from segxai.attack.targets import shift_map
from segxai.core.adapter import adapt
from segxai.core.errors import SegxaiError
from segxai.core.layers import default_cam_layer, module_name
from segxai.core.registry import get_explainer, list_explainers
from segxai.models.unet import UNet, UNetConfig

METHODS = {
    "gradient": {},
    "smoothgrad": {"n_samples": 2, "seed": 0},
    "integrated-gradients": {"n_steps": 4},
    "seg-grad-cam": {},
    "grad-cam++": {},
}


def _unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return calibrated(UNet(UNetConfig(depth=2, base_width=4, num_classes=3)), size=32)


def test_every_registered_differentiable_explainer_is_covered() -> None:
    differentiable = {m for m in list_explainers() if get_explainer(m).differentiable}
    assert set(METHODS) <= differentiable


@pytest.mark.parametrize("method", sorted(METHODS))
def test_explanation_loss_has_a_nonzero_input_gradient(method: str, builtin_quick) -> None:
    # a trained model (a random one predicts background everywhere, and its Seg-Grad-CAM is
    # ReLU(negative) = 0: a map that cannot move because it is empty, not a broken graph)
    net = builtin_quick.model.eval()
    adapter = adapt(net)
    pool = builtin_quick.val_data.images[:8]
    targets = choose_target(adapter, pool)
    keep = [k for k in range(8) if float(targets.roi[k].sum()) >= 64][:2]
    x, target = pool[keep], targets[torch.tensor(keep)]
    exp = make_explainer(method, METHODS[method])
    clean = exp(adapter, x, target)
    assert bool((clean.maps.abs().flatten(1).sum(1) > 0).all())
    if getattr(exp, "uses_layers", False):
        # the CAMs explain the default layer (the decoder stage feeding the head)
        assert clean.layers == [module_name(net, default_cam_layer(net, x))] == ["decoder.2"]
    h_t = shift_map(clean.maps.detach())
    probs = adapter.probabilities(clean.logits if clean.logits is not None
                                  else adapter(x)).detach()
    cfg = AttackConfig(lambda_output=0.0, lambda_input=0.0)  # the explanation term alone
    with adapter.explaining(), adapter.frozen_parameters(), softplus_model(net, 10.0):
        u = x.clone().requires_grad_(True)
        loss = attack_loss(adapter, exp.with_layers(clean.layers), u, x, target, h_t, probs,
                           cfg)
        assert bool((loss.explanation > 0).all())
        (grad,) = torch.autograd.grad(loss.total.sum(), u)
    assert bool(torch.isfinite(grad).all())
    for i in range(2):  # every image gets a gradient of its own loss
        assert float(grad[i].abs().max()) > 1e-7, (method, i)
    # ... and the step along it lowers the loss (the gradient is the loss's, not noise)
    with adapter.explaining(), adapter.frozen_parameters(), softplus_model(net, 10.0):
        step = (x - 1e-3 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).detach()
        lower = attack_loss(adapter, exp.with_layers(clean.layers), step, x, target, h_t,
                            probs, cfg).explanation
    assert float(lower.detach().sum()) < float(loss.explanation.detach().sum())


def test_bad_input_is_refused_naming_the_argument() -> None:
    net = _unet()
    x = torch.rand(1, 3, 32, 32)
    t = segxai.Target.whole_image(1, size=(32, 32))
    for bad in (0.0, -1 / 255):
        with pytest.raises(SegxaiError, match="epsilon"):
            attack(net, x, t, "gradient", "shift", epsilon=bad, iterations=1)
    for name in ("occlusion", "seg-ablation-cam"):
        with pytest.raises(SegxaiError, match=f"explainer: {name!r}.*differentiable"):
            attack(net, x, t, name, "shift", iterations=1)
    with pytest.raises(SegxaiError, match=r"target_map: expected shape \(1, 32, 32\)"):
        attack(net, x, t, "gradient", torch.rand(1, 16, 16), iterations=1)
    with pytest.raises(SegxaiError, match=r"target_image: expected images of shape"):
        attack(net, x, t, "gradient", "other-image", iterations=1,
               target_image=torch.rand(1, 3, 48, 48))
    with pytest.raises(SegxaiError, match="target_image"):
        attack(net, x, t, "gradient", "other-image", iterations=1)
    with pytest.raises(SegxaiError, match="preset"):
        AttackConfig.preset("madry")  # type: ignore[arg-type]


def test_other_image_target_and_the_unconstrained_preset() -> None:
    net = _unet()
    g = torch.Generator().manual_seed(3)
    x, other = torch.rand(2, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    t = choose_target(net, x)
    cfg = AttackConfig.preset("dombrowski", iterations=20, eval_every=10)
    assert cfg.epsilon is None and cfg.lr == pytest.approx(2e-4 * 0.226)
    assert cfg.lambda_explanation == pytest.approx(1e11 / 224 ** 4)
    res = attack(net, x, t, "gradient", "other-image", cfg, target_image=other)
    # the target is the explanation of the other image, for both attacked images
    ref = segxai.explain(net, other, choose_target(net, other), method="gradient").maps
    ref = ref.abs() / ref.abs().sum()
    for i in range(2):
        assert torch.allclose(res.target_map[i], ref[0].to(res.target_map), atol=1e-6)
    # no ε-ball: only the valid range bounds x_adv; Adam's steps (about lr each, a little
    # more when the gradient changes sign) bound the drift
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert max(res.metrics["linf"]) <= 20 * cfg.lr * 1.2
    assert max(res.metrics["linf"]) > 0
