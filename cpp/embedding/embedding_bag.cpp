// SPDX-License-Identifier: Apache-2.0
// Embedding bags: validation, the row sort of the backward, and run-time ISA dispatch of the kernels.
#include <algorithm>
#include <atomic>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "common/check.h"
#include "common/checked_math.h"
#include "common/parallel.h"
#include "embedding/embedding_bag.h"
#include "embedding/embedding_kernels.h"
#include "jagged/jagged.h"

namespace recops::embedding {
namespace {

bool use_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return ok;
#else
  return false;
#endif
}

// Checks meta against the buffers and returns the largest dim. state_rows/state_elems: sizes of the per-row /
// per-element optimizer state the update needs (-1: none).
template <typename weight_t>
int64_t check_meta(const char* op, int64_t weights_numel, const int64_t* meta, int64_t num_features,
                   int64_t total_dim, bool has_psw, int64_t state_rows, int64_t state_elems) {
  RECOPS_CHECK(num_features >= 0, op, ": the number of features must be >= 0, got ", num_features);
  RECOPS_CHECK(total_dim >= 0, op, ": total_dim must be >= 0, got ", total_dim);
  constexpr bool int8 = std::is_same_v<weight_t, uint8_t>;
  int64_t max_dim = 0;
  for (int64_t f = 0; f < num_features; ++f) {
    const int64_t* m = meta + f * kMetaCols;
    const int64_t rows = m[kNumRows], dim = m[kDim], stride = m[kRowStride];
    RECOPS_CHECK(rows >= 0 && dim >= 0 && m[kWeightOffset] >= 0 && m[kRowOffset] >= 0, op, ": meta of feature ",
                 f, " must be non-negative, got rows=", rows, " dim=", dim);
    RECOPS_CHECK(stride == (int8 ? dim + 8 : dim), op, ": row stride of feature ", f, " must be ",
                 int8 ? dim + 8 : dim, ", got ", stride);
    RECOPS_CHECK(m[kPooling] >= 0 && m[kPooling] <= 2, op, ": pooling of feature ", f,
                 " must be 0 (sum), 1 (mean) or 2 (max), got ", m[kPooling]);
    RECOPS_CHECK(!has_psw || m[kPooling] == 0, op,
                 ": per_sample_weights are only supported with sum pooling, got pooling ", m[kPooling],
                 " for feature ", f);
    RECOPS_CHECK(m[kOutColumn] >= 0 && m[kOutColumn] + dim <= total_dim, op, ": output columns of feature ", f,
                 " must lie in [0, ", total_dim, "), got [", m[kOutColumn], ", ", m[kOutColumn] + dim, ")");
    const int64_t end = m[kWeightOffset] + checked_mul(rows, stride, op);
    RECOPS_CHECK(end <= weights_numel, op, ": table of feature ", f, " ends at element ", end,
                 " beyond the weights buffer of ", weights_numel);
    if (state_rows >= 0) {
      RECOPS_CHECK(m[kRowOffset] + rows <= state_rows, op, ": optimizer state must have ", m[kRowOffset] + rows,
                   " rows, got ", state_rows);
    }
    if (state_elems >= 0) {
      RECOPS_CHECK(end <= state_elems, op, ": optimizer state must have ", end, " elements, got ", state_elems);
    }
    max_dim = std::max(max_dim, dim);
  }
  return max_dim;
}

// Offsets (start 0, non-decreasing, end at num_indices) and the sizes; the indices themselves are range-checked
// where they are first read (the forward kernel, the backward's key pass), before any row is touched.
template <typename index_t>
void check_offsets(const char* op, int64_t num_features, int64_t num_indices, const index_t* offsets,
                   int64_t batch) {
  RECOPS_CHECK(batch >= 0, op, ": batch must be >= 0, got ", batch);
  RECOPS_CHECK(num_indices >= 0, op, ": indices must not be negative-sized, got ", num_indices);
  jagged::check_offsets<index_t>(op, offsets, checked_mul(num_features, batch, op), num_indices);
}

// After a kernel flagged an out-of-range index: the first one, feature by feature, as a ValueError.
template <typename index_t>
[[noreturn]] void raise_bad_index(const char* op, const int64_t* meta, int64_t num_features, const index_t* indices,
                                  const index_t* offsets, int64_t batch, const char* const* names) {
  for (int64_t f = 0; f < num_features; ++f) {
    const int64_t begin = offsets[f * batch], end = offsets[(f + 1) * batch];
    const int64_t rows = meta[f * kMetaCols + kNumRows];
    for (int64_t i = begin; i < end; ++i) {
      const int64_t v = indices[i];
      if (names) {
        RECOPS_CHECK(v >= 0 && v < rows, op, ": feature '", names[f], "' indices[", i - begin,
                     "] must be in [0, ", rows, "), got ", v);
      }
      RECOPS_CHECK(v >= 0 && v < rows, op, ": indices[", i - begin, "]", num_features > 1 ? " of feature " : "",
                   num_features > 1 ? std::to_string(f) : std::string(), " must be in [0, ", rows, "), got ", v);
    }
  }
  RECOPS_CHECK(false, op, ": an index is out of range");  // unreachable: the kernel saw one
}

// Scratch of the backward, kept per calling thread between calls so a training loop does not page-fault fresh
// buffers every step (default-initialised: nothing is zeroed). Calls with more than kKeepIndices indices free
// theirs afterwards, so one huge batch does not pin its buffers for the life of the thread (at most ~84 MB, about
// 40 bytes per index, stay per thread and weight/index type).
constexpr int64_t kKeepIndices = int64_t{1} << 21;

template <typename T>
class Scratch {
 public:
  T* get(int64_t n) {
    if (n > cap_) {
      data_.reset(new T[static_cast<size_t>(n)]);
      cap_ = n;
    }
    return data_.get();
  }
  void release() {
    data_.reset();
    cap_ = 0;
  }

 private:
  std::unique_ptr<T[]> data_;
  int64_t cap_ = 0;
};

// Stable LSD radix sort of n keys by bits [lo, lo + bits): at most 11 bits per pass, each pass a parallel
// histogram over fixed chunks, a serial prefix over (bucket, chunk) and a parallel scatter; the chunks do not depend
// on the thread count, so the result is the same for any number of threads. Returns the buffer holding the result
// (a or tmp).
uint64_t* radix_sort(uint64_t* a, uint64_t* tmp, int64_t n, int lo, int bits, int num_threads) {
  if (n <= 1 || bits <= 0) return a;
  const int passes = (bits + 10) / 11;
  const int per = (bits + passes - 1) / passes;
  const int64_t buckets = int64_t{1} << per;
  const int64_t chunk = std::max<int64_t>(int64_t{1} << 16, (n + 63) / 64);
  const int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<int64_t> hist(static_cast<size_t>(chunks * buckets));
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = lo + pass * per;
    const uint64_t mask = static_cast<uint64_t>(buckets - 1);
    std::fill(hist.begin(), hist.end(), 0);
    parallel_tasks(chunks, num_threads, [&](int64_t c, int) {
      int64_t* h = hist.data() + c * buckets;
      const int64_t e = std::min(n, (c + 1) * chunk);
      for (int64_t i = c * chunk; i < e; ++i) ++h[(a[i] >> shift) & mask];
    });
    int64_t sum = 0;
    for (int64_t bkt = 0; bkt < buckets; ++bkt) {
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t t = hist[c * buckets + bkt];
        hist[c * buckets + bkt] = sum;
        sum += t;
      }
    }
    parallel_tasks(chunks, num_threads, [&](int64_t c, int) {
      int64_t* h = hist.data() + c * buckets;
      const int64_t e = std::min(n, (c + 1) * chunk);
      for (int64_t i = c * chunk; i < e; ++i) tmp[h[(a[i] >> shift) & mask]++] = a[i];
    });
    std::swap(a, tmp);
  }
  return a;
}

// The fields forward and backward share.
template <typename weight_t, typename index_t>
Batch<weight_t, index_t> make_batch(weight_t* weights, const int64_t* meta, int64_t num_features,
                                    const index_t* indices, const index_t* offsets, int64_t batch,
                                    int64_t total_dim, int64_t max_dim, const void* per_sample_weights,
                                    const int64_t* argmax) {
  Batch<weight_t, index_t> p;
  p.weights = weights;
  p.meta = meta;
  p.num_features = num_features;
  p.batch = batch;
  p.total_dim = total_dim;
  p.max_dim = max_dim;
  p.indices = indices;
  p.offsets = offsets;
  p.psw = static_cast<const typename Batch<weight_t, index_t>::acc_t*>(per_sample_weights);
  p.argmax = const_cast<int64_t*>(argmax);
  return p;
}

}  // namespace

template <typename weight_t, typename index_t>
void embedding_bags_forward(const char* op, const weight_t* weights, int64_t weights_numel, const int64_t* meta,
                            int64_t num_features, const index_t* indices, int64_t num_indices,
                            const index_t* offsets, int64_t batch, const void* per_sample_weights, void* out,
                            int64_t total_dim, int64_t* argmax, int num_threads, const char* const* names) {
  const int64_t max_dim = check_meta<weight_t>(op, weights_numel, meta, num_features, total_dim,
                                                per_sample_weights != nullptr, -1, -1);
  check_offsets(op, num_features, num_indices, offsets, batch);
  auto p = make_batch(const_cast<weight_t*>(weights), meta, num_features, indices, offsets, batch, total_dim, max_dim,
                      per_sample_weights, argmax);
  p.out = static_cast<typename Batch<weight_t, index_t>::out_t*>(out);
  std::atomic<bool> bad{false};
  p.bad_index = &bad;
  if (use_avx2()) avx2::forward_kernel(p, num_threads); else generic::forward_kernel(p, num_threads);
  if (bad.load()) raise_bad_index(op, meta, num_features, indices, offsets, batch, names);
}

template <typename weight_t, typename index_t>
void embedding_bags_backward(const char* op, weight_t* weights, int64_t weights_numel, const int64_t* meta,
                             int64_t num_features, const index_t* indices, int64_t num_indices,
                             const index_t* offsets, int64_t batch, const void* per_sample_weights,
                             const int64_t* argmax, const void* grad_out, int64_t total_dim,
                             const UpdateParams& params, weight_t* grad_weights, float* state0, float* state1,
                             int64_t state0_numel, int64_t state1_numel, void* grad_per_sample_weights,
                             int num_threads) {
  RECOPS_CHECK((!std::is_same_v<weight_t, uint8_t>), op, ": int8 tables are inference-only, got a backward call");
  const Update kind = params.kind;
  RECOPS_CHECK(static_cast<int>(kind) >= 0 && static_cast<int>(kind) <= 4, op,
               ": optimizer code must be in [0, 4], got ", static_cast<int>(kind));
  RECOPS_CHECK(kind != Update::kDenseGrad || grad_weights != nullptr || num_indices == 0, op,
               ": grad_weights is required for the dense gradient");
  const bool needs0 = kind == Update::kAdagrad || kind == Update::kRowwiseAdagrad || kind == Update::kAdam;
  RECOPS_CHECK(!needs0 || state0 != nullptr || num_indices == 0, op, ": the optimizer needs its state");
  RECOPS_CHECK(kind != Update::kAdam || state1 != nullptr || num_indices == 0, op, ": adam needs two states");
  RECOPS_CHECK(kind != Update::kAdam || state0_numel == state1_numel, op,
               ": adam states must have equal sizes, got ", state0_numel, " and ", state1_numel);
  const int64_t max_dim = check_meta<weight_t>(op, weights_numel, meta, num_features, total_dim,
                                                per_sample_weights != nullptr, kind == Update::kRowwiseAdagrad ? state0_numel : -1,
                                                kind == Update::kAdagrad || kind == Update::kAdam ? state0_numel : -1);
  check_offsets(op, num_features, num_indices, offsets, batch);
  RECOPS_CHECK(num_indices < (int64_t{1} << 32), op, ": at most 2^32 - 1 indices per call, got ", num_indices);
  RECOPS_CHECK(batch < (int64_t{1} << 31) && num_features < (int64_t{1} << 31), op,
               ": batch and the number of features must be < 2^31, got ", batch, " and ", num_features);
  bool has_max = false;
  for (int64_t f = 0; f < num_features; ++f) has_max |= meta[f * kMetaCols + kPooling] == 2;
  RECOPS_CHECK(!has_max || argmax != nullptr, op, ": max pooling needs the argmax of the forward");
  if (has_max) {
    // argmax values come from the caller: a stale or foreign one must not index out of range.
    const int64_t n = checked_mul(batch, total_dim, op);
    for (int64_t e = 0; e < n; ++e) {
      RECOPS_CHECK(argmax[e] >= -1 && argmax[e] < num_indices, op, ": argmax[", e, "] must be in [-1, ",
                   num_indices, "), got ", argmax[e]);
    }
  }
  // The tables, by first global row (features sharing a table give one entry).
  std::vector<TableRef> tables;
  uint64_t row_end = 0;
  for (int64_t f = 0; f < num_features; ++f) {
    const int64_t* m = meta + f * kMetaCols;
    // An empty table holds no row to update, and would share its first_row with the next table.
    if (m[kNumRows] > 0) tables.push_back(TableRef{m[kRowOffset], m[kWeightOffset], m[kDim], m[kRowStride]});
    row_end = std::max(row_end, static_cast<uint64_t>(m[kRowOffset] + m[kNumRows]));
  }
  RECOPS_CHECK(row_end <= (uint64_t{1} << 32), op, ": the fused backward handles at most 2^32 rows in all tables, got ",
               row_end);
  std::sort(tables.begin(), tables.end(),
            [](const TableRef& x, const TableRef& y) { return x.first_row < y.first_row; });
  tables.erase(std::unique(tables.begin(), tables.end(),
                           [](const TableRef& x, const TableRef& y) { return x.first_row == y.first_row; }),
               tables.end());
  // Keys (global row << 32 | position) and, per position, the offset of its bag's gradient row, its coefficient
  // and whether its feature max-pools; one parallel pass over the bags.
  using acc_t = typename Traits<weight_t>::acc_t;
  thread_local Scratch<uint64_t> keys_buf, tmp_buf;
  thread_local Scratch<int64_t> goff_buf, sgoff_buf;
  thread_local Scratch<acc_t> coef_buf, scoef_buf;
  thread_local Scratch<uint8_t> max_buf, smax_buf;
  const int64_t n = num_indices;
  uint64_t* keys = keys_buf.get(n);
  int64_t* goff = goff_buf.get(n);
  acc_t* coef = coef_buf.get(n);
  uint8_t* is_max = has_max ? max_buf.get(n) : nullptr;
  const auto* psw = static_cast<const acc_t*>(per_sample_weights);
  // The index range check rides on this pass (one unsigned compare per index): nothing is updated before the
  // whole batch is known to be in range.
  std::atomic<bool> bad{false};
  parallel_for(0, num_features * batch, 256, num_threads, [&](int64_t jb, int64_t je) {
    bool any = false;
    for (int64_t j = jb; j < je; ++j) {
      const int64_t f = j / batch, b = j % batch;
      const int64_t* m = meta + f * kMetaCols;
      const auto pooling = static_cast<Pooling>(m[kPooling]);
      const uint64_t rows = static_cast<uint64_t>(m[kNumRows]);
      const int64_t start = offsets[j], end = offsets[j + 1];
      const acc_t scale =
          pooling == Pooling::kMean && end > start ? acc_t(1) / static_cast<acc_t>(end - start) : acc_t(1);
      const int64_t go = b * total_dim + m[kOutColumn];
      for (int64_t i = start; i < end; ++i) {
        const uint64_t v = static_cast<uint64_t>(static_cast<int64_t>(indices[i]));
        any |= v >= rows;
        keys[i] = ((static_cast<uint64_t>(m[kRowOffset]) + v) << 32) | static_cast<uint64_t>(i);
        goff[i] = go;
        coef[i] = psw ? psw[i] * scale : scale;
        if (is_max) is_max[i] = pooling == Pooling::kMax;
      }
    }
    if (any) bad.store(true, std::memory_order_relaxed);
  });
  if (bad.load()) raise_bad_index<index_t>(op, meta, num_features, indices, offsets, batch, nullptr);
  const uint64_t max_row = row_end > 0 ? row_end - 1 : 0;
  int row_bits = 0;
  while (row_bits < 32 && (max_row >> row_bits) != 0) ++row_bits;
  const uint64_t* sorted = radix_sort(keys, tmp_buf.get(n), n, 32, row_bits, num_threads);
  // Per sorted key: gather its gradient offset, coefficient and max flag (random reads, independent), and count
  // the segment starts (where the row changes) per fixed chunk; the starts are then written at each chunk's prefix.
  int64_t* sgoff = sgoff_buf.get(n);
  acc_t* scoef = scoef_buf.get(n);
  uint8_t* smax = has_max ? smax_buf.get(n) : nullptr;
  const int64_t seg_chunk = std::max<int64_t>(int64_t{1} << 15, (n + 63) / 64);
  const int64_t seg_chunks = (n + seg_chunk - 1) / seg_chunk;
  std::vector<int64_t> seg_count(static_cast<size_t>(seg_chunks) + 1, 0);
  auto is_start = [&](int64_t k) { return k == 0 || (sorted[k] >> 32) != (sorted[k - 1] >> 32); };
  parallel_tasks(seg_chunks, num_threads, [&](int64_t c, int) {
    int64_t cnt = 0;
    for (int64_t k = c * seg_chunk, e = std::min(n, (c + 1) * seg_chunk); k < e; ++k) {
      const int64_t i = static_cast<int64_t>(sorted[k] & 0xffffffffu);
      sgoff[k] = goff[i];
      scoef[k] = coef[i];
      if (smax) smax[k] = is_max[i];
      cnt += is_start(k);
    }
    seg_count[c + 1] = cnt;
  });
  for (int64_t c = 0; c < seg_chunks; ++c) seg_count[c + 1] += seg_count[c];
  std::vector<int64_t> segments(static_cast<size_t>(seg_count[seg_chunks]) + 1);
  parallel_tasks(seg_chunks, num_threads, [&](int64_t c, int) {
    int64_t* out = segments.data() + seg_count[c];
    for (int64_t k = c * seg_chunk, e = std::min(n, (c + 1) * seg_chunk); k < e; ++k) {
      if (is_start(k)) *out++ = k;
    }
  });
  segments.back() = n;
  auto p = make_batch(weights, meta, num_features, indices, offsets, batch, total_dim, max_dim, per_sample_weights,
                      argmax);
  p.grad_out = static_cast<const typename Batch<weight_t, index_t>::out_t*>(grad_out);
  p.sorted_keys = sorted;
  p.segments = segments.data();
  p.num_segments = static_cast<int64_t>(segments.size()) - 1;
  p.grad_offset = sgoff;
  p.coef = scoef;
  p.is_max = smax;
  p.tables = tables.data();
  p.num_tables = static_cast<int64_t>(tables.size());
  p.params = params;
  p.grad_weights = grad_weights;
  p.state0 = state0;
  p.state1 = state1;
  p.grad_psw = static_cast<typename Batch<weight_t, index_t>::acc_t*>(grad_per_sample_weights);
  if (use_avx2()) avx2::backward_kernel(p, num_threads); else generic::backward_kernel(p, num_threads);
  if (n > kKeepIndices) {
    for (auto* b : {&keys_buf, &tmp_buf}) b->release();
    for (auto* b : {&goff_buf, &sgoff_buf}) b->release();
    for (auto* b : {&coef_buf, &scoef_buf}) b->release();
    for (auto* b : {&max_buf, &smax_buf}) b->release();
  }
}

#define RECOPS_EMB_INSTANTIATE(W, I)                                                                            \
  template void embedding_bags_forward<W, I>(const char*, const W*, int64_t, const int64_t*, int64_t, const I*, \
                                             int64_t, const I*, int64_t, const void*, void*, int64_t, int64_t*,  \
                                             int, const char* const*);                                           \
  template void embedding_bags_backward<W, I>(const char*, W*, int64_t, const int64_t*, int64_t, const I*,      \
                                              int64_t, const I*, int64_t, const void*, const int64_t*,          \
                                              const void*, int64_t, const UpdateParams&, W*, float*, float*,    \
                                              int64_t, int64_t, void*, int);
#define RECOPS_EMB_INSTANTIATE_W(W) RECOPS_EMB_INSTANTIATE(W, int32_t) RECOPS_EMB_INSTANTIATE(W, int64_t)
RECOPS_EMB_INSTANTIATE_W(float)
RECOPS_EMB_INSTANTIATE_W(double)
RECOPS_EMB_INSTANTIATE_W(Half)
RECOPS_EMB_INSTANTIATE_W(BFloat16)
RECOPS_EMB_INSTANTIATE_W(uint8_t)

}  // namespace recops::embedding
