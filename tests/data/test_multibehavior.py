# SPDX-License-Identifier: Apache-2.0
import pytest
import torch

from recops.data import DataError
from recops.data.multibehavior import (check_split, feedback_to_levels, load_feedback, read_multibehavior,
                                       split_feedback, synthetic_feedback)


def test_feedback_to_levels():
    assert feedback_to_levels(["buy", "view", "cart", "view"], ["view", "cart", "buy"]).tolist() == [3, 1, 2, 1]
    with pytest.raises(ValueError, match="'click' .*event 1"):
        feedback_to_levels(["view", "click"], ["view", "buy"])
    with pytest.raises(ValueError, match="distinct"):
        feedback_to_levels([], ["view", "view"])


def test_reader_one_file_keeps_the_deepest_level(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("# user item behaviour ts\n"
                    "u1 i1 view 10\nu1 i1 buy 30\nu1 i2 view 11\nu2 i1 view 12\n\nu2 i3 cart\nu2,i3,view,40\n")
    d = read_multibehavior(str(path), order=["view", "cart", "buy"])
    assert (d.num_users, d.num_items, d.behaviours) == (2, 3, ["view", "cart", "buy"])
    got = {(d.user_ids[u], d.item_ids[i]): lvl for u, i, lvl in zip(d.users.tolist(), d.items.tolist(),
                                                                      d.levels.tolist())}
    assert got == {("u1", "i1"): 3, ("u1", "i2"): 1, ("u2", "i1"): 1, ("u2", "i3"): 2}
    inferred = read_multibehavior(str(path))  # by decreasing frequency: view (4), then buy / cart (1 each, by name)
    assert inferred.behaviours == ["view", "buy", "cart"]


def test_reader_one_file_per_behaviour(tmp_path):
    (tmp_path / "v.txt").write_text("a x\na y\nb x\n")
    (tmp_path / "c.txt").write_text("a y 5\n")
    d = read_multibehavior({"view": str(tmp_path / "v.txt"), "cart": str(tmp_path / "c.txt")},
                           order=["view", "cart"])
    assert sorted(zip(d.users.tolist(), d.items.tolist(), d.levels.tolist())) == [(0, 0, 1), (0, 1, 2), (1, 0, 1)]


@pytest.mark.parametrize("text,message", [
    ("u1 i1\n", "expected 3 or 4 fields"),
    ("u1 i1 view 5 6\n", "expected 3 or 4 fields"),
    ("u1 i1 view soon\n", "timestamp must be a number"),
    ("u1 i1 view 1e400\n", "timestamp must be finite, got '1e400'"),
    ("u1 i1 view inf\n", "timestamp must be finite, got 'inf'"),
    ("u1 i1 view 99999999999999999999999\n", "timestamp must fit in int64"),
])
def test_reader_rejects_malformed_lines(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text("u0 i0 view\n" + text)
    with pytest.raises(ValueError, match=rf"bad.txt:2: {message}"):
        read_multibehavior(str(path))


def test_byte_order_mark_is_dropped(tmp_path):
    """The BOM used to start the first user's id: 'u1' and '\\ufeffu1' were two users."""
    path = tmp_path / "events.txt"
    path.write_text("\ufeffu1 i1 view\nu1 i2 buy\n", encoding="utf-8")
    d = read_multibehavior(str(path))
    assert d.user_ids == ["u1"] and d.num_users == 1
    (tmp_path / "v.txt").write_text("\ufeffu1 i1\nu1 i2\n", encoding="utf-8")
    assert read_multibehavior({"view": str(tmp_path / "v.txt")}).user_ids == ["u1"]


def test_bytes_that_are_not_utf8_and_empty_files(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"u1 i1 view\nu\xe9 i2 view\n")
    with pytest.raises(DataError, match=r"bad.txt:2: text must be UTF-8, got byte 0xe9 at column 2"):
        read_multibehavior(str(path))
    path.write_text("# only a comment\n\n")
    with pytest.raises(DataError, match="bad.txt: no interactions found"):
        read_multibehavior(str(path))
    with pytest.raises(DataError, match="no such file"):
        load_feedback(str(tmp_path / "missing.txt"))


def test_check_split_refuses_a_split_without_test_pairs(tmp_path):
    path = tmp_path / "events.txt"
    path.write_text("u1 i1 view\nu2 i1 buy\n")  # one pair per user: nothing can be held out
    train, test = split_feedback(read_multibehavior(str(path)), 0.2, 0)
    with pytest.raises(DataError, match=r"events.txt: the split held out no \(user, item\) pair"):
        check_split(train, test, str(path))


def test_synthetic_levels_get_rarer_and_split_keeps_users():
    d = synthetic_feedback(num_users=200, num_items=150, interactions_per_user=10, seed=1)
    rates = d.level_rates()
    assert rates[0] == 1.0 and rates[0] > rates[1] > rates[2] > 0
    assert d.levels.min() >= 1 and d.levels.max() <= 3
    assert len(set(zip(d.users.tolist(), d.items.tolist()))) == len(d)  # one row per pair
    train, test = split_feedback(d, 0.2, seed=0)
    assert len(train) + len(test) == len(d) and 0.1 < len(test) / len(d) < 0.3
    assert set(test.users.tolist()) <= set(train.users.tolist())
    with pytest.raises(ValueError, match="test_fraction"):
        split_feedback(d, 1.5)


def test_read_mbcgcn_levels_and_test_split(tmp_path):
    from recops.data.multibehavior import read_mbcgcn

    (tmp_path / "view_train.txt").write_text("0 1 2 3\n1 0\n")
    (tmp_path / "cart_train.txt").write_text("0 2\n")
    (tmp_path / "buy_train.txt").write_text("0 3\n1 0 4\n")
    (tmp_path / "buy_test.txt").write_text("0\t5\n1\t2\n")
    train, test = read_mbcgcn(str(tmp_path))
    pairs = dict(zip(zip(train.users.tolist(), train.items.tolist()), train.levels.tolist()))
    assert pairs == {(0, 1): 1, (0, 2): 2, (0, 3): 3, (1, 0): 3, (1, 4): 3}
    assert test.users.tolist() == [0, 1] and test.items.tolist() == [5, 2] and test.levels.tolist() == [3, 3]
    assert train.num_items == test.num_items == 6 and train.behaviours == ["view", "cart", "buy"]
    (tmp_path / "buy_test.txt").write_text("0 5 6\n")
    with pytest.raises(ValueError, match="buy_test.txt:1"):
        read_mbcgcn(str(tmp_path))


def test_exclude_level_and_ndcg_of_popularity():
    from recops.data.multibehavior import FeedbackData
    from recops.train.two_tower import popularity_two_tower_metrics

    # item 0 most popular; user 0 viewed it (level 1) and the held-out buy is item 0
    train = FeedbackData(torch.tensor([0, 1, 2, 1]), torch.tensor([0, 0, 0, 1]), torch.tensor([1, 3, 3, 3]), 3, 3,
                         ["view", "cart", "buy"])
    test = FeedbackData(torch.tensor([0]), torch.tensor([0]), torch.tensor([3]), 3, 3, ["view", "cart", "buy"])
    every = popularity_two_tower_metrics(train, test, ks=(1,))
    buys_only = popularity_two_tower_metrics(train, test, ks=(1,), exclude_level=3)
    assert every["L3/Recall@1"] == 0.0  # the viewed item is excluded, so it can never be found
    assert buys_only["L3/Recall@1"] == 1.0 and buys_only["L3/NDCG@1"] == 1.0
