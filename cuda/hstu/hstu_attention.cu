// SPDX-License-Identifier: Apache-2.0
// Launchers of the HSTU attention kernels and of the softmax attention kernels (jagged_attention): offsets
// check, tile size from the head dims, dynamic shared memory above 48 KiB when needed, one launch per kernel on
// the caller's stream.
#include "common/cuda_check.cuh"
#include "hstu/hstu_cuda.h"
#include "hstu/hstu_kernels.cuh"
#include "hstu/jagged_attention_kernels.cuh"
#include "jagged/jagged_kernels.cuh"

namespace recops::cuda {
namespace {

constexpr int kThreads = 256;

int tile_for(const hstu::HstuFwdParams& p) { return (p.dqk > 128 || p.dv > 128) ? 16 : 32; }

template <typename Params>
void launch(void (*kernel)(Params, int), dim3 grid, size_t smem, const Params& p, int tile, cudaStream_t stream) {
  if (smem > 48 * 1024) {
    RECOPS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  }
  kernel<<<grid, kThreads, smem, stream>>>(p, tile);
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

void check_offsets(const hstu::HstuFwdParams& p, cudaStream_t stream) {
  check_offsets_kernel<int64_t><<<grid_for(p.num_seqs + 1, kThreads), kThreads, 0, stream>>>(
      p.offsets, p.num_seqs, p.total_len, p.error_flag);
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

dim3 grid_of(const hstu::HstuFwdParams& p, int tile) {
  return dim3(static_cast<unsigned>((p.max_seq_len + tile - 1) / tile),
              static_cast<unsigned>(p.num_seqs * p.num_heads));
}

template <typename T>
void fwd(const hstu::HstuFwdParams& p, cudaStream_t stream) {
  const int tile = tile_for(p);
  const size_t ldq = p.dqk + 1, ldv = p.dv + 1;
  const size_t smem = sizeof(float) * (tile * ldq * 2 + tile * ldv * 2 + tile * (tile + 1));
  launch(hstu_fwd_kernel<T>, grid_of(p, tile), smem, p, tile, stream);
}

template <typename T>
void bwd(const hstu::HstuBwdParams& p, cudaStream_t stream) {
  const int tile = tile_for(p);
  const size_t ldq = p.dqk + 1, ldv = p.dv + 1;
  const size_t smem = sizeof(float) * (tile * ldq * 3 + tile * ldv * 3 + 2 * tile * (tile + 1));
  launch(hstu_bwd_dkv_kernel<T>, grid_of(p, tile), smem, p, tile, stream);
  launch(hstu_bwd_dq_kernel<T>, grid_of(p, tile), smem, p, tile, stream);
}

// Softmax attention: the HSTU kernels' tiles plus, per row of the block's query tile, three floats (forward:
// running max, sum and rescale factor; backward: lse, D and the dropout row key).
template <typename T>
void softmax_fwd(const hstu::HstuFwdParams& p, cudaStream_t stream) {
  const int tile = tile_for(p);
  const size_t ldq = p.dqk + 1, ldv = p.dv + 1;
  const size_t smem = sizeof(float) * (tile * ldq * 2 + tile * ldv * 2 + tile * (tile + 1) + 3 * tile);
  launch(jagged_attn_fwd_kernel<T>, grid_of(p, tile), smem, p, tile, stream);
}

template <typename T>
void softmax_bwd(const hstu::HstuBwdParams& p, cudaStream_t stream) {
  const int tile = tile_for(p);
  const size_t ldq = p.dqk + 1, ldv = p.dv + 1;
  const size_t smem_dkv = sizeof(float) * (tile * ldq * 3 + tile * ldv * 3 + 2 * tile * (tile + 1) + 3 * tile);
  const size_t smem_dq = sizeof(float) * (tile * ldq * 3 + tile * ldv * 2 + tile * (tile + 1) + 3 * tile);
  launch(jagged_attn_bwd_dkv_kernel<T>, grid_of(p, tile), smem_dkv, p, tile, stream);
  launch(jagged_attn_bwd_dq_kernel<T>, grid_of(p, tile), smem_dq, p, tile, stream);
}

}  // namespace

void launch_hstu_attention_fwd(const hstu::HstuFwdParams& p, HstuDtype dtype, cudaStream_t stream) {
  check_offsets(p, stream);
  if (p.num_seqs == 0 || p.total_len == 0 || p.num_heads == 0 || p.dv == 0) return;
  switch (dtype) {
    case HstuDtype::kFloat32: fwd<float>(p, stream); break;
    case HstuDtype::kFloat16: fwd<__half>(p, stream); break;
    case HstuDtype::kBFloat16: fwd<__nv_bfloat16>(p, stream); break;
  }
}

void launch_hstu_attention_bwd(const hstu::HstuBwdParams& p, HstuDtype dtype, cudaStream_t stream) {
  check_offsets(p, stream);
  if (p.num_seqs == 0 || p.total_len == 0 || p.num_heads == 0) return;
  switch (dtype) {
    case HstuDtype::kFloat32: bwd<float>(p, stream); break;
    case HstuDtype::kFloat16: bwd<__half>(p, stream); break;
    case HstuDtype::kBFloat16: bwd<__nv_bfloat16>(p, stream); break;
  }
}

// dv == 0 still runs the forward: lse is written for every row.
void launch_jagged_attention_fwd(const hstu::HstuFwdParams& p, HstuDtype dtype, cudaStream_t stream) {
  check_offsets(p, stream);
  if (p.num_seqs == 0 || p.total_len == 0 || p.num_heads == 0) return;
  switch (dtype) {
    case HstuDtype::kFloat32: softmax_fwd<float>(p, stream); break;
    case HstuDtype::kFloat16: softmax_fwd<__half>(p, stream); break;
    case HstuDtype::kBFloat16: softmax_fwd<__nv_bfloat16>(p, stream); break;
  }
}

void launch_jagged_attention_bwd(const hstu::HstuBwdParams& p, HstuDtype dtype, cudaStream_t stream) {
  check_offsets(p, stream);
  if (p.num_seqs == 0 || p.total_len == 0 || p.num_heads == 0) return;
  switch (dtype) {
    case HstuDtype::kFloat32: softmax_bwd<float>(p, stream); break;
    case HstuDtype::kFloat16: softmax_bwd<__half>(p, stream); break;
    case HstuDtype::kBFloat16: softmax_bwd<__nv_bfloat16>(p, stream); break;
  }
}

}  // namespace recops::cuda
