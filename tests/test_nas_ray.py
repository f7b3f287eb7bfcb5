"""The Ray backend (a real local Ray) returns exactly the in-process scores and search."""

from __future__ import annotations

import pytest
import torch

from segxai.data import make_shapes
from segxai.models import UNet, UNetConfig
from segxai.nas import (
    Budget,
    InProcessBackend,
    RayBackend,
    ScoringTask,
    SearchSpace,
    build_probe,
    run_search,
    score_candidates,
)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_backend():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    backend = RayBackend()
    yield backend
    backend.close()
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(0)
    teacher = UNet(UNetConfig(depth=2, base_width=8, num_classes=5))
    with torch.no_grad():
        teacher.head.bias.copy_(torch.tensor([0.0, 0.3, 0.3, 0.3, 0.3]))
    data = make_shapes(6, size=32, seed=2)
    return teacher.eval(), build_probe(teacher.eval(), data.images[:3],
                                       distill_images=data.images[3:])


def test_ray_scores_equal_in_process(ray_backend, probe) -> None:
    _, pr = probe
    task = ScoringTask(probe=pr, proxies=("cam", "cam-fewshot", "synflow", "naswot",
                                          "grad-norm", "random"), fewshot_steps=2)
    configs = [UNetConfig(depth=2, base_width=w, num_classes=5, block=b).to_dict()
               for w, b in ((4, "plain"), (6, "residual"))]
    seeds = [11, 12]
    local = score_candidates(task, configs, seeds, InProcessBackend())
    remote = score_candidates(task, configs, seeds, ray_backend)
    assert remote == local


def test_ray_search_equals_in_process_search(ray_backend, probe, tmp_path) -> None:
    teacher, pr = probe
    space = SearchSpace(resolution=(32, 32), depths=(2,), base_widths=(2, 4, 6))
    kw = dict(space=space, population=4, iterations=2, children_per_iteration=3,
              budget=Budget(max_params=20_000), seed=5, progress=False)
    local = run_search(teacher, pr, backend=InProcessBackend(), **kw)
    remote = run_search(teacher, pr, backend=ray_backend, **kw)
    assert remote["best"] == local["best"]
    assert remote["history"] == local["history"]
    assert remote["backend"] == "ray" and local["backend"] == "local"
