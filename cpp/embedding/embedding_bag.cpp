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
#include "common/cpu_isa.h"
#include "common/parallel.h"
#include "embedding/embedding_bag.h"
#include "embedding/embedding_kernels.h"
#include "jagged/jagged.h"

namespace recops::embedding {
namespace {

// What check_meta learns of a valid meta: the largest dim, and the column ranges [begin, end) of out that no
// feature writes (the forward zeroes them, so out never holds uninitialised columns).
struct MetaInfo {
  int64_t max_dim = 0;
  std::vector<std::pair<int64_t, int64_t>> gaps;
};

// Checks meta against the buffers, every sum and product through checked arithmetic (values near 2^63 must not
// wrap past a bounds test). state_rows/state_elems: sizes of the per-row / per-element optimizer state the
// update needs (-1: none).
template <typename weight_t>
MetaInfo check_meta(const char* op, int64_t weights_numel, const int64_t* meta, int64_t num_features,
                    int64_t total_dim, bool has_psw, int64_t state_rows, int64_t state_elems) {
  RECOPS_CHECK(num_features >= 0, op, ": the number of features must be >= 0, got ", num_features);
  RECOPS_CHECK(total_dim >= 0, op, ": total_dim must be >= 0, got ", total_dim);
  constexpr bool int8 = std::is_same_v<weight_t, uint8_t>;
  MetaInfo info;
  std::vector<std::pair<int64_t, int64_t>> cols;
  cols.reserve(static_cast<size_t>(num_features));
  for (int64_t f = 0; f < num_features; ++f) {
    const int64_t* m = meta + f * kMetaCols;
    const int64_t rows = m[kNumRows], dim = m[kDim], stride = m[kRowStride];
    RECOPS_CHECK(rows >= 0 && dim >= 0 && m[kWeightOffset] >= 0 && m[kRowOffset] >= 0 && m[kOutColumn] >= 0, op,
                 ": meta of feature ", f, " must be non-negative, got weight_offset=", m[kWeightOffset],
                 " row_offset=", m[kRowOffset], " rows=", rows, " dim=", dim, " out_column=", m[kOutColumn]);
    const int64_t want_stride = int8 ? checked_add(dim, 8, op, "meta: dim + 8 (int8 row stride)") : dim;
    RECOPS_CHECK(stride == want_stride, op, ": row stride of feature ", f, " must be ", want_stride, ", got ",
                 stride);
    RECOPS_CHECK(m[kPooling] >= 0 && m[kPooling] <= 2, op, ": pooling of feature ", f,
                 " must be 0 (sum), 1 (mean) or 2 (max), got ", m[kPooling]);
    RECOPS_CHECK(!has_psw || m[kPooling] == 0, op,
                 ": per_sample_weights are only supported with sum pooling, got pooling ", m[kPooling],
                 " for feature ", f);
    const int64_t col_end = checked_add(m[kOutColumn], dim, op, "meta: out_column + dim");
    RECOPS_CHECK(col_end <= total_dim, op, ": output columns of feature ", f, " must lie in [0, ", total_dim,
                 "), got [", m[kOutColumn], ", ", col_end, ")");
    const int64_t end = checked_end(m[kWeightOffset], rows, stride, op, "meta: weight_offset + rows * row_stride");
    RECOPS_CHECK(end <= weights_numel, op, ": table of feature ", f, " ends at element ", end,
                 " beyond the weights buffer of ", weights_numel);
    const int64_t row_end = checked_add(m[kRowOffset], rows, op, "meta: row_offset + rows");
    if (state_rows >= 0) {
      RECOPS_CHECK(row_end <= state_rows, op, ": optimizer state must have ", row_end, " rows, got ", state_rows);
    }
    if (state_elems >= 0) {
      RECOPS_CHECK(end <= state_elems, op, ": optimizer state must have ", end, " elements, got ", state_elems);
    }
    info.max_dim = std::max(info.max_dim, dim);
    if (dim > 0) cols.emplace_back(m[kOutColumn], col_end);
  }
  std::sort(cols.begin(), cols.end());
  int64_t covered = 0;
  for (const auto& [b, e] : cols) {
    if (b > covered) info.gaps.emplace_back(covered, b);
    covered = std::max(covered, e);
  }
  if (covered < total_dim) info.gaps.emplace_back(covered, total_dim);
  return info;
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

// Throws naming the first out-of-range index, feature by feature (offsets already checked).
template <typename index_t>
void check_indices(const char* op, const int64_t* meta, int64_t num_features, const index_t* indices,
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
}

// After a kernel flagged an out-of-range index: the first one as a ValueError.
template <typename index_t>
[[noreturn]] void raise_bad_index(const char* op, const int64_t* meta, int64_t num_features, const index_t* indices,
                                  const index_t* offsets, int64_t batch, const char* const* names) {
  check_indices(op, meta, num_features, indices, offsets, batch, names);
  RECOPS_CHECK(false, op, ": an index is out of range");  // unreachable: the kernel saw one
}

// Scratch of the backward, kept per calling thread between calls so a training loop does not page-fault fresh
// buffers every step (default-initialised: nothing is zeroed). Calls with more than kKeepIndices indices free
// theirs afterwards, so one huge batch does not pin its buffers for the life of the thread (at most ~95 MB, about
// 45 bytes per index, stay per thread and weight/index type).
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

// One stable counting pass: dst <- src ordered by the digit (key >> shift) & (buckets - 1), over `chunks` equal
// chunks of src (parallel histograms, a serial prefix over (bucket, chunk), a parallel scatter). A stable order is
// unique, so the chunking does not change the result. starts (optional, buckets + 1 entries): where each digit's
// keys begin in dst, then n.
void counting_pass(const uint64_t* src, uint64_t* dst, int64_t n, int shift, int64_t buckets, int64_t chunks,
                   int num_threads, int64_t* starts) {
  const int64_t chunk = (n + chunks - 1) / chunks;
  const uint64_t mask = static_cast<uint64_t>(buckets - 1);
  std::vector<int64_t> hist(static_cast<size_t>(chunks * buckets), 0);
  parallel_tasks(chunks, num_threads, [&](int64_t c, int) {
    int64_t* h = hist.data() + c * buckets;
    for (int64_t i = c * chunk, e = std::min(n, (c + 1) * chunk); i < e; ++i) ++h[(src[i] >> shift) & mask];
  });
  int64_t sum = 0;
  for (int64_t bkt = 0; bkt < buckets; ++bkt) {
    if (starts) starts[bkt] = sum;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t t = hist[c * buckets + bkt];
      hist[c * buckets + bkt] = sum;
      sum += t;
    }
  }
  if (starts) starts[buckets] = n;
  parallel_tasks(chunks, num_threads, [&](int64_t c, int) {
    int64_t* h = hist.data() + c * buckets;
    for (int64_t i = c * chunk, e = std::min(n, (c + 1) * chunk); i < e; ++i) {
      dst[h[(src[i] >> shift) & mask]++] = src[i];
    }
  });
}

// Stable LSD radix sort of n keys by bits [lo, lo + bits): at most 11 bits per pass, each a counting_pass over
// chunks of >= 64k keys. Returns the buffer holding the result (a or tmp).
uint64_t* radix_sort(uint64_t* a, uint64_t* tmp, int64_t n, int lo, int bits, int num_threads) {
  if (n <= 1 || bits <= 0) return a;
  const int passes = (bits + 10) / 11;
  const int per = (bits + passes - 1) / passes;
  const int64_t chunk = std::max<int64_t>(int64_t{1} << 16, (n + 63) / 64);
  const int64_t chunks = (n + chunk - 1) / chunk;
  for (int pass = 0; pass < passes; ++pass) {
    counting_pass(a, tmp, n, lo + pass * per, int64_t{1} << per, chunks, num_threads, nullptr);
    std::swap(a, tmp);
  }
  return a;
}

// The start of every run of equal rows in sorted keys, written to segments (n + 1 entries of room) followed by n;
// returns the number of runs. Counted per fixed chunk, then written at each chunk's prefix.
int64_t find_segments(const uint64_t* sorted, int64_t n, int num_threads, int64_t* segments) {
  const int64_t seg_chunk = std::max<int64_t>(int64_t{1} << 15, (n + 63) / 64);
  const int64_t seg_chunks = (n + seg_chunk - 1) / seg_chunk;
  std::vector<int64_t> seg_count(static_cast<size_t>(seg_chunks) + 1, 0);
  auto is_start = [&](int64_t k) { return k == 0 || (sorted[k] >> 32) != (sorted[k - 1] >> 32); };
  parallel_tasks(seg_chunks, num_threads, [&](int64_t c, int) {
    int64_t cnt = 0;
    for (int64_t k = c * seg_chunk, e = std::min(n, (c + 1) * seg_chunk); k < e; ++k) cnt += is_start(k);
    seg_count[c + 1] = cnt;
  });
  for (int64_t c = 0; c < seg_chunks; ++c) seg_count[c + 1] += seg_count[c];
  parallel_tasks(seg_chunks, num_threads, [&](int64_t c, int) {
    int64_t* out = segments + seg_count[c];
    for (int64_t k = c * seg_chunk, e = std::min(n, (c + 1) * seg_chunk); k < e; ++k) {
      if (is_start(k)) *out++ = k;
    }
  });
  segments[seg_count[seg_chunks]] = n;
  return seg_count[seg_chunks];
}

// Sorts n backward keys (row << 32 | id, ids ascending in input order) in place by row, ids ascending within a
// row (the order of the full 64-bit keys, which a stable sort by row alone also gives, so the result does not
// depend on the thread count), and finds the runs of equal rows (find_segments' contract; tmp: n keys, seg_tmp:
// n entries of scratch). Rows of at most 11 bits take one counting pass (radix_sort). Wider rows are partitioned
// by their top bits into buckets of ~1,024 keys in one parallel counting pass over the whole array (tmp <- a);
// each bucket is then sorted by its remaining row bits while it sits in L1/L2 (8-bit LSD passes between tmp and a
// whose histograms come from one read, std::sort for small buckets) and its runs are found right there (a
// bucket's first key always starts a run: its top bits differ from every earlier bucket's). In a training step at
// 8 x 1M rows and 327,680 keys, this with bag ids (below) took the backward's work before the update kernel from
// ~7 ms (three whole-array 8-bit passes, a per-key gather, two run passes) to ~3.6 ms on 2 cores.
int64_t sort_keys_by_row(uint64_t* a, uint64_t* tmp, int64_t* seg_tmp, int64_t n, int row_bits, int num_threads,
                         int64_t* segments) {
  if (n <= 1024 || row_bits <= 11) {
    if (n <= 1024) {
      std::sort(a, a + n);
    } else if (radix_sort(a, tmp, n, 32, row_bits, num_threads) != a) {
      std::copy(tmp, tmp + n, a);
    }
    return find_segments(a, n, num_threads, segments);
  }
  int hb = 0;  // partition bits: buckets of ~1,024 keys, at most 2^11 of them
  while (hb < 11 && (n >> (10 + hb)) > 0) ++hb;
  hb = std::min(hb, row_bits);
  const int low_bits = row_bits - hb, shift = 32 + low_bits, passes = (low_bits + 7) / 8;
  const int64_t buckets = int64_t{1} << hb;
  const int64_t chunks = std::min<int64_t>(4 * std::max(num_threads, 1), (n + 4095) / 4096);
  std::vector<int64_t> start(static_cast<size_t>(buckets) + 1);
  counting_pass(a, tmp, n, shift, buckets, chunks, num_threads, start.data());
  // Buckets in groups of ~16k keys per task (whole buckets, so tasks never share one). runs[bkt]: the bucket's
  // number of runs, whose starts go to seg_tmp[start[bkt]...] first.
  std::vector<int64_t> groups{0}, runs(static_cast<size_t>(buckets) + 1, 0);
  for (int64_t bkt = 1; bkt <= buckets; ++bkt) {
    if (bkt == buckets || start[bkt] - start[groups.back()] >= (int64_t{1} << 14)) groups.push_back(bkt);
  }
  parallel_tasks(static_cast<int64_t>(groups.size()) - 1, num_threads, [&](int64_t gi, int) {
    int64_t count[4][257];
    for (int64_t bkt = groups[gi]; bkt < groups[gi + 1]; ++bkt) {
      const int64_t b = start[bkt], m = start[bkt + 1] - b;
      if (m == 0) continue;
      uint64_t* src = tmp + b;
      uint64_t* dst = a + b;
      if (m <= 64) {
        std::copy(src, src + m, dst);
        std::sort(dst, dst + m);
      } else {
        for (int q = 0; q < passes; ++q) std::fill(count[q], count[q] + 257, 0);
        for (int64_t i = 0; i < m; ++i) {
          const uint64_t row = src[i] >> 32;
          for (int q = 0; q < passes; ++q) ++count[q][((row >> (8 * q)) & 0xff) + 1];
        }
        for (int q = 0; q < passes; ++q) {
          const int sh = 32 + 8 * q;
          int64_t* c = count[q];
          if (c[((src[0] >> sh) & 0xff) + 1] == m) continue;  // one digit for the whole bucket: nothing moves
          for (int d = 0; d < 256; ++d) c[d + 1] += c[d];
          for (int64_t i = 0; i < m; ++i) dst[c[(src[i] >> sh) & 0xff]++] = src[i];
          std::swap(src, dst);
        }
        if (src != a + b) std::copy(src, src + m, a + b);
      }
      const uint64_t* k = a + b;
      int64_t* out = seg_tmp + b;
      *out++ = b;
      for (int64_t i = 1; i < m; ++i) {
        if ((k[i] >> 32) != (k[i - 1] >> 32)) *out++ = b + i;
      }
      runs[bkt + 1] = out - (seg_tmp + b);
    }
  });
  for (int64_t bkt = 0; bkt < buckets; ++bkt) runs[bkt + 1] += runs[bkt];
  parallel_tasks(static_cast<int64_t>(groups.size()) - 1, num_threads, [&](int64_t gi, int) {
    for (int64_t bkt = groups[gi]; bkt < groups[gi + 1]; ++bkt) {
      std::copy(seg_tmp + start[bkt], seg_tmp + start[bkt] + (runs[bkt + 1] - runs[bkt]), segments + runs[bkt]);
    }
  });
  segments[runs[buckets]] = n;
  return runs[buckets];
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

bool check_embedding_meta(const char* op, int64_t weights_numel, bool int8_rows, const int64_t* meta,
                          int64_t num_features, int64_t total_dim, bool has_psw, int64_t state_rows,
                          int64_t state_elems) {
  const MetaInfo info =
      int8_rows ? check_meta<uint8_t>(op, weights_numel, meta, num_features, total_dim, has_psw, state_rows,
                                      state_elems)
                : check_meta<float>(op, weights_numel, meta, num_features, total_dim, has_psw, state_rows,
                                    state_elems);
  return !info.gaps.empty();
}

template <typename index_t>
void check_embedding_bags_data(const char* op, const int64_t* meta, int64_t num_features, const index_t* indices,
                               int64_t num_indices, const index_t* offsets, int64_t batch, const char* const* names) {
  check_offsets(op, num_features, num_indices, offsets, batch);
  check_indices(op, meta, num_features, indices, offsets, batch, names);
}

template void check_embedding_bags_data<int32_t>(const char*, const int64_t*, int64_t, const int32_t*, int64_t,
                                                 const int32_t*, int64_t, const char* const*);
template void check_embedding_bags_data<int64_t>(const char*, const int64_t*, int64_t, const int64_t*, int64_t,
                                                 const int64_t*, int64_t, const char* const*);

template <typename weight_t, typename index_t>
void embedding_bags_forward(const char* op, const weight_t* weights, int64_t weights_numel, const int64_t* meta,
                            int64_t num_features, const index_t* indices, int64_t num_indices,
                            const index_t* offsets, int64_t batch, const void* per_sample_weights, void* out,
                            int64_t total_dim, int64_t* argmax, int num_threads, const char* const* names) {
  const MetaInfo info = check_meta<weight_t>(op, weights_numel, meta, num_features, total_dim,
                                             per_sample_weights != nullptr, -1, -1);
  check_offsets(op, num_features, num_indices, offsets, batch);
  checked_mul(batch, total_dim, op, "batch * total_dim");
  auto p = make_batch(const_cast<weight_t*>(weights), meta, num_features, indices, offsets, batch, total_dim,
                      info.max_dim, per_sample_weights, argmax);
  p.out = static_cast<typename Batch<weight_t, index_t>::out_t*>(out);
  std::atomic<bool> bad{false};
  p.bad_index = &bad;
  isa_pick(&generic::forward_kernel<weight_t, index_t>, &avx2::forward_kernel<weight_t, index_t>)(p, num_threads);
  if (bad.load()) raise_bad_index(op, meta, num_features, indices, offsets, batch, names);
  if (!info.gaps.empty()) {  // columns no feature writes: zeros (argmax -1), never uninitialised memory
    using out_t = typename Batch<weight_t, index_t>::out_t;
    parallel_for(0, batch, 1024, num_threads, [&](int64_t bb, int64_t be) {
      for (int64_t b = bb; b < be; ++b) {
        for (const auto& [c0, c1] : info.gaps) {
          std::fill(p.out + b * total_dim + c0, p.out + b * total_dim + c1, out_t{});
          if (argmax) std::fill(argmax + b * total_dim + c0, argmax + b * total_dim + c1, int64_t{-1});
        }
      }
    });
  }
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
  const int64_t max_dim =
      check_meta<weight_t>(op, weights_numel, meta, num_features, total_dim, per_sample_weights != nullptr,
                           kind == Update::kRowwiseAdagrad ? state0_numel : -1,
                           kind == Update::kAdagrad || kind == Update::kAdam ? state0_numel : -1)
          .max_dim;
  check_offsets(op, num_features, num_indices, offsets, batch);
  checked_mul(batch, total_dim, op, "batch * total_dim");
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
  // Keys (global row << 32 | id) and, per id, the offset of its bag's gradient row, its coefficient and whether
  // its feature max-pools; one parallel pass over the bags. The id is the bag unless per-sample weights or max
  // pooling need the position: duplicates of a row within a bag then carry the same gradient row and coefficient,
  // and the per-bag arrays are small enough to stay in cache while the kernel reads them in row order.
  using acc_t = typename Traits<weight_t>::acc_t;
  thread_local Scratch<uint64_t> keys_buf, tmp_buf;
  thread_local Scratch<int64_t> goff_buf;
  thread_local Scratch<acc_t> coef_buf;
  thread_local Scratch<uint8_t> max_buf;
  const int64_t n = num_indices;
  const bool by_bag = per_sample_weights == nullptr && grad_per_sample_weights == nullptr && !has_max &&
                      num_features * batch <= (int64_t{1} << 32);  // bag ids fit the key's low word
  const int64_t num_ids = by_bag ? num_features * batch : n;
  uint64_t* keys = keys_buf.get(n);
  int64_t* goff = goff_buf.get(num_ids);
  acc_t* coef = coef_buf.get(num_ids);
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
      const uint64_t first_row = static_cast<uint64_t>(m[kRowOffset]);
      if (by_bag) {
        goff[j] = go;
        coef[j] = scale;
        for (int64_t i = start; i < end; ++i) {
          const uint64_t v = static_cast<uint64_t>(static_cast<int64_t>(indices[i]));
          any |= v >= rows;
          keys[i] = ((first_row + v) << 32) | static_cast<uint64_t>(j);
        }
        continue;
      }
      for (int64_t i = start; i < end; ++i) {
        const uint64_t v = static_cast<uint64_t>(static_cast<int64_t>(indices[i]));
        any |= v >= rows;
        keys[i] = ((first_row + v) << 32) | static_cast<uint64_t>(i);
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
  thread_local Scratch<int64_t> seg_buf, seg_tmp_buf;
  int64_t* segments = seg_buf.get(n + 1);
  const int64_t num_segments =
      sort_keys_by_row(keys, tmp_buf.get(n), seg_tmp_buf.get(n), n, row_bits, num_threads, segments);
  auto p = make_batch(weights, meta, num_features, indices, offsets, batch, total_dim, max_dim, per_sample_weights,
                      argmax);
  p.grad_out = static_cast<const typename Batch<weight_t, index_t>::out_t*>(grad_out);
  p.sorted_keys = keys;
  p.segments = segments;
  p.num_segments = num_segments;
  p.grad_offset = goff;
  p.coef = coef;
  p.is_max = is_max;
  p.tables = tables.data();
  p.num_tables = static_cast<int64_t>(tables.size());
  p.params = params;
  p.grad_weights = grad_weights;
  p.state0 = state0;
  p.state1 = state1;
  p.grad_psw = static_cast<typename Batch<weight_t, index_t>::acc_t*>(grad_per_sample_weights);
  isa_pick(&generic::backward_kernel<weight_t, index_t>, &avx2::backward_kernel<weight_t, index_t>)(p, num_threads);
  if (n > kKeepIndices || num_ids > kKeepIndices) {
    for (auto* b : {&keys_buf, &tmp_buf}) b->release();
    for (auto* b : {&goff_buf, &seg_buf, &seg_tmp_buf}) b->release();
    coef_buf.release();
    max_buf.release();
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
