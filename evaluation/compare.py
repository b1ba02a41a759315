"""Distribution comparison in the manner of Yang & Lerch, "On the evaluation of generative models in
music" (Neural Computing and Applications, 2018).

For one feature (a scalar or a vector per piece):
- intra-set distances: every pair of reference pieces (real test music) against each other;
- inter-set distances: every generated piece against every reference piece;
- a Gaussian kernel density estimate of each distance set (Scott's bandwidth, as scipy's default),
  both evaluated on one shared grid;
- overlapped area OA = integral of min(p_intra, p_inter) (1 = the generated pieces sit among the real
  ones like real pieces do, 0 = disjoint) and KL(p_intra || p_inter) (0 = identical).

The same comparison between the train and test splits of real music is the ceiling a model can reach.
Pure numpy; deterministic (subsampling, where a set of distances is large, uses a fixed seed).
"""

from __future__ import annotations

import numpy as np

GRID_POINTS = 1024
MAX_DISTANCES = 20000  # per distance set; more are subsampled (fixed seed)


def _as_rows(x) -> np.ndarray:
    """(n, d) float rows; scalars become d = 1; rows with NaN (undefined feature) are dropped."""
    a = np.asarray(x, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    a = a.reshape(len(a), -1)
    return a[~np.isnan(a).any(1)]


def _subsample(d: np.ndarray, seed: int = 0) -> np.ndarray:
    if len(d) <= MAX_DISTANCES:
        return d
    return np.random.default_rng(seed).choice(d, MAX_DISTANCES, replace=False)


def intra_set_distances(a) -> np.ndarray:
    """Euclidean distances between every pair (i < j) of rows of one set."""
    a = _as_rows(a)
    if len(a) < 2:
        return np.zeros(0)
    i, j = np.triu_indices(len(a), 1)
    return _subsample(np.linalg.norm(a[i] - a[j], axis=1))


def inter_set_distances(a, b) -> np.ndarray:
    """Euclidean distances between every row of a and every row of b."""
    a, b = _as_rows(a), _as_rows(b)
    if not len(a) or not len(b):
        return np.zeros(0)
    return _subsample(np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2).ravel())


def scott_bandwidth(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return 0.0
    return float(np.std(x, ddof=1) * len(x) ** (-1.0 / 5.0))


def kde(x: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian KDE of samples x evaluated on grid (a density: integrates to ~1 over a wide grid)."""
    x = np.asarray(x, np.float64)
    out = np.zeros(len(grid))
    for chunk in np.array_split(x, max(1, len(x) // 2048)):
        z = (grid[:, None] - chunk[None, :]) / bandwidth
        out += np.exp(-0.5 * z * z).sum(1)
    return out / (len(x) * bandwidth * np.sqrt(2 * np.pi))


def shared_kdes(a, b, points: int = GRID_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(grid, density of a, density of b) on one grid that covers both sets and their kernels.
    None when either set is empty.  A set with no spread gets a bandwidth of 1/200 of the joint span
    (a kernel of zero width is a spike no grid can integrate)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if not len(a) or not len(b):
        return None
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    span = hi - lo
    if span == 0:  # every value identical in both sets: one spike; the caller treats it as identical
        return np.array([lo]), np.array([1.0]), np.array([1.0])
    floor = span / 200.0
    ha, hb = max(scott_bandwidth(a), floor), max(scott_bandwidth(b), floor)
    pad = 4.0 * max(ha, hb)
    grid = np.linspace(lo - pad, hi + pad, points)
    return grid, kde(a, grid, ha), kde(b, grid, hb)


def overlap_area(a, b, points: int = GRID_POINTS) -> float:
    """Overlapped area of the KDEs of two samples: ~1 for identical distributions, ~0 for disjoint."""
    k = shared_kdes(a, b, points)
    if k is None:
        return float("nan")
    grid, pa, pb = k
    if len(grid) == 1:
        return 1.0
    return float(min(1.0, np.trapezoid(np.minimum(pa, pb), grid)))


def kl_divergence(a, b, points: int = GRID_POINTS, eps: float = 1e-10) -> float:
    """KL(p_a || p_b) in nats of the KDEs of two samples on a shared grid (both renormalized there)."""
    k = shared_kdes(a, b, points)
    if k is None:
        return float("nan")
    grid, pa, pb = k
    if len(grid) == 1:
        return 0.0
    pa, pb = pa + eps, pb + eps
    pa, pb = pa / pa.sum(), pb / pb.sum()
    return float(np.sum(pa * np.log(pa / pb)))


def compare_sets(reference, candidate) -> dict:
    """Yang & Lerch comparison of one feature: candidate set (generated, or another split) against the
    reference set (real test pieces).  Returns OA and KL of intra-reference vs inter-set distances, the
    mean of each distance set, and OA of the raw feature values themselves (scalar features)."""
    intra = intra_set_distances(reference)
    inter = inter_set_distances(candidate, reference)
    out = {"oa": overlap_area(intra, inter), "kl": kl_divergence(intra, inter),
           "intra_mean": float(intra.mean()) if len(intra) else float("nan"),
           "inter_mean": float(inter.mean()) if len(inter) else float("nan")}
    r, c = _as_rows(reference), _as_rows(candidate)
    if r.shape[1] == 1 and c.shape[1] == 1:
        out["value_oa"] = overlap_area(r[:, 0], c[:, 0])
    return out
