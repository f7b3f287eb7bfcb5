"""Search space, exact counters and budgets of segxai.nas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from segxai.models import UNet, UNetConfig
from segxai.nas import Budget, EvolutionSettings, SearchSpace, count_flops, count_params, evolve
from segxai.nas.state import config_key


def test_counters_match_hand_count_on_tiny_sequential() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 2, 1), nn.ConvTranspose2d(2, 3, 2, stride=2))
    # params: 3*4*9+4, BN 2*4, 4*2+2, 2*3*2*2+3
    assert count_params(net) == 112 + 8 + 10 + 27
    # FLOPs (2 per MAC) at 8x8: 2*64*4*27 + 2*64*2*4 + transposed 2*(8*8 inputs)*2*3*2*2
    assert count_flops(net, (3, 8, 8)) == 13824 + 1024 + 3072


def test_counters_match_hand_count_on_tiny_unet() -> None:
    cfg = UNetConfig(depth=1, base_width=2, width_multipliers=(1.0, 1.0), num_classes=5)
    net = UNet(cfg)
    # encoder.0: conv 3->2 (54) + BN (4) + conv 2->2 (36) + BN (4) = 98
    # bottleneck: 36 + 4 + 36 + 4 = 80
    # decoder.0: up ConvT 2->2 k2 (16 + 2 bias) + conv 4->2 (72) + 4 + 36 + 4 = 134
    # head: 2*5 + 5 = 15
    assert count_params(net) == 98 + 80 + 134 + 15
    # at 8x8: encoder 2*64*(54+36); bottleneck (4x4) 2*16*(36+36); up 2*16*16;
    # decoder block 2*64*(72+36); head 2*64*10
    expected = 2 * 64 * 90 + 2 * 16 * 72 + 2 * 16 * 16 + 2 * 64 * 108 + 2 * 64 * 10
    assert count_flops(net, (3, 8, 8)) == expected


def _hook_flops(model: nn.Module, shape: tuple[int, int, int]) -> int:
    """Independent reference: 2·MACs of every conv from its output shape (forward hooks)."""
    total = [0]

    def hook(m: nn.Module, inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        if isinstance(m, nn.ConvTranspose2d):
            cin, hw = inp[0].shape[1], inp[0].shape[2] * inp[0].shape[3]
            total[0] += 2 * cin * hw * m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            cin_g = m.in_channels // m.groups
            total[0] += 2 * out.numel() * cin_g * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measure_matches_real_network_and_hook_reference(seed: int) -> None:
    space = SearchSpace(resolution=(32, 32), base_widths=(4, 8), multipliers=(0.5, 1.0, 2.0))
    cfg = space.sample(np.random.default_rng(seed))
    m = space.measure(cfg)  # closed form
    assert space.measure_network(cfg) == m  # meta-device network + FlopCounterMode
    net = UNet(UNetConfig.from_dict(cfg))
    assert m["params"] == sum(p.numel() for p in net.parameters())
    assert m["flops"] == _hook_flops(net, (3, 32, 32))
    assert m["depth"] == cfg["depth"]


def test_closed_form_counts_match_flop_counter_on_many_configs() -> None:
    for res in ((64, 64), (40, 36)):  # 40x36 exercises the U-Net's padding
        space = SearchSpace(resolution=res)
        rng = np.random.default_rng(7)
        for _ in range(12):
            cfg = space.sample(rng)
            assert space.measure(cfg) == space.measure_network(cfg), cfg


def test_mutations_stay_inside_the_space() -> None:
    space = SearchSpace()
    rng = np.random.default_rng(0)
    cfg = space.initial()
    assert space.contains(cfg)
    for i in range(300):
        n = 1 + i % 2
        child = space.mutate(cfg, n, rng)
        assert space.contains(child), child
        assert child != cfg
        UNetConfig.from_dict(child)  # a valid U-Net configuration
        mate = space.sample(rng)
        cross = space.crossover(child, mate, rng)
        assert space.contains(cross), cross
        cfg = child if i % 3 else space.sample(rng)


def test_one_gene_mutation_changes_one_gene() -> None:
    space = SearchSpace(depths=(3,))
    rng = np.random.default_rng(1)
    parent = space.sample(rng)
    for _ in range(100):
        child = space.mutate(parent, 1, rng)
        diffs = sum(child[k] != parent[k] for k in ("base_width", "kernel_size", "block",
                                                    "decoder_width"))
        diffs += sum(a != b for a, b in zip(child["width_multipliers"],
                                            parent["width_multipliers"]))
        assert diffs == 1


def test_depth_mutation_keeps_multiplier_count() -> None:
    space = SearchSpace(depths=(2, 3, 4))
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(200):
        cfg = space.mutate(space.sample(rng), 1, rng)
        assert len(cfg["width_multipliers"]) == cfg["depth"] + 1
        seen.add(cfg["depth"])
    assert seen == {2, 3, 4}


def test_search_respects_budgets() -> None:
    space = SearchSpace(resolution=(32, 32), base_widths=(4, 8, 16), depths=(2, 3))
    budget = Budget(max_params=20_000, max_flops=8_000_000, max_depth=2)

    def fitness(configs, seeds):  # prefers big networks: pushes against the budget
        return [float(space.measure(c)["params"]) for c in configs]

    res = evolve(space, fitness, EvolutionSettings(population=6, iterations=8,
                                                   children_per_iteration=3, seed=0),
                 budget=budget, progress=False)
    assert res.rejected > 0
    for member in res.population:
        assert member["params"] <= 20_000 and member["flops"] <= 8_000_000
        assert member["config"]["depth"] <= 2
        assert space.contains(member["config"])
    keys = [config_key(m["config"]) for m in res.population]
    assert len(keys) == len(set(keys))
    assert res.best["score"] == max(m["score"] for m in res.population)


def test_space_rejects_bad_choices() -> None:
    with pytest.raises(ValueError, match="kernel_sizes"):
        SearchSpace(kernel_sizes=(2, 3))
    with pytest.raises(ValueError, match="blocks"):
        SearchSpace(blocks=("plain", "fancy"))
    with pytest.raises(ValueError, match="population"):
        EvolutionSettings(population=0)


def test_network_counts_closed_form_and_fallback() -> None:
    from segxai.nas.counting import network_counts

    net = UNet(UNetConfig(depth=2, base_width=4, block="residual", num_classes=5))
    assert network_counts(net, (3, 16, 16)) == {"params": count_params(net),
                                                "flops": count_flops(net, (3, 16, 16))}
    seq = nn.Sequential(nn.Conv2d(3, 2, 1))
    assert network_counts(seq, (3, 4, 4)) == {"params": 8, "flops": 2 * 16 * 6}
