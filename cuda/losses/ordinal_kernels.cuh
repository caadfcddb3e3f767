// SPDX-License-Identifier: Apache-2.0
// Kernels of the ordinal-logistic losses.
//
// Thread mapping: one thread per sample (kLossThreads per block). A thread builds its sample's logits z,
// writes its loss / per-sample gradient, and takes part in one fixed-tree block reduction per partial sum
// (loss, then each d threshold / d gamma), whose result goes to workspace[block, p]. A one-block finalize
// kernel adds the block partials in a fixed order. kT > 0 keeps z in registers (T up to 8); kT = 0 is the
// generic path, which recomputes the prefix sum z_t (O(T^2) per sample, for the rare T > 8).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "common/cuda_check.cuh"
#include "common/dtype.cuh"

namespace recops::cuda {


// Accurate (non-intrinsic) functions throughout: the losses must keep their tails.
__device__ __forceinline__ float softplus_f(float x) { return fmaxf(x, 0.f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float sigmoid_f(float x) {
  const float e = expf(-fabsf(x));
  return (x >= 0.f ? 1.f : e) / (1.f + e);
}

// The cumulative-link terms of one sample at level k (see cpp/losses/ordinal.h): loss() and dz(t) given an
// accessor z(t) for t < min(k + 1, T).
struct SampleTerms {
  int k, num_levels;
  bool nested;
  float mult, da, db;  // the pair term log(sigmoid(z_{k-1}) - sigmoid(z_k)): weight, dL/dz_{k-1}, dL/dz_k

  template <typename ZFn>
  __device__ float loss(const ZFn& z, float min_gap) {
    const int t_max = num_levels;
    da = db = 0.f;
    if (t_max == 0) return 0.f;
    if (k == 0) return (nested ? float(t_max) : 1.f) * softplus_f(z(0));
    float l = 0.f;
    for (int s = nested ? 1 : (k == t_max ? k : k + 1); s <= k; ++s) l += softplus_f(-z(s - 1));
    if (k < t_max) {
      mult = nested ? float(t_max - k) : 1.f;
      const float a = z(k - 1), b = z(k), gap = a - b, d = fmaxf(gap, min_gap);
      float l1m, inv;
      if (d < 0.6931471805599453f) {
        const float em = expm1f(-d);
        l1m = logf(-em);
        inv = (1.f + em) / -em;
      } else {
        const float e = expf(-d);
        l1m = log1pf(-e);
        inv = e / (1.f - e);
      }
      if (!(gap >= min_gap)) inv = 0.f;  // clamped: the frozen log1mexp term passes no gradient
      l += mult * (softplus_f(-a) + softplus_f(b) - l1m);
      da = -mult * (sigmoid_f(-a) + inv);
      db = mult * (sigmoid_f(b) + inv);
    }
    return l;
  }

  __device__ float dz(int t, float zt) const {
    if (num_levels == 0 || t > k) return 0.f;
    if (k == 0) return (nested ? float(num_levels) : 1.f) * sigmoid_f(zt);
    float g = 0.f;
    if (t < k && (nested || (k == num_levels && t == k - 1))) g = -sigmoid_f(-zt);
    if (t == k - 1) g += da;
    if (t == k) g += db;
    return g;
  }
};

// Sum of v over the block (fixed shuffle tree, then warp 0 over the warp sums); the result is valid in
// thread 0. Every thread of the block must call it.
__device__ __forceinline__ float block_sum(float v, float* smem) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // smem may still be read by the previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = threadIdx.x < (blockDim.x >> 5) ? smem[threadIdx.x] : 0.f;
  if (warp == 0) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  }
  return v;
}

// The kernels read the shared fields of the call's parameters (cpp/losses/losses_params.h) by value.
using LossCommon = losses::LossParams;
using losses::Reduction;

// Sample b's label into *k; false for a thread past the batch or (with kErrBadIndex) a label outside [0, hi].
__device__ __forceinline__ bool load_label(const int64_t* __restrict__ labels, int64_t b, int hi,
                                           const LossCommon& c, int* k) {
  *k = 0;
  if (b >= c.num_samples) return false;
  const int64_t label = labels[b];
  if (label < 0 || label > hi) {
    atomicOr(c.error_flag, kErrBadIndex);
    return false;
  }
  *k = static_cast<int>(label);
  return true;
}

// Writes the weighted loss l (reduction none) or block-reduces it into part[0]; returns the per-sample gradient
// multiplier m_b = w_b * grad_loss_b * (1/B for mean). Every thread of the block must call it.
template <typename in_t>
__device__ __forceinline__ float store_loss(float l, float w, bool valid, int64_t b, const in_t* grad_loss,
                                            in_t* loss, float* part, const LossCommon& c, float* smem) {
  if (c.reduction == Reduction::kNone) {
    if (valid) loss[b] = from_float<in_t>(l);
  } else {
    const float s = block_sum(l, smem);
    if (threadIdx.x == 0) part[0] = s;
  }
  const float inv_b = c.reduction == Reduction::kMean ? 1.f / float(c.num_samples) : 1.f;
  return valid ? w * inv_b * (grad_loss ? to_float(grad_loss[b * c.grad_loss_stride]) : 1.f) : 0.f;
}

template <int kT, typename in_t>
__global__ void ordinal_logistic_loss_kernel(const in_t* __restrict__ scores, const in_t* __restrict__ thresholds,
                                             int num_thresholds, const int64_t* __restrict__ labels,
                                             const in_t* __restrict__ weights, const in_t* __restrict__ grad_loss,
                                             in_t* __restrict__ loss, in_t* __restrict__ grad_scores,
                                             LossCommon c) {
  __shared__ float smem[32];
  const int nt = kT > 0 ? kT : num_thresholds;
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  int k;
  const bool valid = load_label(labels, b, nt, c, &k);
  const float f = valid ? to_float(scores[b]) : 0.f;
  auto z = [&](int t) { return f - to_float(thresholds[t]); };
  SampleTerms terms{k, valid ? nt : 0, false, 1.f, 0.f, 0.f};
  const float w = valid && weights ? to_float(weights[b]) : 1.f;
  const float l = valid ? w * terms.loss(z, static_cast<float>(c.min_gap)) : 0.f;
  const int64_t stride = 1 + nt;
  float* part = c.workspace + blockIdx.x * stride;
  const float m = store_loss(l, w, valid, b, grad_loss, loss, part, c, smem);
  if (!c.with_grad) return;  // uniform across the block
  float g = 0.f;
#pragma unroll
  for (int t = 0; t < nt; ++t) {
    const float dzt = valid && (t == k - 1 || t == k) ? terms.dz(t, z(t)) : 0.f;
    g += dzt;
    const float s = block_sum(-m * dzt, smem);
    if (threadIdx.x == 0) part[1 + t] = s;
  }
  if (valid) grad_scores[b] = from_float<in_t>(m * g);
}

template <int kT, typename in_t>
__global__ void gnolr_loss_kernel(const in_t* __restrict__ cos, int num_levels, const in_t* __restrict__ gamma,
                                  const in_t* __restrict__ thresholds, const int64_t* __restrict__ levels,
                                  const in_t* __restrict__ weights, bool nested, const in_t* __restrict__ grad_loss,
                                  in_t* __restrict__ loss, in_t* __restrict__ grad_cos, LossCommon c) {
  __shared__ float smem[32];
  const int nt = kT > 0 ? kT : num_levels;
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  int k;
  const bool valid = load_label(levels, b, nt, c, &k);
  const in_t* row = cos + (valid ? b : 0) * nt;
  float zr[kT > 0 ? kT : 1];
  if constexpr (kT > 0) {
    float s = 0.f;
#pragma unroll
    for (int t = 0; t < kT; ++t) {
      s += valid ? to_float(gamma[t]) * to_float(row[t]) : 0.f;
      zr[t] = s - to_float(thresholds[t]);
    }
  }
  auto z = [&](int t) {
    if constexpr (kT > 0) {
      return zr[t];
    } else {
      float s = 0.f;
      for (int j = 0; j <= t; ++j) s += to_float(gamma[j]) * to_float(row[j]);
      return s - to_float(thresholds[t]);
    }
  };
  SampleTerms terms{k, valid ? nt : 0, nested, 1.f, 0.f, 0.f};
  const float w = valid && weights ? to_float(weights[b]) : 1.f;
  const float l = valid ? w * terms.loss(z, static_cast<float>(c.min_gap)) : 0.f;
  const int64_t stride = 1 + 2 * int64_t(nt);
  float* part = c.workspace + blockIdx.x * stride;
  const float m = store_loss(l, w, valid, b, grad_loss, loss, part, c, smem);
  if (!c.with_grad) return;  // uniform across the block
  float suffix = 0.f;
#pragma unroll
  for (int t = nt - 1; t >= 0; --t) {
    const float dzt = valid && t <= k ? terms.dz(t, z(t)) : 0.f;
    suffix += dzt;
    const float ms = m * suffix;
    if (valid) grad_cos[b * nt + t] = from_float<in_t>(ms * to_float(gamma[t]));
    const float sg = block_sum(valid ? ms * to_float(row[t]) : 0.f, smem);
    const float sa = block_sum(-m * dzt, smem);
    if (threadIdx.x == 0) {
      part[1 + t] = sg;
      part[1 + nt + t] = sa;
    }
  }
}

// One block: out_p = sum over blocks of workspace[block, p] in a fixed order; p = 0 is the loss (skipped for
// reduction none), then the parameter gradients, written to grad_a [na] and grad_b [nb] (nb may be 0).
// Also checks that `ordered` [num_ordered] is strictly increasing (kErrBadOrder otherwise).
template <typename in_t>
__global__ void loss_finalize_kernel(const float* __restrict__ workspace, int64_t num_blocks, LossCommon c,
                                     in_t* __restrict__ loss, in_t* __restrict__ grad_a, int na,
                                     in_t* __restrict__ grad_b, int nb, const in_t* __restrict__ ordered,
                                     int num_ordered) {
  __shared__ float smem[32];
  for (int t = threadIdx.x; t + 1 < num_ordered; t += blockDim.x) {
    if (!(to_float(ordered[t]) < to_float(ordered[t + 1]))) atomicOr(c.error_flag, kErrBadOrder);
  }
  const int64_t stride = 1 + na + nb;
  for (int64_t p = c.reduction == Reduction::kNone ? 1 : 0; p < (c.with_grad ? stride : 1); ++p) {
    float acc = 0.f;
    for (int64_t i = threadIdx.x; i < num_blocks; i += blockDim.x) acc += workspace[i * stride + p];
    const float s = block_sum(acc, smem);
    if (threadIdx.x != 0) continue;
    if (p == 0) {
      const bool mean = c.reduction == Reduction::kMean && c.num_samples > 0;
      loss[0] = from_float<in_t>(mean ? s / float(c.num_samples) : s);
    } else if (p <= na) {
      grad_a[p - 1] = from_float<in_t>(s);
    } else {
      grad_b[p - 1 - na] = from_float<in_t>(s);
    }
  }
}

}  // namespace recops::cuda
