"""Weight sharing and quantization: fast 1-D k-means and k-means weight sharing.

Example:
    >>> import numpy as np
    >>> from deepshrink.quantize import kmeans1d
    >>> centroids, labels = kmeans1d(np.array([0.0, 0.1, 1.0, 1.1], dtype=np.float32), 2)
    >>> labels.tolist()
    [0, 0, 1, 1]
"""

from __future__ import annotations

from .kmeans1d import INITS, SOLVERS, kmeans1d
from .sharing import KMeansSharing, SharedWeights, codebooks, fold_sharing, get_shared, kmeans_share, share_tensor

__all__ = [
    "INITS",
    "KMeansSharing",
    "SOLVERS",
    "SharedWeights",
    "codebooks",
    "fold_sharing",
    "get_shared",
    "kmeans1d",
    "kmeans_share",
    "share_tensor",
]

# --- product quantization (pq.py, pq_em.py, pq_calibrate.py, bn_stats.py) ---
from .bn_stats import BatchNormStats, refresh_batchnorm  # noqa: E402
from .pq import ProductQuantization, ProductQuantized, fold_pq, get_pq, pq_codebooks  # noqa: E402
from .pq_em import pq_em, pq_objective  # noqa: E402

__all__ += ["BatchNormStats", "ProductQuantization", "ProductQuantized", "fold_pq", "get_pq", "pq_codebooks", "pq_em",
            "pq_objective", "refresh_batchnorm"]

# --- linear int8, QAT, binary and ternary weights (int8.py, qat.py, binary.py) ---
from .binary import BinaryWeights, LowBitLayer, LowBitWeight, TernaryWeights  # noqa: E402
from .int8 import Int8  # noqa: E402
from .int8_modules import DynamicInt8Linear, Int8Conv, Int8Linear  # noqa: E402
from .qat import QAT, Convert, convert  # noqa: E402

__all__ += ["BinaryWeights", "Convert", "DynamicInt8Linear", "Int8", "Int8Conv", "Int8Linear", "LowBitLayer",
            "LowBitWeight", "QAT", "TernaryWeights", "convert"]
