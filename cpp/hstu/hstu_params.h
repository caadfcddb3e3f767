// SPDX-License-Identifier: Apache-2.0
// The parameters of one HSTU attention call, shared by the CPU core (hstu_attention.h), the CUDA launchers
// (cuda/hstu/hstu_cuda.h) and the binding, so that an option is spelled once. Torch-free and CUDA-free.
//
// Pointers are untyped (the flash-attention `flash.h` way): q/k/v/out/row_scale/pos_bias/time_bias and the
// q/k/v/out gradients hold the call's dtype (float32/float64 on the CPU; float32/float16/bfloat16 on CUDA);
// the bias gradients are that dtype on the CPU and float32 accumulators (zeroed by the caller) on CUDA.
// Shapes (L rows, H heads, B sequences, N = max_seq_len) and semantics: cpp/hstu/hstu_attention.h.
//
// One parameter set serves both jagged attention ops: `kind` picks the pointwise rule between the shared
// tiling and mask (kSilu: HSTU's scale * SiLU(s); kSoftmax: softmax over the allowed keys with attention
// dropout, semantics in cpp/hstu/jagged_attention.h), `causal` the mask's direction (hstu_mask.h).
#pragma once

#include <cstdint>

namespace recops::hstu {

enum class AttnKind : int32_t { kSilu = 0, kSoftmax = 1 };

struct HstuFwdParams {
  AttnKind kind = AttnKind::kSilu;
  bool causal = true;                    // false: bidirectional within the sequence (window two-sided)
  // q, k [L, H, dqk], v [L, H, dv]: strides in elements, the last dimension contiguous
  const void* q = nullptr;
  int64_t q_row = 0, q_head = 0;
  const void* k = nullptr;
  int64_t k_row = 0, k_head = 0;
  const void* v = nullptr;
  int64_t v_row = 0, v_head = 0;
  const int64_t* offsets = nullptr;      // [B + 1]
  // Incremental inference (forward only, CPU): q, out, lse and row_scale hold only the last nq_b =
  // q_offsets[b + 1] - q_offsets[b] <= n_b rows of each sequence (its new events, absolute rows n_b - nq_b ..
  // n_b - 1; the mask, biases and timestamps in absolute positions), k/v/timestamps the whole sequences.
  // Null: q rows are the sequences' rows (q_offsets = offsets).
  const int64_t* q_offsets = nullptr;    // [B + 1]
  int64_t q_total_len = 0;               // q rows (with q_offsets)
  int64_t num_seqs = 0, total_len = 0, num_heads = 0, dqk = 0, dv = 0, max_seq_len = 0;
  double alpha = 1.0;
  double scale = 1.0;                    // used when row_scale is null
  const void* row_scale = nullptr;       // [L] or null
  const int64_t* num_targets = nullptr;  // [B] or null
  int64_t contextual_len = 0;
  int64_t max_attn_len = 0;
  int64_t min_full_attn_seq_len = 0;     // semi-local attention (hstu_mask.h): rows near the end ignore the window
  const void* pos_bias = nullptr;        // [2N - 1] or null
  const int64_t* timestamps = nullptr;   // [L], required with time_bias
  const void* time_bias = nullptr;       // [num_buckets] or null
  int64_t num_buckets = 0;
  double time_bucket_base = 0.301;
  // softmax only: attention dropout on the probabilities (counter-based, attention_dropout.h) and the
  // per-row log-sum-exp [L, H] (written by the forward, read by the backward; +inf for a row with no key)
  double dropout_p = 0.0;
  uint64_t seed = 0;
  void* lse = nullptr;
  void* out = nullptr;                   // contiguous [L, H, dv] (the backward of softmax reads it)
  int32_t* error_flag = nullptr;         // CUDA: error bits (cuda/common/cuda_check.cuh); unused on the CPU
};

struct HstuBwdParams : HstuFwdParams {
  const void* grad_out = nullptr;  // contiguous [L, H, dv]
  void* dq = nullptr;              // contiguous [L, H, dqk]
  void* dk = nullptr;              // contiguous [L, H, dqk]
  void* dv_out = nullptr;          // contiguous [L, H, dv]
  void* d_pos_bias = nullptr;      // [2N - 1], null when pos_bias is absent
  void* d_time_bias = nullptr;     // [num_buckets], null when time_bias is absent
};

// Typed views of the untyped pointers, for kernels compiled per dtype.
template <typename T>
inline const T* typed(const void* p) { return static_cast<const T*>(p); }
template <typename T>
inline T* typed(void* p) { return static_cast<T*>(p); }

}  // namespace recops::hstu
