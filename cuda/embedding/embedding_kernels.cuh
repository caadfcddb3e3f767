// SPDX-License-Identifier: Apache-2.0
// Embedding-bag CUDA kernels. Thread mapping:
//   forward:  a group of kLanes threads per bag (one warp for D <= 128, one 256-thread block for larger D);
//             lanes stride over D, each lane walks the bag's indices and accumulates its columns in float32.
//   backward: (1) one thread per bag writes (global row, position) keys, (2) cub radix sort by row,
//             (3) one warp per sorted position; the warp at the start of each row's segment sums the segment's
//             gradient (lanes over D, float32, position order) and applies the optimizer to that row in place.
// Every gathered index is bounds-checked; a bad one contributes nothing and sets kErrBadIndex.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/cuda_check.cuh"
#include "common/dtype.cuh"
#include "embedding/embedding_cuda.h"

namespace recops::cuda {

using embedding::kDim;
using embedding::kMetaCols;
using embedding::kNumRows;
using embedding::kOutColumn;
using embedding::kPooling;
using embedding::kRowOffset;
using embedding::kRowStride;
using embedding::kWeightOffset;
using embedding::Update;
constexpr uint64_t kBadKey = ~uint64_t{0};

struct Int8Row {};  // tag: uint8 rows with float32 scale and bias after the codes

template <typename storage_t> struct EmbTraits { using elem_t = storage_t; using out_t = storage_t; };
template <> struct EmbTraits<Int8Row> { using elem_t = uint8_t; using out_t = float; };

__device__ __forceinline__ uint32_t mix32(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return static_cast<uint32_t>(x ^ (x >> 31));
}

template <typename T>
__device__ __forceinline__ T store_rounded(float v, bool stochastic, uint32_t noise) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (stochastic && isfinite(v)) {
      const uint32_t u = (__float_as_uint(v) + (noise & 0xffffu)) & 0xffff0000u;
      return __float2bfloat16_rz(__uint_as_float(u));
    }
  }
  return from_float<T>(v);
}

template <typename storage_t>
__device__ __forceinline__ float load_elem(const typename EmbTraits<storage_t>::elem_t* row, int64_t dim,
                                           int64_t d) {
  if constexpr (std::is_same_v<storage_t, Int8Row>) {
    float sb[2];
    memcpy(sb, row + dim, 8);
    return static_cast<float>(row[d]) * sb[0] + sb[1];
  } else {
    return to_float(row[d]);
  }
}

// The positions [start, end) of bag j, or false (and kErrBadOffsets set) when offsets put it outside
// [0, num_indices) or end before start: such a bag is treated as empty, so nothing out of bounds is read.
template <typename index_t>
__device__ __forceinline__ bool bag_range(const index_t* offsets, int64_t j, int64_t num_indices, int32_t* flag,
                                          int64_t& start, int64_t& end) {
  start = static_cast<int64_t>(offsets[j]);
  end = static_cast<int64_t>(offsets[j + 1]);
  if (start >= 0 && start <= end && end <= num_indices) return true;
  atomicOr(flag, kErrBadOffsets);
  start = end = 0;
  return false;
}

template <typename storage_t, typename index_t, int kLanes>
__global__ void embedding_bags_forward_kernel(const typename EmbTraits<storage_t>::elem_t* __restrict__ weights,
                                              const int64_t* __restrict__ meta, int64_t num_features,
                                              const index_t* __restrict__ indices,
                                              const index_t* __restrict__ offsets, int64_t batch,
                                              int64_t num_indices, const float* __restrict__ psw,
                                              typename EmbTraits<storage_t>::out_t* __restrict__ out,
                                              int64_t total_dim, int64_t* __restrict__ argmax, int32_t* flag) {
  using out_t = typename EmbTraits<storage_t>::out_t;
  const int64_t groups = blockDim.x / kLanes;
  const int lane = threadIdx.x % kLanes;
  const int64_t num_bags = num_features * batch;
  for (int64_t j = blockIdx.x * groups + threadIdx.x / kLanes; j < num_bags; j += int64_t(gridDim.x) * groups) {
    const int64_t f = j / batch, b = j % batch;
    const int64_t* m = meta + f * kMetaCols;
    const int64_t dim = m[kDim], stride = m[kRowStride], rows = m[kNumRows], pooling = m[kPooling];
    const auto* table = weights + m[kWeightOffset];
    int64_t start, end;
    bag_range(offsets, j, num_indices, flag, start, end);
    const int64_t col = b * total_dim + m[kOutColumn];
    for (int64_t d = lane; d < dim; d += kLanes) {
      float acc = pooling == 2 ? -INFINITY : 0.f;
      int64_t best = -1;
      for (int64_t i = start; i < end; ++i) {
        const int64_t idx = static_cast<int64_t>(indices[i]);
        if (idx < 0 || idx >= rows) {
          if (d == lane) atomicOr(flag, kErrBadIndex);
          continue;
        }
        const float v = load_elem<storage_t>(table + idx * stride, dim, d);
        if (pooling == 2) {
          if (v > acc || (isnan(v) && !isnan(acc))) {
            acc = v;
            best = i;
          }
        } else {
          acc += (psw ? psw[i] : 1.f) * v;
        }
      }
      if (pooling == 2 && best < 0) acc = 0.f;
      if (pooling == 1 && end > start) acc /= static_cast<float>(end - start);
      out[col + d] = from_float<out_t>(acc);
      if (argmax) argmax[col + d] = pooling == 2 ? best : -1;
    }
  }
}

// (global row, position) of every index and the bag of every position; bad indices get kBadKey. Positions
// of no valid bag (bad offsets) keep what the launcher preset: key kBadKey, bag -1.
template <typename index_t>
__global__ void embedding_sort_keys_kernel(const int64_t* __restrict__ meta, int64_t num_features,
                                           const index_t* __restrict__ indices, const index_t* __restrict__ offsets,
                                           int64_t batch, int64_t num_indices, uint64_t* keys, uint32_t* pos,
                                           int64_t* bag_of, int32_t* flag) {
  const int64_t num_bags = num_features * batch;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < num_bags;
       j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t* m = meta + (j / batch) * kMetaCols;
    int64_t start, end;
    bag_range(offsets, j, num_indices, flag, start, end);
    for (int64_t i = start; i < end; ++i) {
      const int64_t idx = static_cast<int64_t>(indices[i]);
      const bool ok = idx >= 0 && idx < m[kNumRows];
      if (!ok) atomicOr(flag, kErrBadIndex);
      keys[i] = ok ? static_cast<uint64_t>(m[kRowOffset] + idx) : kBadKey;
      pos[i] = static_cast<uint32_t>(i);
      bag_of[i] = j;
    }
  }
}

// d loss / d per_sample_weights[i] = dot(w[row_i], grad_out[b_i]); one warp per position, before any update.
template <typename storage_t, typename index_t>
__global__ void embedding_psw_grad_kernel(const storage_t* __restrict__ weights, const int64_t* __restrict__ meta,
                                          const index_t* __restrict__ indices, const int64_t* __restrict__ bag_of,
                                          int64_t num_indices, int64_t batch, const storage_t* __restrict__ grad_out,
                                          int64_t total_dim, float* grad_psw) {
  const int lane = threadIdx.x % 32;
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; i < num_indices;
       i += int64_t(gridDim.x) * blockDim.x / 32) {
    const int64_t j = bag_of[i], b = j % batch;
    if (j < 0) {  // in no valid bag (bad offsets, reported by the key kernel)
      if (lane == 0) grad_psw[i] = 0.f;
      continue;
    }
    const int64_t* m = meta + (j / batch) * kMetaCols;
    const int64_t idx = static_cast<int64_t>(indices[i]);
    float dot = 0.f;
    if (idx >= 0 && idx < m[kNumRows]) {
      const storage_t* row = weights + m[kWeightOffset] + idx * m[kRowStride];
      const storage_t* g = grad_out + b * total_dim + m[kOutColumn];
      for (int64_t d = lane; d < m[kDim]; d += 32) dot += to_float(row[d]) * to_float(g[d]);
    }
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_down_sync(0xffffffffu, dot, o);
    if (lane == 0) grad_psw[i] = dot;
  }
}

// Sum of the segment's gradient at column d (position order, so the result is reproducible).
template <typename storage_t, typename index_t>
__device__ __forceinline__ float segment_grad(int64_t first, int64_t last, const uint32_t* pos,
                                              const int64_t* bag_of, const int64_t* meta, const index_t* offsets,
                                              int64_t batch, const float* psw, const int64_t* argmax,
                                              const storage_t* grad_out, int64_t total_dim, int64_t d) {
  float g = 0.f;
  for (int64_t k = first; k < last; ++k) {
    const int64_t i = pos[k], j = bag_of[i], b = j % batch;
    const int64_t* m = meta + (j / batch) * kMetaCols;
    const int64_t e = b * total_dim + m[kOutColumn] + d;
    const float go = to_float(grad_out[e]);
    if (m[kPooling] == 2) {
      g += argmax[e] == i ? go : 0.f;
    } else {
      float coef = psw ? psw[i] : 1.f;
      if (m[kPooling] == 1) coef /= static_cast<float>(offsets[j + 1] - offsets[j]);
      g += coef * go;
    }
  }
  return g;
}

template <typename storage_t, typename index_t>
__global__ void embedding_segment_update_kernel(storage_t* weights, const int64_t* __restrict__ meta,
                                                const index_t* __restrict__ offsets, int64_t batch,
                                                int64_t num_indices, const uint64_t* __restrict__ keys,
                                                const uint32_t* __restrict__ pos, const int64_t* __restrict__ bag_of,
                                                const float* __restrict__ psw, const int64_t* __restrict__ argmax,
                                                const storage_t* __restrict__ grad_out, int64_t total_dim,
                                                EmbeddingUpdate up, storage_t* grad_weights, float* state0,
                                                float* state1) {
  const int lane = threadIdx.x % 32;
  for (int64_t first = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; first < num_indices;
       first += int64_t(gridDim.x) * blockDim.x / 32) {
    const uint64_t key = keys[first];
    if (key == kBadKey || (first > 0 && keys[first - 1] == key)) continue;
    int64_t last = first + 1;
    while (last < num_indices && keys[last] == key) ++last;
    const int64_t* m0 = meta + (bag_of[pos[first]] / batch) * kMetaCols;
    const int64_t dim = m0[kDim];
    const int64_t elem = m0[kWeightOffset] + (static_cast<int64_t>(key) - m0[kRowOffset]) * m0[kRowStride];
    storage_t* row = weights + elem;
    float mult = up.lr;
    if (up.kind == Update::kRowwiseAdagrad) {  // the whole row's mean square first
      float sq = 0.f;
      for (int64_t d = lane; d < dim; d += 32) {
        const float g = segment_grad(first, last, pos, bag_of, meta, offsets, batch, psw, argmax, grad_out,
                                     total_dim, d);
        sq += g * g;
      }
      for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
      float& st = state0[key];
      const float acc = st + (dim > 0 ? sq / static_cast<float>(dim) : 0.f);
      __syncwarp();
      if (lane == 0) st = acc;
      mult = up.lr / (sqrtf(acc) + up.eps);
    }
    for (int64_t d = lane; d < dim; d += 32) {
      const float g = segment_grad(first, last, pos, bag_of, meta, offsets, batch, psw, argmax, grad_out,
                                   total_dim, d);
      const float w = to_float(row[d]);
      float nw = w;
      switch (up.kind) {
        case Update::kDenseGrad: grad_weights[elem + d] = from_float<storage_t>(g); continue;
        case Update::kSgd: case Update::kRowwiseAdagrad: nw = w - mult * g; break;
        case Update::kAdagrad: {
          const float s = state0[elem + d] + g * g;
          state0[elem + d] = s;
          nw = w - up.lr * g / (sqrtf(s) + up.eps);
          break;
        }
        default: {
          const float mo = state0[elem + d] + (1.f - up.beta1) * (g - state0[elem + d]);
          const float ve = state1[elem + d] + (1.f - up.beta2) * (g * g - state1[elem + d]);
          state0[elem + d] = mo;
          state1[elem + d] = ve;
          nw = w - up.step_size * mo / (sqrtf(ve) + up.eps);
          break;
        }
      }
      row[d] = store_rounded<storage_t>(nw, up.stochastic_rounding, mix32(up.seed ^ (uint64_t(elem + d) * 0x9e3779b97f4a7c15ull)));
    }
  }
}

}  // namespace recops::cuda
