// SPDX-License-Identifier: Apache-2.0
// The eval-side lookup of dynamic tables on the GPU: raw ids -> rows through a device mirror of the CPU id map's
// slots (cpp/embedding/dynamic_params.h: the same layout and probe). Read-only: admission, eviction and expiry
// stay on the CPU (training resolves ids on the host).
#include "common/cuda_check.cuh"
#include "embedding/dynamic_params.h"
#include "embedding/embedding_cuda.h"

namespace recops::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per id: its row, or zero_row for an id without one (absent, or expired when last_seen is given).
__global__ void dynamic_lookup_kernel(const embedding::DynamicSlot* __restrict__ slots, uint64_t mask,
                                      const int64_t* __restrict__ ids, int64_t n, int64_t* __restrict__ rows,
                                      int64_t zero_row, const double* __restrict__ last_seen, double now,
                                      double ttl) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int64_t row = embedding::probe_slots(slots, mask, ids[i], nullptr);
  if (row >= 0 && last_seen != nullptr && now - last_seen[row] > ttl) row = -1;
  rows[i] = row < 0 ? zero_row : row;
}

}  // namespace

void launch_dynamic_lookup(const void* slots, uint64_t mask, const int64_t* ids, int64_t n, int64_t* rows,
                           int64_t zero_row, const double* last_seen, double now, double ttl, cudaStream_t stream) {
  if (n <= 0) return;
  dynamic_lookup_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(
      static_cast<const embedding::DynamicSlot*>(slots), mask, ids, n, rows, zero_row, last_seen, now, ttl);
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace recops::cuda
