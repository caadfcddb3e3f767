// SPDX-License-Identifier: Apache-2.0
// Launchers of the embedding family (kernels and thread mapping in embedding_kernels.cuh).
#include <cub/device/device_radix_sort.cuh>

#include <algorithm>

#include "common/cuda_check.cuh"
#include "embedding/embedding_cuda.h"
#include "embedding/embedding_kernels.cuh"
#include "jagged/jagged_kernels.cuh"

namespace recops::cuda {
namespace {

constexpr int kThreads = 256;

template <typename Fn>
void with_storage(int storage, bool idx64, Fn&& fn) {
  auto with_index = [&](auto s) {
    if (idx64) fn(s, int64_t{}); else fn(s, int32_t{});
  };
  switch (storage) {
    case kF16: with_index(__half{}); break;
    case kBF16: with_index(__nv_bfloat16{}); break;
    case kInt8Rowwise: with_index(Int8Row{}); break;
    default: with_index(float{}); break;
  }
}

// Stream-ordered scratch freed at the end of the scope.
struct Scratch {
  cudaStream_t stream;
  void* ptr = nullptr;
  Scratch(size_t bytes, cudaStream_t s) : stream(s) {
    if (bytes) RECOPS_CUDA_CHECK(cudaMallocAsync(&ptr, bytes, s));
  }
  ~Scratch() {
    if (ptr) cudaFreeAsync(ptr, stream);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

}  // namespace

void launch_embedding_bags_forward(int storage, const void* weights, const int64_t* meta, int64_t num_features,
                                   int64_t max_dim, const void* indices, bool indices_int64, const void* offsets,
                                   int64_t batch, int64_t num_indices, const float* per_sample_weights, void* out,
                                   int64_t total_dim, int64_t* argmax, int32_t* error_flag, cudaStream_t stream) {
  const int64_t num_bags = num_features * batch;
  with_storage(storage, indices_int64, [&](auto stag, auto itag) {
    using index_t = decltype(itag);
    check_offsets_kernel<index_t><<<grid_for(num_bags + 1, kThreads), kThreads, 0, stream>>>(
        static_cast<const index_t*>(offsets), num_bags, num_indices, error_flag);
    RECOPS_CUDA_CHECK(cudaGetLastError());
  });
  if (num_bags == 0 || total_dim == 0) return;
  with_storage(storage, indices_int64, [&](auto stag, auto itag) {
    using storage_t = decltype(stag);
    using index_t = decltype(itag);
    using elem_t = typename EmbTraits<storage_t>::elem_t;
    using out_t = typename EmbTraits<storage_t>::out_t;
    const auto* w = static_cast<const elem_t*>(weights);
    const auto* idx = static_cast<const index_t*>(indices);
    const auto* off = static_cast<const index_t*>(offsets);
    auto* o = static_cast<out_t*>(out);
    if (max_dim <= 128) {  // warp per bag, 8 bags per block
      embedding_bags_forward_kernel<storage_t, index_t, 32><<<grid_for(num_bags, kThreads / 32), kThreads, 0, stream>>>(
          w, meta, num_features, idx, off, batch, num_indices, per_sample_weights, o, total_dim, argmax, error_flag);
    } else {  // block per bag
      embedding_bags_forward_kernel<storage_t, index_t, kThreads><<<grid_for(num_bags, 1), kThreads, 0, stream>>>(
          w, meta, num_features, idx, off, batch, num_indices, per_sample_weights, o, total_dim, argmax, error_flag);
    }
    RECOPS_CUDA_CHECK(cudaGetLastError());
  });
}

void launch_embedding_bags_backward(int storage, void* weights, const int64_t* meta, int64_t num_features,
                                    int64_t /*max_dim*/, const void* indices, bool indices_int64,
                                    const void* offsets, int64_t batch, int64_t num_indices,
                                    const float* per_sample_weights, const int64_t* argmax, const void* grad_out,
                                    int64_t total_dim, const EmbeddingUpdate& update, void* grad_weights,
                                    float* state0, float* state1, float* grad_per_sample_weights,
                                    int32_t* error_flag, cudaStream_t stream) {
  if (num_indices == 0 || storage == kInt8Rowwise) return;
  // bad indices sort last under kBadKey, so the sort uses all 64 key bits
  with_storage(storage, indices_int64, [&](auto stag, auto itag) {
    using storage_t = decltype(stag);
    using index_t = decltype(itag);
    if constexpr (!std::is_same_v<storage_t, Int8Row>) {
      const auto* idx = static_cast<const index_t*>(indices);
      const auto* off = static_cast<const index_t*>(offsets);
      const auto* go = static_cast<const storage_t*>(grad_out);
      auto* w = static_cast<storage_t*>(weights);
      const size_t n = static_cast<size_t>(num_indices);
      size_t sort_bytes = 0;
      RECOPS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const uint64_t*>(nullptr),
                                                        static_cast<uint64_t*>(nullptr),
                                                        static_cast<const uint32_t*>(nullptr),
                                                        static_cast<uint32_t*>(nullptr), num_indices, 0, 64, stream));
      const size_t keys_bytes = n * sizeof(uint64_t), pos_bytes = n * sizeof(uint32_t);
      const size_t bag_bytes = n * sizeof(int64_t);
      Scratch scratch(2 * keys_bytes + 2 * pos_bytes + bag_bytes + sort_bytes + 64, stream);
      char* base = static_cast<char*>(scratch.ptr);
      auto* keys_in = reinterpret_cast<uint64_t*>(base);
      auto* keys_out = keys_in + n;
      auto* bag_of = reinterpret_cast<int64_t*>(keys_out + n);
      auto* pos_in = reinterpret_cast<uint32_t*>(bag_of + n);
      auto* pos_out = pos_in + n;
      void* sort_tmp = reinterpret_cast<char*>(pos_out + n) + 16;
      const int64_t num_bags = num_features * batch;
      // Positions that bad offsets leave in no bag keep kBadKey (skipped by the update) and bag -1.
      RECOPS_CUDA_CHECK(cudaMemsetAsync(keys_in, 0xff, keys_bytes, stream));
      RECOPS_CUDA_CHECK(cudaMemsetAsync(bag_of, 0xff, bag_bytes, stream));
      embedding_sort_keys_kernel<index_t><<<grid_for(num_bags, kThreads), kThreads, 0, stream>>>(
          meta, num_features, idx, off, batch, num_indices, keys_in, pos_in, bag_of, error_flag);
      RECOPS_CUDA_CHECK(cudaGetLastError());
      RECOPS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, keys_in, keys_out, pos_in, pos_out,
                                                        num_indices, 0, 64, stream));
      const unsigned int warp_grid = grid_for(num_indices, kThreads / 32);
      if (grad_per_sample_weights) {
        embedding_psw_grad_kernel<storage_t, index_t><<<warp_grid, kThreads, 0, stream>>>(
            w, meta, idx, bag_of, num_indices, batch, go, total_dim, grad_per_sample_weights);
        RECOPS_CUDA_CHECK(cudaGetLastError());
      }
      embedding_segment_update_kernel<storage_t, index_t><<<warp_grid, kThreads, 0, stream>>>(
          w, meta, off, batch, num_indices, keys_out, pos_out, bag_of, per_sample_weights, argmax, go, total_dim,
          update, static_cast<storage_t*>(grad_weights), state0, state1);
      RECOPS_CUDA_CHECK(cudaGetLastError());
    }
  });
}

}  // namespace recops::cuda
