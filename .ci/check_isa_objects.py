#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fails when an ISA object of the core defines a weak symbol with VEX/EVEX code that another object also
defines: the linker keeps one copy of a weak symbol, and if it keeps the AVX one, the portable path runs AVX
instructions on a CPU that lacks them. Such copies come from std:: templates or inline functions instantiated
after a `#pragma GCC target` (include every header before the pragma).

Usage: check_isa_objects.py BUILD_DIR   (a CMake build of recops_core; the -O0 sanitizer build shows it best)
"""
import pathlib
import re
import subprocess
import sys

ISA_OBJECT = re.compile(r"_cpu_(avx2|avx512|amx)\.cpp\.o$")
# VEX/EVEX code: a v-prefixed SIMD mnemonic or a ymm/zmm/k-mask register in the operands.
VEX = re.compile(r"\t(v[a-z0-9]+)\s|%[yz]mm\d+|%k[1-7]\b")


def weak_symbols(obj):
    out = subprocess.run(["nm", "--defined-only", str(obj)], check=True, capture_output=True, text=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("W", "V", "u"):
            syms.add(parts[2])
    return syms


def defined_symbols(obj):
    out = subprocess.run(["nm", "--defined-only", str(obj)], check=True, capture_output=True, text=True).stdout
    return {p[2] for p in (line.split() for line in out.splitlines()) if len(p) == 3 and p[1] not in "bBdDrR"}


def has_vex(obj, sym):
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--disassemble={sym}", str(obj)],
                         check=True, capture_output=True, text=True).stdout
    return any(VEX.search(line) for line in out.splitlines() if line.startswith(" "))


def main(build_dir):
    objs = sorted(pathlib.Path(build_dir).rglob("*.o"))
    core = [o for o in objs if "recops_core.dir" in str(o)]
    if not core:
        print(f"check_isa_objects: no recops_core objects under {build_dir}", file=sys.stderr)
        return 2
    isa_objs = [o for o in core if ISA_OBJECT.search(o.name)]
    defs = {o: defined_symbols(o) for o in core}
    bad = []
    for obj in isa_objs:
        others = set().union(*(defs[o] for o in core if o != obj))
        for sym in sorted(weak_symbols(obj) & others):
            if has_vex(obj, sym):
                bad.append((obj.name, sym))
    for name, sym in bad:
        print(f"check_isa_objects: {name} defines weak {sym} with VEX/EVEX code, also defined elsewhere")
    print(f"check_isa_objects: {len(isa_objs)} ISA objects, {len(core)} core objects, {len(bad)} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/ci-asan"))
