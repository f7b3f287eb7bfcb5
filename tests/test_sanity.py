"""Cascading randomisation: gradient maps lose similarity, a model-free edge detector does not;
cascade order, SSIM and robustness."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segxai import Target
from segxai.core import registry
from segxai.core.registry import Explainer, register_explainer
from segxai.evaluate import (
    cascade_groups,
    cascading_randomization,
    max_sensitivity,
    spearman,
    ssim,
)
from segxai.models.unet import UNet, UNetConfig


@pytest.fixture()
def edge_explainer() -> Iterator[str]:
    @register_explainer("test-edge")
    class EdgeExplainer(Explainer):
        uses_gradients = False

        def _explain(self, adapter, images, target, *, meter, create_graph):
            g = images.mean(1, keepdim=True)
            kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
            gx = F.conv2d(g, kx, padding=1)
            gy = F.conv2d(g, kx.transpose(2, 3), padding=1)
            return (gx**2 + gy**2).sqrt()[:, 0], {}

    try:
        yield "test-edge"
    finally:
        registry._REGISTRY.pop("test-edge", None)


def _setup() -> tuple[UNet, torch.Tensor, Target]:
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_width=4, num_classes=3)).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=gen)
    roi = torch.zeros(2, 32, 32)
    roi[:, 8:20, 10:22] = 1
    return net, x, Target.from_mask(roi, class_index=1)


def test_default_cascade_of_the_unet() -> None:
    net, x, _ = _setup()
    names = [g for g, _ in cascade_groups(net, x)]
    assert names == ["head", "decoder.1", "decoder.0", "bottleneck", "encoder.1", "encoder.0"]


def test_gradient_similarity_falls_edge_does_not(edge_explainer: str) -> None:
    net, x, target = _setup()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # a whole-image score: with a small ROI the map is dominated by where the receptive
    # field of the ROI lies, which no randomisation changes
    target = Target.whole_image(1, size=(32, 32), n=2)
    grad = cascading_randomization(net, x, target, "gradient", seed=0)
    assert grad.steps[0] == "original" and len(grad.steps) == 7
    sp = grad.spearman_abs.mean(1)
    assert sp[0] == pytest.approx(1.0)
    assert grad.ssim.mean(1)[0] == pytest.approx(1.0)
    assert np.all(sp[1:] < 0.8) and sp[-1] < 0.3 and sp[-1] < sp[1]
    assert np.all(grad.ssim.mean(1)[1:] < 0.6) and grad.ssim.mean(1)[-1] < 0.3
    signed = cascading_randomization(net, x, target, "gradient", params={"abs": False})
    assert np.all(signed.spearman.mean(1)[1:] < 0.8)
    assert not np.allclose(signed.spearman, signed.spearman_abs)
    # the original model is untouched
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k

    edge = cascading_randomization(net, x, target, edge_explainer, seed=0)
    np.testing.assert_allclose(edge.spearman_abs, 1.0, atol=1e-9)
    np.testing.assert_allclose(edge.spearman, 1.0, atol=1e-9)
    np.testing.assert_allclose(edge.ssim, 1.0, atol=1e-9)
    assert [r["step"] for r in edge.rows()] == grad.steps


def test_explicit_groups_and_bad_names() -> None:
    net, x, target = _setup()
    res = cascading_randomization(net, x[:1], target[0], "gradient",
                                  groups=[("top", ["head", "decoder"]), "bottleneck"])
    assert res.steps == ["original", "top", "bottleneck"]
    with pytest.raises(ValueError, match="nosuchlayer"):
        cascading_randomization(net, x[:1], target[0], "gradient", groups=["nosuchlayer"])


def test_ssim_matches_scikit_image() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((24, 30))
    b = a + 0.3 * rng.random((24, 30))
    a01, b01 = (a - a.min()) / np.ptp(a), (b - b.min()) / np.ptp(b)
    ref = metrics.structural_similarity(a01, b01, data_range=1.0, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-6)
    assert ssim(a, a) == pytest.approx(1.0)
    assert spearman(a, 2 * a + 1) == pytest.approx(1.0)
    assert np.isnan(spearman(np.ones(4), a.ravel()[:4]))


def test_max_sensitivity(edge_explainer: str) -> None:
    net, x, target = _setup()
    res = max_sensitivity(net, x[:1], target[0], "gradient", n_samples=4, radius=0.05, seed=0)
    assert res.relative_change.shape == (1, 4) and np.all(res.relative_change > 0)
    stable = res.iou[0] >= 0.9
    if stable.any():
        assert res.max_sensitivity[0] == pytest.approx(res.relative_change[0][stable].max())
    assert res.max_sensitivity_all[0] == pytest.approx(res.relative_change[0].max())
    assert res.changed[0] == int((~stable).sum())
    # the edge map of x + δ: relative change computed by hand for the same noise draws
    e = max_sensitivity(net, x[:1], target[0], edge_explainer, n_samples=3, radius=0.1, seed=5)
    gen = torch.Generator().manual_seed(5)
    delta = (torch.rand((3, 3, 32, 32), generator=gen) * 2 - 1) * 0.1
    expl = registry.get_explainer(edge_explainer)()
    clean = expl(net, x[:1], target[0]).maps.double()
    noisy = expl(net, x[:1] + delta, target[0].repeat(3)).maps.double()
    ref = ((noisy - clean).flatten(1).norm(dim=1) / clean.norm()).numpy()
    np.testing.assert_allclose(e.relative_change[0], ref, rtol=1e-6)
    # every sample counts when the IoU threshold is 0
    z = max_sensitivity(net, x[:1], target[0], edge_explainer, n_samples=3, radius=0.1, seed=5,
                        iou_threshold=0.0)
    assert z.changed[0] == 0 and z.max_sensitivity[0] == pytest.approx(ref.max(), rel=1e-6)
