# SPDX-License-Identifier: Apache-2.0
"""Multi-behaviour implicit feedback (view < cart < buy ...) as ordinal levels per (user, item) pair: readers,
a synthetic generator and a per-user split."""

import dataclasses
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from . import _text


@dataclasses.dataclass
class FeedbackData:
    """One row per observed (user, item) pair: level in [1, T] is the deepest behaviour seen (behaviours[level - 1]).
    users / items are dense ids; user_ids / item_ids map them back to the file's tokens (None for synthetic)."""

    users: Tensor
    items: Tensor
    levels: Tensor
    num_users: int
    num_items: int
    behaviours: List[str]
    user_ids: Optional[List[str]] = None
    item_ids: Optional[List[str]] = None

    @property
    def num_levels(self) -> int:
        return len(self.behaviours)

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def subset(self, mask: Tensor) -> "FeedbackData":
        return dataclasses.replace(self, users=self.users[mask], items=self.items[mask], levels=self.levels[mask])

    def level_rates(self) -> List[float]:
        """Fraction of pairs at level >= t, t = 1..T."""
        n = max(len(self), 1)
        return [float((self.levels >= t).sum()) / n for t in range(1, self.num_levels + 1)]


def feedback_to_levels(behaviours: Sequence[str], order: Sequence[str]) -> Tensor:
    """Behaviour names -> ordinal levels: order[0] (the shallowest, e.g. "view") -> 1, ..., order[T-1] -> T.
    ValueError naming the first unknown behaviour."""
    index = {b: i + 1 for i, b in enumerate(order)}
    if len(index) != len(order):
        raise ValueError(f"feedback_to_levels: order must have distinct names, got {list(order)}")
    out = np.empty(len(behaviours), np.int64)
    for n, b in enumerate(behaviours):
        lvl = index.get(b)
        if lvl is None:
            raise ValueError(f"feedback_to_levels: behaviour {b!r} (event {n}) is not in order {list(order)}")
        out[n] = lvl
    return torch.from_numpy(out)


def _aggregate(users: List[str], items: List[str], levels: Tensor, order: List[str]) -> FeedbackData:
    """Dense ids (first-seen order) and the maximum level of each (user, item) pair."""
    umap: Dict[str, int] = {}
    imap: Dict[str, int] = {}
    u = torch.tensor([umap.setdefault(x, len(umap)) for x in users], dtype=torch.int64)
    i = torch.tensor([imap.setdefault(x, len(imap)) for x in items], dtype=torch.int64)
    key = u * max(len(imap), 1) + i
    uniq, inverse = torch.unique(key, return_inverse=True)
    best = torch.zeros(uniq.shape[0], dtype=torch.int64).scatter_reduce_(0, inverse, levels, "amax")
    return FeedbackData(uniq // max(len(imap), 1), uniq % max(len(imap), 1), best, len(umap), len(imap), list(order),
                        list(umap), list(imap))


def _split(line: str) -> List[str]:
    return line.replace(",", " ").split()


def read_multibehavior(path: Union[str, Dict[str, str]], order: Optional[Sequence[str]] = None) -> FeedbackData:
    """Read multi-behaviour interactions.

    path: one file of `user item behaviour [timestamp]` lines (whitespace or comma separated), or a dict
        behaviour -> file of `user item [timestamp]` lines.
    order: behaviour names from shallowest to deepest; default: by decreasing event count (the most frequent
        behaviour is the shallowest), ties by name.
    Files are UTF-8 (a leading byte-order mark is dropped); lines starting with '#' and blank lines are skipped.
    ValueError with file and line number on text that is not UTF-8, a line with too few or too many fields, or a
    timestamp that is not a finite number within int64; ValueError when no file has a line. Timestamps are
    checked, not used (the level of a pair is its deepest behaviour whatever the order of events)."""
    files = path if isinstance(path, dict) else {None: path}
    users: List[str] = []
    items: List[str] = []
    behaviours: List[str] = []
    for behaviour, fname in files.items():
        want = 2 if behaviour is not None else 3
        for lineno, line in _text.lines(fname, comment="#"):
            parts = _split(line)
            if len(parts) not in (want, want + 1):
                raise _text.DataError(f"{fname}:{lineno}: expected {want} or {want + 1} fields "
                                      f"({'user item' if behaviour else 'user item behaviour'} [timestamp]), "
                                      f"got {len(parts)}")
            if len(parts) == want + 1:
                _text.parse_int(parts[want], fname, lineno, "timestamp", float_ok=True)
            users.append(parts[0])
            items.append(parts[1])
            behaviours.append(behaviour if behaviour is not None else parts[2])
    if not users:
        raise _text.DataError(f"{', '.join(files.values())}: no interactions found")
    if order is None:
        counts: Dict[str, int] = {}
        for b in behaviours:
            counts[b] = counts.get(b, 0) + 1
        order = sorted(counts, key=lambda b: (-counts[b], b))
    order = list(order)
    return _aggregate(users, items, feedback_to_levels(behaviours, order), order)


def synthetic_feedback(num_users: int = 3000, num_items: int = 2000, num_levels: int = 3,
                       interactions_per_user: int = 30, latent_dim: int = 16, seed: int = 0) -> FeedbackData:
    """Multi-feedback pairs driven by one latent preference: each user views `interactions_per_user` items drawn
    by softmax(affinity + log popularity) (Zipf popularity, a few tastes per user), and each deeper level is reached
    with a probability increasing in the same affinity, so level t + 1 is rarer than level t (roughly 1, 0.3, 0.1
    of pairs for 3 levels). Behaviours are named view, cart, buy (then level4, ...)."""
    g = torch.Generator().manual_seed(seed)
    tastes = torch.randn(16, latent_dim, generator=g)
    item_taste = torch.randint(0, 16, (num_items,), generator=g)
    v = tastes[item_taste] + 0.5 * torch.randn(num_items, latent_dim, generator=g)
    v = v / v.norm(dim=1, keepdim=True)
    mix = torch.softmax(2.0 * torch.randn(num_users, 16, generator=g), dim=1)
    u = mix @ tastes + 0.3 * torch.randn(num_users, latent_dim, generator=g)
    u = u / u.norm(dim=1, keepdim=True)
    affinity = u @ v.t()  # [U, I], cosine in [-1, 1]
    pop = torch.arange(1, num_items + 1, dtype=torch.float32)[torch.randperm(num_items, generator=g)] ** -0.8
    logits = 6.0 * affinity + torch.log(pop)
    n = min(interactions_per_user, num_items)
    gumbel = -torch.log(-torch.log(torch.rand(num_users, num_items, generator=g).clamp_min(1e-12)))
    items = torch.topk(logits + gumbel, n, dim=1).indices  # sampling without replacement
    users = torch.arange(num_users).repeat_interleave(n)
    items = items.reshape(-1)
    a = affinity[users, items]
    a = (a - a.mean()) / a.std().clamp_min(1e-6)
    levels = torch.ones(users.shape[0], dtype=torch.int64)
    alive = torch.ones_like(levels, dtype=torch.bool)
    for t in range(2, num_levels + 1):
        p = torch.sigmoid(2.0 * a - 1.2 - 0.3 * (t - 2))
        alive &= torch.rand(p.shape, generator=g) < p
        levels[alive] = t
    names = ["view", "cart", "buy"] + [f"level{t}" for t in range(4, num_levels + 1)]
    return FeedbackData(users, items, levels, num_users, num_items, names[:num_levels])


def split_feedback(data: FeedbackData, test_fraction: float = 0.2, seed: int = 0):
    """(train, test): each user's pairs are held out at random with probability test_fraction (users with a
    single pair keep it in train)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"split_feedback: test_fraction must be in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    test = torch.rand(len(data), generator=g) < test_fraction
    counts = torch.bincount(data.users, minlength=data.num_users)
    test &= counts[data.users] > 1
    return data.subset(~test), data.subset(test)


def check_split(train: FeedbackData, test: FeedbackData, source: str) -> None:
    """DataError "<source>: ..." when split_feedback held out no pair (no user has 2 or more pairs, or none was
    drawn): evaluation would have nothing to score."""
    if len(test) == 0:
        raise _text.DataError(f"{source}: the split held out no (user, item) pair to evaluate on (only users with "
                              f"2 or more pairs give one), got {len(train)} pairs of {train.num_users} users")


def read_mbcgcn(folder: str, behaviours: Sequence[str] = ("view", "cart", "buy"), target: str = "buy"):
    """(train, test) of the MBCGCN / CascadingRank layout (../shared/data/taobao-mbcgcn): `<b>_train.txt` lines
    `user item item ...` (0-based ids) per behaviour b, and `<target>_test.txt` lines `user<TAB>item`. A train
    pair's level is its deepest behaviour (behaviours in increasing depth); test pairs are at the target's level.
    Evaluate with exclude_level = the target's level (the protocol: only the target behaviour's training items are
    excluded from a user's ranking)."""
    import os

    if target not in behaviours:
        raise ValueError(f"read_mbcgcn: target {target!r} is not one of the behaviours {list(behaviours)}")
    best: Dict[int, int] = {}
    users_max = items_max = -1
    for lvl, b in enumerate(behaviours, start=1):
        path = os.path.join(folder, f"{b}_train.txt")
        _text.require_file(path)
        for lineno, line in _text.lines(path):
            parts = line.split()
            try:
                u, its = int(parts[0]), [int(x) for x in parts[1:]]
            except ValueError:
                raise _text.DataError(f"{path}:{lineno}: expected integer ids 'user item item ...'") from None
            if u < 0 or any(i < 0 for i in its):
                raise _text.DataError(f"{path}:{lineno}: ids must be >= 0")
            users_max = max(users_max, u)
            for i in its:
                items_max = max(items_max, i)
                key = u * (1 << 32) + i
                if best.get(key, 0) < lvl:
                    best[key] = lvl
    tpath = os.path.join(folder, f"{target}_test.txt")
    _text.require_file(tpath)
    tu, ti = [], []
    for lineno, line in _text.lines(tpath):
        parts = line.split()
        if len(parts) != 2:
            raise _text.DataError(f"{tpath}:{lineno}: expected 'user item', got {line.strip()!r}")
        tu.append(int(parts[0]))
        ti.append(int(parts[1]))
    nu = max([users_max] + tu) + 1
    ni = max([items_max] + ti) + 1
    keys = torch.tensor(sorted(best), dtype=torch.int64)
    levels = torch.tensor([best[k] for k in keys.tolist()], dtype=torch.int64)
    train = FeedbackData(keys // (1 << 32), keys % (1 << 32), levels, nu, ni, list(behaviours))
    test = FeedbackData(torch.tensor(tu, dtype=torch.int64), torch.tensor(ti, dtype=torch.int64),
                        torch.full((len(tu),), behaviours.index(target) + 1, dtype=torch.int64), nu, ni,
                        list(behaviours))
    return train, test


def load_feedback(data: str, fmt: Optional[str] = None, seed: int = 0, order: Optional[Sequence[str]] = None):
    """'synthetic' or a multibehavior file (fmt 'multibehavior')."""
    if data == "synthetic":
        return synthetic_feedback(seed=seed)
    if fmt not in (None, "multibehavior"):
        raise ValueError(f"load_feedback: format must be 'multibehavior', got {fmt!r}")
    _text.require_file(data)
    return read_multibehavior(data, order)
