"""MediaPipe's selfie segmentation network (Apache-2.0), native in PyTorch.

A MobileNetV3-style encoder (hard-swish, squeeze-and-excitation gates) to 16x16 and a
decoder with bilinear upsampling and gated skip connections back to 128x128, then a 2x2
transposed convolution to one person logit per pixel. 106,401 weights, stored as float16 in
the file and used as float32 here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from segxai.models.mediapipe_selfie.fetch import selfie_path
from segxai.models.mediapipe_selfie.network import TFLiteNetwork
from segxai.models.mediapipe_selfie.reader import read_tflite

__all__ = ["SELFIE_LAYERS", "SELFIE_STAGES", "SelfieSegmentation", "selfie"]

SELFIE_LAYERS = {
    "encoder": "layers.add_4",
    "decoder_32": "layers.add_6",
    "decoder_64": "layers.add_9",
    "decoder_128": "layers.add_13",
}
"""Readable layers to explain: the encoder output (16x16x32) and the decoder block outputs at
32x32x24, 64x64x16 and 128x128x16 (the last one feeds the classifier: the default CAM layer).
Every operator is a layer: ``segxai.layer_names(net)`` lists them all."""

SELFIE_STAGES: tuple[tuple[str, str], ...] = (
    ("layers.re_lu", "encoder"),        # 128x128x16 (stride 2)
    ("layers.conv2d_4", "encoder"),     # 64x64x16, first inverted-residual block
    ("layers.add", "encoder"),          # 32x32x24
    ("layers.add_4", "encoder"),        # 16x16x32, the encoder's output
    ("layers.multiply_6", "bottleneck"),  # 16x16x128, the gated 1x1 head of the encoder
    ("layers.add_7", "decoder"),        # 32x32x24, end of the first decoder block
    ("layers.add_10", "decoder"),       # 64x64x16
    ("layers.add_13", "decoder"),       # 128x128x16, the input of the final transposed conv
)
"""The network's stages for a layer study (:func:`segxai.evaluate.stages.model_stages` reads
them from ``segxai_stages``): the last tensor of each encoder resolution, the gated encoder
head, and the output of each decoder block (the last one feeds the classifier)."""


class SelfieSegmentation(TFLiteNetwork):
    """MediaPipe selfie segmentation (``selfie_segmentation.tflite``, the 256x256 general model).

    Input: RGB in ``[0, 1]`` (MediaPipe's graph scales pixels to ``[0, 1]``, no mean/std), so
    :class:`~segxai.core.adapter.ModelAdapter` needs no normalisation. The model was trained at
    256x256; other sizes that are multiples of 16 run too, without any parity guarantee.

    Output: one channel, the person logit (the file's final sigmoid is left out). segxai's
    adapter turns it into two classes, 0 = background (the negated logit) and 1 = person, with
    probabilities ``sigmoid(±logit)``, equal to the TFLite output.

    Shape:
        - Input: ``(N, 3, H, W)``, H and W multiples of 16 (256 for parity with TFLite).
        - Output: ``(N, 1, H, W)`` person logits.

    Example:
        >>> net = segxai.models.selfie()  # doctest: +SKIP
        >>> torch.sigmoid(net(torch.rand(1, 3, 256, 256))).shape  # doctest: +SKIP
        torch.Size([1, 1, 256, 256])
    """

    class_names = ("background", "person")
    segxai_stages = SELFIE_STAGES
    segxai_default_layer = SELFIE_LAYERS["decoder_128"]
    """Seg-Grad-CAM's default layer: the input of the final transposed convolution, the
    layer feeding the head, as for segxai's U-Net. Without it the generic rule would pick the
    last 16x16 tensor (``layers.multiply_6``); the layer study on the bundled photographs
    (docs/evaluation.md, "The selfie network") measured Seg-Grad-CAM's deletion AUC there,
    and at the encoder output (the previous default), about half as far below random as at
    the decoder stages."""


def selfie(path: str | Path | None = None, *, cache_dir: str | Path | None = None,
           device: str | torch.device = "cpu") -> SelfieSegmentation:
    """MediaPipe's pretrained selfie segmentation network as an ``nn.Module`` in eval mode.

    Args:
        path: a ``selfie_segmentation.tflite`` to convert; ``None`` takes the fetched file
            from the cache (verified by SHA-256).
        cache_dir: cache root for ``path=None`` (default ``$SEGXAI_CACHE`` or
            ``~/.cache/segxai``).
        device: where to put the module.

    Returns:
        A :class:`SelfieSegmentation`.

    Raises:
        SegxaiError: the model has not been fetched (the message gives the command:
            ``python -m segxai.models.mediapipe_selfie``), or its checksum differs.
    """
    file = Path(path) if path is not None else selfie_path(cache_dir)
    return SelfieSegmentation(read_tflite(file)).eval().to(device)
