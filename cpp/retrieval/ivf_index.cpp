// SPDX-License-Identifier: Apache-2.0
// IVF index core: search validation and dispatch, and k-means training of the coarse quantiser.
#include "retrieval/ivf_index.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "common/check.h"
#include "common/checked_math.h"
#include "common/cpu_isa.h"
#include "common/parallel.h"
#include "jagged/jagged.h"
#include "retrieval/retrieval_plan.h"
#include "retrieval/topk.h"

namespace recops::retrieval {

namespace {

// The fused top-k's parameters without exclusions (the coarse probe and the k-means assignment).
TopkParams exact_topk(const float* queries, int64_t num_queries, int64_t dim, const float* items, int64_t num_items,
                      const float* bias, int64_t k, float* scores, int64_t* ids) {
  TopkParams t;
  t.queries = queries; t.num_queries = num_queries; t.dim = dim; t.items = items; t.num_items = num_items;
  t.item_bias = bias; t.k = k; t.out_scores = scores; t.out_ids = ids;
  return t;
}

// Rows are summed in this many fixed contiguous slots, independent of the thread count, then the slots are
// added in order: centroids are bitwise identical for any num_threads.
constexpr int64_t kKmeansSlots = 8;

void normalize(float* x, int64_t dim) {
  double n2 = 0.0;
  for (int64_t d = 0; d < dim; ++d) n2 += double(x[d]) * x[d];
  const float inv = n2 > 0 ? static_cast<float>(1.0 / std::sqrt(n2)) : 0.0f;
  for (int64_t d = 0; d < dim; ++d) x[d] *= inv;
}

// Per-query exclusion lists sorted ascending (a sorted copy of the caller's lists).
std::vector<int64_t> sorted_copy(const int64_t* ids, const int64_t* offsets, int64_t num_queries) {
  std::vector<int64_t> copy(ids, ids + offsets[num_queries]);
  for (int64_t q = 0; q < num_queries; ++q) std::sort(copy.begin() + offsets[q], copy.begin() + offsets[q + 1]);
  return copy;
}

}  // namespace

void ivf_search(const IvfView& index, const float* queries, int64_t num_queries, int64_t nprobe, int64_t k,
                int64_t num_candidates, const int64_t* exclude_ids, const int64_t* exclude_offsets,
                int64_t num_excludes, float* out_scores, int64_t* out_ids, int num_threads) {
  constexpr const char* op = "ivf_search";
  const IvfView& v = index;
  RECOPS_CHECK(num_queries >= 0 && v.dim >= 0 && v.num_vectors >= 0 && v.num_lists >= 0 && num_excludes >= 0, op,
               ": sizes must be non-negative");
  RECOPS_CHECK(k >= 1, op, ": k must be >= 1, got ", k);
  RECOPS_CHECK(nprobe >= 1, op, ": nprobe must be >= 1, got ", nprobe);
  RECOPS_CHECK(num_candidates >= 0, op, ": num_candidates must be >= 0, got ", num_candidates);
  RECOPS_CHECK(v.storage == IvfStorage::kFloat32 || v.storage == IvfStorage::kFloat16 ||
                   v.storage == IvfStorage::kInt8,
               op, ": storage must be 0 (float32), 1 (float16) or 2 (int8), got ", static_cast<int>(v.storage));
  checked_mul(num_queries, k, op);
  checked_mul(v.num_vectors, v.dim, op);
  checked_mul(v.num_lists, v.dim, op);
  checked_mul(num_queries, v.dim, op);
  jagged::check_offsets<int64_t>("ivf_search: list_offsets", v.list_offsets, v.num_lists, v.num_vectors);
  if (exclude_offsets != nullptr) {
    jagged::check_offsets<int64_t>("ivf_search: exclude_offsets", exclude_offsets, num_queries, num_excludes);
  } else {
    RECOPS_CHECK(num_excludes == 0, op, ": exclude_ids must be empty without exclude_offsets");
  }
  if (num_queries == 0) return;

  IvfPlan p;
  p.index = v;
  p.queries = queries;
  p.num_queries = num_queries;
  p.nprobe = std::max<int64_t>(1, std::min(nprobe, v.num_lists));
  p.k = k;
  p.rerank = num_candidates > 0;
  p.num_candidates = p.rerank ? std::max(num_candidates, k) : k;
  checked_mul(num_queries, p.num_candidates, op);
  std::vector<int64_t> excl;
  if (exclude_offsets != nullptr && num_excludes > 0) {
    excl = sorted_copy(exclude_ids, exclude_offsets, num_queries);
    p.excl_ids = excl.data();
    p.excl_offsets = exclude_offsets;
  }
  p.out_scores = out_scores;
  p.out_ids = out_ids;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, num_queries)));
  // Coarse step for all queries at once: list l scores max_norm(l) * <q, direction(l)> = <q, scaled(l)>, so
  // the fused top-k over the scaled directions picks the nprobe lists (empty lists get -inf via the bias).
  std::vector<float> scaled(checked_mul(v.num_lists, v.dim, op)), bias(v.num_lists);
  for (int64_t j = 0; j < v.num_lists; ++j) {
    for (int64_t d = 0; d < v.dim; ++d) scaled[j * v.dim + d] = v.centroids[j * v.dim + d] * v.list_scale[j];
    bias[j] = v.list_offsets[j + 1] > v.list_offsets[j] ? 0.0f : -std::numeric_limits<float>::infinity();
  }
  std::vector<float> probe_scores(checked_mul(num_queries, p.nprobe, op));
  std::vector<int64_t> probe_lists(probe_scores.size());
  topk_inner_product(exact_topk(queries, num_queries, v.dim, scaled.data(), v.num_lists, bias.data(), p.nprobe,
                                probe_scores.data(), probe_lists.data()),
                     num_threads);
  for (size_t i = 0; i < probe_lists.size(); ++i) {
    if (probe_scores[i] == -std::numeric_limits<float>::infinity()) probe_lists[i] = -1;  // empty lists
  }
  p.probe_lists = probe_lists.data();
  const int64_t fper = ivf_fscratch(p), iper = ivf_iscratch(p);
  std::vector<float> fs(checked_mul(fper, threads, op));
  std::vector<int64_t> is(checked_mul(iper, threads, op));
  p.fscratch = fs.data();
  p.iscratch = is.data();
  isa_pick(&generic::run_ivf_search, &avx2::run_ivf_search, &avx512::run_ivf_search)(p, threads);
}

void kmeans(const float* data, int64_t num_rows, int64_t dim, int64_t num_lists, int64_t iters, uint64_t seed,
            bool spherical, float* centroids, int num_threads) {
  constexpr const char* op = "kmeans";
  RECOPS_CHECK(num_rows >= 0 && dim >= 0, op, ": sizes must be non-negative, got n=", num_rows, " D=", dim);
  RECOPS_CHECK(num_lists >= 1 && num_lists <= num_rows, op, ": nlist must be in [1, n=", num_rows, "], got ",
               num_lists);
  RECOPS_CHECK(iters >= 0, op, ": iters must be >= 0, got ", iters);
  checked_mul(num_rows, dim, op);
  const int threads = std::max(num_threads, 1);
  const int64_t cdim = checked_mul(num_lists, dim, op);
  checked_mul(cdim, kKmeansSlots, op);

  std::mt19937_64 rng(seed);
  std::vector<int64_t> perm(num_rows);
  for (int64_t i = 0; i < num_rows; ++i) perm[i] = i;
  for (int64_t j = 0; j < num_lists; ++j) {  // partial Fisher-Yates: nlist distinct seed rows
    std::uniform_int_distribution<int64_t> pick(j, num_rows - 1);
    std::swap(perm[j], perm[pick(rng)]);
    std::copy(data + perm[j] * dim, data + (perm[j] + 1) * dim, centroids + j * dim);
    if (spherical) normalize(centroids + j * dim, dim);
  }
  std::vector<float> bias(num_lists), best(num_rows);
  std::vector<int64_t> assign(num_rows);
  std::vector<double> sums(cdim * kKmeansSlots);
  std::vector<int64_t> counts(num_lists * kKmeansSlots);
  for (int64_t it = 0; it < iters; ++it) {
    // argmin |x - c|^2 = argmax x.c - |c|^2 / 2; spherical: argmax x.c (centroids are unit-norm).
    for (int64_t j = 0; j < num_lists; ++j) {
      double n2 = 0.0;
      for (int64_t d = 0; d < dim; ++d) n2 += double(centroids[j * dim + d]) * centroids[j * dim + d];
      bias[j] = spherical ? 0.0f : static_cast<float>(-0.5 * n2);
    }
    topk_inner_product(exact_topk(data, num_rows, dim, centroids, num_lists, bias.data(), 1, best.data(),
                                  assign.data()),
                       threads);
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    parallel_tasks(kKmeansSlots, threads, [&](int64_t t, int) {
      const int64_t b = num_rows * t / kKmeansSlots, e = num_rows * (t + 1) / kKmeansSlots;
      double* s = sums.data() + t * cdim;
      int64_t* c = counts.data() + t * num_lists;
      for (int64_t i = b; i < e; ++i) {
        const int64_t j = assign[i] < 0 ? 0 : assign[i];  // -1 only for NaN rows
        ++c[j];
        for (int64_t d = 0; d < dim; ++d) s[j * dim + d] += data[i * dim + d];
      }
    });
    for (int64_t j = 0; j < num_lists; ++j) {
      int64_t c = 0;
      for (int64_t t = 0; t < kKmeansSlots; ++t) c += counts[t * num_lists + j];
      float* cj = centroids + j * dim;
      if (c == 0) {  // re-seed an empty cluster at a random row
        std::uniform_int_distribution<int64_t> pick(0, num_rows - 1);
        const int64_t r = pick(rng);
        std::copy(data + r * dim, data + (r + 1) * dim, cj);
      } else {
        for (int64_t d = 0; d < dim; ++d) {
          double s = 0.0;
          for (int64_t t = 0; t < kKmeansSlots; ++t) s += sums[t * cdim + j * dim + d];
          cj[d] = static_cast<float>(s / c);
        }
      }
      if (spherical) normalize(cj, dim);
    }
  }
}

}  // namespace recops::retrieval
