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

LossCommon make_common(int64_t num_samples, int reduction, float min_gap, int64_t grad_loss_stride, bool with_grad,
                       float* workspace, int32_t* error_flag) {
  return LossCommon{num_samples, reduction, min_gap, grad_loss_stride, with_grad, workspace, error_flag};
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

void launch_ordinal_logistic_loss(const void* scores, int64_t num_samples, const void* thresholds,
                                  int64_t num_thresholds, const int64_t* labels, const void* weights,
                                  int reduction, float min_gap, const void* grad_loss, int64_t grad_loss_stride,
                                  bool with_grad, void* loss, void* grad_scores, void* grad_thresholds, bool bf16,
                                  float* workspace, int32_t* error_flag, cudaStream_t stream) {
  const LossCommon c = make_common(num_samples, reduction, min_gap, grad_loss_stride, with_grad, workspace,
                                   error_flag);
  run_loss(bf16, num_samples, num_thresholds, workspace, stream, [&](auto tag, int64_t blocks) {
    using in_t = decltype(tag);
    with_levels(num_thresholds, [&](auto kt) {
      ordinal_logistic_loss_kernel<decltype(kt)::value, in_t><<<blocks, kLossThreads, 0, stream>>>(
          static_cast<const in_t*>(scores), static_cast<const in_t*>(thresholds), static_cast<int>(num_thresholds),
          labels, static_cast<const in_t*>(weights), static_cast<const in_t*>(grad_loss), static_cast<in_t*>(loss),
          static_cast<in_t*>(grad_scores), c);
    });
  }, [&](auto tag, int64_t blocks) {
    using in_t = decltype(tag);
    loss_finalize_kernel<in_t><<<1, kFinalizeThreads, 0, stream>>>(
        workspace, blocks, c, static_cast<in_t*>(loss), static_cast<in_t*>(grad_thresholds),
        static_cast<int>(num_thresholds), static_cast<in_t*>(nullptr), 0, static_cast<const in_t*>(thresholds),
        static_cast<int>(num_thresholds));
  });
}

void launch_gnolr_loss(const void* cos, int64_t num_samples, int64_t num_levels, const void* gamma,
                       const void* thresholds, const int64_t* levels, const void* weights, int reduction,
                       float min_gap, bool nested, const void* grad_loss, int64_t grad_loss_stride, bool with_grad,
                       void* loss, void* grad_cos, void* grad_gamma, void* grad_thresholds, bool bf16,
                       float* workspace, int32_t* error_flag, cudaStream_t stream) {
  const LossCommon c = make_common(num_samples, reduction, min_gap, grad_loss_stride, with_grad, workspace,
                                   error_flag);
  run_loss(bf16, num_samples, 2 * num_levels, workspace, stream, [&](auto tag, int64_t blocks) {
    using in_t = decltype(tag);
    with_levels(num_levels, [&](auto kt) {
      gnolr_loss_kernel<decltype(kt)::value, in_t><<<blocks, kLossThreads, 0, stream>>>(
          static_cast<const in_t*>(cos), static_cast<int>(num_levels), static_cast<const in_t*>(gamma),
          static_cast<const in_t*>(thresholds), levels, static_cast<const in_t*>(weights), nested,
          static_cast<const in_t*>(grad_loss), static_cast<in_t*>(loss), static_cast<in_t*>(grad_cos), c);
    });
  }, [&](auto tag, int64_t blocks) {
    using in_t = decltype(tag);
    loss_finalize_kernel<in_t><<<1, kFinalizeThreads, 0, stream>>>(
        workspace, blocks, c, static_cast<in_t*>(loss), static_cast<in_t*>(grad_gamma), static_cast<int>(num_levels),
        static_cast<in_t*>(grad_thresholds), static_cast<int>(num_levels), static_cast<const in_t*>(nullptr), 0);
  });
}

}  // namespace recops::cuda
