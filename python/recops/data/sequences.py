# SPDX-License-Identifier: Apache-2.0
"""Sequential-recommendation data: readers, a synthetic generator, leave-one-out split, jagged batches and
uniform negative sampling. Everything reads local files only (nothing from the network)."""

import dataclasses
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from . import _text

FORMATS = ("ml-1m", "ml-100k", "ml-csv", "recbole", "sasrec", "user-items")


@dataclasses.dataclass
class SequenceData:
    """Per-user item sequences in time order, as jagged arrays.

    items [L] int64 dense item ids in [0, num_items); offsets [U+1] int64; timestamps [L] int64 seconds or
    None; item_ids / user_ids map dense ids back to the raw ids of the source (arrays of str).
    """

    items: Tensor
    offsets: Tensor
    timestamps: Optional[Tensor]
    num_items: int
    item_ids: np.ndarray
    user_ids: np.ndarray

    @property
    def num_users(self) -> int:
        return self.offsets.numel() - 1

    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def user(self, u: int) -> Tensor:
        return self.items[int(self.offsets[u]):int(self.offsets[u + 1])]


def _build(users: Sequence[str], items: Sequence[str], times: Optional[Sequence[int]]) -> SequenceData:
    """Group events by user, stable-sort each user's events by time, remap ids densely (first-seen order)."""
    user_codes, user_ids = _dense(users)
    item_codes, item_ids = _dense(items)
    n = len(user_codes)
    t = np.asarray(times, dtype=np.int64) if times is not None else np.arange(n, dtype=np.int64)
    order = np.lexsort((np.arange(n), t, user_codes))  # user, then time, then file order (stable)
    counts = np.bincount(user_codes, minlength=len(user_ids))
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return SequenceData(torch.from_numpy(item_codes[order].astype(np.int64)), torch.from_numpy(offsets),
                        torch.from_numpy(t[order]) if times is not None else None, len(item_ids), item_ids,
                        user_ids)


def _dense(raw: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    ids: Dict[str, int] = {}
    codes = np.fromiter((ids.setdefault(x, len(ids)) for x in raw), dtype=np.int64, count=len(raw))
    return codes, np.array(list(ids), dtype=object)


def _split(line: str, sep: Optional[str]) -> List[str]:
    return line.split() if sep == " " else line.split(sep)


def _read(path: str, sep: str, columns: Union[Tuple[int, int, Optional[int], int], Callable[[int, List[str]], Tuple]]
          ) -> SequenceData:
    """One pass over the file: `columns` is (user, item, timestamp or None, number of fields), or a function of
    the first line's (number, fields) that returns them (for formats with a header). Every line must have exactly
    that many fields, non-empty ids and an int64 timestamp; ValueError with file and line otherwise."""
    users, items, times = [], [], []
    rows = _text.lines(path)
    if callable(columns):
        first = next(rows, None)
        if first is None:
            raise _text.DataError(f"{path}: no interactions found")
        columns = columns(first[0], _split(first[1], sep))
    u, i, t, n = columns
    for lineno, line in rows:
        parts = _split(line, sep)
        if len(parts) != n:
            bound = "at least" if len(parts) < n else "at most"
            raise _text.DataError(f"{path}:{lineno}: expected {bound} {n} fields, got {len(parts)}: {line!r}")
        user, item = parts[u].strip(), parts[i].strip()
        if not user or not item:
            raise _text.DataError(f"{path}:{lineno}: {'user' if not user else 'item'} id must not be empty: {line!r}")
        users.append(user)
        items.append(item)
        if t is not None:
            times.append(_text.parse_int(parts[t].strip(), path, lineno, "timestamp", float_ok=True))
    if not users:
        raise _text.DataError(f"{path}: no interactions found")
    return _build(users, items, times if t is not None else None)


def read_movielens_dat(path: str) -> SequenceData:
    """MovieLens ratings.dat (ML-1M/10M/20M): ``user::item::rating::timestamp``."""
    return _read(path, "::", (0, 1, 3, 4))


def read_ml100k(path: str) -> SequenceData:
    """MovieLens-100K u.data: ``user<TAB>item<TAB>rating<TAB>timestamp``."""
    return _read(path, "\t", (0, 1, 3, 4))


def read_movielens_csv(path: str) -> SequenceData:
    """MovieLens ratings.csv (ML-20M/25M) with header ``userId,movieId,rating,timestamp``."""
    def columns(lineno: int, header: List[str]):
        if header[:2] != ["userId", "movieId"] or "timestamp" not in header:
            raise _text.DataError(f"{path}:{lineno}: expected a header userId,movieId,...,timestamp, got {header}")
        return 0, 1, header.index("timestamp"), len(header)

    return _read(path, ",", columns)


def read_recbole_inter(path: str) -> SequenceData:
    """RecBole atomic .inter file: a tab-separated header of ``name:type`` fields including user_id, item_id
    and (optionally) timestamp."""
    def columns(lineno: int, fields: List[str]):
        header = [h.split(":")[0] for h in fields]
        if "user_id" not in header or "item_id" not in header:
            raise _text.DataError(f"{path}:{lineno}: header must name user_id and item_id fields, got {header}")
        t = header.index("timestamp") if "timestamp" in header else None
        return header.index("user_id"), header.index("item_id"), t, len(header)

    return _read(path, "\t", columns)


def read_sasrec_txt(path: str) -> SequenceData:
    """SASRec text format: ``user item`` per line, already in time order (no timestamps)."""
    return _read(path, " ", (0, 1, None, 2))


def read_user_items(path: str) -> SequenceData:
    """One user a line, ``user item1 item2 ...`` separated by whitespace, items in time order (the format of the
    S3-Rec / ICLRec / DiffuRec Amazon files); a user on several lines continues its sequence in file order."""
    users, items = [], []
    for lineno, line in _text.lines(path):
        parts = line.split()
        if len(parts) < 2:
            raise _text.DataError(f"{path}:{lineno}: expected a user id and at least 1 item, got {line!r}")
        users.extend([parts[0]] * (len(parts) - 1))
        items.extend(parts[1:])
    if not users:
        raise _text.DataError(f"{path}: no interactions found")
    return _build(users, items, None)


def load_sequences(path: str, fmt: str) -> SequenceData:
    """Read `path` in one of FORMATS ("ml-1m" is the ::-separated .dat format of ML-1M/10M/20M).

    The file is UTF-8 (a leading byte-order mark is dropped) and blank lines are skipped. DataError (a ValueError)
    "<file>:<line>: ..." on text that is not UTF-8, a line with fewer or more fields than the format has (the
    header's count for ml-csv and recbole), an empty user or item id, or a timestamp that is not a finite number
    within int64; DataError when the file is missing or has no interaction; ValueError on an unknown format."""
    readers = {"ml-1m": read_movielens_dat, "ml-100k": read_ml100k, "ml-csv": read_movielens_csv,
               "recbole": read_recbole_inter, "sasrec": read_sasrec_txt, "user-items": read_user_items}
    if fmt not in readers:
        raise ValueError(f"load_sequences: format must be one of {FORMATS}, got {fmt!r}")
    _text.require_file(path)
    return readers[fmt](path)


def synthetic_sequences(num_users: int = 3000, num_items: int = 2000, mean_len: int = 60, num_tastes: int = 20,
                        seq_prob: float = 0.6, seed: int = 0) -> SequenceData:
    """Synthetic histories with the structure real logs have, as the embedded default.

    Items fall into `num_tastes` genres with Zipf(1.1) popularity inside each; every user likes 1-3 genres.
    With probability `seq_prob` the next item is one of the 3 "successors" of one of the last 3 items (a
    sequential habit a sequence model can learn and popularity cannot); otherwise it is drawn from the user's
    genres by popularity. A user meets each item at most once (like ratings). Timestamps have sessions:
    minutes inside, days between.
    """
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, num_tastes, num_items)
    members = [np.flatnonzero(genre == g) for g in range(num_tastes)]
    cdf = [np.cumsum(1.0 / np.arange(1, len(m) + 1) ** 1.1) for m in members]
    cdf = [c / c[-1] if len(c) else c for c in cdf]
    succ = np.stack([rng.choice(members[genre[i]], 3) if len(members[genre[i]]) else np.full(3, i)
                     for i in range(num_items)])
    users, items, times = [], [], []
    for u in range(num_users):
        tastes = rng.choice(num_tastes, rng.integers(1, 4), replace=False)
        tastes = [g for g in tastes if len(members[g])] or [int(np.argmax([len(m) for m in members]))]
        n = max(5, int(rng.exponential(mean_len)))
        t = int(rng.integers(10**9, 10**9 + 10**7))
        seq: List[int] = []
        seen = set()
        for _ in range(n):
            item = -1
            if seq and rng.random() < seq_prob:
                item = int(succ[seq[-1 - rng.integers(0, min(3, len(seq)))], rng.integers(0, 3)])
            for _ in range(20):  # each item at most once per user (like ratings); popularity otherwise
                if item >= 0 and item not in seen:
                    break
                g = tastes[rng.integers(0, len(tastes))]
                item = int(members[g][min(int(np.searchsorted(cdf[g], rng.random())), len(cdf[g]) - 1)])
            if item in seen:
                continue
            seen.add(item)
            seq.append(item)
            t += int(rng.exponential(300)) if rng.random() < 0.8 else int(rng.exponential(3 * 86400))
            times.append(t)
        users.extend([str(u)] * len(seq))
        items.extend(str(i) for i in seq)
    return _build(users, items, times)


@dataclasses.dataclass
class SplitData:
    """Leave-one-out split: per user, train = items[:-2], validation target = items[-2], test target =
    items[-1] (users with fewer than 3 items are dropped). Inputs are capped to the most recent max_len."""

    data: SequenceData
    train: SequenceData     # items[:-2] per user (training sequences)
    valid_input: SequenceData
    valid_target: Tensor
    test_input: SequenceData
    test_target: Tensor


def _slice(data: SequenceData, keep: np.ndarray, start: np.ndarray, end: np.ndarray, max_len: int) -> SequenceData:
    start = np.maximum(start, end - max_len)
    lengths = end - start
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    rows = np.concatenate([np.arange(s, e) for s, e in zip(start, end)]) if len(lengths) else np.zeros(0, np.int64)
    rows = torch.from_numpy(rows.astype(np.int64))
    return SequenceData(data.items[rows], torch.from_numpy(offsets),
                        data.timestamps[rows] if data.timestamps is not None else None, data.num_items,
                        data.item_ids, data.user_ids[keep])


def leave_one_out(data: SequenceData, max_len: int = 200) -> SplitData:
    off = data.offsets.numpy()
    lengths = off[1:] - off[:-1]
    keep = np.flatnonzero(lengths >= 3)
    s, e = off[:-1][keep], off[1:][keep]
    train = _slice(data, keep, s, e - 2, max_len + 1)  # +1: the training inputs are items[:-1] of this
    valid_in = _slice(data, keep, s, e - 2, max_len)
    test_in = _slice(data, keep, s, e - 1, max_len)
    return SplitData(data, train, valid_in, data.items[torch.from_numpy(e - 2)], test_in,
                     data.items[torch.from_numpy(e - 1)])


def check_split(split: SplitData, source: str) -> None:
    """DataError "<source>: ..." when no user of the split has the 3 items leave-one-out needs (training on it
    would report metrics of nothing)."""
    if split.test_input.num_users == 0:
        raise _text.DataError(f"{source}: leave-one-out needs a user with 3 or more interactions, got "
                              f"{split.data.num_users} users with at most 2 each")


def next_item_batches(seqs: SequenceData, batch_size: int, shuffle: bool = True,
                      generator: Optional[torch.Generator] = None) -> Iterator[Dict[str, Tensor]]:
    """Jagged training batches without padding: for each user sequence x of length n >= 2, inputs x[:-1]
    (with their timestamps) and next-item targets x[1:]."""
    lengths = seqs.lengths()
    users = torch.nonzero(lengths >= 2).squeeze(1)
    if shuffle:
        users = users[torch.randperm(users.numel(), generator=generator)]
    for b in range(0, users.numel(), batch_size):
        yield sequence_batch(seqs, users[b:b + batch_size], drop_last_item=True)


def sequence_batch(seqs: SequenceData, users: Tensor, drop_last_item: bool) -> Dict[str, Tensor]:
    """Gather the given users' sequences into one jagged batch: items, timestamps, offsets, and (with
    drop_last_item) the next-item targets."""
    start = seqs.offsets[users]
    end = seqs.offsets[users + 1]
    lens = end - start - (1 if drop_last_item else 0)
    offsets = torch.zeros(users.numel() + 1, dtype=torch.int64)
    torch.cumsum(lens, 0, out=offsets[1:])
    total = int(offsets[-1])
    seq_of_row = torch.repeat_interleave(torch.arange(users.numel()), lens, output_size=total)
    rows = start[seq_of_row] + torch.arange(total) - offsets[:-1][seq_of_row]
    out = {"items": seqs.items[rows], "offsets": offsets}
    if seqs.timestamps is not None:
        out["timestamps"] = seqs.timestamps[rows]
    if drop_last_item:
        out["targets"] = seqs.items[rows + 1]
    return out


def uniform_negatives(num: int, num_items: int, generator: Optional[torch.Generator] = None) -> Tensor:
    """`num` item ids drawn uniformly with replacement (shared by a batch; the loss masks a negative that
    equals the row's positive)."""
    if num_items < 1:
        raise ValueError(f"uniform_negatives: num_items must be >= 1, got {num_items}")
    return torch.randint(0, num_items, (num,), generator=generator)
