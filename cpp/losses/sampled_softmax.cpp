// SPDX-License-Identifier: Apache-2.0
// Sampled softmax: validation, scratch and run-time ISA dispatch (kernels in sampled_softmax_impl.h).
#include "losses/sampled_softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/checked_math.h"
#include "common/cpu_isa.h"

namespace recops::losses {
namespace {

constexpr const char* kOp = "sampled_softmax_loss";

int64_t num_candidates(const SampledSoftmaxParams& p) {
  const int64_t others = p.in_batch && p.num_rows > 0 ? p.num_rows - 1 : 0;
  return checked_add(checked_add(1, p.num_negatives, kOp, "number of candidates"), others, kOp,
                     "number of candidates");
}

void check_ids(const char* arg, const int64_t* ids, int64_t n, int64_t num_items) {
  for (int64_t i = 0; i < n; ++i) {
    RECOPS_CHECK(ids[i] >= 0 && ids[i] < num_items, kOp, ": ", arg, "[", i, "] must be in [0, ", num_items,
                 "), got ", ids[i]);
  }
}

template <typename T>
struct Scratch {
  SampledSoftmaxScratch view;
  std::vector<int64_t> ids;
  std::vector<T> logits, partial;

  Scratch(const SampledSoftmaxParams& p, int num_threads, bool backward) {
    const int64_t count = num_candidates(p);
    int64_t tasks = std::min<int64_t>(std::max(num_threads, 1), std::max<int64_t>(p.num_rows / 16, 1));
    const int64_t table = checked_mul(p.num_items, p.dim, kOp, "items size");
    if (backward && table > 0) {  // extra item-gradient buffers within the scratch budget
      const int64_t per_buffer = checked_mul(table, static_cast<int64_t>(sizeof(T)), kOp);
      tasks = std::max<int64_t>(1, std::min(tasks, 1 + kSampledSoftmaxScratchBytes / per_buffer));
    }
    view.tasks = tasks;
    view.rows_per_task = (p.num_rows + tasks - 1) / tasks;
    // ids and logits [tasks * C]: their bytes checked, so a huge M raises ValueError instead of length_error
    const int64_t per_task = checked_mul(tasks, count, kOp, "scratch size (tasks * candidates)");
    checked_mul(per_task, static_cast<int64_t>(sizeof(int64_t) + sizeof(T)), kOp, "scratch bytes");
    ids.resize(static_cast<size_t>(per_task));
    logits.resize(ids.size());
    if (backward) partial.resize(static_cast<size_t>(checked_mul(tasks - 1, table, kOp)));
    view.ids = ids.data();
    view.logits = logits.data();
    view.partial = partial.data();
  }
};

}  // namespace

void sampled_softmax_negatives(int64_t rows, int64_t m, int64_t num_items, uint64_t seed, int64_t* out) {
  RECOPS_CHECK(rows >= 0 && m >= 0, kOp, ": sizes must be non-negative, got rows=", rows, " m=", m);
  const int64_t count = checked_mul(rows, m, kOp, "rows * m");  // before any use of rows * m (signed overflow)
  RECOPS_CHECK(num_items >= 1 || count == 0, kOp, ": drawing negatives needs at least 1 item, got ", num_items);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < m; ++j) out[i * m + j] = negative_id(seed, i, j, num_items);
  }
}

template <typename T>
void check_sampled_softmax_sizes(const SampledSoftmaxParams& p) {
  RECOPS_CHECK(p.num_rows >= 0 && p.dim >= 0 && p.num_items >= 0 && p.num_negatives >= 0, kOp,
               ": sizes must be non-negative, got L=", p.num_rows, " D=", p.dim, " V=", p.num_items, " M=",
               p.num_negatives);
  RECOPS_CHECK(p.inv_temperature > 0 && std::isfinite(p.inv_temperature), kOp,
               ": temperature must be finite and > 0, got 1/", p.inv_temperature);
  // the kernels scale logits by T(inv_temperature): it must be finite in T (float32: temperature > ~2.9e-39)
  RECOPS_CHECK(p.inv_temperature <= static_cast<double>(std::numeric_limits<T>::max()), kOp,
               ": 1/temperature overflows the float type, got 1/", p.inv_temperature);
  RECOPS_CHECK(!(p.generate && p.negatives), kOp, ": negatives must be null when they are generated");
  RECOPS_CHECK(p.num_rows == 0 || p.num_items >= 1, kOp, ": items must have at least 1 row, got 0");
  checked_mul(p.num_rows, p.dim, kOp, "queries size");
  checked_mul(p.num_items, p.dim, kOp, "items size");
  num_candidates(p);
}

template <typename T>
void check_sampled_softmax(const SampledSoftmaxParams& p) {
  check_sampled_softmax_sizes<T>(p);
  check_ids("positives", p.positives, p.num_rows, p.num_items);
  if (p.negatives) {
    check_ids("negatives", p.negatives, p.per_row ? checked_mul(p.num_rows, p.num_negatives, kOp) : p.num_negatives,
              p.num_items);
  } else {
    // an empty per-row table [0, M] may come with a null pointer: with no rows no id is read
    RECOPS_CHECK(p.generate || p.num_negatives == 0 || p.num_rows == 0, kOp, ": ", p.num_negatives,
                 " negatives need ids or generation");
  }
  if (p.log_q) {
    const T* lq = static_cast<const T*>(p.log_q);
    for (int64_t v = 0; v < p.num_items; ++v) {
      RECOPS_CHECK(std::isfinite(lq[v]), kOp, ": log_q[", v, "] must be finite, got ", lq[v]);
    }
  }
}

template <typename T>
void sampled_softmax_forward(const SampledSoftmaxParams& p, int num_threads) {
  check_sampled_softmax<T>(p);
  if (p.num_rows == 0) return;
  Scratch<T> s(p, num_threads, false);
  isa_pick(&generic::forward<T>, &avx2::forward<T>, &avx512::forward<T>)(p, s.view, num_threads);
}

template <typename T>
void sampled_softmax_backward(const SampledSoftmaxParams& p, int num_threads) {
  check_sampled_softmax<T>(p);
  if (p.num_rows == 0) {
    T* ge = static_cast<T*>(p.grad_items);
    std::fill(ge, ge + p.num_items * p.dim, T(0));
    return;
  }
  Scratch<T> s(p, num_threads, true);
  isa_pick(&generic::backward<T>, &avx2::backward<T>, &avx512::backward<T>)(p, s.view, num_threads);
}

#define RECOPS_SSM_INSTANTIATE(T)                                                  \
  template void check_sampled_softmax<T>(const SampledSoftmaxParams&);             \
  template void check_sampled_softmax_sizes<T>(const SampledSoftmaxParams&);       \
  template void sampled_softmax_forward<T>(const SampledSoftmaxParams&, int);      \
  template void sampled_softmax_backward<T>(const SampledSoftmaxParams&, int);
RECOPS_SSM_INSTANTIATE(float)
RECOPS_SSM_INSTANTIATE(double)
#undef RECOPS_SSM_INSTANTIATE

}  // namespace recops::losses
