"""Fast one-dimensional k-means: the clustering under weight sharing.

Why not scikit-learn: on one 4096x4096 layer (16.7M weights, k = 256) its
k-means++ takes minutes. In one dimension every cluster is an interval of the
sorted values, so Lloyd's algorithm only needs the k - 1 boundaries between
neighbouring centroids. We therefore:

1. summarise the data once: exactly (sorted unique values with counts) when it
   is small, otherwise as a fine uniform histogram (2**18 bins, counts and
   sums per bin) built without sorting;
2. solve on that summary with prefix sums: a Lloyd iteration is a binary
   search of the k - 1 midpoints plus O(k) arithmetic, whatever n is. Lloyd
   alone crawls (k = 256 has error modes that shrink by well under 1% per
   iteration), so Newton steps on Lloyd's fixed-point equation (a tridiagonal
   solve) take it to the fixed point, and split-merge moves (split a costly
   cluster, merge the cheapest neighbours) get it out of the local minima
   that outliers in real weights create;
3. with a histogram, label every weight exactly: bins that lie wholly inside a
   cluster take its label from a lookup table, and only the few weights in
   bins that a boundary crosses are compared with the boundary; the final
   centroids are the exact means of their members.

The default start, ``"companding"``, places the centroids where the
asymptotically optimal quantiser puts them (point density proportional to the
cube root of the data density, Panter & Dite 1951), so Newton starts next to
its fixed point. Measured in benchmarks/bench_kmeans1d.py against
scikit-learn's k-means++ (see BENCHMARKS.md).

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    >>> centroids, labels = kmeans1d(x, 8)
    >>> centroids.shape, labels.shape, bool(np.all(np.diff(centroids) > 0))
    ((8,), (10000,), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

INITS = ("companding", "linear", "density", "random", "gaussian")
SOLVERS = ("newton", "lloyd")

# Up to this many values the summary is exact (np.unique sorts them); above it a
# histogram is cheaper than a sort and just as good once the exact final pass runs.
EXACT_LIMIT = 1 << 20
HISTOGRAM_BINS = 1 << 18


@dataclass
class _Summary:
    """Weighted points in ascending order, with prefix sums of counts and sums."""

    values: np.ndarray  # representative value of each point (float64, ascending)
    counts: np.ndarray  # how many data values each point stands for (float64)
    cum_n: np.ndarray  # prefix sums of counts, length m + 1
    cum_s: np.ndarray  # prefix sums of counts * values, length m + 1
    cum_q: np.ndarray  # prefix sums of counts * values**2, length m + 1


def _summary(values: np.ndarray, counts: np.ndarray, sums: np.ndarray) -> _Summary:
    cum_n = np.concatenate(([0.0], np.cumsum(counts, dtype=np.float64)))
    cum_s = np.concatenate(([0.0], np.cumsum(sums, dtype=np.float64)))
    cum_q = np.concatenate(([0.0], np.cumsum(sums * values, dtype=np.float64)))
    return _Summary(values, counts.astype(np.float64), cum_n, cum_s, cum_q)


def _as_flat_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"kmeans1d needs real numbers, got dtype {arr.dtype}; pass a float array")
    if arr.dtype != np.float32 and arr.dtype != np.float64:
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr).reshape(-1)


def kmeans1d(
    x: Any,
    k: int,
    init: str = "companding",
    *,
    max_iter: int = 300,
    solver: str = "newton",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the values of ``x`` into ``k`` groups; returns ``(centroids, labels)``.

    Args:
        x: numbers of any shape (numpy array, torch tensor or sequence); flattened.
        k: the number of clusters (at least 1). When ``x`` has fewer than ``k``
            distinct values, every distinct value is its own centroid and fewer
            than ``k`` centroids come back.
        init: where Lloyd starts: ``"companding"`` (default, the best measured:
            centroid density proportional to the cube root of the data
            density; with the Newton solver the quantile start is polished
            too and the lower error kept), ``"linear"`` (evenly spaced between min and max, as Deep
            Compression recommends), ``"density"`` (equal-mass quantiles),
            ``"random"`` (k distinct data values, seeded) or ``"gaussian"``
            (the optimal centroid density of the Gaussian fitted to ``x``).
        max_iter: the most Lloyd iterations (each is O(k log n), not O(n)).
        solver: ``"newton"`` (default) runs Newton steps on Lloyd's fixed-point
            equation, then Lloyd to the fixed point: the lowest error, fast.
            ``"lloyd"`` is plain Lloyd from ``init`` for at most ``max_iter``
            iterations, as scikit-learn does (the init then matters).
        seed: seed of the ``"random"`` start.

    Returns:
        ``centroids``: ascending, float32 for float32 input and float64
        otherwise, each the mean of its members; ``labels``: int32, the index
        of each value's centroid, same length as the flattened ``x``.

    Example:
        >>> import numpy as np
        >>> c, lab = kmeans1d(np.array([0.0, 0.1, 5.0, 5.2, 9.9]), 3, init="linear")
        >>> c.round(2).tolist(), lab.tolist()
        ([0.05, 5.1, 9.9], [0, 0, 1, 1, 2])
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"kmeans1d: k={k!r} is invalid: expected an integer >= 1")
    if init not in INITS:
        raise ValueError(f"kmeans1d: init={init!r} is invalid: expected one of {', '.join(INITS)}")
    if solver not in SOLVERS:
        raise ValueError(f"kmeans1d: solver={solver!r} is invalid: expected one of {', '.join(SOLVERS)}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ValueError(f"kmeans1d: max_iter={max_iter!r} is invalid: expected an integer >= 0")
    data = _as_flat_array(x)
    out_dtype = np.float32 if data.dtype == np.float32 else np.float64
    if data.size == 0:
        raise ValueError("kmeans1d: x is empty; pass at least one value")
    lo, hi = float(data.min()), float(data.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("kmeans1d: x holds NaN or infinite values; clean them before clustering")
    k = int(k)

    if data.size <= EXACT_LIMIT or lo == hi:
        return _kmeans_exact(data, k, init, int(max_iter), solver, seed, out_dtype)
    return _kmeans_histogram(data, k, init, int(max_iter), solver, seed, lo, hi, out_dtype)


# --------------------------------------------------------------------------- two summaries


def _kmeans_exact(
    data: np.ndarray, k: int, init: str, max_iter: int, solver: str, seed: int, out_dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    values, inverse, counts = np.unique(data, return_inverse=True, return_counts=True)
    values = values.astype(np.float64)
    if values.size <= k:  # every distinct value is a centroid: zero error
        return values.astype(out_dtype), inverse.reshape(-1).astype(np.int32)
    summary = _summary(values, counts, values * counts)
    centroids = _solve(summary, k, init, max_iter, solver, seed)
    bounds = _boundaries(centroids)
    point_label = np.searchsorted(bounds, values, side="right").astype(np.int32)
    labels = point_label[inverse.reshape(-1)]
    return _finish(labels, data, centroids.size, out_dtype)


def _kmeans_histogram(
    data: np.ndarray, k: int, init: str, max_iter: int, solver: str, seed: int, lo: float, hi: float, out_dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    bins = HISTOGRAM_BINS
    # Bin index = floor((x - lo) * scale), computed in the input's precision:
    # rounding can move a value into a neighbouring bin, which the exact pass
    # below tolerates by treating the bins next to a boundary as crossed too.
    scale = (bins - 1) / (hi - lo)
    tmp = np.subtract(data, data.dtype.type(lo))
    np.multiply(tmp, data.dtype.type(scale), out=tmp)
    idx = tmp.astype(np.int32)
    del tmp
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    sums = np.bincount(idx, weights=data, minlength=bins)
    filled = np.flatnonzero(counts)
    if filled.size <= k:
        # Few distinct levels (e.g. already shared weights): label exactly by sorting them.
        return _kmeans_exact(data, k, init, max_iter, solver, seed, out_dtype)
    values = sums[filled] / counts[filled]
    summary = _summary(values, counts[filled], sums[filled])
    centroids = _solve(summary, k, init, max_iter, solver, seed)
    bounds = _boundaries(centroids)

    # Label of every bin from its left edge; -1 marks bins a boundary may cross.
    width = (hi - lo) / (bins - 1)
    left_edges = lo + width * np.arange(bins + 1, dtype=np.float64)
    edge_label = np.searchsorted(bounds, left_edges, side="right").astype(np.int32)
    crossed = np.flatnonzero(edge_label[:-1] != edge_label[1:])
    lut = edge_label[:-1].copy()
    for shift in (-1, 0, 1):
        lut[np.clip(crossed + shift, 0, bins - 1)] = -1
    labels = lut[idx]
    del idx
    near = np.flatnonzero(labels < 0)
    labels[near] = np.searchsorted(bounds, data[near], side="right")

    # Exact member sums without another full pass: whole bins plus the few weights near a boundary.
    whole = lut >= 0
    k_out = centroids.size
    n_whole = np.bincount(lut[whole], weights=counts[whole], minlength=k_out)
    s_whole = np.bincount(lut[whole], weights=sums[whole], minlength=k_out)
    near_x = data[near]
    marked = lut < 0
    near_labels = labels[near]
    for attempt in range(4):
        n = n_whole + np.bincount(near_labels, minlength=k_out)
        s = s_whole + np.bincount(near_labels, weights=near_x, minlength=k_out)
        if attempt == 3 or np.any(n == 0):
            break
        # Exact means (rounded as they will be returned) move the midpoints a
        # little; relabel the weights near them, as long as every midpoint still
        # falls in a bin whose weights we hold.
        bounds = _boundaries((s / n).astype(out_dtype).astype(np.float64))
        moved = np.searchsorted(bounds, left_edges, side="right")
        if not np.all(marked[np.flatnonzero(moved[:-1] != moved[1:])]):
            break
        relabelled = np.searchsorted(bounds, near_x, side="right").astype(np.int32)
        if np.array_equal(relabelled, near_labels):
            break
        labels[near] = near_labels = relabelled
    return _compact(labels, n, s, out_dtype)


def _solve(summary: _Summary, k: int, init: str, max_iter: int, solver: str, seed: int) -> np.ndarray:
    if solver == "lloyd":
        return _lloyd(summary, _init(summary, k, init, seed), max_iter)
    # Sparse tails leave several fixed points; the default polishes two good
    # starts (cheap: the work is O(k) per step) and keeps the lower error.
    starts = ("companding", "density") if init == "companding" else (init,)
    best, best_cost = None, np.inf
    for name in starts:
        centroids = _lloyd(summary, _newton(summary, _init(summary, k, name, seed)), max_iter)
        centroids = _split_merge(summary, centroids, max_iter)
        cost = _cost(summary, centroids)
        if cost < best_cost:
            best, best_cost = centroids, cost
    return best


def _finish(labels: np.ndarray, data: np.ndarray, k: int, out_dtype: type) -> tuple[np.ndarray, np.ndarray]:
    n = np.bincount(labels, minlength=k).astype(np.float64)
    s = np.bincount(labels, weights=data, minlength=k)
    return _compact(labels, n, s, out_dtype)


def _compact(labels: np.ndarray, n: np.ndarray, s: np.ndarray, out_dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Centroids = exact member means; empty clusters (rare) are dropped and labels renumbered."""
    keep = n > 0
    centroids = (s[keep] / n[keep]).astype(out_dtype)
    if not keep.all():
        renumber = (np.cumsum(keep) - 1).astype(np.int32)
        labels = renumber[labels]
    return centroids, labels.astype(np.int32, copy=False)


# --------------------------------------------------------------------------- Lloyd on a summary


def _boundaries(centroids: np.ndarray) -> np.ndarray:
    return (centroids[:-1] + centroids[1:]) * 0.5


def _cuts(summary: _Summary, centroids: np.ndarray) -> np.ndarray:
    """Index of the first point of each cluster (plus the end): points below a midpoint go left."""
    inner = np.searchsorted(summary.values, _boundaries(centroids), side="left")
    return np.concatenate(([0], inner, [summary.values.size]))


def _cost(summary: _Summary, centroids: np.ndarray) -> float:
    """Within-cluster sum of squares when every point goes to its nearest centroid."""
    cuts = _cuts(summary, centroids)
    n = np.diff(summary.cum_n[cuts])
    s = np.diff(summary.cum_s[cuts])
    q = np.diff(summary.cum_q[cuts])
    return float(np.sum(q - 2.0 * centroids * s + centroids * centroids * n))


def _newton(summary: _Summary, centroids: np.ndarray, max_steps: int = 100) -> np.ndarray:
    """Newton's method on Lloyd's fixed-point equation T(c) = c.

    Lloyd alone crawls: for k = 256 the slowest error modes shrink by well under
    1% per iteration. In 1-D the Jacobian of the Lloyd map T is tridiagonal
    (centroid j moves only with the two midpoints beside it), so a Newton step is
    one O(k) banded solve. The density at each midpoint comes from the prefix
    counts over a window of half the gap. A step is kept only if it lowers the
    error; otherwise a plain Lloyd step is taken, so the error never rises.
    """
    from scipy.linalg import solve_banded  # scipy comes with scikit-learn, a core dependency

    values, cum_n, cum_s = summary.values, summary.cum_n, summary.cum_s
    k = centroids.size
    c = np.sort(centroids)
    if k < 2:
        return c
    cost = _cost(summary, c)
    damping = 1e-4
    for _ in range(max_steps):
        gaps = np.diff(c)
        t = (c[:-1] + c[1:]) * 0.5
        cuts = np.concatenate(([0], np.searchsorted(values, t, side="left"), [values.size]))
        n = np.diff(cum_n[cuts])
        if np.any(n == 0) or np.any(gaps <= 0):
            # Empty or coincident clusters: one Lloyd step, which relocates them.
            c = _lloyd(summary, c, 1)
            cost = _cost(summary, c)
            continue
        lloyd = np.diff(cum_s[cuts]) / n
        h = 0.25 * gaps
        dens = (cum_n[np.searchsorted(values, t + h)] - cum_n[np.searchsorted(values, t - h)]) / (2.0 * h)
        a = np.zeros(k)  # dT_j / dt_{j-1}
        b = np.zeros(k)  # dT_j / dt_j
        a[1:] = dens * (lloyd[1:] - t) / n[1:]
        b[:-1] = dens * (t - lloyd[:-1]) / n[:-1]
        banded = np.zeros((3, k))
        banded[0, 1:] = -0.5 * b[:-1]
        banded[2, :-1] = -0.5 * a[1:]
        diagonal = 1.0 - 0.5 * (a + b)
        # The Lloyd step is always a descent; a Newton step is tried beside it with
        # Levenberg-Marquardt damping, because the smooth error modes make (I - J)
        # nearly singular and the estimated density is not exact.
        candidate = np.sort(lloyd)
        candidate_cost = _cost(summary, candidate)
        for _attempt in range(6):
            banded[1] = diagonal + damping
            try:
                step = solve_banded((1, 1), banded, lloyd - c)
            except (np.linalg.LinAlgError, ValueError):
                step = None
            if step is not None and np.all(np.isfinite(step)):
                trial = np.sort(np.clip(c + step, values[0], values[-1]))
                trial_cost = _cost(summary, trial)
                if trial_cost < candidate_cost:
                    candidate, candidate_cost = trial, trial_cost
                    damping = max(damping * 0.25, 1e-9)
                    break
            damping *= 8.0
        if not candidate_cost < cost * (1.0 - 1e-14):
            if candidate_cost < cost:
                c = candidate
            break
        c, cost = candidate, candidate_cost
    return c


def _cluster_stats(summary: _Summary, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.diff(summary.cum_n[cuts]), np.diff(summary.cum_s[cuts]), np.diff(summary.cum_q[cuts])


def _split_merge(summary: _Summary, centroids: np.ndarray, max_iter: int, max_moves: int = 1000) -> np.ndarray:
    """Escape Lloyd's local minima: split a costly cluster, merge the cheapest neighbours.

    Heavy-tailed weights (real networks have outliers many standard deviations
    out) leave Lloyd stuck with too few centroids in the tails: a centroid
    cannot walk across the empty space between outliers. A move merges the two
    adjacent clusters whose union costs least and splits, at its best point,
    a cluster whose split gains most; it is kept only if the error drops
    (after Newton and Lloyd settle), so the error never rises.
    """
    values, cum_n, cum_s, cum_q = summary.values, summary.cum_n, summary.cum_s, summary.cum_q
    c = np.sort(centroids)
    if c.size < 3:
        return c
    cost = _cost(summary, c)
    for _ in range(max_moves):
        cuts = _cuts(summary, c)
        n, s, q = _cluster_stats(summary, cuts)
        safe_n = np.where(n > 0, n, 1.0)
        sse = np.where(n > 0, q - s * s / safe_n, 0.0)
        un, us, uq = n[:-1] + n[1:], s[:-1] + s[1:], q[:-1] + q[1:]
        merge_cost = np.where(un > 0, uq - us * us / np.where(un > 0, un, 1.0), 0.0) - sse[:-1] - sse[1:]
        splits = []
        for j in np.argsort(sse)[::-1][:8]:  # the costliest clusters
            a, b = int(cuts[j]), int(cuts[j + 1])
            if b - a < 2:
                continue
            mid = np.arange(a + 1, b)
            ln, ls, lq = cum_n[mid] - cum_n[a], cum_s[mid] - cum_s[a], cum_q[mid] - cum_q[a]
            rn, rs, rq = cum_n[b] - cum_n[mid], cum_s[b] - cum_s[mid], cum_q[b] - cum_q[mid]
            gain = sse[j] - (lq - ls * ls / ln) - (rq - rs * rs / rn)
            i = int(np.argmax(gain))
            splits.append((float(gain[i]), int(j), float(ls[i] / ln[i]), float(rs[i] / rn[i])))
        # Candidate moves by predicted gain; the first that really lowers the error is kept.
        moves = [
            (gain - float(merge_cost[p]), j, int(p), left, right)
            for gain, j, left, right in splits
            for p in np.argsort(merge_cost)[:8]
            if p != j and p + 1 != j and gain > merge_cost[p]
        ]
        moves.sort(key=lambda m: -m[0])
        improved = False
        for _, j, pair, left, right in moves[:8]:
            merged = float(us[pair] / un[pair]) if un[pair] > 0 else float(c[pair])
            trial = np.concatenate((np.delete(c, [pair, pair + 1, j]), [merged, left, right]))
            trial = _lloyd(summary, _newton(summary, np.sort(trial), max_steps=20), max_iter)
            trial_cost = _cost(summary, trial)
            if trial_cost < cost * (1.0 - 1e-12):
                c, cost, improved = trial, trial_cost, True
                break
        if not improved:
            break
    return c


def _lloyd(summary: _Summary, centroids: np.ndarray, max_iter: int) -> np.ndarray:
    """Lloyd iterations on weighted points; stops at the fixed point (assignment unchanged)."""
    values, cum_n, cum_s = summary.values, summary.cum_n, summary.cum_s
    m = values.size
    centroids = np.sort(centroids)
    previous = None
    for _ in range(max_iter):
        # Points below a midpoint go left, points on or above it go right.
        cuts = np.concatenate(([0], np.searchsorted(values, _boundaries(centroids), side="left"), [m]))
        if previous is not None and np.array_equal(cuts, previous):
            break
        previous = cuts
        n = cum_n[cuts[1:]] - cum_n[cuts[:-1]]
        s = cum_s[cuts[1:]] - cum_s[cuts[:-1]]
        empty = n == 0
        centroids = np.where(empty, centroids, s / np.where(empty, 1.0, n))
        if empty.any():
            centroids = _relocate(summary, centroids, cuts, empty)
        centroids = np.sort(centroids)
    return centroids


def _relocate(summary: _Summary, centroids: np.ndarray, cuts: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Move each empty centroid into the widest populated cluster (as scikit-learn does, cheaply)."""
    values = summary.values
    centroids = centroids.copy()
    lo_val = values[np.minimum(cuts[:-1], values.size - 1)]
    hi_val = values[np.maximum(cuts[1:] - 1, 0)]
    spread = np.where(empty, -1.0, hi_val - lo_val)
    for j in np.flatnonzero(empty):
        widest = int(np.argmax(spread))
        if spread[widest] <= 0:
            break
        a, b = int(cuts[widest]), int(cuts[widest + 1])
        # Split the widest cluster at its median point: both halves keep members.
        half = summary.cum_n[a] + (summary.cum_n[b] - summary.cum_n[a]) / 2
        cut = min(max(int(np.searchsorted(summary.cum_n, half, side="left")), a + 1), b - 1)
        centroids[j] = (summary.cum_s[b] - summary.cum_s[cut]) / (summary.cum_n[b] - summary.cum_n[cut])
        centroids[widest] = (summary.cum_s[cut] - summary.cum_s[a]) / (summary.cum_n[cut] - summary.cum_n[a])
        spread[widest] = 0.0
    return centroids


# --------------------------------------------------------------------------- initialisations


def _init(summary: _Summary, k: int, init: str, seed: int) -> np.ndarray:
    values, counts, cum_n = summary.values, summary.counts, summary.cum_n
    lo, hi = float(values[0]), float(values[-1])
    q = (np.arange(k, dtype=np.float64) + 0.5) / k
    if init == "linear":
        return np.linspace(lo, hi, k)
    if init == "density":
        pos = np.searchsorted(cum_n[1:], q * cum_n[-1], side="left")
        return values[np.minimum(pos, values.size - 1)]
    if init == "random":
        rng = np.random.default_rng(seed)
        picks = rng.choice(values.size, size=k, replace=False, p=counts / counts.sum())
        return values[picks]
    if init == "gaussian":
        mean = float(summary.cum_s[-1] / cum_n[-1])
        var = float(np.dot(counts, (values - mean) ** 2) / cum_n[-1])
        # The optimal centroid density for N(mean, var) is N(mean, 3 var) (Panter & Dite).
        dist = NormalDist(mean, max(np.sqrt(3.0 * var), 1e-30))
        return np.clip(np.array([dist.inv_cdf(p) for p in q]), lo, hi)
    return _companding_init(summary, q, k)


def _companding_init(summary: _Summary, q: np.ndarray, k: int) -> np.ndarray:
    """Quantiles of the cube root of a smoothed density estimate (Panter-Dite point density)."""
    values, counts = summary.values, summary.counts
    lo, hi = float(values[0]), float(values[-1])
    # A coarse histogram (about 4 bins per cluster) smooths the density: the cube
    # root of noisy tiny counts in the tails would pull centroids onto outliers.
    # Measured on 16.7M Gaussian weights, k = 256: 1024 bins beat 4096 and 256.
    coarse = int(min(max(4 * k, 64), 1024, max(16, values.size // 8)))
    dens, edges = np.histogram(values, bins=coarse, range=(lo, hi), weights=counts)
    mass = np.cbrt(dens)
    cdf = np.concatenate(([0.0], np.cumsum(mass)))
    cdf /= cdf[-1]
    return np.interp(q, cdf, edges)
