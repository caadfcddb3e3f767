// SPDX-License-Identifier: Apache-2.0
// Internal: the per-call plan shared by the ISA-specific HSTU kernels (hstu_kernels_impl.h) and the
// dispatcher (hstu_attention.cpp). Not part of the public core API.
#pragma once

#include <cstdint>

#include "hstu/attention_dropout.h"
#include "hstu/hstu_attention.h"
#include "hstu/hstu_mask.h"
#include "hstu/hstu_params.h"

namespace recops::hstu {

constexpr int64_t kBlockQ = 64;  // query rows per tile
constexpr int64_t kBlockK = 64;  // key rows per tile
constexpr int64_t kBwdKeyBlocksPerPart = 8;  // backward: key blocks per task of a long sequence

struct HstuPlan {
  // forward tasks (sequence, query blocks [qbegin, qend)), most work first
  const int64_t* task_seq = nullptr;
  const int64_t* task_qbegin = nullptr;
  const int64_t* task_qend = nullptr;
  int64_t num_tasks = 0;
  int64_t max_len = 0;  // longest sequence in the batch (sizes the per-thread packed K/V and backward rows)
  // backward tasks t (sequence, key blocks [kb0, kb1)), numbered in (sequence, part) order and run in task_order
  // (most work first): a sequence longer than kBwdKeyBlocksPerPart key blocks is cut into parts, so long sequences
  // spread over threads. Part 0 of a sequence writes its dq rows, part p > 0 writes them at dq_partials +
  // task_dq[t] (elements), added in task order after the kernel (the cut depends on the lengths only: results are
  // the same for any thread count). The bf16 kernels' split sequences write every part, part 0 included, to
  // float partials (summed in part order, then rounded to bf16 once).
  const int64_t* task_order = nullptr;  // the tasks in the order they run (most work first)
  const int64_t* task_seq_b = nullptr;
  const int64_t* task_kb0 = nullptr;
  const int64_t* task_kb1 = nullptr;
  const int64_t* task_dq = nullptr;  // -1: the task writes dq itself
  void* dq_partials = nullptr;
  int64_t num_seq_tasks = 0;
  // time buckets: bucket(x) = k  iff  thr[k] <= x < thr[k + 1]  (thr[0] = 1, thr[num_buckets] = +inf)
  const double* bucket_thr = nullptr;
  double log2_to_bucket = 0.0;  // ln(2) / time_bucket_base, for the first guess
  double time_bucket_base = 1.0;  // the formula's base (x >= 9e15 is bucketed with it directly)
  bool single_step_buckets = false;  // the first guess is off by at most one bucket
  // backward: per-task bias-gradient partials [tasks][2N - 1] and [tasks][num_buckets] (zeroed by the caller)
  void* pos_partials = nullptr;
  void* time_partials = nullptr;
  // bf16 path (hstu_cpu_amx.cpp): AMX tiles, else AVX512-BF16 dot products
  bool amx = false;
};

// Throws std::bad_alloc-like failure as ValueError-free RuntimeError (scratch allocation failed).
[[noreturn]] void throw_alloc_failure(const char* op);

// Kernel scratch from a small process-wide pool of 64-byte-aligned blocks (thread safe): scratch_get returns a
// block of at least `bytes` (its size in *size; null if allocation failed), scratch_put gives it back. The pool
// keeps a few recent blocks so that calls in a loop (training steps, incremental inference) reuse warm memory
// instead of faulting in fresh pages every call; contents are not cleared.
void* scratch_get(int64_t bytes, int64_t* size);
void scratch_put(void* block, int64_t size);

#define RECOPS_HSTU_DECLARE_ISA(ns)                                                          \
  namespace ns {                                                                             \
  template <typename T> void run_fwd(const HstuFwdParams& a, const HstuPlan& p, int threads);  \
  template <typename T> void run_bwd(const HstuBwdParams& a, const HstuPlan& p, int threads);  \
  }
RECOPS_HSTU_DECLARE_ISA(generic)
RECOPS_HSTU_DECLARE_ISA(avx2)
RECOPS_HSTU_DECLARE_ISA(avx512)
RECOPS_HSTU_DECLARE_ISA(bf16)
#undef RECOPS_HSTU_DECLARE_ISA

}  // namespace recops::hstu
