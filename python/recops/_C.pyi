# SPDX-License-Identifier: Apache-2.0
# Stub of the compiled extension, generated from a CPU build with: python -m nanobind.stubgen -m recops._C
# (CUDA builds also define loss_workspace_numel and topk_workspace_numel). Regenerate after changing a binding;
# tests/test_stub.py checks that it names every function of the built module.
"""recops compiled kernels (torch-free; tensors cross via DLPack)"""

from collections.abc import Sequence

from numpy.typing import NDArray


def has_cuda() -> bool:
    """True if this build contains the CUDA kernels."""

def has_openmp() -> bool:
    """True if the CPU kernels were built with OpenMP."""

def cpu_isa() -> str:
    """
    The CPU code path of every family: avx512, avx2 or generic (RECOPS_CPU_ISA can force it down; families without AVX-512 kernels run their AVX2 ones on avx512).
    """

ERROR_BITS: dict = ...

EMBEDDING_META_COLUMNS: dict = ...

EMBEDDING_META_NUM_COLUMNS: int = 7

EMBEDDING_OPTIMIZERS: dict = ...

EMBEDDING_POOLING: dict = {'sum' : 0, 'mean' : 1, 'max' : 2}

def jagged_to_padded(values: NDArray, offsets: NDArray, max_len: int, padding_bits: int, out: NDArray, num_threads: int = 1, stream: int = 0, error_flag: NDArray | None = None) -> None:
    """
    Fill out [B, max_len, D] from values [L, D] and offsets [B+1]; padding given as raw bits.
    """

def padded_to_jagged(padded: NDArray, offsets: NDArray, allow_truncated: bool, out: NDArray, num_threads: int = 1, stream: int = 0, error_flag: NDArray | None = None) -> None:
    """
    Fill out [L, D] from padded [B, N, D] and offsets [B+1]; rows past N are zero if allow_truncated.
    """

def check_jagged(offsets: NDArray, total_len: int, max_len: int, op: str) -> None:
    """
    Raise the CPU core's ValueError naming `op` unless host offsets start at 0, never decrease and end at total_len (and, with max_len >= 0, every length is <= max_len).
    """

def hstu_attention_fwd(q: NDArray, k: NDArray, v: NDArray, offsets: NDArray, max_seq_len: int, alpha: float, scale: float, row_scale: NDArray | None, num_targets: NDArray | None, contextual_len: int, max_attn_len: int, pos_bias: NDArray | None, timestamps: NDArray | None, time_bias: NDArray | None, time_bucket_base: float, out: NDArray, causal: bool = True, num_threads: int = 1, stream: int = 0, error_flag: NDArray | None = None, min_full_attn_seq_len: int = 0, q_offsets: NDArray | None = None) -> None:
    """
    HSTU attention forward into out [L, H, dv] (see cpp/hstu/hstu_attention.h).
    """

def hstu_attention_bwd(grad_out: NDArray, q: NDArray, k: NDArray, v: NDArray, offsets: NDArray, max_seq_len: int, alpha: float, scale: float, row_scale: NDArray | None, num_targets: NDArray | None, contextual_len: int, max_attn_len: int, pos_bias: NDArray | None, timestamps: NDArray | None, time_bias: NDArray | None, time_bucket_base: float, dq: NDArray, dk: NDArray, dv: NDArray, d_pos_bias: NDArray | None, d_time_bias: NDArray | None, causal: bool = True, num_threads: int = 1, stream: int = 0, error_flag: NDArray | None = None, min_full_attn_seq_len: int = 0) -> None:
    """HSTU attention backward into dq, dk, dv and the bias gradients."""

def jagged_attention_fwd(q: NDArray, k: NDArray, v: NDArray, offsets: NDArray, max_seq_len: int, scale: float, num_targets: NDArray | None, contextual_len: int, max_attn_len: int, causal: bool, dropout_p: float, seed: int, out: NDArray, lse: NDArray, num_threads: int = 1, stream: int = 0, error_flag: NDArray | None = None, min_full_attn_seq_len: int = 0, q_offsets: NDArray | None = None) -> None:
    """
    Jagged softmax attention forward into out [L, H, dv] and lse [L, H] (cpp/hstu/hstu_attention.h).
    """

def jagged_attention_bwd(grad_out: NDArray, q: NDArray, k: NDArray, v: NDArray, out: NDArray, lse: NDArray, offsets: NDArray, max_seq_len: int, scale: float, num_targets: NDArray | None, contextual_len: int, max_attn_len: int, causal: bool, dropout_p: float, seed: int, dq: NDArray, dk: NDArray, dv: NDArray, num_threads: int = 1, stream: int = 0, error_flag: NDArray | None = None, min_full_attn_seq_len: int = 0) -> None:
    """Jagged softmax attention backward into dq, dk, dv."""

def check_hstu(offsets: NDArray, total_len: int, max_seq_len: int, num_targets: NDArray | None, op: str) -> None:
    """
    Raise the kernels' ValueError for bad offsets, lengths or num_targets (host arrays).
    """

def hstu_cpu_isa() -> str:
    """CPU code path of the HSTU kernels: avx512, avx2 or generic."""

def hstu_bf16_unit() -> str:
    """
    The bf16 unit of the HSTU and softmax attention kernels' bfloat16 path: amx, avx512_bf16 or none.
    """

def hstu_force_bf16_unit(unit: str) -> None:
    """
    Benchmarks and tests: run later bf16 attention calls on unit amx, avx512_bf16 or none (upcast).
    """

def ordinal_logistic_loss(scores: NDArray, thresholds: NDArray, labels: NDArray, weights: NDArray | None = None, *, reduction: int, min_gap: float, grad_loss: NDArray | None = None, loss: NDArray, grad_scores: NDArray | None = None, grad_thresholds: NDArray | None = None, num_threads: int = 1, stream: int = 0, workspace: NDArray | None = None, error_flag: NDArray | None = None) -> None:
    """
    Proportional-odds loss into loss [B] or [1]; with grad_scores/grad_thresholds also its gradient.
    """

def gnolr_loss(cos: NDArray, gamma: NDArray, thresholds: NDArray, levels: NDArray, weights: NDArray | None = None, *, reduction: int, min_gap: float, nested: bool, grad_loss: NDArray | None = None, loss: NDArray, grad_cos: NDArray | None = None, grad_gamma: NDArray | None = None, grad_thresholds: NDArray | None = None, num_threads: int = 1, stream: int = 0, workspace: NDArray | None = None, error_flag: NDArray | None = None) -> None:
    """
    GNOLR loss into loss [B] or [1]; with grad_cos/grad_gamma/grad_thresholds also its gradient.
    """

def sampled_softmax_forward(queries: NDArray, items: NDArray, positives: NDArray, negatives: NDArray | None, log_q: NDArray | None, *, num_negatives: int, generate: bool, seed: int, inv_temperature: float, in_batch: bool, remove_accidental_hits: bool, loss: NDArray, lse: NDArray, num_threads: int = 1, stream: int = 0, error_flag: NDArray | None = None) -> None:
    """
    Per-row sampled-softmax loss [L] and log-sum-exp [L] (cpp/losses/sampled_softmax.h).
    """

def sampled_softmax_backward(grad_loss: NDArray, queries: NDArray, items: NDArray, positives: NDArray, negatives: NDArray | None, log_q: NDArray | None, lse: NDArray, *, num_negatives: int, generate: bool, seed: int, inv_temperature: float, in_batch: bool, remove_accidental_hits: bool, grad_queries: NDArray, grad_items: NDArray, num_threads: int = 1, stream: int = 0, error_flag: NDArray | None = None) -> None:
    """
    Gradient of the per-row sampled-softmax loss w.r.t. queries [L, D] and items [V, D] (fully written).
    """

def sampled_softmax_negatives(rows: int, m: int, num_items: int, seed: int, out: NDArray) -> None:
    """
    The ids the kernel draws for rows [0, rows) with num_negatives = m: out [rows, m].
    """

def check_sampled_softmax(positives: NDArray, negatives: NDArray | None, log_q: NDArray | None, *, dim: int, num_items: int, num_negatives: int, generate: bool, inv_temperature: float, in_batch: bool) -> None:
    """
    Raise the CPU core's ValueError for bad sizes, ids out of [0, num_items) or a non-finite log_q (host arrays).
    """

def check_ordinal(labels: NDArray, hi: int, thresholds: NDArray | None, arg: str, op: str) -> None:
    """
    Raise the CPU core's ValueError for thresholds out of order or labels outside [0, hi] (host arrays).
    """

def advise_huge_pages(buffer: NDArray) -> int:
    """
    madvise(MADV_HUGEPAGE) on the 2 MiB-aligned interior of a CPU buffer; returns the bytes advised.
    """

def check_embedding_bags(meta: NDArray, indices: NDArray, offsets: NDArray, batch: int, feature_names: Sequence[str] | None, op: str) -> None:
    """
    Raise the CPU core's ValueError for bad offsets or an index out of range (host arrays; meta flattened).
    """

def check_embedding_meta(meta: NDArray, weights_numel: int, int8_rows: bool, total_dim: int, has_psw: bool, state_rows: int, state_elems: int, op: str) -> bool:
    """
    Raise the core's ValueError for a bad meta (host array, flattened); returns whether some output column is written by no feature.
    """

def embedding_bags_forward(weights: NDArray, meta: NDArray, indices: NDArray, offsets: NDArray, batch: int, *, per_sample_weights: NDArray | None = None, out: NDArray, total_dim: int, argmax: NDArray | None = None, max_dim: int = 0, num_threads: int = 1, feature_names: Sequence[str] | None = None, op: str = 'embedding_bag', stream: int = 0, error_flag: NDArray | None = None) -> None:
    """
    Pooled lookups of F features over flat tables into out [B, total_dim] (cpp/embedding/embedding_bag.h).
    """

def embedding_bags_backward(weights: NDArray, meta: NDArray, indices: NDArray, offsets: NDArray, batch: int, *, per_sample_weights: NDArray | None = None, argmax: NDArray | None = None, grad_out: NDArray, total_dim: int, optimizer: int, lr: float = 0.0, eps: float = 0.0, beta1: float = 0.0, beta2: float = 0.0, step_size: float = 0.0, stochastic_rounding: bool = False, seed: int = 0, grad_weights: NDArray | None = None, state0: NDArray | None = None, state1: NDArray | None = None, grad_per_sample_weights: NDArray | None = None, max_dim: int = 0, num_threads: int = 1, op: str = 'embedding_bag', stream: int = 0, error_flag: NDArray | None = None) -> None:
    """
    Backward of embedding_bags_forward fused with an optimizer update (0 = dense gradient).
    """

class DynamicIdMap:
    """
    Raw int64 id -> row map of one dynamic embedding table (cpp/embedding/dynamic_table.h).
    """

    def __init__(self, capacity: int, max_capacity: int, admit_after: int, ttl: float | None, eviction: int, sketch_width: int, sketch_depth: int) -> None: ...

    @property
    def capacity(self) -> int: ...

    @property
    def serial(self) -> int: ...

    @property
    def num_used(self) -> int: ...

    @property
    def sketch_size(self) -> int: ...

    def resolve(self, ids: NDArray, rows: NDArray, training: bool, now: float, num_threads: int, new_rows: NDArray, new_ids: NDArray) -> tuple[int, int]:
        """
        rows of ids (the zero row `capacity` for ids without one); training admits, evicts and stamps. Returns (grow_to, num_new): grow_to > 0 means nothing changed, grow and call again.
        """

    def grow(self, capacity: int) -> None: ...

    def num_live(self, now: float) -> int: ...

    def dump(self, ids: NDArray, rows: NDArray, last_use: NDArray, last_seen: NDArray, freq: NDArray) -> None:
        """Every held row (num_used of them) in row order."""

    def load(self, ids: NDArray, rows: NDArray, last_use: NDArray, last_seen: NDArray, freq: NDArray, serial: int, sketch: NDArray) -> None: ...

    def get_sketch(self, out: NDArray) -> None: ...

    @property
    def num_slots(self) -> int: ...

    @property
    def version(self) -> int: ...

    def copy_slots(self, out: NDArray) -> None:
        """The slots as bytes (num_slots * 16), for a device mirror."""

    def copy_last_seen(self, out: NDArray) -> None: ...

    def restamp(self, now: float) -> None: ...

    def clear(self) -> None: ...

def dynamic_init_values(ids: NDArray, dim: int, seed: int, bound: float, out: NDArray, num_threads: int = 1) -> None:
    """
    Deterministic uniform(-bound, bound) initial rows of new ids (cpp/embedding/dynamic_table.h).
    """

def dynamic_resolve_many(maps: Sequence[DynamicIdMap], ids: NDArray, bounds: NDArray, rows: NDArray, training: bool, now: float, num_threads: int, new_rows: NDArray, new_ids: NDArray, new_counts: NDArray) -> tuple[int, int]:
    """
    resolve of maps[t] over ids[bounds[t]:bounds[t+1]], lookups in one parallel region. Returns (t, grow_to): t = -1 when done, else map t must grow and the call resume from it.
    """

def dynamic_route(ids: NDArray, world: int, out: NDArray) -> None:
    """
    out[i] = the rank owning raw id ids[i] among `world`: mix64(id ^ salt) % world.
    """

def topk_inner_product(queries: NDArray, items: NDArray, item_bias: NDArray | None, exclude_ids: NDArray | None, exclude_offsets: NDArray | None, k: int, out_scores: NDArray, out_ids: NDArray, num_threads: int = 1, stream: int = 0, workspace_scores: NDArray | None = None, workspace_ids: NDArray | None = None, error_flag: NDArray | None = None) -> None:
    """
    Exact top-k by inner product (+ item_bias) with per-query exclusions into out_scores/out_ids [Q, k].
    """

def check_topk(exclude_offsets: NDArray | None, exclude_ids: NDArray | None, num_queries: int, num_items: int) -> None:
    """
    Raise the CPU core's ValueError for bad exclusions (host int64 arrays).
    """

def kmeans(data: NDArray, nlist: int, iters: int, seed: int, spherical: bool, centroids: NDArray, num_threads: int = 1) -> None:
    """
    Lloyd k-means of data [n, D] float32 into centroids [nlist, D] (spherical: unit-norm, by inner product).
    """

def ivf_search(queries: NDArray, centroids: NDArray, list_scale: NDArray, list_offsets: NDArray, storage: int, codes: NDArray, vmin: NDArray | None, vscale: NDArray | None, vectors: NDArray, ids: NDArray, nprobe: int, k: int, num_candidates: int, exclude_ids: NDArray | None, exclude_offsets: NDArray | None, out_scores: NDArray, out_ids: NDArray, num_threads: int = 1) -> None:
    """
    IVF approximate top-k by inner product (see cpp/retrieval/ivf_index.h) into out_scores/out_ids [Q, k].
    """

def dropout(x: NDArray, out: NDArray, p: float, seed: int, num_threads: int = 1) -> None:
    """
    Counter-based dropout of a contiguous array into out (cpp/nn/dropout.h).
    """
