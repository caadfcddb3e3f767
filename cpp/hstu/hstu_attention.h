// SPDX-License-Identifier: Apache-2.0
// Jagged HSTU attention (Zhai et al. 2024), CPU core: causal pointwise-SiLU attention with relative position
// and time bias, target and contextual masks, over packed variable-length sequences.
//
// Shapes (L = total rows, H heads, B sequences, N = max_seq_len):
//   q, k [L, H, dqk] and v [L, H, dv]: strided rows are allowed (views of one fused projection), the last
//   dimension must be contiguous; strides are in elements.  offsets [B + 1] int64.
//   out, grad_out, dq, dk, dv: contiguous [L, H, d].  pos_bias [2N - 1]; timestamps [L]; time_bias [num_buckets].
//
// For sequence b with n rows and local rows i, j in [0, n):
//   s_ij   = alpha * <q_i, k_j> + pos_bias[(N - 1) + (j - i)] + time_bias[bucket_ij]
//   out_i  = scale_i * sum_j valid(i, j) * SiLU(s_ij) * v_j,     scale_i = row_scale[i] if given, else scale
//   bucket_ij = clamp(floor(ln(max(|t'_i - t_j|, 1)) / time_bucket_base), 0, num_buckets - 1),
//   t'_i = t_{i+1} for i < n - 1 and t_{n-1} for the last row (query i predicts item i + 1); ln in double.
// Mask (the reference HSTU kernels' rule). With c = contextual_len, n_t = num_targets[b], W = max_attn_len:
//   m = (c > 0 ? n - c + 1 : n) - n_t;  p(i) = min(c > 0 ? max(i - c + 1, 0) : i, m)
//   valid(i, j) = i == j
//              || (p(i) - p(j) > 0 && (W == 0 || p(i) - p(j) <= W))
//              || (c > 0 && p(i) == 0 && p(j) < m)
// So history rows are causal, the last n_t rows (targets) see the history and themselves but not each other,
// the first c rows (context) see all context and history rows and are seen by every row within the window.
//
// Backward (no softmax, so nothing of size N^2 is stored; s is recomputed): with P = scale * valid * SiLU(s),
//   dv = P^T dout;  dP = dout v^T;  dS = dP * scale * valid * SiLU'(s);  dq = alpha dS k;  dk = alpha dS^T q;
//   d pos_bias and d time_bias gather dS over heads and sequences into the tables.
// causal = false: the bidirectional mask of hstu_mask.h (window two-sided), forward and backward alike.
//
// Softmax attention (args.kind = AttnKind::kSoftmax; the jagged_attention op) runs on the same tiles, mask
// and plan: alpha is the score scale, no biases or row scales, and per sequence, head and row i
//   out_i = sum_j valid(i, j) * softmax_j(alpha <q_i, k_j>) * keep_ij / (1 - p) * v_j,  keep: attention_dropout.h
//   lse_i = log sum_{valid j} exp(alpha <q_i, k_j>)   (+inf and out_i = 0 for a row with no allowed key)
// Forward: flash-style online softmax per 64 x 64 tile (running max and sum per row), lse [L, H] saved.
// Backward: P = exp(s - lse) recomputed per tile, D_i = <dout_i, out_i>, dS = P * (dP * keep / (1 - p) - D_i),
// dq = alpha dS k, dk = alpha dS^T q, dv = (P * keep / (1 - p))^T dout. Nothing of size N^2 is stored.
//
// Results are bitwise deterministic for any thread count (each output row and each per-sequence bias partial
// is owned by one task; partials are reduced in sequence order).
#pragma once

#include <cstdint>

#include "hstu/hstu_params.h"

namespace recops::hstu {

// T is the dtype behind the pointers of `args` (float or double).
// Forward: fills args.out. Validates sizes, offsets (start 0, non-decreasing, end L), every length <= N,
// 0 <= num_targets[b] <= length, non-negative contextual_len / max_attn_len, time_bucket_base > 0, and
// timestamps present with time_bias; throws std::invalid_argument ("hstu_attention: ...") before any work.
template <typename T>
void hstu_attention_fwd(const HstuFwdParams& args, int num_threads);

// Backward: fills dq, dk, dv_out and (when non-null) d_pos_bias, d_time_bias. Same validation as forward.
template <typename T>
void hstu_attention_bwd(const HstuBwdParams& args, int num_threads);

// The data checks of the kernels (offsets, lengths <= max_seq_len, 0 <= num_targets[b] <= length) on host
// arrays; throws std::invalid_argument naming `op`. Used to turn a CUDA error flag into the CPU's message.
void check_hstu_lengths(const char* op, const int64_t* offsets, int64_t num_seqs, int64_t total_len,
                        int64_t max_seq_len, const int64_t* num_targets);

// Which CPU code path runs: "avx512", "avx2" or "generic" (picked at run time from the CPU's features).
const char* hstu_cpu_isa();

// bfloat16 operands on the CPU's bf16 matrix unit (cpu_isa.h: AMX tiles, else AVX512-BF16): q, k, v, out,
// grad_out, dq, dk, dv_out hold bf16 bits (uint16); row_scale, pos_bias, time_bias, lse and the bias gradients
// are float32. Inputs are read once as bf16, every GEMM accumulates in fp32 and the pointwise math is fp32;
// P (forward, and for dV) and dS (for dq, dk) are rounded to bf16 once before their GEMM, the outputs once at
// the end. Same semantics, validation and determinism as the templates above. Throws std::invalid_argument if
// the CPU has no bf16 unit (hstu_bf16_unit() == "none").
void hstu_attention_fwd_bf16(const HstuFwdParams& args, int num_threads);
void hstu_attention_bwd_bf16(const HstuBwdParams& args, int num_threads);

// "amx", "avx512_bf16" or "none" (RECOPS_CPU_ISA can force it down).
const char* hstu_bf16_unit();
// Benchmarks and tests: later calls run on unit "amx", "avx512_bf16" or "none" (the upcast path); throws
// std::invalid_argument for another name or a unit this CPU lacks.
void hstu_force_bf16_unit(const char* unit);

}  // namespace recops::hstu
