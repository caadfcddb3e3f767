# SPDX-License-Identifier: Apache-2.0
"""python/recops/_C.pyi (the extension's type stub) declares exactly what the built extension defines."""

import ast
import pathlib

from recops import _C

_CUDA_ONLY = {"loss_workspace_numel", "topk_workspace_numel", "dynamic_lookup_cuda"}


def _stub_names():
    tree = ast.parse((pathlib.Path(__file__).parents[1] / "python" / "recops" / "_C.pyi").read_text())
    funcs = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    attrs = {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    return funcs, attrs


def test_stub_matches_the_extension():
    funcs, attrs = _stub_names()
    public = {n for n in dir(_C) if not n.startswith("_")}
    built_funcs = {n for n in public if callable(getattr(_C, n))}
    built_attrs = public - built_funcs
    assert built_funcs - _CUDA_ONLY == funcs - _CUDA_ONLY, "regenerate _C.pyi: python -m nanobind.stubgen -m recops._C"
    assert built_attrs == attrs
