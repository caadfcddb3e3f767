// SPDX-License-Identifier: Apache-2.0
// Jagged softmax attention CUDA kernels (p.kind == kSoftmax; semantics in cpp/hstu/hstu_attention.h, search
// "Softmax attention"), float32 math for every storage dtype. Same tiling, mask and thread mapping as the HSTU
// kernels of hstu_kernels.cuh (one block per (query block or key block, sequence * head), tiles of `tile` rows
// in shared memory with the leading dimension padded by one float, tiles with no valid pair skipped
// block-uniformly, bad sequence data flagged through hstu_seq):
//   forward:      grid (query block, B*H): flash-style online softmax; per row the running maximum, sum and
//                 the current tile's rescale factor live in shared memory (one warp per row for the row
//                 reductions); out = O / l, lse = m + log(l) (float32 [L, H]; +inf and out 0 for a row with
//                 no allowed key)
//   backward dkv: grid (key block, B*H):   dV += (P * keep / (1 - p))^T dO, dK += alpha dS^T Q
//   backward dq:  grid (query block, B*H): dQ += alpha dS K
// with P = exp(alpha <q_i, k_j> - lse_i) on allowed keys (0 elsewhere and for a row whose lse is +inf),
// D_i = <dO_i, O_i> (computed per query tile from the stored forward output) and
// dS = P * (dO_i . v_j * keep / (1 - p) - D_i). Attention dropout regenerates the forward's counter-based mask
// (hstu/attention_dropout.h); the row keys of a query tile are kept in shared memory. Every dq/dk/dv row has
// one owner block (plain stores). Nothing of size N^2 is stored.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "common/cuda_check.cuh"
#include "common/dtype.cuh"
#include "hstu/attention_dropout.h"
#include "hstu/hstu_cuda.h"
#include "hstu/hstu_kernels.cuh"
#include "hstu/hstu_mask.h"

namespace recops::cuda {

// The dropout of one call: keep(i, j) = bits >= threshold, a kept probability scaled by inv_keep.
struct SoftmaxDropout {
  bool on;
  uint32_t threshold;
  float inv_keep;

  __device__ __forceinline__ static SoftmaxDropout make(const HstuFwdParams& p) {
    const bool on = p.dropout_p > 0.0;
    return SoftmaxDropout{on, on ? hstu::dropout_threshold(p.dropout_p) : 0u,
                          on ? static_cast<float>(1.0 / (1.0 - p.dropout_p)) : 1.f};
  }
  // keep(i, j) / (1 - p) for the row whose dropout_row_key is `key` (1 without dropout).
  __device__ __forceinline__ float scale(uint32_t key, int64_t j) const {
    if (!on) return 1.f;
    return hstu::dropout_bits(key, j) >= threshold ? inv_keep : 0.f;
  }
};

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <typename T>
__global__ void jagged_attn_fwd_kernel(HstuFwdParams p, int tile) {
  extern __shared__ float sm[];
  const int64_t H = p.num_heads, b = blockIdx.y / H, h = blockIdx.y % H;
  int64_t s, n;
  HstuMask mk;
  if (!hstu_seq(p, b, s, n, mk)) return;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * tile;
  if (i0 >= n) return;
  const int R = static_cast<int>(n - i0 < tile ? n - i0 : tile);
  const int dq = static_cast<int>(p.dqk), dv = static_cast<int>(p.dv), ldq = dq + 1, ldv = dv + 1;
  const int ldp = tile + 1;
  float* Qs = sm;
  float* Ks = Qs + tile * ldq;
  float* Vs = Ks + tile * ldq;
  float* Ps = Vs + tile * ldv;
  float* Os = Ps + tile * ldp;
  float* rmax = Os + tile * ldv;  // running row maximum (-inf while a row has no allowed key)
  float* rsum = rmax + tile;      // running row sum of exp(s - rmax), undropped
  float* rcorr = rsum + tile;     // this key tile's rescale factor of the row's accumulator
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const SoftmaxDropout drop = SoftmaxDropout::make(p);
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int nwarps = static_cast<int>(blockDim.x) >> 5;
  load_rows(q, p.q_row, h * p.q_head, s + i0, R, dq, static_cast<float>(p.alpha), Qs, ldq);
  for (int idx = threadIdx.x; idx < tile * ldv; idx += blockDim.x) Os[idx] = 0.f;
  for (int r = threadIdx.x; r < tile; r += blockDim.x) {
    rmax[r] = -INFINITY;
    rsum[r] = 0.f;
    rcorr[r] = 1.f;
  }
  const int64_t nkb = (n + tile - 1) / tile;
  for (int64_t kb = 0; kb < nkb; ++kb) {
    const int64_t j0 = kb * tile;
    const int C = static_cast<int>(n - j0 < tile ? n - j0 : tile);
    if (!mk.any(i0, i0 + R - 1, j0, j0 + C - 1)) continue;
    __syncthreads();
    load_rows(k, p.k_row, h * p.k_head, s + j0, C, dq, 1.f, Ks, ldq);
    load_rows(v, p.v_row, h * p.v_head, s + j0, C, dv, 1.f, Vs, ldv);
    __syncthreads();
    // scores (alpha is folded into Qs); -inf off the mask and past the last key
    for (int idx = threadIdx.x; idx < R * tile; idx += blockDim.x) {
      const int r = idx / tile, c = idx % tile;
      float val = -INFINITY;
      if (c < C && mk.valid(i0 + r, j0 + c)) {
        float acc = 0.f;
        for (int d = 0; d < dq; ++d) acc += Qs[r * ldq + d] * Ks[c * ldq + d];
        val = acc;
      }
      Ps[r * ldp + c] = val;
    }
    __syncthreads();
    // online softmax, one warp per row: Ps <- exp(s - m_new) * keep / (1 - p); sum and max updated
    for (int r = warp; r < R; r += nwarps) {
      float* prow = Ps + r * ldp;
      float mx = -INFINITY;
      for (int c = lane; c < C; c += 32) mx = fmaxf(mx, prow[c]);
      mx = warp_max(mx);
      const float m_old = rmax[r], m_new = fmaxf(m_old, mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;  // a row with no key yet: every exponent is -inf
      const uint32_t key = drop.on ? hstu::dropout_row_key(p.seed, b, h, i0 + r) : 0u;
      float sum = 0.f;
      for (int c = lane; c < C; c += 32) {
        const float e = expf(prow[c] - base);
        sum += e;
        prow[c] = e * drop.scale(key, j0 + c);
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float corr = expf(m_old - base);
        rsum[r] = rsum[r] * corr + sum;
        rmax[r] = m_new;
        rcorr[r] = corr;
      }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * dv; idx += blockDim.x) {
      const int r = idx / dv, d = idx % dv;
      float acc = 0.f;
      for (int c = 0; c < C; ++c) acc += Ps[r * ldp + c] * Vs[c * ldv + d];
      Os[r * ldv + d] = Os[r * ldv + d] * rcorr[r] + acc;
    }
  }
  __syncthreads();
  T* out = static_cast<T*>(p.out);
  float* lse = static_cast<float*>(p.lse);
  for (int idx = threadIdx.x; idx < R * dv; idx += blockDim.x) {
    const int r = idx / dv, d = idx % dv;
    const float l = rsum[r];
    out[((s + i0 + r) * H + h) * dv + d] = from_float<T>(l > 0.f ? Os[r * ldv + d] / l : 0.f);
  }
  for (int r = threadIdx.x; r < R; r += blockDim.x) {
    const float l = rsum[r];
    lse[(s + i0 + r) * H + h] = l > 0.f ? rmax[r] + logf(l) : INFINITY;
  }
}

// Per-row data of query tile [i0, i0 + R) for the backward: lse, D = <dO, O> (one warp per row, from global
// memory) and the dropout row keys. Call between the __syncthreads() that guard the tile's shared memory.
template <typename T>
__device__ void softmax_bwd_rows(const HstuBwdParams& p, const SoftmaxDropout& drop, int64_t b, int64_t h,
                                 int64_t s, int64_t i0, int R, float* Ls, float* Ds, uint32_t* keys) {
  const int64_t H = p.num_heads, dv = p.dv;
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int nwarps = static_cast<int>(blockDim.x) >> 5;
  const T* go = static_cast<const T*>(p.grad_out);
  const T* o = static_cast<const T*>(p.out);
  const float* lse = static_cast<const float*>(p.lse);
  for (int r = warp; r < R; r += nwarps) {
    const int64_t base = ((s + i0 + r) * H + h) * dv;
    float acc = 0.f;
    for (int64_t d = lane; d < dv; d += 32) acc += to_float(go[base + d]) * to_float(o[base + d]);
    acc = warp_sum(acc);
    if (lane == 0) {
      Ds[r] = acc;
      Ls[r] = lse[(s + i0 + r) * H + h];
      keys[r] = drop.on ? hstu::dropout_row_key(p.seed, b, h, i0 + r) : 0u;
    }
  }
}

// dS (into Ss) and, when Ps is non-null, P * keep / (1 - p) (into Ps) of one (query tile, key tile) pair;
// Qs holds alpha * q, so the scores are the forward's products in the forward's order. Entries off the mask,
// past the tile's rows or keys, or of a row whose lse is +inf are 0.
__device__ __forceinline__ void softmax_bwd_scores(const HstuBwdParams& p, const HstuMask& mk,
                                                   const SoftmaxDropout& drop, int64_t i0, int R, int64_t j0,
                                                   int C, int tile, const float* Qs, const float* Ks,
                                                   const float* dOs, const float* Vs, int ldq, int ldv,
                                                   const float* Ls, const float* Ds, const uint32_t* keys,
                                                   float* Ps, float* Ss) {
  const int dq = static_cast<int>(p.dqk), dv = static_cast<int>(p.dv);
  for (int idx = threadIdx.x; idx < tile * tile; idx += blockDim.x) {
    const int r = idx / tile, c = idx % tile;
    float pd = 0.f, ds = 0.f;
    if (r < R && c < C && Ls[r] != INFINITY && mk.valid(i0 + r, j0 + c)) {
      float sv = 0.f;
      for (int d = 0; d < dq; ++d) sv += Qs[r * ldq + d] * Ks[c * ldq + d];
      const float pv = expf(sv - Ls[r]);
      float dp = 0.f;
      for (int d = 0; d < dv; ++d) dp += dOs[r * ldv + d] * Vs[c * ldv + d];
      const float ks = drop.scale(keys[r], j0 + c);
      pd = pv * ks;
      ds = pv * (dp * ks - Ds[r]);
    }
    if (Ps) Ps[r * (tile + 1) + c] = pd;
    Ss[r * (tile + 1) + c] = ds;
  }
}

template <typename T>
__global__ void jagged_attn_bwd_dkv_kernel(HstuBwdParams p, int tile) {
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
  float* Ls = Ss + tile * (tile + 1);
  float* Ds = Ls + tile;
  uint32_t* keys = reinterpret_cast<uint32_t*>(Ds + tile);
  const SoftmaxDropout drop = SoftmaxDropout::make(p);
  const float alpha = static_cast<float>(p.alpha);
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
    load_rows(static_cast<const T*>(p.q), p.q_row, h * p.q_head, s + i0, R, dq, alpha, Qs, ldq);
    load_rows(static_cast<const T*>(p.grad_out), H * dv, h * dv, s + i0, R, dv, 1.f, dOs, ldv);
    softmax_bwd_rows<T>(p, drop, b, h, s, i0, R, Ls, Ds, keys);
    __syncthreads();
    softmax_bwd_scores(p, mk, drop, i0, R, j0, C, tile, Qs, Ks, dOs, Vs, ldq, ldv, Ls, Ds, keys, Ps, Ss);
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
      dKs[c * ldq + d] += acc;  // Qs holds alpha * q
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
__global__ void jagged_attn_bwd_dq_kernel(HstuBwdParams p, int tile) {
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
  float* Ss = Vs + tile * ldv;
  float* Ls = Ss + tile * (tile + 1);
  float* Ds = Ls + tile;
  uint32_t* keys = reinterpret_cast<uint32_t*>(Ds + tile);
  const SoftmaxDropout drop = SoftmaxDropout::make(p);
  const float alpha = static_cast<float>(p.alpha);
  load_rows(static_cast<const T*>(p.q), p.q_row, h * p.q_head, s + i0, R, dq, alpha, Qs, ldq);
  load_rows(static_cast<const T*>(p.grad_out), H * dv, h * dv, s + i0, R, dv, 1.f, dOs, ldv);
  softmax_bwd_rows<T>(p, drop, b, h, s, i0, R, Ls, Ds, keys);
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
    softmax_bwd_scores(p, mk, drop, i0, R, j0, C, tile, Qs, Ks, dOs, Vs, ldq, ldv, Ls, Ds, keys, nullptr, Ss);
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * dq; idx += blockDim.x) {
      const int r = idx / dq, d = idx % dq;
      float acc = 0.f;
      for (int c = 0; c < C; ++c) acc += Ss[r * (tile + 1) + c] * Ks[c * ldq + d];
      dQs[r * ldq + d] += alpha * acc;
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
