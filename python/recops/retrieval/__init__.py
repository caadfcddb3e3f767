# SPDX-License-Identifier: Apache-2.0
"""Top-k retrieval indexes with one API: add / remove / search(exclude=...) / len / save, and load.

    ExactIndex  brute force through the fused matmul + top-k op (exact)
    IVFIndex    inverted lists of int8/fp16/fp32 codes with exact re-rank; k-means trained in C++ in seconds
    HNSWIndex   hnswlib behind the same API (optional extra: pip install 'recops[hnsw]')

Saved files use a versioned, checksummed binary format (no pickle); `load` raises ValueError on any
truncated, corrupted or wrong-version file.
"""

from ._format import FORMAT_VERSION
from ._index import Index, load
from .exact import ExactIndex
from .hnsw import HNSWIndex
from .ivf import IVFIndex

__all__ = ["ExactIndex", "FORMAT_VERSION", "HNSWIndex", "IVFIndex", "Index", "load"]
