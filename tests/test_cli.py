# SPDX-License-Identifier: Apache-2.0
"""The `recops` command line: the model registry, per-family --help, the --dim / --embedding-dim alias, no
abbreviated flags, one-line usage errors, and the command line --nproc hands to torchrun."""

import dataclasses
import os
import subprocess
import sys
import tempfile

import pytest

from recops import cli
from recops.distributed import launch
from recops.train import checkpoint

FAMILY_ONLY = {"sequential": ["--max-len", "--negatives", "--patience", "--nproc", "--lr", "--loss",
                              "--negatives-per-position", "--logq", "--dropout", "--temperature",
                              "--decoupled-embeddings", "--mask-prob", "--precision"],
               "ctr": ["--table-size", "--max-rows", "--lr", "--dense-lr", "--no-baseline", "--nproc",
                       "--dynamic-tables", "--admit-after", "--ttl", "--max-growth", "--vocab-size"],
               "two_tower": ["--no-baseline", "--layers", "--gcn-lr"]}
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
    assert set(cli.MODELS) == {"hstu", "hstu-large", "sasrec", "bert4rec", "dlrm", "logistic", "gnolr", "bce-two-tower",
                              "lightgcn", "ngcf", "cml"}
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


def test_data_errors_are_one_line(tmp_path, capsys):
    for argv in (["train", "--data", str(tmp_path / "missing.dat"), "--format", "ml-1m"],
                 ["train", "--model", "dlrm", "--data", str(tmp_path / "missing.tsv")],
                 ["train", "--model", "gnolr", "--data", str(tmp_path / "missing.txt")]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and "missing" in str(e.value) and "\n" not in str(e.value), argv
        assert err == f"recops: error: {argv[argv.index('--data') + 1]}: no such file\n", argv


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
def test_nproc_child_command_line_parses_back_to_the_same_run(model, nproc, relaunched, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the data file must exist (checked before the relaunch); --out goes here too
    (tmp_path / "-odd name.tsv").write_text("1\n")
    argv = ["train", "--model", model, *nproc, "--data", "-odd name.tsv", "--embedding-dim", "8", "--epochs", "1",
            "--no-progress", "--time-budget", "0.1", "--out", "runs/x"]
    if model == "hstu":
        argv += ["--format", "ml-100k"]
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


# ---- bad values, bad files, bad --out: one line `recops: error: ...`, exit status 2, before any training ----------

@pytest.mark.parametrize("argv,needle", [
    (["train", "--epochs", "0"], "argument --epochs: must be an integer >= 1, got 0"),
    (["train", "--epochs", "-1"], "argument --epochs: must be an integer >= 1, got -1"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["train", "--model", "dlrm", "--batch-size", "-5"], "argument --batch-size: must be an integer >= 1, got -5"),
    (["train", "--max-len", "0"], "argument --max-len: must be an integer >= 1, got 0"),
    (["train", "--time-budget", "0"], "argument --time-budget: must be a finite number > 0, got 0"),
    (["train", "--model", "gnolr", "--time-budget", "-1"], "argument --time-budget: must be a finite number > 0"),
    (["train", "--time-budget", "nan"], "argument --time-budget: must be a finite number > 0, got nan"),
    (["demo", "--time-budget", "inf"], "argument --time-budget: must be a finite number > 0, got inf"),
    (["train", "--patience", "-1"], "argument --patience: must be an integer >= 0, got -1"),
    (["train", "--negatives", "0"], "argument --negatives: must be an integer >= 1, got 0"),
    (["train", "--nproc", "0"], "argument --nproc: must be an integer >= 1, got 0"),
    (["train", "--dim", "0"], "argument --dim/--embedding-dim: must be an integer >= 1, got 0"),
    (["train", "--seed", "-1"], "argument --seed: must be an integer in [0, 2^64), got -1"),
    (["train", "--model", "dlrm", "--table-size", "0"], "argument --table-size: must be an integer >= 1, got 0"),
    (["train", "--model", "dlrm", "--max-rows", "0"], "argument --max-rows: must be an integer >= 1, got 0"),
    (["train", "--model", "dlrm", "--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
    (["train", "--model", "logistic", "--lr", "0"], "argument --lr: must be a finite number > 0, got 0"),
    (["train", "--model", "dlrm", "--dense-lr", "inf"], "argument --dense-lr: must be a finite number > 0, got inf"),
    (["train", "--format", "nope"], "argument --format: invalid choice: 'nope'"),
    (["train", "--model", "gnolr", "--format", "criteo"], "argument --format: invalid choice: 'criteo'"),
    (["train", "--out="], "argument --out: must be a non-empty path, got ''"),
    (["train", "--data="], "argument --data: must be a non-empty path, got ''"),
    (["eval", "--checkpoint="], "argument --checkpoint: must be a non-empty path, got ''"),
])
def test_bad_values_are_refused_by_the_parser(argv, needle, capsys):
    """--epochs 0 (TypeError), --batch-size 0 (ZeroDivisionError), --max-len 0 (IndexError), --lr nan (ValueError
    traceback) and the rest (accepted, ignored or silently replaced) before."""
    assert needle in _usage_error(capsys, argv)


def _write(path, text):
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return str(path)


@pytest.mark.parametrize("model,fmt,text,what", [
    ("hstu", "ml-1m", b"1::2::3::4\n1::\xff::3::5\n", "2: text must be UTF-8, got byte 0xff at column 4"),
    ("hstu", "ml-1m", "1::2::3::1e400\n", "1: timestamp must be finite, got '1e400'"),
    ("hstu", "ml-100k", "1\t2\t3\t99999999999999999999999\n", "1: timestamp must fit in int64 [-2^63, 2^63), "
                                                             "got '99999999999999999999999'"),
    ("sasrec", "ml-1m", "1::2::3::inf\n", "1: timestamp must be finite, got 'inf'"),
    ("hstu", "ml-1m", "1::2::3::4::5\n", "1: expected at most 4 fields, got 5: '1::2::3::4::5'"),
    ("hstu", "ml-csv", "user,item\n1,2\n", "1: expected a header userId,movieId,...,timestamp, got ['user', 'item']"),
    ("hstu", "recbole", "a:token\tb:token\n", "1: header must name user_id and item_id fields, got ['a', 'b']"),
    ("hstu", "sasrec", "1 2\n3\n", "2: expected at least 2 fields, got 1: '3'"),
    ("logistic", None, "2\t1\n" + "0\t1\n" * 5, "1: label must be 0 or 1, got '2'"),
    ("logistic", "criteo", "0\t1\n" * 6 + "1\t1\t1e400\n", "7: integer feature I2 must be an integer, got '1e400'"),
    ("gnolr", None, "u1 i1 view\nu1 i1 view 5 6\n", "2: expected 3 or 4 fields (user item behaviour [timestamp]), "
                                                   "got 5"),
    ("gnolr", "multibehavior", "u1 i1 view inf\n", "1: timestamp must be finite, got 'inf'"),
])
def test_data_file_errors_name_file_and_line(model, fmt, text, what, tmp_path, capsys):
    path = _write(tmp_path / "data.txt", text)
    argv = ["train", "--model", model, "--data", path, "--epochs", "1", "--no-progress"]
    with pytest.raises(SystemExit) as e:
        cli.main(argv + (["--format", fmt] if fmt else []))
    assert e.value.code == 2
    assert capsys.readouterr().err == f"recops: error: {path}:{what}\n"


@pytest.mark.parametrize("model,text,what", [
    ("hstu", "\ufeff1::a::5::1\n1::b::5::2\n2::a::5::3\n", "leave-one-out needs a user with 3 or more interactions, "
                                                           "got 2 users with at most 2 each"),
    ("hstu", "", "no interactions found"),
    ("dlrm", "\n\n", "no rows found"),
    ("dlrm", "0\t1\n1\t1\n", "2 rows make 2 training and 0 test rows; each part needs at least 1"),
    ("gnolr", "# nothing\n", "no interactions found"),
    ("gnolr", "u1 i1 view\nu2 i2 buy\n", "the split held out no (user, item) pair to evaluate on (only users with 2 "
                                         "or more pairs give one), got 2 pairs of 2 users"),
])
def test_data_without_anything_to_train_or_evaluate(model, text, what, tmp_path, capsys):
    """These exited 0 with zero or NaN metrics (the BOM also made user '\\ufeff1' apart from '1')."""
    path = _write(tmp_path / "data.txt", text)
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--model", model, "--data", path, "--format", cli.MODELS[model].family.formats[0],
                  "--epochs", "1", "--no-progress"])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"recops: error: {path}: {what}\n"


def test_file_and_format_problems(tmp_path, capsys):
    path = _write(tmp_path / "u.data", "1\t2\t3\t4\n")
    for argv, line in [
        (["train", "--data", path], "recops: error: --format is required with a data file (ml-1m, ml-100k, ml-csv, "
                                    "recbole, sasrec, user-items)"),
        (["train", "--data", str(tmp_path), "--format", "ml-1m"],
         f"recops: error: {tmp_path}: is a folder, not a file"),
        (["train", "--model", "dlrm", "--data", str(tmp_path / "nope.tsv")], f"recops: error: {tmp_path}/nope.tsv: "
                                                                            "no such file"),
        (["train", "--model", "dlrm", "--format", "ml-1m"], "recops train: error: argument --format: invalid choice: "
                                                            "'ml-1m' (choose from 'criteo') (see recops train --help)"),
    ]:
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2 and capsys.readouterr().err == line + "\n", argv


@pytest.fixture
def no_training(monkeypatch):
    """Every family's train function replaced by one that records it was reached."""
    trained = []
    for name, spec in list(cli.MODELS.items()):
        fake = dataclasses.replace(spec.family, train=lambda args: trained.append(args.model) or 0)
        monkeypatch.setitem(cli.MODELS, name, cli.ModelSpec(name, fake, spec.help))
    monkeypatch.setattr(cli, "cmd_train", lambda args, models: trained.extend(models) or 0)
    return trained


def _out_problems(tmp_path):
    """--out values that training used to meet only when saving (the model was lost): (out, message)."""
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "run_a").mkdir()
    (tmp_path / "run_a" / "hstu").write_text("x")
    (tmp_path / "run_b" / "metrics.json").mkdir(parents=True)
    (tmp_path / "run_c" / "dlrm" / "model.pt").mkdir(parents=True)
    (tmp_path / "run_d" / "logistic" / "config.json").mkdir(parents=True)
    return [
        ("hstu", tmp_path / "a_file", f"{tmp_path}/a_file must be a folder, got a file"),
        ("hstu", tmp_path / "a_file" / "x" / "y", f"{tmp_path}/a_file must be a folder, got a file"),
        ("hstu", tmp_path / "run_a", f"{tmp_path}/run_a/hstu must be a folder, got a file"),
        ("gnolr", tmp_path / "run_b", f"{tmp_path}/run_b/metrics.json must be a file, got a folder"),
        ("dlrm", tmp_path / "run_c", f"{tmp_path}/run_c/dlrm/model.pt must be a file, got a folder"),
        ("dlrm", tmp_path / "run_d", f"{tmp_path}/run_d/logistic/config.json must be a file, got a folder"),
    ]


def test_out_is_checked_before_any_work(tmp_path, capsys, no_training):
    for model, out, message in _out_problems(tmp_path):
        with pytest.raises(SystemExit) as e:
            cli.main(["train", "--model", model, "--out", str(out)])
        assert e.value.code == 2 and capsys.readouterr().err == f"recops: error: --out: {message}\n", model
    with pytest.raises(SystemExit):  # demo writes run_a/hstu too
        cli.main(["demo", "--out", str(tmp_path / "run_a")])
    # the logistic baseline writes run_d/logistic; with --no-baseline nothing is written there
    assert cli.main(["train", "--model", "dlrm", "--no-baseline", "--out", str(tmp_path / "run_d")]) == 0
    assert no_training == ["dlrm"]
    # a valid --out that does not exist yet is neither created nor left with a probe file by the check
    assert cli.main(["train", "--model", "sasrec", "--out", str(tmp_path / "new" / "deeper")]) == 0
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob("**/.recops-probe-*"))


def test_out_in_a_read_only_folder(tmp_path, capsys, no_training, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root may write there anyway: let the probe fail as it would for anyone else
        def refused(**kwargs):
            raise PermissionError(13, "Permission denied", kwargs["dir"])

        monkeypatch.setattr(tempfile, "NamedTemporaryFile", refused)
    try:
        with pytest.raises(SystemExit):
            cli.main(["train", "--out", str(ro / "run")])
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    assert err == f"recops: error: --out: {ro} must be a writable folder, got Permission denied\n"
    assert no_training == []


def test_an_out_write_failing_after_training_is_one_line(tmp_path, capsys, monkeypatch):
    """A write that fails anyway (a full disk, a folder removed meanwhile) is a user error too, not a traceback."""
    import recops.train.sequential as seq

    def full_disk(path, *args, **kwargs):
        raise OSError(28, "No space left on device", os.path.join(path, "model.pt"))

    monkeypatch.setattr(seq, "save_checkpoint", full_disk)
    path = _write(tmp_path / "u.data", "".join(f"{u}\t{i}\t5\t{i}\n" for u in range(4) for i in range(5)))
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--model", "sasrec", "--data", path, "--format", "ml-100k", "--epochs", "1", "--dim", "4",
                  "--negatives", "2", "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.endswith(f"recops: error: {tmp_path}/run/sasrec/model.pt: No space left on "
                                              "device\n") and err.count("recops: error") == 1


@pytest.mark.parametrize("error", [ValueError("an internal ValueError"), RuntimeError("an internal bug"),
                                   TypeError("an internal TypeError")])
def test_internal_errors_keep_their_traceback(error, monkeypatch, capsys):
    """Only user input becomes a one-line error: the same exception types raised by the work itself propagate."""
    def train(args):
        raise error

    monkeypatch.setitem(cli.MODELS, "dlrm", cli.ModelSpec("dlrm", dataclasses.replace(cli.CTR, train=train), "t"))
    with pytest.raises(type(error), match=str(error)):
        cli.main(["train", "--model", "dlrm"])
    assert capsys.readouterr().err == ""


def test_user_error_from_the_shell_is_one_line_without_traceback(tmp_path):
    path = _write(tmp_path / "ratings.dat", b"\xef\xbb\xbf1::2::3::4\n1::2::3::1e400\n")
    run = subprocess.run([sys.executable, "-m", "recops", "train", "--data", path, "--format", "ml-1m"],
                         capture_output=True, text=True, timeout=300)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == f"recops: error: {path}:2: timestamp must be finite, got '1e400'\n"


def test_train_precision_bf16(tmp_path, capsys):
    """--precision bf16 reaches the config and the checkpoint; a bad value is one line, exit 2."""
    out = tmp_path / "bf16"
    assert cli.main(["train", "--model", "hstu", "--epochs", "1", "--no-progress", "--precision", "bf16",
                     "--out", str(out)]) == 0
    ck = checkpoint.load(str(out / "hstu"))
    assert ck.config.precision == "bf16"
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--model", "hstu", "--precision", "fp8"])
    assert e.value.code == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
