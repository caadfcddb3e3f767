# SPDX-License-Identifier: Apache-2.0
"""`import recops` leaves the heavy subpackages unimported; they are reachable as attributes on first use."""

import subprocess
import sys

LAZY = ("recops.distributed", "recops.models", "recops.retrieval", "recops.train")
MARK = "--- import recops done ---"

# Run in a fresh interpreter (this one has imported everything already) with -X importtime, which lists on
# stderr every module an import loads; MARK separates what `import recops` loaded from what came later.
SCRIPT = f"""
import sys
import recops
print({MARK!r}, file=sys.stderr, flush=True)
lazy = {LAZY!r}
assert not [m for m in sys.modules if m.startswith(lazy)], [m for m in sys.modules if m.startswith(lazy)]
assert {{"distributed", "models", "retrieval"}} <= set(dir(recops)), dir(recops)

assert recops.models.HSTU.__name__ == "HSTU"
assert "recops.models" in sys.modules and "recops.retrieval" not in sys.modules
assert recops.retrieval.IVFIndex is sys.modules["recops.retrieval"].IVFIndex
assert recops.distributed is sys.modules["recops.distributed"]
assert recops.data.Jagged is recops.Jagged

import importlib.util
if importlib.util.find_spec("recops.train") is not None:  # the subpackage is optional in a tree
    assert recops.train is sys.modules["recops.train"] and "train" in dir(recops)
else:
    assert not hasattr(recops, "train") and "train" not in dir(recops)
try:
    recops.not_a_subpackage
except AttributeError as e:
    assert "not_a_subpackage" in str(e)
else:
    raise AssertionError("recops.not_a_subpackage did not raise AttributeError")
print("ok")
"""


def _listed(importtime_log: str) -> set:
    """Module names in -X importtime lines: "import time: <self us> | <cumulative us> | <indented name>"."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")}


def test_subpackages_import_lazily():
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
    at_import, _, later = run.stderr.partition(MARK)
    loaded = _listed(at_import)
    assert "recops" in loaded and "recops.ops" in loaded  # the measurement sees recops' own imports
    assert not [m for m in loaded if m.startswith(LAZY)], sorted(m for m in loaded if m.startswith(LAZY))
    # first use loads them (importlib.import_module itself is not listed, the modules it imports are)
    later_loaded = _listed(later)
    for package in ("recops.models", "recops.retrieval", "recops.distributed"):
        assert [m for m in later_loaded if m.startswith(package + ".")], (package, sorted(later_loaded))
