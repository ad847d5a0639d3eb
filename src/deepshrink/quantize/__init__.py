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
