// SPDX-License-Identifier: Apache-2.0
// The parameters of the embedding family shared by the CPU core (embedding_bag.h), the CUDA launchers
// (cuda/embedding/embedding_cuda.h) and the binding, spelled once: the meta columns, the pooling and optimizer
// codes, and the fused update's hyper-parameters. Torch-free and CUDA-free; _C exports the codes by name.
#pragma once

#include <cstdint>

namespace recops::embedding {

enum MetaCol : int { kWeightOffset = 0, kRowOffset, kNumRows, kDim, kRowStride, kPooling, kOutColumn, kMetaCols };

enum class Pooling : int64_t { kSum = 0, kMean = 1, kMax = 2 };

// What the backward does with each unique row's summed gradient g [D] (all state arrays are float32):
//   kDenseGrad       grad_weights[row] = g (grad_weights has the layout of weights; untouched rows are left
//                    as they are, the caller zeroes them)
//   kSgd             w -= lr * g
//   kAdagrad         s += g*g;  w -= lr * g / (sqrt(s) + eps)                 (torch.optim.Adagrad, sparse)
//   kRowwiseAdagrad  s_row += mean(g*g);  w -= lr * g / (sqrt(s_row) + eps)  (FBGEMM EXACT_ROWWISE_ADAGRAD)
//   kAdam            m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g*g;  w -= step_size * m / (sqrt(v) + eps)
//                    (torch.optim.SparseAdam: lazy, only touched rows; step_size = lr sqrt(1-b2^t) / (1-b1^t)
//                    is computed by the caller)
// State layout: kAdagrad s and kAdam m (state0), v (state1) have the element layout of weights; kRowwiseAdagrad
// s has one float per global row (meta kRowOffset + row).
enum class Update : int { kDenseGrad = 0, kSgd = 1, kAdagrad = 2, kRowwiseAdagrad = 3, kAdam = 4 };

struct UpdateParams {
  Update kind = Update::kDenseGrad;
  float lr = 0.f, eps = 0.f, beta1 = 0.f, beta2 = 0.f, step_size = 0.f;
  bool stochastic_rounding = false;  // bf16 storage only: round the updated weight stochastically
  uint64_t seed = 0;                 // stochastic rounding stream (hash of seed, row and column)
};

}  // namespace recops::embedding
