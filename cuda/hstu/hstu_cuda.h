// SPDX-License-Identifier: Apache-2.0
// CUDA launchers of HSTU attention (semantics: cpp/hstu/hstu_attention.h; parameters: cpp/hstu/hstu_params.h). Raw device pointers, work queued
// on `stream`, no synchronisation. q/k/v/out/grads and the bias tables share one dtype (float32, float16 or
// bfloat16); all arithmetic is float32 (dq included). Bias gradients are float32 buffers the caller zeroed
// (accumulated with atomics). Bad offsets, lengths > max_seq_len or num_targets out of range set bits in
// *error_flag and the affected sequences are skipped (nothing out of bounds is read).
// Head dims up to 256. Time buckets use double-precision log on the device.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "hstu/hstu_params.h"

namespace recops::cuda {

enum class HstuDtype { kFloat32, kFloat16, kBFloat16 };

void launch_hstu_attention_fwd(const hstu::HstuFwdParams& p, HstuDtype dtype, cudaStream_t stream);
void launch_hstu_attention_bwd(const hstu::HstuBwdParams& p, HstuDtype dtype, cudaStream_t stream);

// Softmax attention (p.kind == kSoftmax; semantics in cpp/hstu/hstu_attention.h): out and lse [L, H] (float32
// for every storage dtype) forward; the backward reads them. Dropout keeps hstu/attention_dropout.h's mask.
void launch_jagged_attention_fwd(const hstu::HstuFwdParams& p, HstuDtype dtype, cudaStream_t stream);
void launch_jagged_attention_bwd(const hstu::HstuBwdParams& p, HstuDtype dtype, cudaStream_t stream);

}  // namespace recops::cuda
