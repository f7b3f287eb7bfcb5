"""ROAD's noisy linear imputation: fill removed pixels from their neighbours, not a constant.

Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient Evaluation Strategy
for Attribution Methods", ICML 2022. Deleting pixels with a constant (black, mean) leaves the
outline of the removed set visible, and because that set depends on the attribution, a network
can read the class from the outline: the score then measures the mask's shape, not the removed
information, and most- and least-relevant-first orders disagree. ROAD replaces each removed
pixel by the weighted mean of its 8 neighbours, so the fill follows the surrounding image and
the outline disappears.

The equations, per channel: for every removed pixel ``p`` with in-image neighbours ``N(p)``,

    ``x_p = Σ_{q ∈ N(p)} w_q x_q / Σ_{q ∈ N(p)} w_q``,

with ``w = 1/6`` for the 4 direct neighbours and ``1/12`` for the 4 diagonal ones (the paper's
weights; they sum to 1 for an interior pixel and are renormalised over the neighbours inside
the image at borders). Neighbours that are themselves removed are unknowns too, so all removed
pixels of an image are solved jointly: a sparse, symmetric, diagonally dominant system (a
weighted graph Laplacian with the kept pixels as boundary values), solved by a sparse LU
factorisation that serves every channel. Then ``noise · N(0, 1)`` is added to the removed
pixels only (the paper: 0.01 on images in ``[0, 1]``, before normalisation).

Consequences used by the tests: known pixels never change; a constant image stays constant;
where no removed pixel touches the border, any linear ramp ``a·i + b·j + c`` solves the
equations exactly (the weights are symmetric), so it is reproduced; without noise every filled
value is a convex combination of kept values, so it stays in the kept pixels' range.

Choices (as the authors' code, ``tleemann/road_evaluation``, as described in the notes): the fill
is not clipped to ``[0, 1]`` after the noise; noise is drawn per removed pixel and channel.
Ours: images are solved together in one block-diagonal system (neighbours never cross images),
and the noise comes from a seeded :class:`numpy.random.Generator`.

Example:
    >>> import torch
    >>> images = torch.rand(2, 3, 16, 16)
    >>> remove = torch.zeros(2, 16, 16, dtype=torch.bool)
    >>> remove[:, 4:12, 4:12] = True
    >>> filled = road_impute(images, remove, noise=0.0)
    >>> bool((filled[:, :, ~remove[0]] == images[:, :, ~remove[0]]).all())
    True
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.linalg import splu
from torch import Tensor

from segxai.core.checks import check_images
from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["NEIGHBOUR_WEIGHTS", "imputation_system", "road_impute"]

NEIGHBOUR_WEIGHTS: tuple[tuple[int, int, float], ...] = (
    (-1, 0, 1 / 6), (1, 0, 1 / 6), (0, -1, 1 / 6), (0, 1, 1 / 6),
    (-1, -1, 1 / 12), (-1, 1, 1 / 12), (1, -1, 1 / 12), (1, 1, 1 / 12),
)
"""``(row offset, column offset, weight)`` of the 8 neighbours (Rong et al., 2022)."""


def _check_remove(remove: object, images: Tensor) -> Tensor:
    n, _, h, w = images.shape
    if not isinstance(remove, Tensor):
        raise SegxaiTypeError(f"remove: expected a bool torch.Tensor of shape ({n}, {h}, {w}), "
                              f"got {type(remove).__name__}")
    if remove.dtype != torch.bool:
        raise SegxaiTypeError(f"remove: expected a bool tensor (True = remove), got "
                              f"{remove.dtype}; use e.g. remove > 0.5")
    if remove.dim() == 4 and remove.shape[1] == 1:
        remove = remove[:, 0]
    if tuple(remove.shape) != (n, h, w):
        raise SegxaiError(f"remove: expected shape ({n}, {h}, {w}) or ({n}, 1, {h}, {w}) to "
                          f"match images, got {tuple(remove.shape)}")
    full = remove.reshape(n, -1).all(dim=1)
    if bool(full.any()):
        first = int(torch.nonzero(full)[0])
        raise SegxaiError(f"remove: expected at least one kept pixel in every image (the fill "
                          f"is made from kept pixels), got all pixels removed in image {first}")
    return remove


def imputation_system(remove: np.ndarray) -> tuple[sparse.csc_matrix, sparse.csr_matrix,
                                                   np.ndarray]:
    """The sparse linear system of the noisy linear imputation (without the noise).

    Args:
        remove: ``(N, H, W)`` bool array, True = removed; every image keeps at least one pixel.

    Returns:
        ``(A, K, unknown)``: ``unknown`` are the flat indices (into ``N·H·W``) of the removed
        pixels, in order; for pixel values ``X`` (``N·H·W × C``) the filled values ``u`` solve
        ``A u = K X`` (``A``: ``m × m`` with the neighbour-weight sum on the diagonal and
        ``−w`` towards removed neighbours; ``K``: ``m × N·H·W`` with ``w`` towards kept ones).
    """
    n, h, w = remove.shape
    flat = remove.reshape(-1)
    unknown = np.flatnonzero(flat)
    m = unknown.size
    row_of = np.full(flat.size, -1, dtype=np.int64)
    row_of[unknown] = np.arange(m)
    img, i, j = np.unravel_index(unknown, remove.shape)
    rows = np.arange(m)
    diag = np.zeros(m)
    a_rows, a_cols, a_vals, k_rows, k_cols, k_vals = [], [], [], [], [], []
    for di, dj, weight in NEIGHBOUR_WEIGHTS:
        ni, nj = i + di, j + dj
        inside = (ni >= 0) & (ni < h) & (nj >= 0) & (nj < w)
        diag[inside] += weight
        q = (img[inside] * h + ni[inside]) * w + nj[inside]
        r = rows[inside]
        gone = flat[q]
        a_rows.append(r[gone])
        a_cols.append(row_of[q[gone]])
        a_vals.append(np.full(int(gone.sum()), -weight))
        k_rows.append(r[~gone])
        k_cols.append(q[~gone])
        k_vals.append(np.full(int((~gone).sum()), weight))
    a = sparse.coo_matrix(
        (np.concatenate([diag, *a_vals]),
         (np.concatenate([rows, *a_rows]), np.concatenate([rows, *a_cols]))), shape=(m, m))
    k = sparse.coo_matrix(
        (np.concatenate(k_vals), (np.concatenate(k_rows), np.concatenate(k_cols))),
        shape=(m, flat.size))
    return a.tocsc(), k.tocsr(), unknown


def road_impute(images: Tensor, remove: Tensor, *, noise: float = 0.01,
                seed: int = 0) -> Tensor:
    """Replace the removed pixels by ROAD's noisy linear imputation (Rong et al., 2022).

    Args:
        images: ``(N, C, H, W)`` floating images in pixel space (e.g. ``[0, 1]``; impute before
            the model's normalisation, as the paper does, so that ``noise`` has its meaning).
        remove: ``(N, H, W)`` or ``(N, 1, H, W)`` bool, True = remove; every image keeps at
            least one pixel (an image with nothing removed is returned unchanged).
        noise: standard deviation of the Gaussian noise added to each filled value (0 for the
            plain linear fill).
        seed: seed of the noise.

    Returns:
        The imputed images: same shape, dtype and device; kept pixels are bit-identical.

    Raises:
        SegxaiError: a mask of the wrong shape, an image with every pixel removed, a negative
            noise. SegxaiTypeError: a mask that is not a bool tensor.
    """
    check_images(images)
    remove = _check_remove(remove, images)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0 \
            or not np.isfinite(noise):
        raise SegxaiError(f"noise: expected a finite number >= 0, got {noise!r}")
    out = images.detach().clone()
    mask = remove.detach().cpu().numpy()
    if not mask.any():
        return out
    n, c, h, w = images.shape
    pixels = images.detach().cpu().to(torch.float64).permute(0, 2, 3, 1).reshape(-1, c).numpy()
    a, k, unknown = imputation_system(mask)
    filled = splu(a).solve(np.ascontiguousarray(k @ pixels))
    if noise > 0:
        filled = filled + noise * np.random.default_rng(seed).standard_normal(filled.shape)
    img, i, j = np.unravel_index(unknown, mask.shape)
    values = torch.from_numpy(filled).to(device=out.device, dtype=out.dtype)
    out[torch.from_numpy(img), :, torch.from_numpy(i), torch.from_numpy(j)] = values
    return out
