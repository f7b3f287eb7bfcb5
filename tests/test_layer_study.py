"""Layer study, faithful default layer, substrates against slow references, interval tables,
and the bad inputs of ``segxai evaluate --layers`` / ``--study``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segxai.core.adapter import adapt
from segxai.core.errors import SegxaiError
from segxai.core.layers import default_cam_layer
from segxai.core.target import Target
from segxai.evaluate import deletion_curve, pixel_ranks
from segxai.evaluate.config import EvalConfig, split_method
from segxai.evaluate.layer_study import best_layers, layer_methods, layer_study
from segxai.evaluate.road import road_impute
from segxai.evaluate.substrates import fill_removed, road_fill, substrate_images
from segxai.evaluate.tables import interval_table
from segxai.models.unet import UNet, UNetConfig


class _TwoPaths(nn.Module):
    """Class 1 = the bright (red) object. ``evidence`` carries the object and feeds the head;
    ``context`` carries the background and reaches the logits only through its global mean.
    By construction Seg-Grad-CAM at ``evidence`` highlights the object (faithful) and at
    ``context`` the background (unfaithful)."""

    def __init__(self) -> None:
        super().__init__()
        self.evidence = nn.Conv2d(3, 4, 1)
        self.context = nn.Conv2d(3, 3, 1)
        self.head = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            for conv, sign in ((self.evidence, 1.0), (self.context, -1.0)):
                conv.weight.zero_()
                conv.weight[:, 0, 0, 0] = sign * torch.linspace(1.0, 2.0, conv.out_channels)
                conv.bias.fill_(-0.5 * sign)
            self.head.weight.zero_()
            self.head.weight[1, :, 0, 0] = 3.0
            self.head.bias.copy_(torch.tensor([0.0, -4.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.relu(self.context(x))
        e = torch.relu(self.evidence(x))
        return self.head(e + 0.5 * c.mean(dim=(1, 2, 3), keepdim=True))


def _blobs(n: int = 4, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.rand(n, 3, size, size, generator=g)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        r, c = 2 + i, 3 + (2 * i) % 6
        x[i, 0, r:r + 6, c:c + 6] = 1.0
        masks[i, r:r + 6, c:c + 6] = 1
    return x, masks


def test_layer_sweep_finds_the_faithful_layer_known_by_construction(tmp_path: Path) -> None:
    x, masks = _blobs()
    model = _TwoPaths().eval()
    names, stages = layer_methods(model, x, "all", methods=["seg-grad-cam"])
    assert {s.name for s in stages} == {"evidence", "context"}
    assert next(s for s in stages if s.name == "evidence").feeds_head
    study = layer_study(model, x, masks, methods=["seg-grad-cam"],
                        config=EvalConfig(steps=8), out_dir=tmp_path)
    assert best_layers(study.table, "deletion_auc") == {"seg-grad-cam": "evidence"}
    assert best_layers(study.table, "insertion_auc") == {"seg-grad-cam": "evidence"}
    for metric in ("deletion_auc", "insertion_auc"):
        faithful = next(e for e in study.table
                        if e["method"] == "seg-grad-cam@evidence" and e["metric"] == metric)
        other = next(e for e in study.table
                     if e["method"] == "seg-grad-cam@context" and e["metric"] == metric)
        assert faithful["beats_baseline"] is True
        assert other["beats_baseline"] is not True
    ev = next(e for e in study.table if e["method"] == "seg-grad-cam@evidence"
              and e["metric"] == "pointing_game")
    assert ev["mean"] == 1.0
    assert (tmp_path / "layers.json").is_file()
    assert (tmp_path / "figures" / "layers.png").is_file()
    # the layer actually explained is recorded with every row
    rows = [r for r in study.result.rows if r["method"] == "seg-grad-cam@context"]
    assert rows
    import json
    recs = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert {tuple(r["layers"]) for r in recs if r["method"] == "seg-grad-cam@context"} == \
        {("context",)}
    layers = {e["method"]: e.get("layers") for e in study.result.summary}
    assert layers == {"seg-grad-cam@evidence": "evidence", "seg-grad-cam@context": "context",
                      "random-baseline": None}


@pytest.mark.parametrize("skips", [True, False])
def test_default_layer_is_the_one_feeding_the_head(skips: bool) -> None:
    from segxai.evaluate.stages import model_stages

    net = UNet(UNetConfig(depth=2, base_width=4, num_classes=3, skips=skips)).eval()
    x = torch.rand(1, 3, 16, 16)
    head_input = [s.name for s in model_stages(net, x) if s.feeds_head]
    assert head_input == ["decoder.1"]
    assert default_cam_layer(net, x) is net.decoder[1]


def test_default_layer_torchvision_is_the_last_backbone_stage() -> None:
    from segxai.evaluate.rq1_models import ModelSpec, build_model
    from segxai.evaluate.stages import model_stages

    net = build_model(ModelSpec("lraspp")).eval()
    x = torch.rand(1, 3, 64, 64)
    backbone = [s.name for s in model_stages(net, x) if s.name.startswith("backbone.")]
    layer = default_cam_layer(net, x)
    assert layer is net.backbone[backbone[-1].split(".")[1]]
    assert net(x).shape == (1, 5, 64, 64)


def test_unknown_layer_names_the_valid_stages() -> None:
    net = UNet(UNetConfig(depth=2, base_width=4, num_classes=3)).eval()
    with pytest.raises(SegxaiError, match=r"layers: .*encoder\.0, encoder\.1, bottleneck, "
                                          r"decoder\.0, decoder\.1.*got unknown decoder\.9"):
        layer_methods(net, torch.rand(1, 3, 16, 16), ["decoder.1", "decoder.9"])


def test_model_without_spatial_layers_is_refused() -> None:
    class NoLayers(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x[:, :1], -x[:, :1]], 1)

    with pytest.raises(SegxaiError, match=r"model: expected at least one layer with an "
                                          r"\(N, C, h, w\) output"):
        layer_methods(NoLayers(), torch.rand(1, 3, 8, 8))


def test_fewer_than_two_images_refused() -> None:
    x, masks = _blobs(1)
    with pytest.raises(SegxaiError, match="images: expected at least 2 images for a 95 % "
                                          "interval, got 1"):
        layer_study(_TwoPaths(), x, masks, methods=["seg-grad-cam"])
    from segxai.evaluate.rq1 import Rq1Config

    with pytest.raises(SegxaiError, match="images: expected at least 2 images"):
        Rq1Config(images=1)


def test_cli_layers_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from segxai.cli import main
    from segxai.models import save_checkpoint

    ckpt = save_checkpoint(UNet(UNetConfig(depth=2, base_width=4, num_classes=5)),
                           tmp_path / "ckpt")
    common = ["evaluate", "--quiet", "--model", str(ckpt), "--steps", "4", "--out",
              str(tmp_path / "out")]
    assert main([*common, "--images", "2", "--layers", "decoder.7"]) == 2
    assert "encoder.0, encoder.1, bottleneck, decoder.0, decoder.1" in capsys.readouterr().err
    assert main([*common, "--images", "1", "--layers", "all"]) == 2
    assert "at least 2 images" in capsys.readouterr().err


def test_split_method_variants_and_layers() -> None:
    assert split_method("seg-grad-cam") == ("seg-grad-cam", {})
    assert split_method("xgradcam@encoder.1") == ("seg-grad-cam", {"weighting": "xgradcam",
                                                                   "layer": "encoder.1"})
    with pytest.raises(SegxaiError, match="NAME@LAYER"):
        split_method("seg-grad-cam@")


# ---------------------------------------------------------------- substrates vs slow references

def test_dataset_mean_substrate_matches_a_per_pixel_loop() -> None:
    adapter = adapt(nn.Conv2d(3, 2, 1), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    x = torch.randn(2, 3, 5, 6)
    fill = [0.3, 0.2, 0.9]
    sub = substrate_images(adapter, x, "dataset-mean", fill=fill)
    removed = torch.rand(2, 5, 6) > 0.5
    out = fill_removed(adapter, x, removed, sub)
    for n in range(2):
        for i in range(5):
            for j in range(6):
                for c in range(3):
                    want = ((fill[c] - adapter.mean[c]) / adapter.std[c] if removed[n, i, j]
                            else x[n, c, i, j])
                    assert abs(float(out[n, c, i, j]) - float(want)) < 1e-6
    with pytest.raises(SegxaiError, match="fill: expected the data set's mean colour"):
        substrate_images(adapter, x, "dataset-mean")


def test_road_fill_per_image_reference_and_fully_removed_image() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 8, 8, generator=g)
    removed = torch.rand(3, 8, 8, generator=g) > 0.6
    removed[2] = True  # nothing to impute from: the image's mean colour
    out = road_fill(x, removed, noise=0.0)
    for i in range(2):
        ref = road_impute(x[i:i + 1], removed[i:i + 1], noise=0.0)
        torch.testing.assert_close(out[i:i + 1], ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(out[2], x[2].mean(dim=(1, 2), keepdim=True).expand(3, 8, 8))


def test_road_deletion_curve_matches_a_step_by_step_reference() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.rand(1, 3, 10, 10)
    target = Target.from_prediction(model, x, int(model(x).argmax(1)[0, 0, 0]))
    maps = torch.rand(1, 10, 10)
    steps = 4
    curve = deletion_curve(model, x, target, maps, steps=steps, substrate="road", seed=3,
                           batch_size=1)
    ranks = pixel_ranks(maps, seed=3)
    ref = []
    with torch.no_grad():
        for t in range(steps + 1):
            k = round(t / steps * 100)
            removed = ranks < k
            img = x if k == 0 else road_fill(x, removed, seed=3 + t - 1)
            prob = torch.softmax(model(img), 1)[0, int(target.class_index[0])]
            roi = target.roi[0] > 0
            ref.append(float(prob[roi].mean()))
    np.testing.assert_allclose(curve.scores[0], ref, rtol=0, atol=1e-6)


def test_interval_table_paired_verdicts() -> None:
    rows = []
    for i in range(12):
        rows += [{"image": str(i), "method": "good", "metric": "deletion_auc",
                  "value": 0.1 + 0.01 * i},
                 {"image": str(i), "method": "random-baseline", "metric": "deletion_auc",
                  "value": 0.5 + 0.01 * i},
                 {"image": str(i), "method": "bad", "metric": "deletion_auc",
                  "value": 0.9 + 0.01 * i}]
    table = {e["method"]: e for e in interval_table(rows, ["good", "bad", "random-baseline"],
                                                    ["deletion_auc"])}
    assert table["good"]["beats_baseline"] is True
    assert table["bad"]["beats_baseline"] is False
    assert table["good"]["diff"] == pytest.approx(-0.4)
    assert table["good"]["diff_lo"] == pytest.approx(-0.4) and table["good"]["n"] == 12
    assert "beats_baseline" not in table["random-baseline"]


def test_rq1_conclusions_are_computed_from_the_numbers() -> None:
    from segxai.evaluate.layer_study import layer_table
    from segxai.evaluate.rq1_report import conclusions, rq1_markdown
    from segxai.evaluate.stages import Stage

    def rows(values: dict[str, tuple[float, float]]) -> list[dict]:
        out = []
        for i in range(10):
            for method, (dele, ins) in values.items():
                out += [{"image": str(i), "method": method, "metric": "deletion_auc",
                         "value": dele + 0.001 * i},
                        {"image": str(i), "method": method, "metric": "insertion_auc",
                         "value": ins + 0.002 * i},
                        {"image": str(i), "method": method, "metric": "seconds",
                         "value": 0.01 + 0.001 * i}]
        return out

    main = rows({"gradient": (0.3, 0.5), "seg-grad-cam": (0.1, 0.8),
                 "random-baseline": (0.5, 0.5)})
    stages = [Stage("bottleneck", "bottleneck", 0, 4, (2, 2), 8.0, False),
              Stage("decoder.1", "decoder", 1, 4, (16, 16), 1.0, True)]
    lay = rows({"seg-grad-cam@bottleneck": (0.6, 0.4), "seg-grad-cam@decoder.1": (0.1, 0.8),
                "random-baseline": (0.5, 0.5)})
    part = {"model": "toy", "val_miou": 0.9, "default_layer": "decoder.1", "images": 10,
            "main": interval_table(main, ["gradient", "seg-grad-cam", "random-baseline"]),
            "layers": {"stages": [s.to_dict() for s in stages], "images": 10, "figure": "f",
                       "table": layer_table(lay, stages, ["seg-grad-cam"],
                                            default_layer="decoder.1")},
            "substrates": {"images": 10, "agreement": [
                {"metric": "deletion_auc", "reference": "road", "substrate": "mean",
                 "rho": 0.5, "lo": 0.1, "hi": 0.9, "images": 10}]}}
    result = {"config": {"steps": 10, "seed": 0, "quick": True, "substrates": ["road"]},
              "models": [part]}
    lines = conclusions(result)
    assert any(line.startswith("toy: best deletion AUC ↓ is seg-grad-cam 0.10") and
               "clearly ahead" in line for line in lines)
    assert any("toy: Seg-Grad-CAM at the default layer decoder.1 beats the random baseline"
               in line for line in lines)
    assert any("not better than random" in line and "gradient" in line for line in lines)
    assert any("Spearman ρ 0.50 [0.10, 0.90]" in line for line in lines)
    part["default_layer"] = "bottleneck"
    lines = conclusions(result)
    assert any("default layer bottleneck does NOT beat the random baseline on both deletion "
               "and insertion; layers where it does: decoder.1" in line for line in lines)
    assert "| seg-grad-cam@decoder.1 |" in rq1_markdown(result)
