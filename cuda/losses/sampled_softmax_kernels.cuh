// SPDX-License-Identifier: Apache-2.0
// Kernels of the fused sampled softmax (semantics: cpp/losses/sampled_softmax.h). float32 storage, float32 math.
//
// Thread mapping: one warp per row (kSsmWarps rows per block, grid-stride over rows). The row's query is staged
// in shared memory (when kSsmWarps rows of it fit in 48 KiB; otherwise it is read from global memory, cached).
// Lane l takes the candidates j = l, l + 32, ... in the CPU's order (ssm_candidate): the positive, the M
// negatives (shared, per-row, or negative_id), then the other rows' positives in row order.
//   forward:  each lane keeps an online (max, sum) log-sum-exp of its logits; the 32 pairs are merged with a
//             fixed xor-shuffle tree; lane 0 writes lse[i] and loss[i] = lse[i] - logit_0.
//   backward: the lanes score 32 candidates at a time and form c_j = g_i / T * (p_j - [j == 0]); then the
//             warp walks those candidates in j order, each across D (lane k, k + 32, ...): dq[k] += c_j e[k]
//             (dq: the row's query gradient, in shared memory when it fits, owned by lane k % 32, so no
//             atomics) and atomicAdd(grad_items[id][k], c_j q[k]).
// Determinism: loss, lse and grad_queries are bitwise reproducible (fixed per-lane order and shuffle tree);
// grad_items is not (float atomics from many rows in a run-dependent order), unlike the CPU core.
//
// Validation: an id outside [0, V) (positive or negative) is treated as masked and ORs kErrBadIndex; the grid
// also scans the shared negatives (so L = 0 checks them as the CPU does) and log_q (kErrNonFinite for a value
// that is not finite). Nothing is read out of bounds.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_check.cuh"
#include "losses/sampled_softmax_ids.h"

namespace recops::cuda {

constexpr int kSsmWarps = 4;  // rows in flight per block
constexpr int kSsmThreads = kSsmWarps * 32;
constexpr unsigned kSsmFull = 0xffffffffu;

// The call as the kernels read it (by value): typed pointers, sizes, the options.
struct SsmArgs {
  const float* queries;  // [L, D]
  const float* items;    // [V, D]
  const float* log_q;    // [V] or null
  const int64_t* positives;  // [L]
  const int64_t* negatives;  // [M] (shared), [L, M] (per_row) or null (generated / none)
  int64_t num_rows, dim, num_items, num_negatives, num_candidates;
  uint64_t seed;
  float inv_temperature;
  bool per_row, generate, in_batch, remove_accidental_hits;
  bool staged;  // the query (backward: and its gradient) in shared memory
  float* loss;               // [L] (forward)
  float* lse;                // [L] (forward writes, backward reads)
  const float* grad_loss;    // [L] (backward)
  float* grad_queries;       // [L, D] (backward)
  float* grad_items;         // [V, D] (backward; zeroed by the launcher)
  int32_t* error_flag;
};

// Candidate j of row i (pos = positives[i]): its id, or -1 when masked (an accidental hit, or an id outside
// [0, V), which also sets *bad). The CPU's row_candidates, one candidate at a time.
__device__ __forceinline__ int64_t ssm_candidate(const SsmArgs& a, int64_t i, int64_t pos, int64_t j, bool* bad) {
  int64_t id;
  if (j == 0) {
    id = pos;
  } else if (j <= a.num_negatives) {
    const int64_t n = j - 1;
    id = a.generate ? losses::negative_id(a.seed, i, n, a.num_items)
                    : a.negatives[a.per_row ? i * a.num_negatives + n : n];
  } else {
    const int64_t r = j - 1 - a.num_negatives;  // the r-th other row
    id = a.positives[r < i ? r : r + 1];
  }
  if (id < 0 || id >= a.num_items) {
    *bad = true;
    return -1;
  }
  return j > 0 && a.remove_accidental_hits && id == pos ? -1 : id;
}

// logit = (q . e_id) / T - log_q[id]. kVec4: D % 4 == 0 and both rows 16-byte aligned.
template <bool kVec4>
__device__ __forceinline__ float ssm_logit(const SsmArgs& a, const float* __restrict__ q, int64_t id) {
  const float* __restrict__ e = a.items + id * a.dim;
  float acc;
  if constexpr (kVec4) {
    const float4* q4 = reinterpret_cast<const float4*>(q);
    const float4* e4 = reinterpret_cast<const float4*>(e);
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    for (int64_t k = 0, n = a.dim / 4; k < n; ++k) {
      const float4 x = q4[k], y = e4[k];
      s0 = fmaf(x.x, y.x, s0);
      s1 = fmaf(x.y, y.y, s1);
      s2 = fmaf(x.z, y.z, s2);
      s3 = fmaf(x.w, y.w, s3);
    }
    acc = (s0 + s1) + (s2 + s3);
  } else {
    acc = 0.f;
    for (int64_t k = 0; k < a.dim; ++k) acc = fmaf(q[k], e[k], acc);
  }
  float z = acc * a.inv_temperature;
  if (a.log_q != nullptr) z -= a.log_q[id];
  return z;
}

// Online log-sum-exp: (m, s) stands for m + log(s), m the running max (-inf: no term yet). Accurate expf/logf
// (no fast-math intrinsics). As in the CPU's sum: a -inf logit adds nothing, a NaN one makes s NaN.
__device__ __forceinline__ void lse_push(float z, float& m, float& s) {
  if (z > m) {
    s = s * expf(m - z) + 1.f;  // m = -inf: s * 0
    m = z;
  } else if (z != -INFINITY) {
    s += expf(z - m);
  }
}

// s rescaled from max m to max mx >= m (never exp(-inf - -inf), so an empty lane stays 0 and NaN stays NaN).
__device__ __forceinline__ float lse_rescale(float s, float m, float mx) { return m == mx ? s : s * expf(m - mx); }

// Merges the 32 lanes' (m, s) with a fixed xor tree; every lane gets the row's log-sum-exp. As the CPU's
// row_lse: a non-finite max (every candidate masked: -inf; an infinite logit: +inf) is the result itself.
__device__ __forceinline__ float warp_lse(float m, float s) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float mo = __shfl_xor_sync(kSsmFull, m, off), so = __shfl_xor_sync(kSsmFull, s, off);
    const float mx = fmaxf(m, mo);
    s = lse_rescale(s, m, mx) + lse_rescale(so, mo, mx);
    m = mx;
  }
  return isfinite(m) ? m + logf(s) : m;
}

// The grid's share of the data checks that no row makes: shared negatives (read by every row, and by none when
// L = 0) and every log_q value (the CPU rejects a non-finite one even if no row uses it).
__device__ __forceinline__ void ssm_scan_inputs(const SsmArgs& a) {
  const int64_t t0 = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, step = int64_t(gridDim.x) * blockDim.x;
  if (a.log_q != nullptr) {
    for (int64_t v = t0; v < a.num_items; v += step) {
      if (!isfinite(a.log_q[v])) {
        atomicOr(a.error_flag, kErrNonFinite);
        break;
      }
    }
  }
  if (a.negatives != nullptr && !a.per_row) {
    for (int64_t n = t0; n < a.num_negatives; n += step) {
      if (a.negatives[n] < 0 || a.negatives[n] >= a.num_items) {
        atomicOr(a.error_flag, kErrBadIndex);
        break;
      }
    }
  }
}

// This warp's row i query: staged into sh (lane-strided copy) or read in place.
__device__ __forceinline__ const float* ssm_stage_query(const SsmArgs& a, int64_t i, float* sh, int lane) {
  const float* q = a.queries + i * a.dim;
  if (!a.staged) return q;
  for (int64_t k = lane; k < a.dim; k += 32) sh[k] = q[k];
  __syncwarp();
  return sh;
}

template <bool kVec4>
__global__ void __launch_bounds__(kSsmThreads) sampled_softmax_forward_kernel(SsmArgs a) {
  extern __shared__ float4 ssm_smem_fwd[];  // staged: [kSsmWarps][D] floats (float4: 16-byte aligned)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  ssm_scan_inputs(a);
  float* q_sh = reinterpret_cast<float*>(ssm_smem_fwd) + warp * a.dim;
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(kSsmWarps) + warp; i < a.num_rows; i += int64_t(gridDim.x) * kSsmWarps) {
    const float* q = ssm_stage_query(a, i, q_sh, lane);
    const int64_t pos = a.positives[i];
    float m = -INFINITY, s = 0.f, z0 = -INFINITY;
    for (int64_t j = lane; j < a.num_candidates; j += 32) {
      const int64_t id = ssm_candidate(a, i, pos, j, &bad);
      if (id < 0) continue;  // masked: logit -inf, no term
      const float z = ssm_logit<kVec4>(a, q, id);
      if (j == 0) z0 = z;
      lse_push(z, m, s);
    }
    const float lse = warp_lse(m, s);
    z0 = __shfl_sync(kSsmFull, z0, 0);  // candidate 0 is lane 0's first
    if (lane == 0) {
      a.lse[i] = lse;
      a.loss[i] = lse - z0;
    }
    __syncwarp();  // q_sh is overwritten by the next row
  }
  if (__any_sync(kSsmFull, bad) && lane == 0) atomicOr(a.error_flag, kErrBadIndex);
}

template <bool kVec4>
__global__ void __launch_bounds__(kSsmThreads) sampled_softmax_backward_kernel(SsmArgs a) {
  extern __shared__ float4 ssm_smem_bwd[];  // staged: [kSsmWarps][2][D] floats: the query, its gradient
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  ssm_scan_inputs(a);
  const int64_t d = a.dim;
  float* q_sh = reinterpret_cast<float*>(ssm_smem_bwd) + warp * 2 * d;
  float* dq_sh = q_sh + d;
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(kSsmWarps) + warp; i < a.num_rows; i += int64_t(gridDim.x) * kSsmWarps) {
    float* dq = a.staged ? dq_sh : a.grad_queries + i * d;  // element k owned by lane k % 32 throughout
    for (int64_t k = lane; k < d; k += 32) dq[k] = 0.f;
    const float* q = ssm_stage_query(a, i, q_sh, lane);
    const int64_t pos = a.positives[i];
    const float lse = a.lse[i], gi = a.grad_loss[i] * a.inv_temperature;
    for (int64_t base = 0; base < a.num_candidates; base += 32) {
      const int64_t j = base + lane;
      int64_t id = -1;
      float c = 0.f;
      if (j < a.num_candidates) {
        id = ssm_candidate(a, i, pos, j, &bad);
        if (id >= 0) c = gi * (expf(ssm_logit<kVec4>(a, q, id) - lse) - (j == 0 ? 1.f : 0.f));
      }
      unsigned todo = __ballot_sync(kSsmFull, id >= 0 && c != 0.f);  // as the CPU: c == 0 adds nothing
      while (todo) {  // the chunk's candidates in j order, each across D
        const int src = __ffs(todo) - 1;
        todo &= todo - 1;
        const float cs = __shfl_sync(kSsmFull, c, src);
        const int64_t cid = __shfl_sync(kSsmFull, id, src);
        const float* __restrict__ e = a.items + cid * d;
        float* ge = a.grad_items + cid * d;
        for (int64_t k = lane; k < d; k += 32) {
          dq[k] = fmaf(cs, e[k], dq[k]);
          atomicAdd(ge + k, cs * q[k]);
        }
      }
    }
    if (a.staged) {
      float* out = a.grad_queries + i * d;
      for (int64_t k = lane; k < d; k += 32) out[k] = dq_sh[k];
    }
    __syncwarp();  // q_sh is overwritten by the next row
  }
  if (__any_sync(kSsmFull, bad) && lane == 0) atomicOr(a.error_flag, kErrBadIndex);
}

}  // namespace recops::cuda
