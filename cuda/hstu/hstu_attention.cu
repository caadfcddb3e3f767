// SPDX-License-Identifier: Apache-2.0
// Launchers of the attention kernels of hstu_kernels.cuh for both ops (HSTU attention: kSoftmax = false;
// softmax attention, jagged_attention: kSoftmax = true): offsets check, tile size from the head dims, dynamic
// shared memory (attn_smem; above 48 KiB opted into), one launch per kernel on the caller's stream.
#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include "common/cuda_check.cuh"
#include "hstu/hstu_cuda.h"
#include "hstu/hstu_kernels.cuh"
#include "jagged/jagged_kernels.cuh"

namespace recops::cuda {
namespace {

constexpr int kThreads = 256;

void check_offsets(const hstu::HstuFwdParams& p, cudaStream_t stream) {
  check_offsets_kernel<int64_t><<<grid_for(p.num_seqs + 1, kThreads), kThreads, 0, stream>>>(
      p.offsets, p.num_seqs, p.total_len, p.error_flag);
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

bool no_rows(const hstu::HstuFwdParams& p) { return p.num_seqs == 0 || p.total_len == 0 || p.num_heads == 0; }

// One launch of `pass`: grid (own tile, sequence * head), tile rows from the head dims.
template <typename Params>
void launch(void (*kernel)(Params, int), AttnPass pass, bool softmax, const Params& p, cudaStream_t stream) {
  const int tile = (p.dqk > 128 || p.dv > 128) ? 16 : 32;
  const size_t smem = sizeof(float) * static_cast<size_t>(attn_smem(pass, softmax, tile, p.dqk, p.dv).total);
  if (smem > 48 * 1024) {
    RECOPS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  }
  // x: one block column per (sequence, head), up to 2^31 - 1; y: blocks striding over the own tiles, enough for
  // ~2048 blocks in all but no more than the longest possible sequence needs (max_seq_len may be a loose bound)
  const int64_t seq_heads = p.num_seqs * p.num_heads;
  if (seq_heads > 0x7FFFFFFF) throw std::invalid_argument("hstu_attention: num_seqs * num_heads must be < 2^31 on cuda");
  const int64_t tiles = (p.max_seq_len + tile - 1) / tile;
  const int64_t want = std::max<int64_t>(16, 2048 / std::max<int64_t>(seq_heads, 1));
  const dim3 grid(static_cast<unsigned>(seq_heads), static_cast<unsigned>(std::min<int64_t>(std::min(tiles, want), 65535)));
  kernel<<<grid, kThreads, smem, stream>>>(p, tile);
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
struct DtypeTag {
  using type = T;
};

template <typename F>
void for_dtype(HstuDtype dtype, F&& f) {
  switch (dtype) {
    case HstuDtype::kFloat32: f(DtypeTag<float>{}); break;
    case HstuDtype::kFloat16: f(DtypeTag<__half>{}); break;
    case HstuDtype::kBFloat16: f(DtypeTag<__nv_bfloat16>{}); break;
  }
}

template <bool kSoftmax>
void fwd(const hstu::HstuFwdParams& p, HstuDtype dtype, cudaStream_t stream) {
  check_offsets(p, stream);
  // HSTU with dv == 0 has nothing to write; the softmax forward still writes lse for every row.
  if (no_rows(p) || (!kSoftmax && p.dv == 0)) return;
  for_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(attn_fwd_kernel<T, kSoftmax>, AttnPass::kFwd, kSoftmax, p, stream);
  });
}

template <bool kSoftmax>
void bwd(const hstu::HstuBwdParams& p, HstuDtype dtype, cudaStream_t stream) {
  check_offsets(p, stream);
  if (no_rows(p)) return;
  for_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch(attn_bwd_dkv_kernel<T, kSoftmax>, AttnPass::kBwdKV, kSoftmax, p, stream);
    launch(attn_bwd_dq_kernel<T, kSoftmax>, AttnPass::kBwdQ, kSoftmax, p, stream);
  });
}

}  // namespace

void launch_hstu_attention_fwd(const hstu::HstuFwdParams& p, HstuDtype dtype, cudaStream_t stream) {
  fwd<false>(p, dtype, stream);
}

void launch_hstu_attention_bwd(const hstu::HstuBwdParams& p, HstuDtype dtype, cudaStream_t stream) {
  bwd<false>(p, dtype, stream);
}

void launch_jagged_attention_fwd(const hstu::HstuFwdParams& p, HstuDtype dtype, cudaStream_t stream) {
  fwd<true>(p, dtype, stream);
}

void launch_jagged_attention_bwd(const hstu::HstuBwdParams& p, HstuDtype dtype, cudaStream_t stream) {
  bwd<true>(p, dtype, stream);
}

}  // namespace recops::cuda
