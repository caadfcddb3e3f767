# SPDX-License-Identifier: Apache-2.0
"""Sequence readers (every format, malformed input), split and batching invariants, negative sampling."""

import pytest
import torch

from recops.data import (DataError, leave_one_out, load_sequences, next_item_batches, sequence_batch,
                         synthetic_sequences, uniform_negatives)
from recops.data.sequences import check_split

EVENTS = [  # user, item, rating, time (deliberately out of time order)
    ("u1", "a", 5, 30), ("u2", "b", 3, 10), ("u1", "b", 4, 10), ("u1", "c", 1, 20), ("u2", "a", 2, 5),
    ("u1", "d", 2, 20), ("u3", "c", 5, 1), ("u3", "a", 5, 2), ("u3", "d", 5, 3),
]


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _check(data, timestamps=True):
    seqs = {data.user_ids[u]: [data.item_ids[i] for i in data.user(u).tolist()] for u in range(data.num_users)}
    # time order, ties in file order (stable): u1 has b@10, c@20, d@20, a@30
    assert seqs["u1"] == ["b", "c", "d", "a"] if timestamps else seqs["u1"] == ["a", "b", "c", "d"]
    assert seqs["u3"] == (["c", "a", "d"] if timestamps else ["a", "c", "d"])
    assert data.num_items == 4 and sorted(data.item_ids.tolist()) == ["a", "b", "c", "d"]
    assert int(data.offsets[-1]) == data.items.numel() == 9
    if timestamps:
        assert all((torch.diff(data.timestamps[data.offsets[u]:data.offsets[u + 1]]) >= 0).all()
                   for u in range(data.num_users))


def test_movielens_dat(tmp_path):
    path = _write(tmp_path, "ratings.dat", "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in EVENTS))
    _check(load_sequences(path, "ml-1m"))


def test_ml100k(tmp_path):
    path = _write(tmp_path, "u.data", "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in EVENTS))
    _check(load_sequences(path, "ml-100k"))


def test_movielens_csv(tmp_path):
    text = "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in EVENTS)
    _check(load_sequences(_write(tmp_path, "ratings.csv", text), "ml-csv"))


def test_recbole_inter(tmp_path):
    text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    text += "".join(f"{u}\t{i}\t{r}\t{t}.0\n" for u, i, r, t in EVENTS)
    _check(load_sequences(_write(tmp_path, "x.inter", text), "recbole"))


def test_sasrec_txt(tmp_path):
    ordered = sorted(EVENTS, key=lambda e: (e[0], e[1]))  # file order is the time order
    data = load_sequences(_write(tmp_path, "x.txt", "".join(f"{u} {i}\n" for u, i, _, _ in ordered)), "sasrec")
    assert data.timestamps is None
    _check(data, timestamps=False)


def _files(tmp_path, bom=""):
    """Every format's file of EVENTS (with `bom` in front): {format: (path, has timestamps)}."""
    ordered = sorted(EVENTS, key=lambda e: (e[0], e[1]))
    texts = {
        "ml-1m": "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in EVENTS),
        "ml-100k": "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in EVENTS),
        "ml-csv": "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in EVENTS),
        "recbole": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                   + "".join(f"{u}\t{i}\t{r}\t{t}.0\n" for u, i, r, t in EVENTS),
        "sasrec": "".join(f"{u} {i}\n" for u, i, _, _ in ordered),
        # one line a user (S3-Rec / ICLRec Amazon files); u1 continues on a second line
        "user-items": "u1 a b\nu2 a  b\nu3\ta c d\nu1 c d\n",
    }
    return {fmt: (_write(tmp_path, f"{fmt}.txt", bom + text), fmt not in ("sasrec", "user-items"))
            for fmt, text in texts.items()}


@pytest.mark.parametrize("fmt", ["ml-1m", "ml-100k", "ml-csv", "recbole", "sasrec", "user-items"])
def test_byte_order_mark_is_dropped(tmp_path, fmt):
    """A UTF-8 BOM used to become part of the first user id (a phantom user) or of the header (a refused file)."""
    path, timestamps = _files(tmp_path, "\ufeff")[fmt]
    data = load_sequences(path, fmt)
    _check(data, timestamps)
    assert sorted(data.user_ids.tolist()) == ["u1", "u2", "u3"]
    (tmp_path / "plain").mkdir()
    plain = load_sequences(_files(tmp_path / "plain")[fmt][0], fmt)
    assert torch.equal(data.items, plain.items) and torch.equal(data.offsets, plain.offsets)


@pytest.mark.parametrize("fmt,text,match", [
    ("ml-1m", "1::2::3::4\n1::2::3\n", ":2: expected at least 4 fields"),
    ("ml-1m", "1::2::3::x\n", ":1: timestamp must be a number, got 'x'"),
    ("ml-100k", "1\t2\t3\t4\n\n1 2 3 4\n", ":3: expected at least 4 fields"),
    ("ml-csv", "user,item\n1,2\n", ":1: expected a header"),
    ("recbole", "a:token\tb:token\n1\t2\n", ":1: header must name user_id and item_id"),
    ("sasrec", "1 2\n3\n", ":2: expected at least 2 fields"),
    ("user-items", "1 2 3\n4\n", ":2: expected a user id and at least 1 item, got '4'"),
    ("user-items", "\n\n", "no interactions found"),
    ("ml-1m", "", "no interactions"),
    # extra fields are refused (a file of another format used to be read with fields ignored)
    ("ml-1m", "1::2::3::4::5\n", ":1: expected at most 4 fields, got 5"),
    ("ml-100k", "1\t2\t3\t4\n1\t2\t3\t4\t5\n", ":2: expected at most 4 fields, got 5"),
    ("ml-csv", "userId,movieId,rating,timestamp\n1,2,3,4,5\n", ":2: expected at most 4 fields, got 5"),
    ("ml-csv", "userId,movieId,rating,timestamp\n1,2,4\n", ":2: expected at least 4 fields, got 3"),
    ("recbole", "user_id:token\titem_id:token\n1\t2\t3\n", ":2: expected at most 2 fields, got 3"),
    ("sasrec", "1 2\n3 4 5\n", ":2: expected at most 2 fields, got 3"),
    ("ml-1m", "1::::3::4\n", ":1: item id must not be empty"),
    ("ml-100k", "\t2\t3\t4\n", ":1: user id must not be empty"),
    # timestamps that overflowed (OverflowError) or were not numbers
    ("ml-1m", "1::2::3::1e400\n", ":1: timestamp must be finite, got '1e400'"),
    ("ml-1m", "1::2::3::inf\n", ":1: timestamp must be finite, got 'inf'"),
    ("ml-1m", "1::2::3::nan\n", ":1: timestamp must be finite, got 'nan'"),
    ("ml-100k", "1\t2\t3\t99999999999999999999999\n", r":1: timestamp must fit in int64 \[-2\^63, 2\^63\)"),
    ("recbole", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t-1e19\n", ":2: timestamp must fit in int64"),
    ("ml-csv", "", "no interactions found"),
])
def test_malformed(tmp_path, fmt, text, match):
    path = _write(tmp_path, "bad.txt", text)
    with pytest.raises(ValueError, match=match):
        load_sequences(path, fmt)


@pytest.mark.parametrize("fmt", ["ml-1m", "ml-100k", "ml-csv", "recbole", "sasrec", "user-items"])
def test_text_that_is_not_utf8_names_file_and_line(tmp_path, fmt):
    """A bare UnicodeDecodeError before; now a ValueError (DataError) with file, line and byte."""
    path, _ = _files(tmp_path)[fmt]
    with open(path, "ab") as f:
        f.write(b"u9 \xff\n")
    lines = open(path, "rb").read().count(b"\n")
    with pytest.raises(DataError, match=rf"{fmt}.txt:{lines}: text must be UTF-8, got byte 0xff at column 4"):
        load_sequences(path, fmt)


def test_int64_edges_are_kept_exactly(tmp_path):
    path = _write(tmp_path, "r.dat", f"u::a::5::{2 ** 63 - 1}\nu::b::5::{-2 ** 63}\nu::c::5::1.5e9\n")
    assert load_sequences(path, "ml-1m").timestamps.tolist() == [-2 ** 63, 1_500_000_000, 2 ** 63 - 1]


def test_check_split_refuses_a_split_without_users(tmp_path):
    path = _write(tmp_path, "r.dat", "1::a::5::1\n1::b::5::2\n2::a::5::3\n")
    with pytest.raises(DataError, match=r"r.dat: leave-one-out needs a user with 3 or more interactions, got 2 users"):
        check_split(leave_one_out(load_sequences(path, "ml-1m")), path)
    check_split(leave_one_out(synthetic_sequences(20, 30, 5)), "synthetic")  # passes


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        load_sequences(str(tmp_path), "nope")
    with pytest.raises(ValueError, match="no such file"):
        load_sequences(str(tmp_path / "missing.dat"), "ml-1m")
    with pytest.raises(DataError, match="is a folder, not a file"):
        load_sequences(str(tmp_path), "ml-1m")


def test_leave_one_out_invariants():
    data = synthetic_sequences(num_users=200, num_items=300, mean_len=20, seed=1)
    split = leave_one_out(data, max_len=15)
    kept = [u for u in range(data.num_users) if len(data.user(u)) >= 3]
    assert split.test_input.num_users == len(kept) == split.valid_target.numel()
    for row, u in enumerate(kept[:50]):
        full = data.user(u)
        assert split.test_target[row] == full[-1] and split.valid_target[row] == full[-2]
        assert torch.equal(split.test_input.user(row), full[:-1][-15:])     # most recent 15
        assert torch.equal(split.valid_input.user(row), full[:-2][-15:])
        assert torch.equal(split.train.user(row), full[:-2][-16:])         # inputs + next-item targets
        assert full[-1] not in split.train.user(row).tolist() or full[-1] in full[:-2].tolist()


def test_batches_cover_every_next_item_pair_without_padding():
    data = synthetic_sequences(num_users=50, num_items=100, mean_len=10, seed=2)
    split = leave_one_out(data)
    seen = 0
    for batch in next_item_batches(split.train, 16, generator=torch.Generator().manual_seed(0)):
        off = batch["offsets"]
        assert batch["items"].numel() == batch["targets"].numel() == int(off[-1])
        assert batch["timestamps"].numel() == batch["items"].numel()
        assert (off[1:] - off[:-1] >= 1).all()
        seen += int(off[-1])
    lengths = split.train.lengths()
    assert seen == int((lengths[lengths >= 2] - 1).sum())
    b = sequence_batch(split.train, torch.tensor([0]), drop_last_item=True)
    assert torch.equal(b["targets"], split.train.user(0)[1:]) and torch.equal(b["items"], split.train.user(0)[:-1])


def test_negatives_uniform_and_masked_in_loss():
    from recops.models import sampled_softmax_loss
    g = torch.Generator().manual_seed(0)
    negs = uniform_negatives(100000, 10, g)
    counts = torch.bincount(negs, minlength=10).double()
    assert negs.min() >= 0 and negs.max() < 10 and (counts / counts.mean() - 1).abs().max() < 0.05
    # a negative equal to the positive never counts: loss with it equals loss without it
    out = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    items = torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)
    targets = torch.tensor([1, 2, 3, 4])
    a = sampled_softmax_loss(out, targets, items, torch.tensor([5, 6, 1, 2, 3, 4]), 0.1)
    b = torch.stack([sampled_softmax_loss(out[i:i + 1], targets[i:i + 1], items,
                                          torch.tensor([n for n in [5, 6, 1, 2, 3, 4] if n != int(targets[i])]), 0.1)
                     for i in range(4)]).mean()
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="num_items must be >= 1"):
        uniform_negatives(3, 0)


def test_synthetic_is_deterministic_and_repeat_free():
    a, b = synthetic_sequences(100, 200, 15, seed=3), synthetic_sequences(100, 200, 15, seed=3)
    assert torch.equal(a.items, b.items) and torch.equal(a.timestamps, b.timestamps)
    for u in range(a.num_users):
        seq = a.user(u).tolist()
        assert len(seq) == len(set(seq))
