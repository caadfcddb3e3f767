# SPDX-License-Identifier: Apache-2.0
"""Criteo-format CTR data: a streaming TSV reader, a writer and a synthetic generator with a known ground truth.

A Criteo line is `label \\t I1..I13 \\t C1..C26`: label 0/1, 13 integer counts (possibly empty or negative), 26
categorical values as hexadecimal hashes (possibly empty). Dense features become log(1 + max(x, 0)) (DLRM's
preprocessing; empty -> 0). Categorical value h of feature f becomes row int(h, 16) % table_sizes[f], or, with
table_sizes None (raw ids, for dynamic tables), the int64 with h's 64 bits (values >= 2^63 wrap to negative;
all 64 bits set is refused: -1 marks an empty field); an empty categorical field is an empty bag (its pooled
embedding is zero)."""

import dataclasses
import math
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from . import _text
from .keyed_jagged import KeyedJagged

NUM_DENSE = 13
NUM_SPARSE = 26
SPARSE_KEYS = [f"C{i + 1}" for i in range(NUM_SPARSE)]
_FIELDS = 1 + NUM_DENSE + NUM_SPARSE
_DENSE_NAMES = [f"integer feature I{j + 1}" for j in range(NUM_DENSE)]


@dataclasses.dataclass
class CTRBatch:
    """One batch: dense [B, 13] float32 (log-transformed), sparse ids [B, 26] int64 (-1 = empty field),
    labels [B] float32."""

    dense: Tensor
    sparse: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def features(self) -> KeyedJagged:
        """The categorical features as a KeyedJagged (keys C1..C26, one id per bag, empty bags for -1)."""
        return sparse_to_kjt(self.sparse)

    def slice(self, start: int, stop: int) -> "CTRBatch":
        return CTRBatch(self.dense[start:stop], self.sparse[start:stop], self.labels[start:stop])


def sparse_to_kjt(sparse: Tensor, keys: Optional[Sequence[str]] = None) -> KeyedJagged:
    """[B, F] ids with -1 for "no id" -> KeyedJagged with F keys, key-major, at most one id per bag (raw ids may be
    any other negative value)."""
    keys = list(keys) if keys is not None else [f"C{i + 1}" for i in range(sparse.shape[1])]
    by_key = sparse.t().reshape(-1)
    present = by_key != -1
    offsets = torch.zeros(by_key.shape[0] + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(present, 0)
    return KeyedJagged(keys, by_key[present].contiguous(), offsets)


def _check_table_sizes(table_sizes: Union[int, Sequence[int]]) -> List[int]:
    sizes = [int(table_sizes)] * NUM_SPARSE if isinstance(table_sizes, (int, np.integer)) else list(table_sizes)
    if len(sizes) != NUM_SPARSE or any(s < 1 for s in sizes):
        raise ValueError(f"table_sizes must be one int >= 1 or {NUM_SPARSE} of them, got {table_sizes!r}")
    return sizes


def _parse_line(line: str, path: str, lineno: int, sizes: Optional[List[int]], dense_row, sparse_row) -> float:
    fields = line.split("\t")
    if len(fields) > _FIELDS:
        raise _text.DataError(f"{path}:{lineno}: expected at most {_FIELDS} tab-separated fields, got {len(fields)}")
    fields += [""] * (_FIELDS - len(fields))  # short lines are padded with empty fields
    if fields[0] not in ("0", "1"):
        raise _text.DataError(f"{path}:{lineno}: label must be 0 or 1, got {fields[0]!r}")
    for j in range(NUM_DENSE):
        s = fields[1 + j]
        if s:
            x = _text.parse_int(s, path, lineno, _DENSE_NAMES[j])
            dense_row[j] = math.log1p(x) if x > 0 else 0.0
        else:
            dense_row[j] = 0.0
    for j in range(NUM_SPARSE):
        s = fields[1 + NUM_DENSE + j]
        if s:
            try:
                h = int(s, 16)
            except ValueError:
                raise _text.DataError(f"{path}:{lineno}: categorical feature C{j + 1} must be hexadecimal, "
                                      f"got {s!r}") from None
            if h < 0:
                raise _text.DataError(f"{path}:{lineno}: categorical feature C{j + 1} must be non-negative, "
                                      f"got {s!r}")
            if sizes is not None:
                sparse_row[j] = h % sizes[j]
                continue
            if h >= 1 << 64 or h == (1 << 64) - 1:
                raise _text.DataError(f"{path}:{lineno}: categorical feature C{j + 1} must fit 64 bits and not be "
                                      f"ffffffffffffffff (the empty-field marker) as a raw id, got {s!r}")
            sparse_row[j] = h - (1 << 64) if h >= 1 << 63 else h
        else:
            sparse_row[j] = -1
    return float(fields[0] == "1")


def read_criteo(path: str, table_sizes: Optional[Union[int, Sequence[int]]] = 1_000_000, batch_size: int = 65536,
                max_rows: Optional[int] = None, skip_rows: int = 0) -> Iterator[CTRBatch]:
    """Stream a Criteo TSV file in batches of `batch_size` lines (the file is never held in memory).

    Args:
        path: the TSV file (Criteo Kaggle `train.txt` / Terabyte `day_N` layout, no header).
        table_sizes: rows per categorical table (modulo hashing), one int or 26; None keeps the raw 64-bit ids
            (dynamic tables).
        batch_size: lines per yielded batch (the last may be shorter).
        max_rows: stop after this many lines.
        skip_rows: skip this many (non-blank) lines first (they are not parsed).
    Raises DataError (a ValueError) with file and line number on a malformed line (text that is not UTF-8, wrong
    label, a dense value that is not an integer within int64, non-hex categorical value, more than 40 fields).
    A leading byte-order mark is dropped; blank lines are skipped."""
    sizes = None if table_sizes is None else _check_table_sizes(table_sizes)
    if batch_size < 1:
        raise ValueError(f"read_criteo: batch_size must be >= 1, got {batch_size}")
    dense = np.zeros((batch_size, NUM_DENSE), np.float32)
    sparse = np.zeros((batch_size, NUM_SPARSE), np.int64)
    labels = np.zeros(batch_size, np.float32)
    n = total = 0

    def emit(count):
        return CTRBatch(torch.from_numpy(dense[:count].copy()), torch.from_numpy(sparse[:count].copy()),
                        torch.from_numpy(labels[:count].copy()))

    skipped = 0
    for lineno, line in _text.lines(path):
        if max_rows is not None and total >= max_rows:
            break
        if skipped < skip_rows:
            skipped += 1
            continue
        labels[n] = _parse_line(line, path, lineno, sizes, dense[n], sparse[n])
        n += 1
        total += 1
        if n == batch_size:
            yield emit(n)
            n = 0
    if n:
        yield emit(n)


def load_criteo(path: str, table_sizes: Optional[Union[int, Sequence[int]]] = 1_000_000,
                max_rows: Optional[int] = None) -> CTRBatch:
    """The whole file (or its first max_rows lines) as one CTRBatch (for files that fit in memory)."""
    parts = list(read_criteo(path, table_sizes, max_rows=max_rows))
    if not parts:
        return CTRBatch(torch.zeros(0, NUM_DENSE), torch.zeros(0, NUM_SPARSE, dtype=torch.int64), torch.zeros(0))
    return CTRBatch(*(torch.cat([getattr(p, k) for p in parts]) for k in ("dense", "sparse", "labels")))


def write_criteo(path: str, raw_dense: Tensor, sparse: Tensor, labels: Tensor) -> None:
    """Write Criteo TSV: raw_dense [N, 13] integers (values < 0 written as empty fields), sparse [N, 26]
    non-negative ids written as hex (-1 -> empty), labels [N] 0/1."""
    raw_dense, sparse, labels = raw_dense.long().tolist(), sparse.long().tolist(), labels.long().tolist()
    with open(path, "w", encoding="utf-8") as f:
        for d, s, y in zip(raw_dense, sparse, labels):
            f.write("\t".join([str(y)] + [str(x) if x >= 0 else "" for x in d]
                              + [format(x, "08x") if x >= 0 else "" for x in s]) + "\n")


@dataclasses.dataclass
class SyntheticCTR:
    """Synthetic Criteo-format data with its ground truth: `train` / `test` CTRBatch, the raw integer dense
    features (for writing files), the true click probabilities of the test rows and the AUC they reach
    (`oracle_auc`: no model can do better in expectation)."""

    train: CTRBatch
    test: CTRBatch
    table_sizes: List[int]
    test_probability: Tensor
    oracle_auc: float
    raw_dense_train: Tensor
    raw_dense_test: Tensor


def synthetic_criteo(num_train: int = 200_000, num_test: int = 50_000, table_sizes: Union[int, Sequence[int]] = 2000,
                     crosses: int = 12, latent_dim: int = 4, missing_rate: float = 0.05, base_ctr: float = 0.25,
                     seed: int = 0, raw_ids: bool = False) -> SyntheticCTR:
    """Criteo-format samples with a known logistic ground truth over feature crosses.

    Ids follow a Zipf-like law per table; 5% of categorical fields are empty. The true logit is
    b + sum_f w_f[id_f] + sum over `crosses` random feature pairs (f, g) of <u_f[id_f], u_g[id_g]>
    + a linear term in log(1 + dense), so a model with embeddings and pairwise interactions (DLRM) can approach
    `oracle_auc` while a first-order model cannot. raw_ids: each table's ids become distinct random 64-bit
    values (negative ones included, never -1), the vocabulary of a table stays table_sizes[f] ids: the input of
    dynamic tables, or of modulo hashing into smaller tables (hash_ids)."""
    sizes = _check_table_sizes(table_sizes)
    g = torch.Generator().manual_seed(seed)
    n = num_train + num_test
    sparse = torch.empty(n, NUM_SPARSE, dtype=torch.int64)
    for f, v in enumerate(sizes):
        ranks = torch.arange(1, v + 1, dtype=torch.float64)
        p = ranks ** -1.05
        sparse[:, f] = torch.multinomial(p / p.sum(), n, replacement=True, generator=g)
        perm = torch.randperm(v, generator=g)  # popular ids are not the small ones
        sparse[:, f] = perm[sparse[:, f]]
    missing = torch.rand(n, NUM_SPARSE, generator=g) < missing_rate
    sparse[missing] = -1
    raw_dense = torch.poisson(torch.rand(n, NUM_DENSE, generator=g) * 20, generator=g).long()
    raw_dense[torch.rand(n, NUM_DENSE, generator=g) < missing_rate] = -1
    dense = torch.log1p(raw_dense.clamp_min(0).double())

    logit = torch.zeros(n, dtype=torch.float64)
    for f, v in enumerate(sizes):
        w = torch.randn(v, generator=g, dtype=torch.float64) * 0.3
        logit += torch.where(sparse[:, f] >= 0, w[sparse[:, f].clamp_min(0)], torch.zeros(()))
    latent = [torch.randn(v, latent_dim, generator=g, dtype=torch.float64) / math.sqrt(latent_dim) for v in sizes]
    pairs = torch.combinations(torch.arange(NUM_SPARSE))[torch.randperm(NUM_SPARSE * (NUM_SPARSE - 1) // 2,
                                                                         generator=g)[:crosses]]
    for f, h in pairs.tolist():
        uf = latent[f][sparse[:, f].clamp_min(0)] * (sparse[:, f] >= 0).unsqueeze(1)
        uh = latent[h][sparse[:, h].clamp_min(0)] * (sparse[:, h] >= 0).unsqueeze(1)
        logit += 1.2 * (uf * uh).sum(1)
    logit += dense @ (torch.randn(NUM_DENSE, generator=g, dtype=torch.float64) * 0.15)
    logit -= logit.mean()
    logit += math.log(base_ctr / (1 - base_ctr))
    prob = torch.sigmoid(logit)
    labels = (torch.rand(n, generator=g, dtype=torch.float64) < prob).float()

    if raw_ids:
        for f, v in enumerate(sizes):
            vocab = torch.randint(-2**63, 2**63 - 1, (v + v // 64 + 8,), generator=g, dtype=torch.int64).unique()
            vocab = vocab[vocab != -1]
            vocab = vocab[torch.randperm(vocab.shape[0], generator=g)[:v]]
            col = sparse[:, f]
            sparse[:, f] = torch.where(col >= 0, vocab[col.clamp_min(0)], col)

    def part(sl):
        return CTRBatch(dense[sl].float().contiguous(), sparse[sl].contiguous(), labels[sl].contiguous())

    from ..metrics import roc_auc
    tr, te = slice(0, num_train), slice(num_train, n)
    return SyntheticCTR(part(tr), part(te), sizes, prob[te].float(), roc_auc(prob[te], labels[te]),
                        raw_dense[tr], raw_dense[te])


def hash_ids(batch: CTRBatch, table_sizes: Sequence[int]) -> CTRBatch:
    """Raw ids -> rows by modulo hashing (id mod table_sizes[f], non-negative for negative ids); -1 stays empty."""
    sizes = torch.tensor(list(table_sizes), dtype=torch.int64)
    s = batch.sparse
    return CTRBatch(batch.dense, torch.where(s == -1, s, torch.remainder(s, sizes)), batch.labels)


def _hashed(batches, sizes):
    return lambda bs: (hash_ids(b, sizes) for b in batches(bs))


def count_rows(path: str) -> int:
    """The lines read_criteo reads (the non-blank ones; one pass over the bytes, nothing parsed)."""
    return _text.count_lines(path)


@dataclasses.dataclass
class CTRData:
    """Train / test streams: `train_batches(batch_size)` and `test_batches(batch_size)` return fresh iterators
    of CTRBatch; `oracle_auc` is known for synthetic data only."""

    train_batches: Callable[[int], Iterable[CTRBatch]]
    test_batches: Callable[[int], Iterable[CTRBatch]]
    table_sizes: List[int]
    num_train: int
    num_test: int
    oracle_auc: Optional[float] = None


def _in_memory_batches(data: CTRBatch, shuffle_seed: Optional[int] = None):
    def batches(batch_size: int):
        order = None
        if shuffle_seed is not None:
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(shuffle_seed))
        for b in range(0, len(data), batch_size):
            if order is None:
                yield data.slice(b, b + batch_size)
            else:
                idx = order[b:b + batch_size]
                yield CTRBatch(data.dense[idx], data.sparse[idx], data.labels[idx])
    return batches


def ctr_data(data: str, table_sizes=1_000_000, seed: int = 0, test_fraction: float = 0.1,
             max_rows: Optional[int] = None, num_train: int = 200_000, num_test: int = 50_000,
             raw_ids: bool = False, vocab_size=None) -> CTRData:
    """'synthetic' (synthetic_criteo with these sizes) or a Criteo TSV path, streamed: its last test_fraction of
    rows (of the first max_rows) are the test set, like the Kaggle last-day split. ValueError when the file is
    missing or either part would be empty; a malformed line raises ValueError when the streams reach it.

    raw_ids: batches carry raw 64-bit ids (dynamic tables; table_sizes are then their capacities).
    vocab_size (synthetic only): the vocabulary per table, with raw 64-bit ids that are hashed modulo table_sizes
    unless raw_ids (default: vocabulary = table_sizes, ids are rows)."""
    if data == "synthetic":
        sizes = _check_table_sizes(table_sizes)
        vocab = sizes if vocab_size is None else _check_table_sizes(vocab_size)
        raw = raw_ids or vocab_size is not None
        s = synthetic_criteo(num_train, num_test, table_sizes=vocab, seed=seed, raw_ids=raw)
        train, test = _in_memory_batches(s.train, seed), _in_memory_batches(s.test)
        if raw and not raw_ids:
            train, test = _hashed(train, sizes), _hashed(test, sizes)
        return CTRData(train, test, sizes, len(s.train), len(s.test), s.oracle_auc)
    _text.require_file(data)
    sizes = _check_table_sizes(table_sizes)
    rows = count_rows(data)
    if max_rows is not None:
        rows = min(rows, max_rows)
    if rows == 0:
        raise _text.DataError(f"{data}: no rows found")
    cut = int(round(rows * (1 - test_fraction)))
    if not 0 < cut < rows:
        raise _text.DataError(f"{data}: {rows} rows make {cut} training and {rows - cut} test rows; each part "
                              f"needs at least 1")
    read = None if raw_ids else sizes
    return CTRData(lambda bs: read_criteo(data, read, bs, max_rows=cut),
                   lambda bs: read_criteo(data, read, bs, max_rows=rows - cut, skip_rows=cut),
                   sizes, cut, rows - cut)
