"""Test configuration: one torch thread (2 threads under load were measured 4x slower on the
2-core CI machine), no hub look-ups, deterministic seeds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def builtin_quick(tmp_path_factory: pytest.TempPathFactory):
    """The built-in U-Net trained in quick mode once per test session (cached in a tmp dir)."""
    from segxai.models import load_or_train_builtin

    cache = tmp_path_factory.mktemp("segxai-cache")
    return load_or_train_builtin(cache_dir=cache, quick=True, device="cpu", progress=False)
