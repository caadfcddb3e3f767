// SPDX-License-Identifier: Apache-2.0
// CUDA launchers for the retrieval family. Raw device pointers and sizes in, work queued on `stream`.
// Same semantics as cpp/retrieval/topk.h (scores descending, ties by lower id, -1 / -inf padding).
//
// Validation on the device: exclude_offsets and every exclude id are checked; a query with bad offsets is
// answered without exclusions, an out-of-range exclude id is ignored, and an ErrorBits value is OR-ed into
// *error_flag (an int32 in device memory that the caller zeroed). No launcher synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "retrieval/retrieval_params.h"

namespace recops::cuda {

// Per-warp candidate lists: workspace of topk_workspace_numel(Q, k) elements each of float and int64.
int64_t topk_workspace_numel(int64_t num_queries, int64_t k);

// p: cpp/retrieval/retrieval_params.h (workspaces and error_flag required).
void launch_topk_inner_product(const retrieval::TopkParams& p, cudaStream_t stream);

}  // namespace recops::cuda
