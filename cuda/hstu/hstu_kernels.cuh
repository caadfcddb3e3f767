// SPDX-License-Identifier: Apache-2.0
// The CUDA kernels of both jagged attention ops (float32 math for every storage dtype), written once and
// templated on the storage dtype T and the kind (semantics: cpp/hstu/hstu_attention.h):
//   kSoftmax = false: HSTU's pointwise attention, P = scale_i * SiLU(alpha <q_i, k_j> + bias_ij) on allowed pairs
//   kSoftmax = true:  softmax attention (jagged_attention), P = softmax_j(alpha <q_i, k_j>) * keep_ij / (1 - p)
// The tiling, mask, sequence checks, tile loads and small products are shared; the kind-specific parts are the
// small policies SiluFwd / SoftmaxFwd and SiluBwd / SoftmaxBwd (the CPU side's fwd_task / bwd_task<kSoftmax>
// pattern of cpp/hstu/hstu_fwd_impl.h and hstu_bwd_impl.h).
//
// Thread mapping: one block per (own tile, sequence * head); the own tile is a query tile (forward, backward
// dq) or a key tile (backward dkv) of `tile` rows. Tiles are staged in shared memory (leading dimension padded
// by one float against bank conflicts; layout attn_smem). Score entries are spread over the block's threads
// (each thread owns entries idx = tid, tid + blockDim, ...), so are the output entries of the small products;
// partner tiles with no valid pair are skipped block-uniformly.
//   forward:      grid (query block, B*H)
//                 SiLU:    O += P V, out = scale_i * O
//                 softmax: flash-style online softmax; per row the running maximum, sum and the current tile's
//                          rescale factor live in shared memory (one warp per row for the row reductions);
//                          out = O / l, lse = m + log(l) (float32 [L, H]; +inf and out 0 for a row with no
//                          allowed key)
//   backward dkv: grid (key block, B*H):   dV += P^T dO, dK += alpha dS^T Q; SiLU bias grads by atomicAdd
//   backward dq:  grid (query block, B*H): dQ += alpha dS K
// Backward dS: SiLU:    dS = (dO_i . v_j) * scale_i * SiLU'(s_ij)
//              softmax: P = exp(alpha <q_i, k_j> - lse_i) (0 for a row whose lse is +inf), D_i = <dO_i, O_i>
//                       (from the stored forward output), dS = P * (dO_i . v_j * keep / (1 - p) - D_i), and
//                       dV uses P * keep / (1 - p). Attention dropout regenerates the forward's counter-based
//                       mask (hstu/attention_dropout.h) from row keys kept per query tile in shared memory.
// Scores are recomputed in the backward; nothing of size N^2 is stored. Every output row has one owner block
// (plain stores); only the SiLU bias gradients are shared (float32 atomics).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/cuda_check.cuh"
#include "common/dtype.cuh"
#include "hstu/attention_dropout.h"
#include "hstu/hstu_cuda.h"
#include "hstu/hstu_mask.h"

namespace recops::cuda {

using hstu::HstuBwdParams;
using hstu::HstuFwdParams;
using hstu::HstuMask;

// ---------------------------------------------------------------------------------------------------------
// shared machinery: shared-memory layout, the block's sequence and tiles, loads, products, stores

enum class AttnPass { kFwd, kBwdKV, kBwdQ };

// Offsets (in floats) of a block's shared-memory tiles; -1 for a tile the pass does not use. q, k: dqk wide;
// v, dout: dv wide; p, s: score tiles (tile + 1 wide); acc_qk (dK or dQ) and acc_v (O or dV): the
// accumulators of the own tile; rows: per-row floats of the query tile (softmax: 3).
struct AttnSmem {
  int64_t q, k, v, dout, p, s, acc_qk, acc_v, rows, total;
};

// The layout of one block of `pass`: sizes the launch on the host and carves the tiles on the device.
__host__ __device__ inline AttnSmem attn_smem(AttnPass pass, bool softmax, int64_t tile, int64_t dqk,
                                              int64_t dv) {
  const bool fwd = pass == AttnPass::kFwd, dkv = pass == AttnPass::kBwdKV;
  const int64_t qk_tile = tile * (dqk + 1), v_tile = tile * (dv + 1), s_tile = tile * (tile + 1);
  const int64_t sizes[9] = {qk_tile,
                            qk_tile,
                            v_tile,
                            fwd ? 0 : v_tile,
                            fwd || dkv ? s_tile : 0,
                            fwd ? 0 : s_tile,
                            fwd ? 0 : qk_tile,
                            fwd || dkv ? v_tile : 0,
                            softmax ? 3 * tile : 0};
  int64_t offs[9];
  int64_t at = 0;
  for (int t = 0; t < 9; ++t) {
    offs[t] = sizes[t] ? at : -1;
    at += sizes[t];
  }
  return AttnSmem{offs[0], offs[1], offs[2], offs[3], offs[4], offs[5], offs[6], offs[7], offs[8], at};
}

__host__ __device__ __forceinline__ int tile_rows(int64_t n, int64_t first, int tile) {
  return static_cast<int>(n - first < tile ? n - first : tile);
}

// One block: its sequence and head, its own tile [x0, x0 + X) and its shared-memory tiles (null where absent).
struct AttnBlock {
  int64_t H, b, h, s, n, x0;
  int X, tile, dq, dv, ldq, ldv, ldp;
  HstuMask mk;
  float *Q, *K, *V, *dO, *P, *S, *accQK, *accV, *rows;
};

// Sequence bounds and mask of sequence b; false (and error bits set) when the sequence's data are invalid.
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
  mk = HstuMask::make(p.contextual_len, p.max_attn_len, n, nt, p.causal, p.min_full_attn_seq_len);
  return true;
}

__device__ __forceinline__ float* smem_tile(float* sm, int64_t off) { return off < 0 ? nullptr : sm + off; }

// The own tile at row x0 of block blockIdx.x (= sequence * H + head) in `pass`; false when it has no rows (or its
// sequence is invalid), and then no later tile of the block has any either.
template <AttnPass kPass, bool kSoftmax>
__device__ __forceinline__ bool attn_block(const HstuFwdParams& p, int tile, AttnBlock& blk, int64_t x0) {
  extern __shared__ float sm[];
  blk.H = p.num_heads;
  blk.b = blockIdx.x / blk.H;
  blk.h = blockIdx.x % blk.H;
  if (!hstu_seq(p, blk.b, blk.s, blk.n, blk.mk)) return false;
  blk.x0 = x0;
  if (blk.x0 >= blk.n) return false;
  blk.X = tile_rows(blk.n, blk.x0, tile);
  blk.tile = tile;
  blk.dq = static_cast<int>(p.dqk);
  blk.dv = static_cast<int>(p.dv);
  blk.ldq = blk.dq + 1;
  blk.ldv = blk.dv + 1;
  blk.ldp = tile + 1;
  const AttnSmem L = attn_smem(kPass, kSoftmax, tile, p.dqk, p.dv);
  blk.Q = smem_tile(sm, L.q);
  blk.K = smem_tile(sm, L.k);
  blk.V = smem_tile(sm, L.v);
  blk.dO = smem_tile(sm, L.dout);
  blk.P = smem_tile(sm, L.p);
  blk.S = smem_tile(sm, L.s);
  blk.accQK = smem_tile(sm, L.acc_qk);
  blk.accV = smem_tile(sm, L.acc_v);
  blk.rows = smem_tile(sm, L.rows);
  return true;
}

// Grid: x = sequence * head, y = a stride over the own tiles (the launcher caps gridDim.y, so a loose max_seq_len
// costs no idle blocks): body(blk) for the own tiles at rows blockIdx.y * tile, (blockIdx.y + gridDim.y) * tile, ...
template <AttnPass kPass, bool kSoftmax, typename Body>
__device__ __forceinline__ void for_own_tiles(const HstuFwdParams& p, int tile, Body&& body) {
  for (int64_t x0 = static_cast<int64_t>(blockIdx.y) * tile;; x0 += static_cast<int64_t>(gridDim.y) * tile) {
    AttnBlock blk;
    if (!attn_block<kPass, kSoftmax>(p, tile, blk, x0)) return;
    body(blk);
    __syncthreads();  // the next own tile reuses the shared memory
  }
}

// body(t0, count) for every partner tile [t0, t0 + count) holding a valid pair with the own tile (key tiles
// when the own tile is a query tile, else query tiles), in increasing order; block-uniform.
template <bool kOwnQuery, typename Body>
__device__ __forceinline__ void for_partner_tiles(const AttnBlock& blk, Body&& body) {
  const int64_t x1 = blk.x0 + blk.X - 1;
  for (int64_t t0 = 0; t0 < blk.n; t0 += blk.tile) {
    const int cnt = tile_rows(blk.n, t0, blk.tile);
    const bool any = kOwnQuery ? blk.mk.any(blk.x0, x1, t0, t0 + cnt - 1) : blk.mk.any(t0, t0 + cnt - 1, blk.x0, x1);
    if (any) body(t0, cnt);
  }
}

template <typename T>
__device__ __forceinline__ void load_rows(const T* base, int64_t row_stride, int64_t head_off, int64_t first,
                                          int rows, int64_t dim, float mul, float* dst, int ld) {
  for (int idx = threadIdx.x; idx < rows * dim; idx += blockDim.x) {
    const int r = idx / dim, d = idx % dim;
    dst[r * ld + d] = mul * to_float(base[(first + r) * row_stride + head_off + d]);
  }
}

// Rows [j0, j0 + C) of k and v into blk.K, blk.V.
template <typename T>
__device__ __forceinline__ void load_keys(const HstuFwdParams& p, const AttnBlock& blk, int64_t j0, int C) {
  load_rows(static_cast<const T*>(p.k), p.k_row, blk.h * p.k_head, blk.s + j0, C, blk.dq, 1.f, blk.K, blk.ldq);
  load_rows(static_cast<const T*>(p.v), p.v_row, blk.h * p.v_head, blk.s + j0, C, blk.dv, 1.f, blk.V, blk.ldv);
}

// Rows [i0, i0 + R) of q_mul * q and of dout into blk.Q, blk.dO.
template <typename T>
__device__ __forceinline__ void load_queries(const HstuBwdParams& p, const AttnBlock& blk, int64_t i0, int R,
                                             float q_mul) {
  load_rows(static_cast<const T*>(p.q), p.q_row, blk.h * p.q_head, blk.s + i0, R, blk.dq, q_mul, blk.Q, blk.ldq);
  load_rows(static_cast<const T*>(p.grad_out), blk.H * blk.dv, blk.h * blk.dv, blk.s + i0, R, blk.dv, 1.f, blk.dO,
            blk.ldv);
}

__device__ __forceinline__ void zero_floats(float* x, int count) {
  for (int idx = threadIdx.x; idx < count; idx += blockDim.x) x[idx] = 0.f;
}

__device__ __forceinline__ float dot_rows(const float* a, const float* b, int dim) {
  float acc = 0.f;
  for (int d = 0; d < dim; ++d) acc += a[d] * b[d];
  return acc;
}

// C[m, d] = upd(m, C[m, d], sum_k A(m, k) B[k, d]) for m < M, d < D, k < K, with A(m, k) = A[m * lda + k]
// (kTransA: A[k * lda + m]).
template <bool kTransA, typename Upd>
__device__ __forceinline__ void tile_product(int M, int K, int D, const float* A, int lda, const float* B, int ldb,
                                             float* C, int ldc, Upd&& upd) {
  for (int idx = threadIdx.x; idx < M * D; idx += blockDim.x) {
    const int m = idx / D, d = idx % D;
    float acc = 0.f;
    for (int k = 0; k < K; ++k) acc += (kTransA ? A[k * lda + m] : A[m * lda + k]) * B[k * ldb + d];
    C[m * ldc + d] = upd(m, C[m * ldc + d], acc);
  }
}

// dst[((s + x0 + r) * H + h) * dim + d] = f(r, src[r * ld + d]) for the own tile's rows r < X.
template <typename T, typename F>
__device__ __forceinline__ void store_rows(void* dst, const AttnBlock& blk, int dim, const float* src, int ld,
                                           F&& f) {
  T* out = static_cast<T*>(dst);
  for (int idx = threadIdx.x; idx < blk.X * dim; idx += blockDim.x) {
    const int r = idx / dim, d = idx % dim;
    out[((blk.s + blk.x0 + r) * blk.H + blk.h) * dim + d] = from_float<T>(f(r, src[r * ld + d]));
  }
}

__device__ __forceinline__ float keep_value(int, float v) { return v; }

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// ---------------------------------------------------------------------------------------------------------
// the kinds

// HSTU: the bias of pair (i, j) of the sequence (local rows) and its time bucket.
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

// Softmax: the dropout of one call, keep(i, j) = bits >= threshold, a kept probability scaled by inv_keep.
struct SoftmaxDropout {
  bool on;
  uint32_t threshold;
  float inv_keep;

  __device__ __forceinline__ static SoftmaxDropout make(const HstuFwdParams& p) {
    const bool on = p.dropout_p > 0.0;
    return SoftmaxDropout{on, on ? hstu::dropout_threshold(p.dropout_p) : 0u,
                          on ? static_cast<float>(1.0 / (1.0 - p.dropout_p)) : 1.f};
  }
  __device__ __forceinline__ uint32_t row_key(const HstuFwdParams& p, const AttnBlock& blk, int64_t i) const {
    return on ? hstu::dropout_row_key(p.seed, blk.b, blk.h, i) : 0u;
  }
  // keep(i, j) / (1 - p) for the row whose dropout_row_key is `key` (1 without dropout).
  __device__ __forceinline__ float scale(uint32_t key, int64_t j) const {
    if (!on) return 1.f;
    return hstu::dropout_bits(key, j) >= threshold ? inv_keep : 0.f;
  }
};

// Forward policies. off(): the score tile's entry off the mask; score(): an allowed entry from the
// (alpha-scaled) product; normalize(): the kind's pass over the tile's scores before P V (ends with a
// barrier where it writes); accumulate(): the O update; out(): the stored row of O; finish(): extra outputs.
template <typename T>
struct SiluFwd {
  __device__ __forceinline__ SiluFwd(const HstuFwdParams&, const AttnBlock&) {}
  __device__ __forceinline__ static float off() { return 0.f; }
  __device__ __forceinline__ float score(const HstuFwdParams& p, const AttnBlock& blk, int64_t i, int64_t j,
                                         float dot) const {
    int64_t bucket = 0;
    const float sv = dot + bias_at<T>(p, blk.s, blk.n, i, j, &bucket);
    return sv / (1.f + __expf(-sv));
  }
  __device__ __forceinline__ void normalize(const HstuFwdParams&, const AttnBlock&, int64_t, int) const {}
  __device__ __forceinline__ float accumulate(int, float o, float acc) const { return o + acc; }
  __device__ __forceinline__ float out(const HstuFwdParams& p, const AttnBlock& blk, int r, float o) const {
    return row_scale_at<T>(p, blk.s + blk.x0 + r) * o;
  }
  __device__ __forceinline__ void finish(const HstuFwdParams&, const AttnBlock&) const {}
};

struct SoftmaxFwd {
  float* rmax;   // running row maximum (-inf while a row has no allowed key)
  float* rsum;   // running row sum of exp(s - rmax), undropped
  float* rcorr;  // this key tile's rescale factor of the row's accumulator
  SoftmaxDropout drop;

  __device__ __forceinline__ SoftmaxFwd(const HstuFwdParams& p, const AttnBlock& blk)
      : rmax(blk.rows), rsum(blk.rows + blk.tile), rcorr(blk.rows + 2 * blk.tile), drop(SoftmaxDropout::make(p)) {
    for (int r = threadIdx.x; r < blk.tile; r += blockDim.x) {
      rmax[r] = -INFINITY;
      rsum[r] = 0.f;
      rcorr[r] = 1.f;
    }
  }
  __device__ __forceinline__ static float off() { return -INFINITY; }
  __device__ __forceinline__ float score(const HstuFwdParams&, const AttnBlock&, int64_t, int64_t, float dot) const {
    return dot;
  }
  // Online softmax, one warp per row: P <- exp(s - m_new) * keep / (1 - p); sum and max updated.
  __device__ __forceinline__ void normalize(const HstuFwdParams& p, const AttnBlock& blk, int64_t j0, int C) const {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    const int nwarps = static_cast<int>(blockDim.x) >> 5;
    for (int r = warp; r < blk.X; r += nwarps) {
      float* prow = blk.P + r * blk.ldp;
      float mx = -INFINITY;
      for (int c = lane; c < C; c += 32) mx = fmaxf(mx, prow[c]);
      mx = warp_max(mx);
      const float m_old = rmax[r], m_new = fmaxf(m_old, mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;  // a row with no key yet: every exponent is -inf
      const uint32_t key = drop.row_key(p, blk, blk.x0 + r);
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
  }
  __device__ __forceinline__ float accumulate(int r, float o, float acc) const { return o * rcorr[r] + acc; }
  __device__ __forceinline__ float out(const HstuFwdParams&, const AttnBlock&, int r, float o) const {
    const float l = rsum[r];
    return l > 0.f ? o / l : 0.f;
  }
  // lse = m + log(l), +inf for a row with no allowed key.
  __device__ __forceinline__ void finish(const HstuFwdParams& p, const AttnBlock& blk) const {
    float* lse = static_cast<float*>(p.lse);
    for (int r = threadIdx.x; r < blk.X; r += blockDim.x) {
      const float l = rsum[r];
      lse[(blk.s + blk.x0 + r) * blk.H + blk.h] = l > 0.f ? rmax[r] + logf(l) : INFINITY;
    }
  }
};

// Backward policies. q_mul(): the factor of q in blk.Q; dk_mul(): of dS^T Q in dK; load(): per-row data of
// query tile [i0, i0 + R) (between the barriers that guard the tile); live(r): whether row r has any
// probability; grad(): P (as dV uses it) and dS of an allowed entry from the products <Q_r, k_j> and
// <dO_r, v_j>, plus (kKeys, the dkv pass) the SiLU bias gradients.
template <typename T>
struct SiluBwd {
  __device__ __forceinline__ SiluBwd(const HstuBwdParams&, const AttnBlock&) {}
  __device__ __forceinline__ static float q_mul(const HstuBwdParams&) { return 1.f; }  // alpha on the product
  __device__ __forceinline__ static float dk_mul(const HstuBwdParams& p) { return static_cast<float>(p.alpha); }
  __device__ __forceinline__ void load(const HstuBwdParams&, const AttnBlock&, int64_t, int) const {}
  __device__ __forceinline__ bool live(int) const { return true; }
  template <bool kKeys>
  __device__ __forceinline__ void grad(const HstuBwdParams& p, const AttnBlock& blk, int64_t i, int64_t j, int,
                                       float dot, float dp, float& pv, float& ds) const {
    int64_t bucket = 0;
    const float sv = dot * static_cast<float>(p.alpha) + bias_at<T>(p, blk.s, blk.n, i, j, &bucket);
    const float sig = 1.f / (1.f + __expf(-sv));
    const float sc = row_scale_at<T>(p, blk.s + i);
    pv = sv * sig * sc;
    ds = dp * sig * (1.f + sv * (1.f - sig)) * sc;
    if constexpr (kKeys) {
      float* dpos = static_cast<float*>(p.d_pos_bias);
      if (dpos) atomicAdd(dpos + (p.max_seq_len - 1) + j - i, ds);
      if (p.d_time_bias) atomicAdd(static_cast<float*>(p.d_time_bias) + bucket, ds);
    }
  }
};

template <typename T>
struct SoftmaxBwd {
  float* Ls;       // the query tile's lse
  float* Ds;       // D = <dO, O>
  uint32_t* keys;  // dropout row keys
  SoftmaxDropout drop;

  __device__ __forceinline__ SoftmaxBwd(const HstuBwdParams& p, const AttnBlock& blk)
      : Ls(blk.rows),
        Ds(blk.rows + blk.tile),
        keys(reinterpret_cast<uint32_t*>(blk.rows + 2 * blk.tile)),
        drop(SoftmaxDropout::make(p)) {}
  __device__ __forceinline__ static float q_mul(const HstuBwdParams& p) { return static_cast<float>(p.alpha); }
  __device__ __forceinline__ static float dk_mul(const HstuBwdParams&) { return 1.f; }  // Q holds alpha * q
  // lse, D = <dO, O> (one warp per row, from global memory) and the dropout row keys.
  __device__ __forceinline__ void load(const HstuBwdParams& p, const AttnBlock& blk, int64_t i0, int R) const {
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    const int nwarps = static_cast<int>(blockDim.x) >> 5;
    const T* go = static_cast<const T*>(p.grad_out);
    const T* o = static_cast<const T*>(p.out);
    const float* lse = static_cast<const float*>(p.lse);
    for (int r = warp; r < R; r += nwarps) {
      const int64_t row = (blk.s + i0 + r) * blk.H + blk.h, base = row * blk.dv;
      float acc = 0.f;
      for (int64_t d = lane; d < blk.dv; d += 32) acc += to_float(go[base + d]) * to_float(o[base + d]);
      acc = warp_sum(acc);
      if (lane == 0) {
        Ds[r] = acc;
        Ls[r] = lse[row];
        keys[r] = drop.row_key(p, blk, i0 + r);
      }
    }
  }
  __device__ __forceinline__ bool live(int r) const { return Ls[r] != INFINITY; }
  template <bool kKeys>
  __device__ __forceinline__ void grad(const HstuBwdParams&, const AttnBlock&, int64_t, int64_t j, int r, float dot,
                                       float dp, float& pv, float& ds) const {
    const float pr = expf(dot - Ls[r]);
    const float ks = drop.scale(keys[r], j);
    pv = pr * ks;
    ds = pr * (dp * ks - Ds[r]);
  }
};

template <typename T, bool kSoftmax>
using FwdKind = std::conditional_t<kSoftmax, SoftmaxFwd, SiluFwd<T>>;
template <typename T, bool kSoftmax>
using BwdKind = std::conditional_t<kSoftmax, SoftmaxBwd<T>, SiluBwd<T>>;

// ---------------------------------------------------------------------------------------------------------
// the kernels: each loops over its own tiles (for_own_tiles) and runs one of these per tile

template <typename T, bool kSoftmax>
__device__ __forceinline__ void fwd_tile(const HstuFwdParams& p, int tile, AttnBlock& blk);
template <typename T, bool kSoftmax>
__device__ __forceinline__ void bwd_dkv_tile(const HstuBwdParams& p, int tile, AttnBlock& blk);
template <typename T, bool kSoftmax>
__device__ __forceinline__ void bwd_dq_tile(const HstuBwdParams& p, int tile, AttnBlock& blk);

template <typename T, bool kSoftmax>
__global__ void attn_fwd_kernel(HstuFwdParams p, int tile) {
  for_own_tiles<AttnPass::kFwd, kSoftmax>(p, tile, [&](AttnBlock& blk) { fwd_tile<T, kSoftmax>(p, tile, blk); });
}

template <typename T, bool kSoftmax>
__device__ __forceinline__ void fwd_tile(const HstuFwdParams& p, int tile, AttnBlock& blk) {
  const FwdKind<T, kSoftmax> kind(p, blk);
  const int64_t i0 = blk.x0;
  const int R = blk.X;
  load_rows(static_cast<const T*>(p.q), p.q_row, blk.h * p.q_head, blk.s + i0, R, blk.dq,
            static_cast<float>(p.alpha), blk.Q, blk.ldq);
  zero_floats(blk.accV, tile * blk.ldv);
  for_partner_tiles<true>(blk, [&](int64_t j0, int C) {
    __syncthreads();
    load_keys<T>(p, blk, j0, C);
    __syncthreads();
    for (int idx = threadIdx.x; idx < R * tile; idx += blockDim.x) {
      const int r = idx / tile, c = idx % tile;
      float val = kind.off();
      if (c < C && blk.mk.valid(i0 + r, j0 + c)) {
        val = kind.score(p, blk, i0 + r, j0 + c, dot_rows(blk.Q + r * blk.ldq, blk.K + c * blk.ldq, blk.dq));
      }
      blk.P[r * blk.ldp + c] = val;
    }
    __syncthreads();
    kind.normalize(p, blk, j0, C);
    tile_product<false>(R, C, blk.dv, blk.P, blk.ldp, blk.V, blk.ldv, blk.accV, blk.ldv,
                        [&](int r, float o, float acc) { return kind.accumulate(r, o, acc); });
  });
  __syncthreads();
  store_rows<T>(p.out, blk, blk.dv, blk.accV, blk.ldv, [&](int r, float o) { return kind.out(p, blk, r, o); });
  kind.finish(p, blk);
}

// dS (into blk.S) and, for the dkv pass (kKeys), P as dV uses it (into blk.P) of one (query tile, key tile)
// pair. Entries off the mask, past the tile's rows or keys, or of a row that is not live are 0.
template <bool kKeys, typename Kind>
__device__ __forceinline__ void bwd_scores(const HstuBwdParams& p, const AttnBlock& blk, const Kind& kind,
                                           int64_t i0, int R, int64_t j0, int C) {
  const int tile = blk.tile;
  for (int idx = threadIdx.x; idx < tile * tile; idx += blockDim.x) {
    const int r = idx / tile, c = idx % tile;
    float pv = 0.f, ds = 0.f;
    if (r < R && c < C && kind.live(r) && blk.mk.valid(i0 + r, j0 + c)) {
      const float dot = dot_rows(blk.Q + r * blk.ldq, blk.K + c * blk.ldq, blk.dq);
      const float dp = dot_rows(blk.dO + r * blk.ldv, blk.V + c * blk.ldv, blk.dv);
      kind.template grad<kKeys>(p, blk, i0 + r, j0 + c, r, dot, dp, pv, ds);
    }
    if constexpr (kKeys) blk.P[r * blk.ldp + c] = pv;
    blk.S[r * blk.ldp + c] = ds;
  }
}

template <typename T, bool kSoftmax>
__global__ void attn_bwd_dkv_kernel(HstuBwdParams p, int tile) {
  for_own_tiles<AttnPass::kBwdKV, kSoftmax>(p, tile, [&](AttnBlock& blk) { bwd_dkv_tile<T, kSoftmax>(p, tile, blk); });
}

template <typename T, bool kSoftmax>
__device__ __forceinline__ void bwd_dkv_tile(const HstuBwdParams& p, int tile, AttnBlock& blk) {
  const BwdKind<T, kSoftmax> kind(p, blk);
  const float dk_mul = kind.dk_mul(p);
  load_keys<T>(p, blk, blk.x0, blk.X);
  zero_floats(blk.accQK, tile * blk.ldq);
  zero_floats(blk.accV, tile * blk.ldv);
  for_partner_tiles<false>(blk, [&](int64_t i0, int R) {
    __syncthreads();
    load_queries<T>(p, blk, i0, R, kind.q_mul(p));
    kind.load(p, blk, i0, R);
    __syncthreads();
    bwd_scores<true>(p, blk, kind, i0, R, blk.x0, blk.X);
    __syncthreads();
    tile_product<true>(blk.X, R, blk.dv, blk.P, blk.ldp, blk.dO, blk.ldv, blk.accV, blk.ldv,
                       [](int, float o, float acc) { return o + acc; });
    tile_product<true>(blk.X, R, blk.dq, blk.S, blk.ldp, blk.Q, blk.ldq, blk.accQK, blk.ldq,
                       [dk_mul](int, float o, float acc) { return o + dk_mul * acc; });
  });
  __syncthreads();
  store_rows<T>(p.dk, blk, blk.dq, blk.accQK, blk.ldq, keep_value);
  store_rows<T>(p.dv_out, blk, blk.dv, blk.accV, blk.ldv, keep_value);
}

template <typename T, bool kSoftmax>
__global__ void attn_bwd_dq_kernel(HstuBwdParams p, int tile) {
  for_own_tiles<AttnPass::kBwdQ, kSoftmax>(p, tile, [&](AttnBlock& blk) { bwd_dq_tile<T, kSoftmax>(p, tile, blk); });
}

template <typename T, bool kSoftmax>
__device__ __forceinline__ void bwd_dq_tile(const HstuBwdParams& p, int tile, AttnBlock& blk) {
  const BwdKind<T, kSoftmax> kind(p, blk);
  load_queries<T>(p, blk, blk.x0, blk.X, kind.q_mul(p));
  kind.load(p, blk, blk.x0, blk.X);
  zero_floats(blk.accQK, tile * blk.ldq);
  const float alpha = static_cast<float>(p.alpha);
  for_partner_tiles<true>(blk, [&](int64_t j0, int C) {
    __syncthreads();
    load_keys<T>(p, blk, j0, C);
    __syncthreads();
    bwd_scores<false>(p, blk, kind, blk.x0, blk.X, j0, C);
    __syncthreads();
    tile_product<false>(blk.X, C, blk.dq, blk.S, blk.ldp, blk.K, blk.ldq, blk.accQK, blk.ldq,
                        [alpha](int, float o, float acc) { return o + alpha * acc; });
  });
  __syncthreads();
  store_rows<T>(p.dq, blk, blk.dq, blk.accQK, blk.ldq, keep_value);
}

}  // namespace recops::cuda
