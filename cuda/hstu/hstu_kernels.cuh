// SPDX-License-Identifier: Apache-2.0
// HSTU attention CUDA kernels (float32 math for every storage dtype).
//
// Thread mapping: one block per (query block or key block, sequence * head); tiles of `tile` rows staged in
// shared memory (leading dimension padded by one float against bank conflicts). Score entries are spread over
// the block's threads (each thread owns entries idx = tid, tid + blockDim, ...), so do the output entries of
// the small products; tiles with no valid pair are skipped block-uniformly.
//   forward:      grid (query block, B*H): O += SiLU(S + bias) * mask * V
//   backward dkv: grid (key block, B*H):   dV += P^T dO, dK += alpha dS^T Q, bias grads by atomicAdd
//   backward dq:  grid (query block, B*H): dQ += alpha dS K
// Recomputes scores in the backward; nothing of size N^2 is stored.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/cuda_check.cuh"
#include "common/dtype.cuh"
#include "hstu/hstu_cuda.h"
#include "hstu/hstu_mask.h"

namespace recops::cuda {

using hstu::HstuBwdParams;
using hstu::HstuFwdParams;
using hstu::HstuMask;

// Sequence bounds and mask of block (b); false (and error bits set) when the sequence's data are invalid.
__device__ __forceinline__ bool hstu_seq(const HstuFwdParams& p, int64_t b, int64_t& s, int64_t& n, HstuMask& mk) {
  s = p.offsets[b];
  const int64_t e = p.offsets[b + 1];
  if (s < 0 || e < s || e > p.total_len) {
    atomicOr(p.error_flag, kErrBadOffsets);
    return false;
  }
  n = e - s;
  if (n > p.max_seq_len) {
    atomicOr(p.error_flag, kErrTooLong);
    return false;
  }
  const int64_t nt = p.num_targets ? p.num_targets[b] : 0;
  if (nt < 0 || nt > n) {
    atomicOr(p.error_flag, kErrBadIndex);
    return false;
  }
  mk = HstuMask::make(p.contextual_len, p.max_attn_len, n, nt, p.causal);
  return true;
}

template <typename T>
__device__ __forceinline__ float bias_at(const HstuFwdParams& p, int64_t s, int64_t n, int64_t i, int64_t j,
                                         int64_t* bucket) {
  float val = 0.f;
  if (p.pos_bias) val += to_float(static_cast<const T*>(p.pos_bias)[(p.max_seq_len - 1) + (j - i)]);
  if (p.time_bias) {
    const int64_t iq = i + 1 < n ? i + 1 : n - 1;
    const double x = fabs(static_cast<double>(p.timestamps[s + iq]) - static_cast<double>(p.timestamps[s + j]));
    const int64_t k = hstu::time_bucket_formula(x, p.time_bucket_base, p.num_buckets);
    *bucket = k;
    val += to_float(static_cast<const T*>(p.time_bias)[k]);
  }
  return val;
}

template <typename T>
__device__ __forceinline__ float row_scale_at(const HstuFwdParams& p, int64_t row) {
  return p.row_scale ? to_float(static_cast<const T*>(p.row_scale)[row]) : static_cast<float>(p.scale);
}

template <typename T>
__device__ __forceinline__ void load_rows(const T* base, int64_t row_stride, int64_t head_off, int64_t first,
                                          int rows, int64_t dim, float mul, float* dst, int ld) {
  for (int idx = threadIdx.x; idx < rows * dim; idx += blockDim.x) {
    const int r = idx / dim, d = idx % dim;
    dst[r * ld + d] = mul * to_float(base[(first + r) * row_stride + head_off + d]);
  }
}

template <typename T>
__global__ void hstu_fwd_kernel(HstuFwdParams p, int tile) {
  extern __shared__ float sm[];
  const int64_t H = p.num_heads, b = blockIdx.y / H, h = blockIdx.y % H;
  int64_t s, n;
  HstuMask mk;
  if (!hstu_seq(p, b, s, n, mk)) return;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * tile;
  if (i0 >= n) return;
  const int R = static_cast<int>(n - i0 < tile ? n - i0 : tile);
  const int dq = static_cast<int>(p.dqk), dv = static_cast<int>(p.dv), ldq = dq + 1, ldv = dv + 1;
  float* Qs = sm;
  float* Ks = Qs + tile * ldq;
  float* Vs = Ks + tile * ldq;
  float* Ps = Vs + tile * ldv;
  float* Os = Ps + tile * (tile + 1);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  load_rows(q, p.q_row, h * p.q_head, s + i0, R, dq, static_cast<float>(p.alpha), Qs, ldq);
  for (int idx = threadIdx.x; idx < tile * ldv; idx += blockDim.x) Os[idx] = 0.f;
  const int64_t nkb = (n + tile - 1) / tile;
  for (int64_t kb = 0; kb < nkb; ++kb) {
    const int64_t j0 = kb * tile;
    const int C = static_cast<int>(n - j0 < tile ? n - j0 : tile);
    if (!mk.any(i0, i0 + R - 1, j0, j0 + C - 1)) continue;
    __syncthreads();
    load_rows(k, p.k_row, h * p.k_head, s + j0, C, dq, 1.f, Ks, ldq);
    load_rows(v, p.v_row, h * p.v_head, s + j0, C, dv, 1.f, Vs, ldv);
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * tile; idx += blockDim.x) {
      const int r = idx / tile, c = idx % tile;
      float val = 0.f;
      if (c < C && mk.valid(i0 + r, j0 + c)) {
        float acc = 0.f;
        for (int d = 0; d < dq; ++d) acc += Qs[r * ldq + d] * Ks[c * ldq + d];
        int64_t bucket = 0;
        acc += bias_at<T>(p, s, n, i0 + r, j0 + c, &bucket);
        val = acc / (1.f + __expf(-acc));
      }
      Ps[r * (tile + 1) + c] = val;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * dv; idx += blockDim.x) {
      const int r = idx / dv, d = idx % dv;
      float acc = 0.f;
      for (int c = 0; c < C; ++c) acc += Ps[r * (tile + 1) + c] * Vs[c * ldv + d];
      Os[r * ldv + d] += acc;
    }
  }
  __syncthreads();
  T* out = static_cast<T*>(p.out);
  for (int idx = threadIdx.x; idx < R * dv; idx += blockDim.x) {
    const int r = idx / dv, d = idx % dv;
    const float sc = row_scale_at<T>(p, s + i0 + r);
    out[((s + i0 + r) * H + h) * dv + d] = from_float<T>(sc * Os[r * ldv + d]);
  }
}

// dS and P of one (query tile, key tile) pair into Ss (dS) and Ps (P); bias gradients by atomics if wanted.
template <typename T>
__device__ void hstu_bwd_scores(const HstuBwdParams& p, const HstuMask& mk, int64_t s, int64_t n, int64_t i0,
                                int R, int64_t j0, int C, int tile, const float* Qs, const float* Ks,
                                const float* dOs, const float* Vs, int ldq, int ldv, float* Ps, float* Ss,
                                bool bias_grads) {
  const int dq = static_cast<int>(p.dqk), dv = static_cast<int>(p.dv);
  for (int idx = threadIdx.x; idx < tile * tile; idx += blockDim.x) {
    const int r = idx / tile, c = idx % tile;
    float pv = 0.f, ds = 0.f;
    if (r < R && c < C && mk.valid(i0 + r, j0 + c)) {
      float sv = 0.f;
      for (int d = 0; d < dq; ++d) sv += Qs[r * ldq + d] * Ks[c * ldq + d];
      sv *= static_cast<float>(p.alpha);
      int64_t bucket = 0;
      sv += bias_at<T>(p, s, n, i0 + r, j0 + c, &bucket);
      const float sig = 1.f / (1.f + __expf(-sv));
      const float sc = row_scale_at<T>(p, s + i0 + r);
      float dp = 0.f;
      for (int d = 0; d < dv; ++d) dp += dOs[r * ldv + d] * Vs[c * ldv + d];
      pv = sv * sig * sc;
      ds = dp * sig * (1.f + sv * (1.f - sig)) * sc;
      if (bias_grads) {
        float* dpos = static_cast<float*>(p.d_pos_bias);
        if (dpos) atomicAdd(dpos + (p.max_seq_len - 1) + (c + j0) - (r + i0), ds);
        if (p.d_time_bias) atomicAdd(static_cast<float*>(p.d_time_bias) + bucket, ds);
      }
    }
    Ps[r * (tile + 1) + c] = pv;
    Ss[r * (tile + 1) + c] = ds;
  }
}

template <typename T>
__global__ void hstu_bwd_dkv_kernel(HstuBwdParams p, int tile) {
  extern __shared__ float sm[];
  const int64_t H = p.num_heads, b = blockIdx.y / H, h = blockIdx.y % H;
  int64_t s, n;
  HstuMask mk;
  if (!hstu_seq(p, b, s, n, mk)) return;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * tile;
  if (j0 >= n) return;
  const int C = static_cast<int>(n - j0 < tile ? n - j0 : tile);
  const int dq = static_cast<int>(p.dqk), dv = static_cast<int>(p.dv), ldq = dq + 1, ldv = dv + 1;
  float* Ks = sm;
  float* Vs = Ks + tile * ldq;
  float* dKs = Vs + tile * ldv;
  float* dVs = dKs + tile * ldq;
  float* Qs = dVs + tile * ldv;
  float* dOs = Qs + tile * ldq;
  float* Ps = dOs + tile * ldv;
  float* Ss = Ps + tile * (tile + 1);
  load_rows(static_cast<const T*>(p.k), p.k_row, h * p.k_head, s + j0, C, dq, 1.f, Ks, ldq);
  load_rows(static_cast<const T*>(p.v), p.v_row, h * p.v_head, s + j0, C, dv, 1.f, Vs, ldv);
  for (int idx = threadIdx.x; idx < tile * ldq; idx += blockDim.x) dKs[idx] = 0.f;
  for (int idx = threadIdx.x; idx < tile * ldv; idx += blockDim.x) dVs[idx] = 0.f;
  const int64_t nqb = (n + tile - 1) / tile;
  for (int64_t qb = 0; qb < nqb; ++qb) {
    const int64_t i0 = qb * tile;
    const int R = static_cast<int>(n - i0 < tile ? n - i0 : tile);
    if (!mk.any(i0, i0 + R - 1, j0, j0 + C - 1)) continue;
    __syncthreads();
    load_rows(static_cast<const T*>(p.q), p.q_row, h * p.q_head, s + i0, R, dq, 1.f, Qs, ldq);
    load_rows(static_cast<const T*>(p.grad_out), H * dv, h * dv, s + i0, R, dv, 1.f, dOs, ldv);
    __syncthreads();
    hstu_bwd_scores<T>(p, mk, s, n, i0, R, j0, C, tile, Qs, Ks, dOs, Vs, ldq, ldv, Ps, Ss, true);
    __syncthreads();
    for (int idx = threadIdx.x; idx < C * dv; idx += blockDim.x) {
      const int c = idx / dv, d = idx % dv;
      float acc = 0.f;
      for (int r = 0; r < R; ++r) acc += Ps[r * (tile + 1) + c] * dOs[r * ldv + d];
      dVs[c * ldv + d] += acc;
    }
    for (int idx = threadIdx.x; idx < C * dq; idx += blockDim.x) {
      const int c = idx / dq, d = idx % dq;
      float acc = 0.f;
      for (int r = 0; r < R; ++r) acc += Ss[r * (tile + 1) + c] * Qs[r * ldq + d];
      dKs[c * ldq + d] += static_cast<float>(p.alpha) * acc;
    }
  }
  __syncthreads();
  T* dk = static_cast<T*>(p.dk);
  T* dvo = static_cast<T*>(p.dv_out);
  for (int idx = threadIdx.x; idx < C * dq; idx += blockDim.x) {
    const int c = idx / dq, d = idx % dq;
    dk[((s + j0 + c) * H + h) * dq + d] = from_float<T>(dKs[c * ldq + d]);
  }
  for (int idx = threadIdx.x; idx < C * dv; idx += blockDim.x) {
    const int c = idx / dv, d = idx % dv;
    dvo[((s + j0 + c) * H + h) * dv + d] = from_float<T>(dVs[c * ldv + d]);
  }
}

template <typename T>
__global__ void hstu_bwd_dq_kernel(HstuBwdParams p, int tile) {
  extern __shared__ float sm[];
  const int64_t H = p.num_heads, b = blockIdx.y / H, h = blockIdx.y % H;
  int64_t s, n;
  HstuMask mk;
  if (!hstu_seq(p, b, s, n, mk)) return;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * tile;
  if (i0 >= n) return;
  const int R = static_cast<int>(n - i0 < tile ? n - i0 : tile);
  const int dq = static_cast<int>(p.dqk), dv = static_cast<int>(p.dv), ldq = dq + 1, ldv = dv + 1;
  float* Qs = sm;
  float* dOs = Qs + tile * ldq;
  float* dQs = dOs + tile * ldv;
  float* Ks = dQs + tile * ldq;
  float* Vs = Ks + tile * ldq;
  float* Ps = Vs + tile * ldv;
  float* Ss = Ps + tile * (tile + 1);
  load_rows(static_cast<const T*>(p.q), p.q_row, h * p.q_head, s + i0, R, dq, 1.f, Qs, ldq);
  load_rows(static_cast<const T*>(p.grad_out), H * dv, h * dv, s + i0, R, dv, 1.f, dOs, ldv);
  for (int idx = threadIdx.x; idx < tile * ldq; idx += blockDim.x) dQs[idx] = 0.f;
  const int64_t nkb = (n + tile - 1) / tile;
  for (int64_t kb = 0; kb < nkb; ++kb) {
    const int64_t j0 = kb * tile;
    const int C = static_cast<int>(n - j0 < tile ? n - j0 : tile);
    if (!mk.any(i0, i0 + R - 1, j0, j0 + C - 1)) continue;
    __syncthreads();
    load_rows(static_cast<const T*>(p.k), p.k_row, h * p.k_head, s + j0, C, dq, 1.f, Ks, ldq);
    load_rows(static_cast<const T*>(p.v), p.v_row, h * p.v_head, s + j0, C, dv, 1.f, Vs, ldv);
    __syncthreads();
    hstu_bwd_scores<T>(p, mk, s, n, i0, R, j0, C, tile, Qs, Ks, dOs, Vs, ldq, ldv, Ps, Ss, false);
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * dq; idx += blockDim.x) {
      const int r = idx / dq, d = idx % dq;
      float acc = 0.f;
      for (int c = 0; c < C; ++c) acc += Ss[r * (tile + 1) + c] * Ks[c * ldq + d];
      dQs[r * ldq + d] += static_cast<float>(p.alpha) * acc;
    }
  }
  __syncthreads();
  T* dqo = static_cast<T*>(p.dq);
  for (int idx = threadIdx.x; idx < R * dq; idx += blockDim.x) {
    const int r = idx / dq, d = idx % dq;
    dqo[((s + i0 + r) * H + h) * dq + d] = from_float<T>(dQs[r * ldq + d]);
  }
}

}  // namespace recops::cuda
