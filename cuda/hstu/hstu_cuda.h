// SPDX-License-Identifier: Apache-2.0
// CUDA launchers of HSTU attention (semantics: cpp/hstu/hstu_attention.h). Raw device pointers, work queued
// on `stream`, no synchronisation. q/k/v/out/grads and the bias tables share one dtype (float32, float16 or
// bfloat16); all arithmetic is float32 (dq included). Bias gradients are float32 buffers the caller zeroed
// (accumulated with atomics). Bad offsets, lengths > max_seq_len or num_targets out of range set bits in
// *error_flag and the affected sequences are skipped (nothing out of bounds is read).
// Head dims up to 256. Time buckets use double-precision log on the device.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace recops::cuda {

enum class HstuDtype { kFloat32, kFloat16, kBFloat16 };

struct HstuCudaParams {
  const void* q = nullptr;
  int64_t q_row = 0, q_head = 0;
  const void* k = nullptr;
  int64_t k_row = 0, k_head = 0;
  const void* v = nullptr;
  int64_t v_row = 0, v_head = 0;
  const int64_t* offsets = nullptr;
  int64_t num_seqs = 0, total_len = 0, num_heads = 0, dqk = 0, dv = 0, max_seq_len = 0;
  float alpha = 1.f, scale = 1.f;
  const void* row_scale = nullptr;
  const int64_t* num_targets = nullptr;
  int64_t contextual_len = 0, max_attn_len = 0;
  const void* pos_bias = nullptr;
  const int64_t* timestamps = nullptr;
  const void* time_bias = nullptr;
  int64_t num_buckets = 0;
  double time_bucket_base = 0.301;
  void* out = nullptr;
  const void* grad_out = nullptr;  // contiguous [L, H, dv]
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv_out = nullptr;
  float* d_pos_bias = nullptr;
  float* d_time_bias = nullptr;
  int32_t* error_flag = nullptr;
};

void launch_hstu_attention_fwd(const HstuCudaParams& p, HstuDtype dtype, cudaStream_t stream);
void launch_hstu_attention_bwd(const HstuCudaParams& p, HstuDtype dtype, cudaStream_t stream);

}  // namespace recops::cuda
