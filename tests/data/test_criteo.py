# SPDX-License-Identifier: Apache-2.0
import math

import pytest
import torch

from recops.data import DataError
from recops.data.criteo import (NUM_DENSE, NUM_SPARSE, count_rows, ctr_data, load_criteo, read_criteo,
                                sparse_to_kjt, synthetic_criteo, write_criteo)


def _line(label, dense, cats):
    return "\t".join([label] + dense + cats) + "\n"


@pytest.fixture
def small_file(tmp_path):
    rows = [
        _line("1", ["3", "", "-2"] + ["0"] * 10, ["1f"] + [""] * 24 + ["ffffffff"]),
        _line("0", ["0"] * 13, ["00000a"] * 26),
        "0\t5\n",  # short line: padded with empty fields
        "\n",  # blank lines are skipped
        _line("1", ["100"] * 13, ["abc"] * 26),
    ]
    path = tmp_path / "day_0.tsv"
    path.write_text("".join(rows))
    return str(path)


def test_reader_values(small_file):
    b = load_criteo(small_file, table_sizes=7)
    assert len(b) == 4
    assert b.labels.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert b.dense.shape == (4, NUM_DENSE) and b.sparse.shape == (4, NUM_SPARSE)
    assert b.dense[0, 0].item() == pytest.approx(math.log1p(3))
    assert b.dense[0, 1].item() == 0.0 and b.dense[0, 2].item() == 0.0  # empty and negative -> 0
    assert b.dense[2, 0].item() == pytest.approx(math.log1p(5)) and (b.dense[2, 1:] == 0).all()
    assert b.sparse[0, 0].item() == 0x1f % 7 and b.sparse[0, 25].item() == 0xffffffff % 7
    assert (b.sparse[0, 1:25] == -1).all() and (b.sparse[2] == -1).all()
    assert (b.sparse[1] == 10 % 7).all() and (b.sparse[3] == 0xabc % 7).all()
    per_table = load_criteo(small_file, table_sizes=list(range(1, 27)))
    assert per_table.sparse[3].tolist() == [0xabc % s for s in range(1, 27)]


def test_reader_streams_in_batches(small_file):
    parts = list(read_criteo(small_file, table_sizes=11, batch_size=3))
    assert [len(p) for p in parts] == [3, 1]
    whole = load_criteo(small_file, table_sizes=11)
    assert torch.equal(torch.cat([p.sparse for p in parts]), whole.sparse)
    assert torch.equal(torch.cat([p.dense for p in parts]), whole.dense)
    tail = list(read_criteo(small_file, table_sizes=11, skip_rows=1, max_rows=2))
    assert torch.equal(tail[0].sparse, whole.sparse[1:3])
    assert count_rows(small_file) == 4


def test_hashing_is_deterministic(small_file):
    a = load_criteo(small_file, table_sizes=1000)
    b = load_criteo(small_file, table_sizes=1000)
    assert torch.equal(a.sparse, b.sparse)


@pytest.mark.parametrize("line,message", [
    ("2\t1\n", "label must be 0 or 1"),
    ("1\tx\n", "I1 must be an integer"),
    ("1" + "\t1" * 13 + "\tzz\n", "C1 must be hexadecimal"),
    ("1" + "\t" * 45 + "\n", "at most 40"),
    # dense values that overflowed (OverflowError in log1p) or were accepted beyond int64
    ("1\t" + "9" * 400 + "\n", "I1 must fit in int64"),
    ("1\t1\t99999999999999999999999\n", r"I2 must fit in int64 \[-2\^63, 2\^63\)"),
    ("1\t1e400\n", "I1 must be an integer, got '1e400'"),
    ("1\tinf\n", "I1 must be an integer, got 'inf'"),
])
def test_reader_rejects_malformed_lines(tmp_path, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text("0\t1\n" + line)
    with pytest.raises(ValueError, match=rf"bad.tsv:2: .*{message}"):
        load_criteo(str(path), table_sizes=10)


def test_byte_order_mark_is_dropped(small_file, tmp_path):
    """A UTF-8 BOM made the first label '\\ufeff1' and the file fail to load."""
    path = tmp_path / "bom.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + open(small_file, "rb").read())
    with_bom, plain = load_criteo(str(path), table_sizes=7), load_criteo(small_file, table_sizes=7)
    for key in ("labels", "dense", "sparse"):
        assert torch.equal(getattr(with_bom, key), getattr(plain, key)), key
    assert count_rows(str(path)) == count_rows(small_file) == 4
    (tmp_path / "only_bom.tsv").write_bytes(b"\xef\xbb\xbf\n0\t1\n")
    assert count_rows(str(tmp_path / "only_bom.tsv")) == len(load_criteo(str(tmp_path / "only_bom.tsv"), 3)) == 1


def test_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"0\t1\n1\t2\t\x80\n")
    with pytest.raises(DataError, match=r"bad.tsv:2: text must be UTF-8, got byte 0x80 at column 5"):
        load_criteo(str(path), table_sizes=10)


@pytest.mark.parametrize("rows,message", [(0, "no rows found"), (1, "1 rows make 1 training and 0 test rows"),
                                          (3, "3 rows make 3 training and 0 test rows")])
def test_ctr_data_refuses_an_empty_part(tmp_path, rows, message):
    """An empty file (or one too short for a test part) trained and reported NaN metrics with exit status 0."""
    path = tmp_path / "day.tsv"
    path.write_text("\n" + "1\t3\n" * rows)
    with pytest.raises(DataError, match=rf"day.tsv: {message}"):
        ctr_data(str(path), 10)
    with pytest.raises(DataError, match="no such file"):
        ctr_data(str(tmp_path / "missing.tsv"), 10)
    path.write_text("1\t3\n" * 5)
    assert (ctr_data(str(path), 10).num_train, ctr_data(str(path), 10).num_test) == (4, 1)


def test_reader_rejects_bad_table_sizes(small_file):
    with pytest.raises(ValueError, match="table_sizes"):
        load_criteo(small_file, table_sizes=[5, 5])
    with pytest.raises(ValueError, match="batch_size"):
        next(read_criteo(small_file, table_sizes=5, batch_size=0))


def test_synthetic_round_trips_through_a_file(tmp_path):
    s = synthetic_criteo(300, 100, table_sizes=50, seed=3)
    assert 0.75 < s.oracle_auc < 1.0
    assert 0 < float(s.train.labels.mean()) < 1
    assert ((s.train.sparse >= -1) & (s.train.sparse < 50)).all() and (s.train.sparse == -1).any()
    path = str(tmp_path / "syn.tsv")
    write_criteo(path, s.raw_dense_train, s.train.sparse, s.train.labels)
    back = load_criteo(path, table_sizes=50)
    assert torch.equal(back.sparse, s.train.sparse)
    assert torch.equal(back.labels, s.train.labels)
    torch.testing.assert_close(back.dense, s.train.dense)
    data = ctr_data(path, 50, test_fraction=0.1)
    assert (data.num_train, data.num_test) == (270, 30)
    test = torch.cat([b.sparse for b in data.test_batches(7)])
    assert torch.equal(test, s.train.sparse[270:])


def test_sparse_to_kjt_makes_empty_bags_for_missing_ids():
    sparse = torch.tensor([[3, -1], [-1, -1], [0, 2]])
    kjt = sparse_to_kjt(sparse, ["a", "b"])
    assert kjt.keys == ["a", "b"] and kjt.stride() == 3
    assert kjt.offsets.tolist() == [0, 1, 1, 2, 2, 2, 3]
    assert kjt.values.tolist() == [3, 0, 2]


def test_reader_keeps_raw_ids(tmp_path):
    cats = ["1f", "ffffffff", "8000000000000000", "fffffffffffffffe"] + [""] * 22
    path = tmp_path / "raw.tsv"
    path.write_text(_line("1", ["1"] * 13, cats))
    b = load_criteo(str(path), table_sizes=None)
    assert b.sparse[0, :5].tolist() == [0x1F, 0xFFFFFFFF, -(1 << 63), -2, -1]
    kjt = sparse_to_kjt(b.sparse)
    assert kjt.values.tolist() == [0x1F, 0xFFFFFFFF, -(1 << 63), -2]  # negative raw ids are ids, -1 is empty
    path.write_text(_line("1", ["1"] * 13, ["ffffffffffffffff"] + [""] * 25))
    with pytest.raises(DataError, match="empty-field marker"):
        load_criteo(str(path), table_sizes=None)
    path.write_text(_line("1", ["1"] * 13, ["1" + "0" * 16] + [""] * 25))
    with pytest.raises(DataError, match="64 bits"):
        load_criteo(str(path), table_sizes=None)


def test_synthetic_raw_ids_keep_the_vocabulary_and_hash_modulo():
    s = synthetic_criteo(3000, 500, table_sizes=50, seed=3)
    r = synthetic_criteo(3000, 500, table_sizes=50, seed=3, raw_ids=True)
    assert torch.equal(s.train.labels, r.train.labels)
    for f in range(NUM_SPARSE):  # the same ids, renamed one to one
        a, b = s.train.sparse[:, f], r.train.sparse[:, f]
        assert torch.equal(a == -1, b == -1)
        pairs = set(zip(a.tolist(), b.tolist()))
        assert len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))
    assert (r.train.sparse < -1).any()
    d = ctr_data("synthetic", 10, num_train=300, num_test=50, vocab_size=50)
    sp = next(iter(d.train_batches(300))).sparse
    assert int(sp.max()) < 10 and int(sp.min()) >= -1 and d.table_sizes == [10] * NUM_SPARSE
    raw = ctr_data("synthetic", 10, num_train=300, num_test=50, vocab_size=50, raw_ids=True)
    assert int(next(iter(raw.train_batches(300))).sparse.abs().max()) > 1000
