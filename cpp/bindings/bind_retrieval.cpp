// SPDX-License-Identifier: Apache-2.0
// Bindings of the retrieval family: the exact fused top-k op and the IVF index core (k-means, search).
// Arrays arrive through DLPack (torch tensors or numpy arrays), so index state kept as numpy is not copied.
#include <nanobind/stl/optional.h>

#include <optional>

#include "bindings/checks.h"
#include "retrieval/ivf_index.h"
#include "retrieval/topk.h"
#ifdef RECOPS_WITH_CUDA
#include "retrieval/retrieval_cuda.h"
#endif

namespace recops::bindings {
namespace {

void check_array(const char* op, const char* arg, const Array& a, nb::dlpack::dtype dt, const char* dt_name,
                 size_t ndim, const Array& ref) {
  check_same_device(op, arg, a, "queries", ref);
  if (a.dtype() != dt) type_error(op, ": ", arg, " must be ", dt_name, ", got ", dtype_name(a.dtype()));
  check_ndim(op, arg, a, ndim);
  check_contiguous(op, arg, a);
}

void check_f32(const char* op, const char* arg, const Array& a, size_t ndim, const Array& ref) {
  check_array(op, arg, a, nb::dtype<float>(), "float32", ndim, ref);
}

void check_i64(const char* op, const char* arg, const Array& a, size_t ndim, const Array& ref) {
  check_array(op, arg, a, nb::dtype<int64_t>(), "int64", ndim, ref);
}

// Output [Q, k] arrays and the optional exclusion lists; returns the number of excluded ids.
int64_t check_outputs_and_exclusions(const char* op, const Array& queries, int64_t k,
                                     const std::optional<Array>& exclude_ids,
                                     const std::optional<Array>& exclude_offsets, const Array& out_scores,
                                     const Array& out_ids) {
  const int64_t nq = queries.shape(0);
  if (k < 1) value_error(op, ": k must be >= 1, got ", std::to_string(k));
  check_f32(op, "out_scores", out_scores, 2, queries);
  check_i64(op, "out_ids", out_ids, 2, queries);
  for (const Array* o : {&out_scores, &out_ids}) {
    const char* arg = o == &out_scores ? "out_scores" : "out_ids";
    check_dim(op, arg, *o, 0, nq);
    check_dim(op, arg, *o, 1, k);
  }
  if (exclude_ids.has_value() != exclude_offsets.has_value()) {
    value_error(op, ": exclude_ids and exclude_offsets must be given together");
  }
  if (!exclude_ids) return 0;
  check_i64(op, "exclude_ids", *exclude_ids, 1, queries);
  check_i64(op, "exclude_offsets", *exclude_offsets, 1, queries);
  check_dim(op, "exclude_offsets", *exclude_offsets, 0, nq + 1);
  return exclude_ids->shape(0);
}

void topk_inner_product(Array queries, Array items, std::optional<Array> item_bias,
                        std::optional<Array> exclude_ids, std::optional<Array> exclude_offsets, int64_t k,
                        Array out_scores, Array out_ids, int num_threads, uintptr_t stream,
                        std::optional<Array> workspace_scores, std::optional<Array> workspace_ids,
                        std::optional<Array> error_flag) {
  constexpr const char* op = "topk_inner_product";
  check_supported_device(op, "queries", queries);
  check_f32(op, "queries", queries, 2, queries);
  check_f32(op, "items", items, 2, queries);
  const int64_t nq = queries.shape(0), dim = queries.shape(1), n = items.shape(0);
  check_dim(op, "items", items, 1, dim);
  if (item_bias) {
    check_f32(op, "item_bias", *item_bias, 1, queries);
    check_dim(op, "item_bias", *item_bias, 0, n);
  }
  const int64_t nex = check_outputs_and_exclusions(op, queries, k, exclude_ids, exclude_offsets, out_scores, out_ids);
  retrieval::TopkParams p;
  p.queries = static_cast<const float*>(queries.data());
  p.num_queries = nq;
  p.dim = dim;
  p.items = static_cast<const float*>(items.data());
  p.num_items = n;
  p.item_bias = item_bias ? static_cast<const float*>(item_bias->data()) : nullptr;
  p.exclude_ids = exclude_ids ? static_cast<const int64_t*>(exclude_ids->data()) : nullptr;
  p.exclude_offsets = exclude_offsets ? static_cast<const int64_t*>(exclude_offsets->data()) : nullptr;
  p.num_excludes = nex;
  p.k = k;
  p.out_scores = static_cast<float*>(out_scores.data());
  p.out_ids = static_cast<int64_t*>(out_ids.data());
  if (is_cuda(queries)) {
#ifdef RECOPS_WITH_CUDA
    p.error_flag = error_flag_ptr(op, error_flag ? &*error_flag : nullptr, queries);
    const int64_t ws = cuda::topk_workspace_numel(nq, k);
    if (!workspace_scores || !workspace_ids || workspace_scores->dtype() != nb::dtype<float>() ||
        workspace_ids->dtype() != nb::dtype<int64_t>() || static_cast<int64_t>(workspace_scores->size()) < ws ||
        static_cast<int64_t>(workspace_ids->size()) < ws) {
      type_error(op, ": workspace_scores (float32) and workspace_ids (int64) of ", std::to_string(ws),
                 " elements each are required on cuda");
    }
    check_same_device(op, "workspace_scores", *workspace_scores, "queries", queries);
    check_same_device(op, "workspace_ids", *workspace_ids, "queries", queries);
    p.ws_scores = static_cast<float*>(workspace_scores->data());
    p.ws_ids = static_cast<int64_t*>(workspace_ids->data());
    nb::gil_scoped_release release;
    cuda::launch_topk_inner_product(p, as_stream(stream));
#endif
    return;
  }
  (void)stream;
  (void)workspace_scores;
  (void)workspace_ids;
  (void)error_flag;
  nb::gil_scoped_release release;
  retrieval::topk_inner_product(p, num_threads);
}

void cpu_only(const char* op, const Array& a) {
  if (a.device_type() != nb::device::cpu::value) type_error(op, ": queries must be on cpu, got ", device_name(a));
}

void kmeans(Array data, int64_t nlist, int64_t iters, uint64_t seed, bool spherical, Array centroids,
            int num_threads) {
  constexpr const char* op = "kmeans";
  cpu_only(op, data);
  check_f32(op, "data", data, 2, data);
  check_f32(op, "centroids", centroids, 2, data);
  check_dim(op, "centroids", centroids, 0, nlist);
  check_dim(op, "centroids", centroids, 1, data.shape(1));
  nb::gil_scoped_release release;
  retrieval::kmeans(static_cast<const float*>(data.data()), data.shape(0), data.shape(1), nlist, iters, seed,
                    spherical, static_cast<float*>(centroids.data()), num_threads);
}

void ivf_search(Array queries, Array centroids, Array list_scale, Array list_offsets, int storage, Array codes,
                std::optional<Array> vmin, std::optional<Array> vscale, Array vectors, Array ids, int64_t nprobe,
                int64_t k, int64_t num_candidates, std::optional<Array> exclude_ids,
                std::optional<Array> exclude_offsets, Array out_scores, Array out_ids, int num_threads) {
  constexpr const char* op = "ivf_search";
  cpu_only(op, queries);
  check_f32(op, "queries", queries, 2, queries);
  const int64_t dim = queries.shape(1);
  check_f32(op, "centroids", centroids, 2, queries);
  check_dim(op, "centroids", centroids, 1, dim);
  const int64_t nlist = centroids.shape(0);
  check_f32(op, "list_scale", list_scale, 1, queries);
  check_dim(op, "list_scale", list_scale, 0, nlist);
  check_i64(op, "list_offsets", list_offsets, 1, queries);
  check_dim(op, "list_offsets", list_offsets, 0, nlist + 1);
  check_f32(op, "vectors", vectors, 2, queries);
  check_dim(op, "vectors", vectors, 1, dim);
  const int64_t n = vectors.shape(0);
  check_i64(op, "ids", ids, 1, queries);
  check_dim(op, "ids", ids, 0, n);
  retrieval::IvfView v;
  v.storage = static_cast<retrieval::IvfStorage>(storage);
  if (storage == 0) {
    check_f32(op, "codes", codes, 2, queries);
  } else if (storage == 1) {
    check_array(op, "codes", codes, nb::dtype<uint16_t>(), "uint16 (float16 bits)", 2, queries);
  } else if (storage == 2) {
    check_array(op, "codes", codes, nb::dtype<uint8_t>(), "uint8", 2, queries);
    if (!vmin || !vscale) value_error(op, ": int8 storage needs vmin and vscale");
    check_f32(op, "vmin", *vmin, 1, queries);
    check_dim(op, "vmin", *vmin, 0, dim);
    check_f32(op, "vscale", *vscale, 1, queries);
    check_dim(op, "vscale", *vscale, 0, dim);
    v.vmin = static_cast<const float*>(vmin->data());
    v.vscale = static_cast<const float*>(vscale->data());
  } else {
    value_error(op, ": storage must be 0 (float32), 1 (float16) or 2 (int8), got ", std::to_string(storage));
  }
  check_dim(op, "codes", codes, 0, n);
  check_dim(op, "codes", codes, 1, dim);
  const int64_t nex = check_outputs_and_exclusions(op, queries, k, exclude_ids, exclude_offsets, out_scores, out_ids);
  v.centroids = static_cast<const float*>(centroids.data());
  v.list_scale = static_cast<const float*>(list_scale.data());
  v.list_offsets = static_cast<const int64_t*>(list_offsets.data());
  v.num_lists = nlist;
  v.dim = dim;
  v.num_vectors = n;
  v.codes = codes.data();
  v.vectors = static_cast<const float*>(vectors.data());
  v.ids = static_cast<const int64_t*>(ids.data());
  nb::gil_scoped_release release;
  retrieval::ivf_search(v, static_cast<const float*>(queries.data()), queries.shape(0), nprobe, k, num_candidates,
                        exclude_ids ? static_cast<const int64_t*>(exclude_ids->data()) : nullptr,
                        exclude_offsets ? static_cast<const int64_t*>(exclude_offsets->data()) : nullptr, nex,
                        static_cast<float*>(out_scores.data()), static_cast<int64_t*>(out_ids.data()), num_threads);
}

void check_topk(std::optional<Array> exclude_offsets, std::optional<Array> exclude_ids, int64_t num_queries,
                int64_t num_items) {
  constexpr const char* op = "topk_inner_product";
  const int64_t* off = exclude_offsets ? host_vec<int64_t>(op, "exclude_offsets", *exclude_offsets, num_queries + 1)
                                       : nullptr;
  const int64_t* ids = exclude_ids ? host_vec<int64_t>(op, "exclude_ids", *exclude_ids) : nullptr;
  retrieval::check_topk_exclusions(off, num_queries, ids, exclude_ids ? static_cast<int64_t>(exclude_ids->shape(0)) : 0,
                                   num_items);
}

}  // namespace

void bind_retrieval(nb::module_& m) {
  using namespace nb::literals;
  m.def("topk_inner_product", &topk_inner_product, "queries"_a.noconvert(), "items"_a.noconvert(),
        "item_bias"_a.noconvert().none(), "exclude_ids"_a.noconvert().none(),
        "exclude_offsets"_a.noconvert().none(), "k"_a, "out_scores"_a.noconvert(), "out_ids"_a.noconvert(),
        "num_threads"_a = 1, "stream"_a = 0, "workspace_scores"_a.noconvert() = nb::none(),
        "workspace_ids"_a.noconvert() = nb::none(), "error_flag"_a.noconvert() = nb::none(),
        "Exact top-k by inner product (+ item_bias) with per-query exclusions into out_scores/out_ids [Q, k].");
  m.def("check_topk", &check_topk, "exclude_offsets"_a.noconvert().none(), "exclude_ids"_a.noconvert().none(),
        "num_queries"_a, "num_items"_a, "Raise the CPU core's ValueError for bad exclusions (host int64 arrays).");
  m.def("kmeans", &kmeans, "data"_a.noconvert(), "nlist"_a, "iters"_a, "seed"_a, "spherical"_a,
        "centroids"_a.noconvert(), "num_threads"_a = 1,
        "Lloyd k-means of data [n, D] float32 into centroids [nlist, D] (spherical: unit-norm, by inner product).");
  m.def("ivf_search", &ivf_search, "queries"_a.noconvert(), "centroids"_a.noconvert(), "list_scale"_a.noconvert(),
        "list_offsets"_a.noconvert(), "storage"_a, "codes"_a.noconvert(), "vmin"_a.noconvert().none(),
        "vscale"_a.noconvert().none(), "vectors"_a.noconvert(), "ids"_a.noconvert(), "nprobe"_a, "k"_a,
        "num_candidates"_a, "exclude_ids"_a.noconvert().none(), "exclude_offsets"_a.noconvert().none(),
        "out_scores"_a.noconvert(), "out_ids"_a.noconvert(), "num_threads"_a = 1,
        "IVF approximate top-k by inner product (see cpp/retrieval/ivf_index.h) into out_scores/out_ids [Q, k].");
#ifdef RECOPS_WITH_CUDA
  m.def("topk_workspace_numel", &cuda::topk_workspace_numel, "num_queries"_a, "k"_a,
        "Elements of each CUDA top-k workspace (float32 scores, int64 ids) for Q queries and k.");
#endif
}

}  // namespace recops::bindings
