"""Check the PyTorch selfie network against the TFLite interpreter on real photographs.

Needs the ``dev`` extra (``ai-edge-litert`` for the interpreter, ``scikit-image`` for the
photographs). Rerun the numbers quoted in ``docs/data-and-models.md`` with::

    python -m segxai.models.mediapipe_selfie.parity
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

__all__ = ["PHOTOS", "compare_with_tflite", "sample_images", "tflite_probabilities"]

PHOTOS = ("astronaut", "coffee", "chelsea")
"""scikit-image's bundled photographs used for parity."""


def sample_images(size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """:data:`PHOTOS` resized to ``size`` x ``size`` (bilinear, anti-aliased) and one image of
    uniform noise, as ``H×W×3`` float32 arrays in ``[0, 1]``."""
    from skimage import data
    from skimage.transform import resize

    out = {name: resize(getattr(data, name)(), (size, size), order=1, anti_aliasing=True)
           .astype(np.float32) for name in PHOTOS}
    out["random"] = np.random.default_rng(seed).random((size, size, 3), dtype=np.float32)
    return out


def tflite_probabilities(model_file: str | Path, images: np.ndarray) -> np.ndarray:
    """The TFLite interpreter's output for ``(N, H, W, 3)`` float32 images, one at a time
    (the graph's batch is 1): ``(N, H, W)`` person probabilities."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_file))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    probs = []
    for image in images:
        interpreter.set_tensor(inp, np.ascontiguousarray(image[None], dtype=np.float32))
        interpreter.invoke()
        probs.append(interpreter.get_tensor(out)[0, ..., 0].copy())
    return np.stack(probs)


def compare_with_tflite(net: torch.nn.Module, model_file: str | Path,
                        images: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per image: the largest absolute difference between ``sigmoid(net(x))`` (the whole batch
    in one forward) and the interpreter's probability, and the interpreter's person fraction
    (pixels above 0.5)."""
    names = list(images)
    batch = np.stack([images[n] for n in names])
    ref = tflite_probabilities(model_file, batch)
    with torch.no_grad():
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
        ours = torch.sigmoid(net(x))[:, 0].numpy()
    return {n: {"max_abs_diff": float(np.abs(ours[i] - ref[i]).max()),
                "person_fraction": float((ref[i] > 0.5).mean())} for i, n in enumerate(names)}


def main() -> int:
    from segxai.models.mediapipe_selfie.fetch import selfie_path
    from segxai.models.mediapipe_selfie.model import selfie

    torch.set_num_threads(1)
    file = selfie_path()
    rows = compare_with_tflite(selfie(file), file, sample_images())
    print(f"{'image':<10} {'max |p_torch - p_tflite|':>25} {'person fraction':>16}")
    for name, row in rows.items():
        print(f"{name:<10} {row['max_abs_diff']:>25.2e} {row['person_fraction']:>16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
