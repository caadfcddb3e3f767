// SPDX-License-Identifier: Apache-2.0
// The parameters of the losses family, shared by the CPU core (ordinal.h), the CUDA launchers
// (cuda/losses/losses_cuda.h) and the binding, so that an option is spelled once. Torch-free and CUDA-free.
//
// Pointers are untyped: the floating arrays of one call share its dtype (float32/float64 on the CPU,
// float32/bfloat16 on CUDA); labels are int64. Semantics of every field: cpp/losses/ordinal.h.
#pragma once

#include <cstdint>

namespace recops::losses {

enum class Reduction : int { kNone = 0, kSum = 1, kMean = 2 };

// The fields both losses have: the batch, its labels and weights, the reduction and the upstream gradient.
struct LossParams {
  int64_t num_samples = 0;
  const int64_t* labels = nullptr;  // [B]: labels in [0, K) (ordinal) or levels in [0, T] (GNOLR)
  const void* weights = nullptr;    // [B] or null (1)
  Reduction reduction = Reduction::kMean;
  double min_gap = 1e-6;
  const void* grad_loss = nullptr;  // [B] (stride 1), [1] (stride 0) or null (1)
  int64_t grad_loss_stride = 0;
  bool with_grad = false;           // write the gradient outputs
  void* loss = nullptr;             // [B] with kNone, else [1]
  float* workspace = nullptr;       // CUDA: loss_workspace_numel(B, partials) floats; unused on the CPU
  int32_t* error_flag = nullptr;    // CUDA: error bits (cpp/common/error_bits.h); unused on the CPU
};

// Proportional-odds loss over K = num_thresholds + 1 classes.
struct OrdinalParams : LossParams {
  const void* scores = nullptr;      // [B]
  const void* thresholds = nullptr;  // [K - 1], strictly increasing
  int64_t num_thresholds = 0;
  void* grad_scores = nullptr;       // [B] (with_grad)
  void* grad_thresholds = nullptr;   // [K - 1] (with_grad)
};

// GNOLR over T levels.
struct GnolrParams : LossParams {
  const void* cos = nullptr;         // [B, T]
  int64_t num_levels = 0;            // T
  const void* gamma = nullptr;       // [T]
  const void* thresholds = nullptr;  // [T]
  bool nested = true;
  void* grad_cos = nullptr;          // [B, T] (with_grad)
  void* grad_gamma = nullptr;        // [T] (with_grad)
  void* grad_thresholds = nullptr;   // [T] (with_grad)
};

}  // namespace recops::losses
