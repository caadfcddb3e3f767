# SPDX-License-Identifier: Apache-2.0
"""The `recops` command line: the model registry, per-family --help, the --dim / --embedding-dim alias, no
abbreviated flags, one-line usage errors, and the command line --nproc hands to torchrun."""

import dataclasses
import subprocess
import sys

import pytest

from recops import cli
from recops.distributed import launch
from recops.train import checkpoint

FAMILY_ONLY = {"sequential": ["--max-len", "--negatives", "--patience", "--nproc"],
               "ctr": ["--table-size", "--max-rows", "--lr", "--dense-lr", "--no-baseline", "--nproc"],
               "two_tower": ["--no-baseline"]}
COMMON = ["--model", "--data", "--format", "--seed", "--epochs", "--batch-size", "--time-budget", "--out",
          "--no-progress", "--dim", "--embedding-dim"]


def _help(capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    return capsys.readouterr().out


def _flags(text):
    return {w.strip("[],") for w in text.split() if w.startswith(("--", "[--"))}


def test_registry_families_are_checkpoint_families():
    assert set(cli.MODELS) == {"hstu", "hstu-large", "sasrec", "dlrm", "logistic", "gnolr", "bce-two-tower"}
    assert {m.family.name for m in cli.MODELS.values()} == set(checkpoint.FAMILIES) == set(cli.FAMILIES)
    assert cli.MODELS["dlrm"].family is cli.CTR and cli.MODELS["sasrec"].family is cli.SEQUENTIAL


@pytest.mark.parametrize("model", sorted(cli.MODELS))
def test_help_lists_only_the_family_flags(model, capsys):
    family = cli.MODELS[model].family.name
    text = _help(capsys, ["train", "--model", model, "--help"])
    flags = _flags(text)
    own = set(FAMILY_ONLY[family]) | set(COMMON)
    others = {f for fam, fs in FAMILY_ONLY.items() if fam != family for f in fs} - own
    assert own <= flags, own - flags
    assert not flags & others, flags & others
    assert f"(default: {cli.MODELS[model].family.defaults['epochs']})" in text


def test_hstu_help_has_no_ctr_flag_and_dlrm_help_no_sequential_flag(capsys):
    hstu = _flags(_help(capsys, ["train", "--model", "hstu", "--help"]))
    dlrm = _flags(_help(capsys, ["train", "--help", "--model", "dlrm"]))  # --model after --help too
    assert "--table-size" not in hstu and "--dense-lr" not in hstu and "--max-len" in hstu
    assert "--max-len" not in dlrm and "--patience" not in dlrm and "--table-size" in dlrm
    assert _flags(_help(capsys, ["train", "--help"])) == hstu  # hstu is the default model


@pytest.mark.parametrize("model,default", [("hstu", 50), ("dlrm", 64), ("gnolr", 64)])
def test_dim_and_embedding_dim_are_one_flag(model, default):
    parse = lambda *extra: cli.build_parser(model).parse_args(["train", "--model", model, *extra])
    assert parse().dim == default
    assert parse("--dim", "8").dim == parse("--embedding-dim", "8").dim == parse("--embedding-dim=8").dim == 8
    assert not hasattr(parse(), "embedding_dim")


def test_per_family_defaults():
    for model, spec in cli.MODELS.items():
        args = cli.build_parser(model).parse_args(["train", "--model", model])
        assert (args.epochs, args.batch_size, args.dim) == tuple(spec.family.defaults[k] for k in
                                                                 ("epochs", "batch_size", "dim"))
    demo = cli.build_parser().parse_args(["demo"])
    assert (demo.epochs, demo.time_budget, demo.dim) == (30, 1.0, 50)


def _usage_error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv,needle", [
    (["train", "--model", "dlrm", "--npro", "2"], "unrecognized arguments: --npro 2"),
    (["train", "--model", "dlrm", "--epoch", "2"], "unrecognized arguments: --epoch 2"),
    (["train", "--mod", "dlrm"], "unrecognized arguments: --mod dlrm"),
    (["train", "--model", "hstu", "--table-size", "9"], "--model hstu: error: unrecognized arguments: --table-size"),
    (["train", "--model", "gnolr", "--nproc", "2"], "unrecognized arguments: --nproc 2"),
    (["train", "--model", "nope"], "invalid choice: 'nope'"),
    (["train", "--model"], "expected one argument"),
    (["train", "--epochs", "x"], "invalid int value: 'x'"),
    (["eval"], "required: --checkpoint"),
])
def test_usage_errors_are_one_line(argv, needle, capsys):
    assert needle in _usage_error(capsys, argv)


def test_data_errors_are_one_line(tmp_path):
    for argv in (["train", "--data", str(tmp_path / "missing.dat"), "--format", "ml-1m"],
                 ["train", "--model", "dlrm", "--data", str(tmp_path / "missing.tsv")],
                 ["train", "--model", "gnolr", "--data", str(tmp_path / "missing.txt")]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert isinstance(e.value.code, str) and "missing" in e.value.code and "\n" not in e.value.code, argv


def test_abbreviated_flag_from_the_shell_is_one_line_without_traceback():
    run = subprocess.run([sys.executable, "-m", "recops", "train", "--model", "dlrm", "--npro", "2"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "recops train --model dlrm: error: unrecognized arguments: --npro 2 (see recops train --model dlrm --help)"]


@pytest.fixture
def relaunched(monkeypatch):
    """Captures (nproc, argv) of the torchrun relaunch instead of running it."""
    calls = []
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(launch, "relaunch", lambda nproc, argv: calls.append((nproc, argv)) or 0)
    return calls


@pytest.mark.parametrize("nproc", [["--nproc", "2"], ["--nproc=2"]])
@pytest.mark.parametrize("model", ["dlrm", "hstu"])
def test_nproc_child_command_line_parses_back_to_the_same_run(model, nproc, relaunched):
    argv = ["train", "--model", model, *nproc, "--data", "-odd name.tsv", "--embedding-dim", "8", "--epochs", "1",
            "--no-progress", "--time-budget", "0.1", "--out", "runs/x"]
    if model == "dlrm":
        argv += ["--dense-lr", "3e-4", "--no-baseline", "--table-size", "30"]
    assert cli.main(argv) == 0
    (n, child), = relaunched
    assert n == 2 and child[:2] == ["train", f"--model={model}"]
    assert not [a for a in child if a.startswith("--nproc")]
    parent = vars(cli.build_parser(model).parse_args(argv))
    again = vars(cli.build_parser(model).parse_args(child))
    assert again.pop("nproc") == 1 and parent.pop("nproc") == 2
    assert again == parent
    assert again["data"] == "-odd name.tsv" and again["dim"] == 8 and again["time_budget"] == 0.1
    if model == "dlrm":
        assert again["dense_lr"] == 3e-4 and again["no_baseline"] and again["table_size"] == 30


def test_nproc_under_torchrun_trains_instead_of_relaunching(relaunched, monkeypatch):
    monkeypatch.setattr(launch, "launched_by_torchrun", lambda: True)
    trained = []
    fake = dataclasses.replace(cli.CTR, train=lambda args: trained.append(args.nproc) or 0)
    monkeypatch.setitem(cli.MODELS, "dlrm", cli.ModelSpec("dlrm", fake, "test"))
    assert cli.main(["train", "--model", "dlrm", "--nproc", "2"]) == 0
    assert trained == [2] and relaunched == []


def test_bench_gets_every_flag(monkeypatch):
    import recops.bench.__main__ as bench

    got = []
    monkeypatch.setattr(bench, "main", lambda argv: got.append(argv) or 0)
    assert cli.main(["bench", "--quick", "--tag", "x"]) == 0
    assert got == [["--quick", "--tag", "x"]]
