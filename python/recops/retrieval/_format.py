# SPDX-License-Identifier: Apache-2.0
"""The recops index file format: versioned, checksummed, no pickled code.

Layout (little-endian):
    magic      8 bytes  b"RECOPSIX"
    version    uint32   FORMAT_VERSION
    hlen       uint32   length of the JSON header
    header     hlen bytes of UTF-8 JSON: {"kind", "dim", "count", "params", "arrays": [{"name", "dtype", "shape",
               "offset", "nbytes"}]} with offsets relative to the start of the data section
    data       the arrays' raw bytes, each 64-byte aligned
    checksum   32 bytes: SHA-256 of everything before it

`write_index` writes to a temporary file `.recops-index-*` in the target folder (holding an exclusive flock on it),
fsyncs and renames it into place, so a crash never leaves a half-written index under the final name; each save
first deletes the temporary files that killed saves left in that folder (unlocked and older than a minute). The
file gets mode 0666 minus the umask, as open() would give it. `read_index` checks size, magic, version and checksum, then
every array entry (allowed dtype, non-negative shape, nbytes = prod(shape) * itemsize, within the data section)
before any array is built; every problem is a ValueError naming the file and the rule.
"""

import glob
import hashlib
import json
import os
import struct
import tempfile
import time

try:
    import fcntl
except ImportError:  # not POSIX: stale temporaries are then recognised by age alone
    fcntl = None
from typing import Dict, Tuple

import numpy as np

MAGIC = b"RECOPSIX"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sII")
_DIGEST = 32
_ALIGN = 64
_DTYPES = {"float32", "float16", "int64", "uint8", "uint16"}
_TMP_PREFIX = ".recops-index-"
_STALE_S = 60.0  # a temporary file this old and not locked by a writer is a killed save's leftover


def _umask() -> int:
    """The process umask without changing it (Linux reads it from /proc; elsewhere set-and-restore)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(folder: str) -> None:
    """Delete the .recops-index-* files of killed saves in `folder`: older than _STALE_S and not flocked (a live
    save holds its lock until the rename). Best effort: a file another process removes first is skipped."""
    now = time.time()
    for tmp in glob.glob(os.path.join(glob.escape(folder), _TMP_PREFIX + "*")):
        try:
            if now - os.stat(tmp).st_mtime < _STALE_S:
                continue
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(tmp)
        except OSError:
            pass  # locked by a running save, or already gone
        finally:
            os.close(fd)


def write_index(path: str, kind: str, dim: int, count: int, params: dict, arrays: Dict[str, np.ndarray]) -> None:
    entries, blobs, offset = [], [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.name not in _DTYPES:
            raise TypeError(f"save: array {name} has unsupported dtype {a.dtype}")
        pad = (-offset) % _ALIGN
        blobs.append(b"\0" * pad)
        offset += pad
        entries.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape), "offset": offset,
                        "nbytes": a.nbytes})
        blobs.append(a.tobytes())
        offset += a.nbytes
    header = json.dumps({"kind": kind, "dim": int(dim), "count": int(count), "params": params,
                         "arrays": entries}).encode()
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + b"".join(blobs)
    folder = os.path.dirname(os.path.abspath(path))
    _remove_stale_temporaries(folder)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=folder)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.write(hashlib.sha256(body).digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_index(path: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    """Returns (header dict, arrays by name); raises ValueError on any malformed file."""
    with open(path, "rb") as f:
        raw = f.read()

    def bad(rule):
        return ValueError(f"recops.retrieval.load: {path}: {rule}")

    if len(raw) < _PREFIX.size + _DIGEST:
        raise bad(f"file is truncated ({len(raw)} bytes is shorter than the smallest index)")
    magic, version, hlen = _PREFIX.unpack_from(raw, 0)
    if magic != MAGIC:
        raise bad(f"not a recops index (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise bad(f"unsupported format version {version} (this recops reads version {FORMAT_VERSION})")
    body, digest = raw[:-_DIGEST], raw[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise bad("checksum mismatch: the file is truncated or corrupted")
    start = _PREFIX.size + hlen
    if start > len(body):
        raise bad(f"header length {hlen} runs past the end of the file")
    try:
        header = json.loads(body[_PREFIX.size:start].decode())
        entries = header["arrays"]
        for key in ("kind", "dim", "count", "params"):
            header[key]
    except (ValueError, KeyError, TypeError) as e:
        raise bad(f"malformed header ({e})") from None
    data = memoryview(body)[start:]
    arrays = {}
    for e in entries if isinstance(entries, list) else [None]:
        try:
            name, dtype, shape, offset, nbytes = e["name"], e["dtype"], e["shape"], e["offset"], e["nbytes"]
            ok = (isinstance(name, str) and dtype in _DTYPES and isinstance(shape, list)
                  and all(isinstance(s, int) and s >= 0 for s in shape) and isinstance(offset, int)
                  and isinstance(nbytes, int) and offset >= 0 and nbytes >= 0)
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise bad(f"malformed array entry {e!r}")
        if nbytes != int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize:
            raise bad(f"array {name}: {nbytes} bytes do not match shape {shape} of {dtype}")
        if offset + nbytes > len(data):
            raise bad(f"array {name} runs past the end of the data section")
        arrays[name] = np.frombuffer(data[offset:offset + nbytes], dtype=dtype).reshape(shape).copy()
    return header, arrays
