// SPDX-License-Identifier: Apache-2.0
// Launchers of the ordinal-logistic losses: one thread per sample (see ordinal_kernels.cuh), T (or K-1)
// templated up to 8 through with_levels(), then the one-block deterministic finalize pass.
#include <cuda_bf16.h>

#include <type_traits>

#include "common/cuda_check.cuh"
#include "losses/losses_cuda.h"
#include "losses/ordinal_kernels.cuh"

namespace recops::cuda {
namespace {

constexpr int kFinalizeThreads = 256;

// Calls fn(std::integral_constant<int, T>) for T in 1..8, or with 0 (the generic path) otherwise.
template <typename Fn>
void with_levels(int64_t n, Fn&& fn) {
  switch (n) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 5: fn(std::integral_constant<int, 5>{}); break;
    case 6: fn(std::integral_constant<int, 6>{}); break;
    case 7: fn(std::integral_constant<int, 7>{}); break;
    case 8: fn(std::integral_constant<int, 8>{}); break;
    default: fn(std::integral_constant<int, 0>{}); break;
  }
}

template <typename Fn>
void with_dtype(bool bf16, Fn&& fn) {
  if (bf16) fn(__nv_bfloat16{}); else fn(float{});
}

// The launch skeleton shared by both losses: for each storage type, the per-sample kernel (launch(tag, blocks),
// skipped for B = 0, when one zeroed block of partials stands in), then finalize(tag, blocks).
template <typename LaunchFn, typename FinalizeFn>
void run_loss(bool bf16, int64_t num_samples, int64_t num_partials, float* workspace, cudaStream_t stream,
              LaunchFn&& launch, FinalizeFn&& finalize) {
  const int64_t blocks = (num_samples + kLossThreads - 1) / kLossThreads;
  with_dtype(bf16, [&](auto tag) {
    if (blocks > 0) {
      launch(tag, blocks);
    } else {
      RECOPS_CUDA_CHECK(cudaMemsetAsync(workspace, 0, sizeof(float) * (1 + num_partials), stream));
    }
    RECOPS_CUDA_CHECK(cudaGetLastError());
    finalize(tag, blocks > 0 ? blocks : 1);
    RECOPS_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace

void launch_ordinal_logistic_loss(const losses::OrdinalParams& p, bool bf16, cudaStream_t stream) {
  const LossCommon& c = p;
  const int nt = static_cast<int>(p.num_thresholds);
  run_loss(bf16, p.num_samples, p.num_thresholds, p.workspace, stream, [&](auto tag, int64_t blocks) {
    using in_t = decltype(tag);
    with_levels(p.num_thresholds, [&](auto kt) {
      ordinal_logistic_loss_kernel<decltype(kt)::value, in_t><<<blocks, kLossThreads, 0, stream>>>(
          static_cast<const in_t*>(p.scores), static_cast<const in_t*>(p.thresholds), nt, p.labels,
          static_cast<const in_t*>(p.weights), static_cast<const in_t*>(p.grad_loss), static_cast<in_t*>(p.loss),
          static_cast<in_t*>(p.grad_scores), c);
    });
  }, [&](auto tag, int64_t blocks) {
    using in_t = decltype(tag);
    loss_finalize_kernel<in_t><<<1, kFinalizeThreads, 0, stream>>>(
        p.workspace, blocks, c, static_cast<in_t*>(p.loss), static_cast<in_t*>(p.grad_thresholds), nt,
        static_cast<in_t*>(nullptr), 0, static_cast<const in_t*>(p.thresholds), nt);
  });
}

void launch_gnolr_loss(const losses::GnolrParams& p, bool bf16, cudaStream_t stream) {
  const LossCommon& c = p;
  const int nl = static_cast<int>(p.num_levels);
  run_loss(bf16, p.num_samples, 2 * p.num_levels, p.workspace, stream, [&](auto tag, int64_t blocks) {
    using in_t = decltype(tag);
    with_levels(p.num_levels, [&](auto kt) {
      gnolr_loss_kernel<decltype(kt)::value, in_t><<<blocks, kLossThreads, 0, stream>>>(
          static_cast<const in_t*>(p.cos), nl, static_cast<const in_t*>(p.gamma),
          static_cast<const in_t*>(p.thresholds), p.labels, static_cast<const in_t*>(p.weights), p.nested,
          static_cast<const in_t*>(p.grad_loss), static_cast<in_t*>(p.loss), static_cast<in_t*>(p.grad_cos), c);
    });
  }, [&](auto tag, int64_t blocks) {
    using in_t = decltype(tag);
    loss_finalize_kernel<in_t><<<1, kFinalizeThreads, 0, stream>>>(
        p.workspace, blocks, c, static_cast<in_t*>(p.loss), static_cast<in_t*>(p.grad_gamma), nl,
        static_cast<in_t*>(p.grad_thresholds), nl, static_cast<const in_t*>(nullptr), 0);
  });
}

}  // namespace recops::cuda
