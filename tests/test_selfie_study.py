"""Issue 16's faithfulness study on the selfie network: the bundled-photograph loader, the
exclusion rule, the network's stages and default layer, and the study's pipeline (on a tiny
stand-in model, so that it runs in seconds)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

import segxai
from segxai.core.errors import SegxaiError, SegxaiFileNotFoundError
from segxai.data import real
from segxai.data.real import PHOTOGRAPHS, load_photographs
from segxai.report.sections import _selfie_study as study_mod


def _fetched() -> bool:
    from segxai.models.mediapipe_selfie.fetch import selfie_path

    try:
        selfie_path()
    except SegxaiError:
        return False
    return True


needs_model = pytest.mark.skipif(not _fetched(), reason="MediaPipe selfie model not fetched: "
                                 "run `python -m segxai.models.mediapipe_selfie`")


def test_photographs_are_distinct_real_files() -> None:
    photos = load_photographs(size=32)
    assert photos.images.shape == (len(photos.names), 3, 32, 32)
    assert photos.names == [n for n in PHOTOGRAPHS if n not in photos.missing]
    assert 0.0 <= float(photos.images.min()) and float(photos.images.max()) <= 1.0
    digests = {hashlib.sha256(open(s, "rb").read()).hexdigest() for s in photos.sources}
    assert len(digests) == len(photos.sources)             # no photograph counted twice
    # no two photographs are the same picture resized either (e.g. a stereo pair's views)
    flat = photos.images.flatten(1)
    dist = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    dist.fill_diagonal_(1.0)
    assert float(dist.min()) > 0.05
    assert {"astronaut", "camera", "grace_hopper"} <= set(photos.names)


def test_photograph_names_are_checked() -> None:
    with pytest.raises(SegxaiError, match=r"names: expected names of PHOTOGRAPHS .*'nope'"):
        load_photographs(["astronaut", "nope"])
    with pytest.raises(SegxaiError, match="names: expected each photograph once"):
        load_photographs(["astronaut", "astronaut"])
    with pytest.raises(SegxaiError, match="size: expected an integer >= 16"):
        load_photographs(["astronaut"], size=8)


def test_missing_packages_are_listed_not_silent(monkeypatch) -> None:
    original = real.find_package_file
    monkeypatch.setattr(real, "find_package_file",
                        lambda rel: None if rel.startswith("gradio/") else original(rel))
    photos = load_photographs(["astronaut", "lion", "camera"], size=16)
    assert photos.names == ["astronaut", "camera"] and photos.missing == ["lion"]
    monkeypatch.setattr(real, "find_package_file", lambda rel: None)
    with pytest.raises(SegxaiFileNotFoundError, match="expected at least one of astronaut"):
        load_photographs(["astronaut"])


class _Bright(nn.Module):
    """A 1-channel "person" logit: positive where a pixel is brighter than 0.6."""

    segxai_default_layer = "conv"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 1, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, 1, 1] = 1.0 / 3
            self.conv.bias.fill_(-0.6)
            self.head.weight.fill_(10.0)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


def test_exclusion_rule_uses_the_predicted_person_share() -> None:
    names = ["astronaut", "camera", "moon"]
    images, used, shares, excluded = study_mod.usable_photographs(_Bright(), names)
    every = study_mod.person_shares(_Bright(), load_photographs(names).images)
    assert set(used) | set(excluded) == set(names)
    for name, share in zip(names, every):
        assert (name in used) == (share >= study_mod.PERSON_MIN_SHARE)
        assert (shares | excluded)[name] == pytest.approx(share)
    assert images.shape[0] == len(used)


def test_study_pipeline_writes_tables_with_intervals(tmp_path) -> None:
    net = _Bright()
    s = study_mod.selfie_study(tmp_path, names=["astronaut", "camera", "coffee"], steps=2,
                               layers="all", first_layers=(), layer_images=2,
                               methods=("gradient",), model=net)
    assert s.default_layer == "conv"
    methods = {e["method"] for e in s.methods}
    assert methods == {"gradient", "seg-grad-cam@conv", "random-baseline"}
    for e in s.methods:
        assert e["lo"] <= e["mean"] <= e["hi"] and e["n"] == len(s.used)
        if e["method"] != "random-baseline":
            assert e["diff_lo"] <= e["diff"] <= e["diff_hi"] and 0 < e["p_value"] <= 1
            assert 0 < e["p_one_sided"] <= 1
    assert s.contrasts == []                                # only the default layer ran
    assert {e["layer"] for e in s.layers if e.get("layer")} == {"conv"}
    assert all(e["n"] == 2 for e in s.layers)              # the layer study's images
    saved = json.loads((tmp_path / "selfie_study.json").read_text())
    assert saved["settings"]["deletion_substrate"] == "road"
    assert saved["settings"]["score"] == "prob_mean" and saved["settings"]["steps"] == 2
    text = (tmp_path / "selfie_study.md").read_text()
    assert "| gradient | deletion_auc |" in text and "Excluded:" in text
    # resumable: a second call recomputes nothing and gives the same tables
    again = study_mod.selfie_study(tmp_path, names=["astronaut", "camera", "coffee"], steps=2,
                                   layers="all", first_layers=(), layer_images=2,
                                   methods=("gradient",), model=net)
    assert again.methods == s.methods


@needs_model
def test_selfie_stages_and_default_layer() -> None:
    from segxai.core.layers import default_cam_layer, find_layer
    from segxai.evaluate.stages import model_stages
    from segxai.models.mediapipe_selfie import SELFIE_STAGES

    net = segxai.models.selfie()
    x = load_photographs(["astronaut"]).images
    stages = model_stages(net, x)
    assert [(s.name, s.kind) for s in stages] == list(SELFIE_STAGES)
    assert [s.stride for s in stages] == [2, 4, 8, 16, 16, 8, 4, 2]
    assert net.segxai_default_layer in {s.name for s in stages}
    assert default_cam_layer(net, x) is find_layer(net, net.segxai_default_layer)
    target = segxai.Target.from_prediction(net, x, class_index=1)
    expl = segxai.explain(net, x, target, method="seg-grad-cam")
    assert expl.layers == [net.segxai_default_layer]


def test_one_sided_p_and_contrasts_on_made_up_rows() -> None:
    from segxai.evaluate.tables import interval_table

    rows = []
    for i in range(8):
        for method, dele in (("good", 0.2 + 0.01 * i), ("other", 0.3 + 0.02 * i),
                             ("random-baseline", 0.8 - 0.01 * i)):
            rows += [{"image": str(i), "method": method, "metric": "deletion_auc",
                      "value": dele},
                     {"image": str(i), "method": method, "metric": "insertion_auc",
                      "value": 0.5}]
    table = interval_table(rows, ["good", "random-baseline"], study_mod.METRICS)
    study_mod.add_one_sided(rows, table)
    by = {(e["method"], e["metric"]): e for e in table}
    assert by[("good", "deletion_auc")]["p_one_sided"] == 2.0 ** -8   # every image better
    assert by[("good", "insertion_auc")]["p_one_sided"] == 1.0        # no difference at all
    assert "p_one_sided" not in by[("random-baseline", "deletion_auc")]
    (c,) = [c for c in study_mod.contrasts(rows, ["good", "other"], "good")
            if c["metric"] == "deletion_auc"]
    assert c["method"] == "other" and c["n"] == 8
    assert c["diff"] == pytest.approx(0.1 + 0.01 * 3.5) and c["diff_lo"] > 0
