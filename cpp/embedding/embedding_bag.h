// SPDX-License-Identifier: Apache-2.0
// Table-batched embedding bags (TBE), CPU core: pooled lookups over many tables in one call, the dense
// gradient, and the backward fused with an optimizer update.
//
// Layout. All tables of one storage dtype live in one flat buffer `weights`. A call serves F features over
// one batch of B samples; feature f reads one table, described by one row of `meta` [F, kMetaCols] (int64):
//   kWeightOffset  first element of the table in `weights` (in weight_t elements)
//   kRowOffset     first row of the table in the global row numbering (for per-row optimizer state)
//   kNumRows       V_f, rows of the table
//   kDim           D_f, embedding dim
//   kRowStride     elements between consecutive rows (D_f, or D_f + 8 for int8 rowwise rows)
//   kPooling       Pooling code
//   kOutColumn     first column of feature f in `out` [B, total_dim]
// Jagged input (TorchRec KeyedJaggedTensor, key-major): bag j = f * B + b owns indices[offsets[j],
// offsets[j+1]); offsets [F * B + 1] start at 0, never decrease and end at L. indices are row numbers local to
// the feature's table, in [0, V_f).
//
// Storage types weight_t: float, double (tests), Half (fp16 bits), BFloat16 (bf16 bits), and uint8_t for
// inference-only int8 rowwise rows: D uint8 codes followed by float32 scale and bias (8 bytes, unaligned),
// value = code * scale + bias, as FBGEMM stores them. Arithmetic is in acc_t = double for double, else float.
// The output type is weight_t for float types and float for int8.
//
// Validation (std::invalid_argument -> Python ValueError, before anything is written or a parallel region
// starts): sizes >= 0, meta entries consistent with the buffer, offsets valid, every index in [0, V_f):
//   "<op>: indices[i] of feature f must be in [0, V), got x"   (i counted within the feature's values).
// Nothing is read through a bad index and nothing is updated when a call throws.
//
// Parallelism: one parallel region per call. Forward: over bags. Backward: indices are radix-sorted by global
// row (stable, so positions keep their order), then unique rows are processed in parallel; each row's
// gradient is summed in acc_t in position order, so results are bitwise identical for any thread count.
#pragma once

#include <cstdint>

#include "embedding/embedding_params.h"

namespace recops::embedding {

// Storage tags for 16-bit floats (the raw bits).
struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };


// The checks of meta [num_features, kMetaCols] (host) that every call runs, for a CUDA caller to run on a host
// copy before a launch: entries non-negative, row stride D (D + 8 for int8 rows), pooling code, output columns
// inside [0, total_dim), tables inside the weights buffer and the optimizer state (state_rows / state_elems:
// -1 when unused), every sum and product overflow-checked. Returns whether some column of out is written by no
// feature (the CPU forward zeroes those columns; a CUDA caller allocates out zeroed then).
bool check_embedding_meta(const char* op, int64_t weights_numel, bool int8_rows, const int64_t* meta,
                          int64_t num_features, int64_t total_dim, bool has_psw, int64_t state_rows,
                          int64_t state_elems);

// The data checks of the lookups on host arrays: offsets [num_features * batch + 1] start at 0, never decrease
// and end at num_indices; every index of feature f in [0, meta[f, kNumRows]). Throws naming the first bad one
// (with feature_names when non-null), as the forward does; run when a CUDA kernel flags bad input.
template <typename index_t>
void check_embedding_bags_data(const char* op, const int64_t* meta, int64_t num_features, const index_t* indices,
                               int64_t num_indices, const index_t* offsets, int64_t batch,
                               const char* const* feature_names);

// Pooled lookups. weights [weights_numel], meta [num_features, kMetaCols], indices [L], offsets
// [num_features * batch + 1], per_sample_weights [L] acc_t or null (sum pooling only; ValueError for a mean or
// max feature), out [batch, total_dim]; columns of out not covered by a feature are zeroed (argmax -1).
// argmax [batch, total_dim] int64 or null: for max features, the position i (into indices) that won each
// element, -1 for an empty bag and for the columns of other features. Empty bags give zeros. feature_names [num_features] or null: names used in the
// message for a bad index ("feature 'name' indices[i] ...").
template <typename weight_t, typename index_t>
void embedding_bags_forward(const char* op, const weight_t* weights, int64_t weights_numel, const int64_t* meta,
                            int64_t num_features, const index_t* indices, int64_t num_indices,
                            const index_t* offsets, int64_t batch, const void* per_sample_weights, void* out,
                            int64_t total_dim, int64_t* argmax, int num_threads,
                            const char* const* feature_names = nullptr);

// Backward of embedding_bags_forward for grad_out [batch, total_dim] (out_t), fused with `params.kind`.
// weights are updated in place (kDenseGrad: grad_weights is written instead and weights are only read);
// state0/state1 as described at Update (null when unused). argmax is required for max features.
// grad_per_sample_weights [L] acc_t or null: d loss / d per_sample_weights[i] = dot(w[row_i], grad_out[b_i]).
// int8 storage is inference-only (ValueError).
template <typename weight_t, typename index_t>
void embedding_bags_backward(const char* op, weight_t* weights, int64_t weights_numel, const int64_t* meta,
                             int64_t num_features, const index_t* indices, int64_t num_indices,
                             const index_t* offsets, int64_t batch, const void* per_sample_weights,
                             const int64_t* argmax, const void* grad_out, int64_t total_dim,
                             const UpdateParams& params, weight_t* grad_weights, float* state0, float* state1,
                             int64_t state0_numel, int64_t state1_numel, void* grad_per_sample_weights,
                             int num_threads);

}  // namespace recops::embedding
