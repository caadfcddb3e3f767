# SPDX-License-Identifier: Apache-2.0
"""Batch containers, data readers, synthetic generators, splits and batching."""

from ._text import DataError
from .jagged import Jagged
from .keyed_jagged import KeyedJagged
from .synthetic import clustered_embeddings
from .criteo import (CTRBatch, CTRData, ctr_data, load_criteo, read_criteo, sparse_to_kjt, synthetic_criteo,
                     write_criteo)
from .multibehavior import (FeedbackData, feedback_to_levels, load_feedback, read_multibehavior, split_feedback,
                            synthetic_feedback)
from .sequences import (
    FORMATS,
    SequenceData,
    SplitData,
    leave_one_out,
    load_sequences,
    next_item_batches,
    read_ml100k,
    read_movielens_csv,
    read_movielens_dat,
    read_recbole_inter,
    read_sasrec_txt,
    sequence_batch,
    synthetic_sequences,
    uniform_negatives,
)

__all__ = [
    "DataError", "CTRBatch", "CTRData", "ctr_data", "load_criteo", "read_criteo", "sparse_to_kjt", "synthetic_criteo",
    "write_criteo", "FeedbackData", "feedback_to_levels", "load_feedback", "read_multibehavior", "split_feedback",
    "synthetic_feedback",
    "FORMATS", "Jagged", "KeyedJagged", "clustered_embeddings", "SequenceData", "SplitData", "leave_one_out", "load_sequences", "next_item_batches",
    "read_ml100k", "read_movielens_csv", "read_movielens_dat", "read_recbole_inter", "read_sasrec_txt",
    "sequence_batch", "synthetic_sequences", "uniform_negatives",
]
