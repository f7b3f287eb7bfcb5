"""Layers whose output is a tuple or a dict: the error lists the tensor-valued indices and
children that can be used instead, and an index (``"net.C_12[0]"``) is accepted."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import segxai
from segxai.core.errors import SegxaiError
from segxai.core.layers import split_layer_name

SIZE = 16
CAMS = [m for m in segxai.list_explainers() if segxai.get_explainer(m).uses_layers
        and segxai.get_explainer(m).uses_gradients]


class Block(nn.Module):
    """Returns its features and an auxiliary head's output (deep supervision style)."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.co = nn.Conv2d(4, 4, 3, padding=1)
        self.aux = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> object:
        y = self.co(x)
        return {"out": y, "aux": self.aux(y)} if self.as_dict else (y, self.aux(y))


class Body(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.C_12 = Block(as_dict)


class Net(nn.Module):
    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = Body(as_dict)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net.C_12(torch.relu(self.net.stem(x)))
        return self.head(torch.relu(out["out"] if isinstance(out, dict) else out[0]))


def _run(model: nn.Module, method: str, layer: str) -> segxai.Explanation:
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return segxai.explain(model, x, segxai.Target.whole_image(1, size=(SIZE, SIZE), n=2),
                          method=method, layer=layer)


@pytest.mark.parametrize("method", CAMS)
@pytest.mark.parametrize(("as_dict", "index"), [(False, "0"), (True, "out")])
def test_tuple_output_error_lists_alternatives_and_index_works(method: str, as_dict: bool,
                                                               index: str) -> None:
    model = Net(as_dict).eval()
    with pytest.raises(SegxaiError) as info:
        _run(model, method, "net.C_12")
    msg = str(info.value)
    kind = "dict" if as_dict else "tuple"
    assert msg.startswith(f"layer: expected an (N, C, h, w) tensor output, got a {kind} from "
                          "'net.C_12'")
    other = "aux" if as_dict else "1"
    for option in (f"net.C_12[{index}]", f"net.C_12[{other}]", "net.C_12.co", "net.C_12.aux"):
        assert option in msg
    indexed = _run(model, method, f"net.C_12[{index}]")
    assert indexed.layers == [f"net.C_12[{index}]"]
    child = _run(model, method, "net.C_12.co")  # the same tensor, reached as a child
    torch.testing.assert_close(indexed.maps, child.maps)
    assert indexed.maps.abs().max() > 0
    again = segxai.get_explainer(method)().with_layers(indexed.layers)  # pinned by name
    x = torch.rand(1, 3, SIZE, SIZE)
    assert again(model, x, segxai.Target.whole_image(1, size=(SIZE, SIZE))).maps.shape == \
        (1, SIZE, SIZE)


def test_bad_index_lists_the_entries() -> None:
    with pytest.raises(SegxaiError, match=r"got \[5\] for a tuple.*net\.C_12\[0\], "
                       r"net\.C_12\[1\]"):
        _run(Net().eval(), "seg-grad-cam", "net.C_12[5]")


def test_names_parse_and_find_layer_gives_the_module() -> None:
    assert split_layer_name("net.C_12[0]") == ("net.C_12", ("0",))
    assert split_layer_name("a['out'][1]") == ("a", ("out", "1"))
    assert split_layer_name("backbone.16") == ("backbone.16", ())
    for bad in ("net[0", "[0]", "net[0]x"):
        with pytest.raises(SegxaiError, match="layer: expected a dotted name"):
            split_layer_name(bad)
    model = Net()
    assert segxai.find_layer(model, "net.C_12[1]") is model.net.C_12


def test_whole_output_methods_refuse_an_index() -> None:
    with pytest.raises(SegxaiError, match="tensor-valued child"):
        segxai.explain(Net().eval(), torch.rand(1, 3, SIZE, SIZE),
                       segxai.Target.whole_image(1, size=(SIZE, SIZE)),
                       method="seg-ablation-cam", layer="net.C_12[0]")


def test_ablation_on_a_tuple_layer_lists_the_children() -> None:
    with pytest.raises(SegxaiError) as info:
        segxai.explain(Net().eval(), torch.rand(1, 3, SIZE, SIZE),
                       segxai.Target.whole_image(1, size=(SIZE, SIZE)),
                       method="seg-ablation-cam", layer="net.C_12")
    msg = str(info.value)
    assert "got a tuple from 'net.C_12'" in msg
    assert "net.C_12.co" in msg and "net.C_12[0]" not in msg  # an index is refused there
    ok = segxai.explain(Net().eval(), torch.rand(1, 3, SIZE, SIZE),
                        segxai.Target.whole_image(1, size=(SIZE, SIZE)),
                        method="seg-ablation-cam", layer="net.C_12.co")
    assert ok.maps.shape == (1, SIZE, SIZE)
