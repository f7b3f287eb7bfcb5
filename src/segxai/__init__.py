"""segxai: explainable semantic segmentation, and explanations put to work.

Explain any PyTorch segmentation model (``N×C×H×W → N×K×H×W`` logits) for a class and a
region of interest, evaluate and attack the explanations, and use them for architecture search
and continual learning.

Example:
    >>> import torch, segxai
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.Conv2d(8, 3, 1))
    >>> x = torch.rand(2, 3, 32, 32)
    >>> target = segxai.Target.whole_image(class_index=1, size=(32, 32), n=2)
    >>> segxai.explain(net, x, target, method="seg-grad-cam", layer="0").maps.shape
    torch.Size([2, 32, 32])
"""

from segxai import explainers as _explainers  # noqa: E402,F401  (registers built-in methods)
from segxai.core import (
    BlackBox,
    Cost,
    Explainer,
    Explanation,
    ModelAdapter,
    RunStore,
    SegxaiError,
    SegxaiTypeError,
    Target,
    adapt,
    explain,
    find_layer,
    get_explainer,
    layer_names,
    list_explainers,
    minmax,
    overlay,
    register_explainer,
    top_p,
    zscore,
)

__version__ = "0.1.0"

__all__ = [
    "BlackBox",
    "Cost",
    "Explainer",
    "Explanation",
    "ModelAdapter",
    "RunStore",
    "SegxaiError",
    "SegxaiTypeError",
    "Target",
    "__version__",
    "adapt",
    "explain",
    "find_layer",
    "get_explainer",
    "layer_names",
    "list_explainers",
    "minmax",
    "overlay",
    "register_explainer",
    "top_p",
    "zscore",
]
