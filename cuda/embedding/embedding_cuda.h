// SPDX-License-Identifier: Apache-2.0
// CUDA launchers for the embedding family: raw device pointers and sizes in, work queued on `stream`.
// Same layout and semantics as cpp/embedding/embedding_bag.h (flat weights, meta [F, 7] int64 in device
// memory, key-major jagged indices/offsets). Storage: kF32, kF16, kBF16, or kInt8Rowwise (uint8 rows with a
// float32 scale and bias after the D codes, forward only); accumulation is float32.
//
// Validation on the device: every index is bounds-checked; a bad one contributes zero and ORs kErrBadIndex
// into *error_flag (caller-zeroed int32); the caller reads the flag after the forward and raises before any
// backward runs, so a rejected batch never updates the weights. Offsets are checked on the device too: the
// forward runs the jagged offsets check (start 0, non-decreasing, end L: kErrBadOffsets), and every kernel
// treats a bag whose range leaves [0, L) or decreases as empty, so bad offsets never cause an out-of-bounds
// access (the caller turns the flag into the CPU path's ValueError).
// The backward sorts (row, position) pairs with cub radix sort into scratch from cudaMallocAsync on `stream`.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "embedding/embedding_params.h"

namespace recops::cuda {

enum EmbeddingStorage : int { kF32 = 0, kF16 = 1, kBF16 = 2, kInt8Rowwise = 3 };

using EmbeddingUpdate = embedding::UpdateParams;  // cpp/embedding/embedding_params.h

// out [batch, total_dim] in the storage type (float32 for int8), argmax [batch, total_dim] int64 or null.
// per_sample_weights [L] float32 or null. max_dim = the largest feature dim (chooses warp- or block-per-bag).
void launch_embedding_bags_forward(int storage, const void* weights, const int64_t* meta, int64_t num_features,
                                   int64_t max_dim, const void* indices, bool indices_int64, const void* offsets,
                                   int64_t batch, int64_t num_indices, const float* per_sample_weights, void* out,
                                   int64_t total_dim, int64_t* argmax, int32_t* error_flag, cudaStream_t stream);

// Backward fused with `update` (see embedding::Update); grad_out [batch, total_dim] in the storage type,
// grad_weights (dense grad) with the layout of weights, state0/state1 float32, grad_per_sample_weights [L] float32
// or null.
void launch_embedding_bags_backward(int storage, void* weights, const int64_t* meta, int64_t num_features,
                                    int64_t max_dim, const void* indices, bool indices_int64,
                                    const void* offsets, int64_t batch, int64_t num_indices,
                                    const float* per_sample_weights, const int64_t* argmax, const void* grad_out,
                                    int64_t total_dim, const EmbeddingUpdate& update, void* grad_weights,
                                    float* state0, float* state1, float* grad_per_sample_weights,
                                    int32_t* error_flag, cudaStream_t stream);

// Dynamic tables, eval side (cuda/embedding/dynamic_lookup.cu): rows[i] = the row of ids[i] in a device copy of the
// CPU map's slots [mask + 1] (embedding::DynamicSlot), zero_row for an id without one; with last_seen (device,
// one double per row) an id with now - last_seen[row] > ttl counts as absent.
void launch_dynamic_lookup(const void* slots, uint64_t mask, const int64_t* ids, int64_t n, int64_t* rows,
                           int64_t zero_row, const double* last_seen, double now, double ttl, cudaStream_t stream);

}  // namespace recops::cuda
