// SPDX-License-Identifier: Apache-2.0
// Bindings of the embedding family: check, dispatch on storage / index dtype and device, call.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "bindings/checks.h"
#include "common/checked_math.h"
#include "embedding/embedding_bag.h"
#ifdef RECOPS_WITH_CUDA
#include "embedding/embedding_cuda.h"
#endif

namespace recops::bindings {
namespace {

namespace emb = recops::embedding;

enum class Storage { kF32, kF64, kF16, kBF16, kInt8 };

Storage storage_of(const char* op, const Array& w) {
  const auto dt = w.dtype();
  if (dt == nb::dtype<float>()) return Storage::kF32;
  if (dt == nb::dtype<double>() && !is_cuda(w)) return Storage::kF64;
  if (dt == nb::dtype<uint8_t>()) return Storage::kInt8;
  if (dt.bits == 16 && dt.lanes == 1 && dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float)) {
    return Storage::kF16;
  }
  if (dt.bits == 16 && dt.lanes == 1 && dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat)) {
    return Storage::kBF16;
  }
  type_error(op, ": weight must be float32, float64 (cpu), float16, bfloat16 or uint8 (int8 rowwise), got ",
             dtype_name(dt));
}

// The dtype of per-sample weights, their gradient, and the output of int8 tables: float64 for float64
// storage, else float32.
void check_acc_array(const char* op, const char* arg, const Array& a, const Array& w, Storage s, int64_t numel) {
  check_same_device(op, arg, a, "weight", w);
  const bool want64 = s == Storage::kF64;
  if (a.dtype() != (want64 ? nb::dtype<double>() : nb::dtype<float>())) {
    type_error(op, ": ", arg, " must be ", want64 ? "float64" : "float32", ", got ", dtype_name(a.dtype()));
  }
  check_contiguous(op, arg, a);
  if (static_cast<int64_t>(a.size()) != numel) {
    value_error(op, ": ", arg, " must have ", std::to_string(numel), " elements, got ", std::to_string(a.size()));
  }
}

void check_out(const char* op, const char* arg, const Array& a, const Array& w, Storage s, int64_t numel) {
  if (s == Storage::kInt8) return check_acc_array(op, arg, a, w, Storage::kF32, numel);
  check_same_device(op, arg, a, "weight", w);
  check_same_dtype(op, arg, a, "weight", w);
  check_contiguous(op, arg, a);
  if (static_cast<int64_t>(a.size()) != numel) {
    value_error(op, ": ", arg, " must have ", std::to_string(numel), " elements, got ", std::to_string(a.size()));
  }
}

void check_int64(const char* op, const char* arg, const Array& a, const Array& w, int64_t numel) {
  check_same_device(op, arg, a, "weight", w);
  if (a.dtype() != nb::dtype<int64_t>()) type_error(op, ": ", arg, " must be int64, got ", dtype_name(a.dtype()));
  check_contiguous(op, arg, a);
  if (numel >= 0 && static_cast<int64_t>(a.size()) != numel) {
    value_error(op, ": ", arg, " must have ", std::to_string(numel), " elements, got ", std::to_string(a.size()));
  }
}

struct Common {
  Storage storage;
  bool idx64;
  int64_t num_features, num_indices;
};

Common check_common(const char* op, const Array& weights, const Array& meta, const Array& indices,
                    const Array& offsets, int64_t batch) {
  check_supported_device(op, "weight", weights);
  Common c{storage_of(op, weights), false, 0, 0};
  check_contiguous(op, "weight", weights);
  check_int64(op, "meta", meta, weights, -1);
  check_ndim(op, "meta", meta, 2);
  check_dim(op, "meta", meta, 1, emb::kMetaCols);
  c.num_features = meta.shape(0);
  c.idx64 = check_offsets_array(op, "offsets", offsets, "weight", weights);
  check_same_device(op, "indices", indices, "weight", weights);
  check_same_dtype(op, "indices", indices, "offsets", offsets);
  check_ndim(op, "indices", indices, 1);
  check_contiguous(op, "indices", indices);
  c.num_indices = indices.shape(0);
  if (batch < 0) value_error(op, ": batch must be >= 0, got ", std::to_string(batch));
  const int64_t want = checked_add(checked_mul(c.num_features, batch, op, "num_features * batch"), 1, op);
  if (static_cast<int64_t>(offsets.shape(0)) != want) {
    value_error(op, ": offsets must have num_features * B + 1 = ", std::to_string(want), " elements, got ",
                std::to_string(offsets.shape(0)));
  }
  return c;
}

template <typename Fn>
void with_types(Storage s, bool idx64, Fn&& fn) {
  auto with_index = [&](auto w) {
    if (idx64) fn(w, int64_t{}); else fn(w, int32_t{});
  };
  switch (s) {
    case Storage::kF32: with_index(float{}); break;
    case Storage::kF64: with_index(double{}); break;
    case Storage::kF16: with_index(emb::Half{}); break;
    case Storage::kBF16: with_index(emb::BFloat16{}); break;
    case Storage::kInt8: with_index(uint8_t{}); break;
  }
}

// The fused update's parameters (the same struct for the CPU core and the CUDA launcher).
emb::UpdateParams update_params(int optimizer, double lr, double eps, double beta1, double beta2, double step_size,
                                bool sr, uint64_t seed) {
  emb::UpdateParams u;
  u.kind = static_cast<emb::Update>(optimizer);
  u.lr = static_cast<float>(lr);
  u.eps = static_cast<float>(eps);
  u.beta1 = static_cast<float>(beta1);
  u.beta2 = static_cast<float>(beta2);
  u.step_size = static_cast<float>(step_size);
  u.stochastic_rounding = sr;
  u.seed = seed;
  return u;
}

#ifdef RECOPS_WITH_CUDA
int cuda_storage(Storage s) {
  switch (s) {
    case Storage::kF16: return cuda::kF16;
    case Storage::kBF16: return cuda::kBF16;
    case Storage::kInt8: return cuda::kInt8Rowwise;
    default: return cuda::kF32;
  }
}
#endif

void embedding_bags_forward(Array weights, Array meta, Array indices, Array offsets, int64_t batch,
                            std::optional<Array> per_sample_weights, Array out, int64_t total_dim,
                            std::optional<Array> argmax, int64_t max_dim, int num_threads,
                            std::optional<std::vector<std::string>> feature_names, const std::string& op_name,
                            uintptr_t stream, std::optional<Array> error_flag) {
  const char* op = op_name.c_str();
  const Common c = check_common(op, weights, meta, indices, offsets, batch);
  if (per_sample_weights) check_acc_array(op, "per_sample_weights", *per_sample_weights, weights, c.storage, c.num_indices);
  check_out(op, "out", out, weights, c.storage, checked_mul(batch, total_dim, op, "batch * total_dim"));
  if (argmax) check_int64(op, "argmax", *argmax, weights, checked_mul(batch, total_dim, op, "batch * total_dim"));
  if (feature_names && static_cast<int64_t>(feature_names->size()) != c.num_features) {
    value_error(op, ": feature_names must have one name per feature");
  }
  const void* psw = per_sample_weights ? per_sample_weights->data() : nullptr;
  int64_t* am = argmax ? static_cast<int64_t*>(argmax->data()) : nullptr;
  if (is_cuda(weights)) {
#ifdef RECOPS_WITH_CUDA
    int32_t* flag = error_flag_ptr(op, error_flag ? &*error_flag : nullptr, weights);
    nb::gil_scoped_release release;
    cuda::launch_embedding_bags_forward(cuda_storage(c.storage), weights.data(),
                                        static_cast<const int64_t*>(meta.data()), c.num_features, max_dim,
                                        indices.data(), c.idx64, offsets.data(), batch, c.num_indices,
                                        static_cast<const float*>(psw), out.data(), total_dim, am, flag,
                                        as_stream(stream));
#endif
    return;
  }
  (void)max_dim;
  (void)stream;
  (void)error_flag;
  std::vector<const char*> names;
  if (feature_names) {
    for (const auto& n : *feature_names) names.push_back(n.c_str());
  }
  nb::gil_scoped_release release;
  with_types(c.storage, c.idx64, [&](auto wtag, auto itag) {
    using weight_t = decltype(wtag);
    using index_t = decltype(itag);
    emb::embedding_bags_forward<weight_t, index_t>(
        op, static_cast<const weight_t*>(weights.data()), static_cast<int64_t>(weights.size()),
        static_cast<const int64_t*>(meta.data()), c.num_features, static_cast<const index_t*>(indices.data()),
        c.num_indices, static_cast<const index_t*>(offsets.data()), batch, psw, out.data(), total_dim, am,
        num_threads, feature_names ? names.data() : nullptr);
  });
}

void check_embedding_bags(Array meta, Array indices, Array offsets, int64_t batch,
                          std::optional<std::vector<std::string>> feature_names, const std::string& op_name) {
  const char* op = op_name.c_str();
  const int64_t* m = host_vec<int64_t>(op, "meta", meta);
  const int64_t num_features = static_cast<int64_t>(meta.shape(0)) / emb::kMetaCols;
  if (static_cast<int64_t>(meta.shape(0)) != num_features * emb::kMetaCols) {
    value_error(op, ": meta must have num_features * ", std::to_string(emb::kMetaCols), " elements");
  }
  std::vector<const char*> names;
  if (feature_names) {
    if (static_cast<int64_t>(feature_names->size()) != num_features) {
      value_error(op, ": feature_names must have one name per feature");
    }
    for (const auto& n : *feature_names) names.push_back(n.c_str());
  }
  const int64_t want = checked_add(checked_mul(num_features, batch, op, "num_features * batch"), 1, op);
  auto run = [&](auto tag) {
    using index_t = decltype(tag);
    const index_t* idx = host_vec<index_t>(op, "indices", indices);
    const index_t* off = host_vec<index_t>(op, "offsets", offsets, want);
    emb::check_embedding_bags_data(op, m, num_features, idx, static_cast<int64_t>(indices.shape(0)), off, batch,
                                   feature_names ? names.data() : nullptr);
  };
  if (offsets.dtype() == nb::dtype<int64_t>()) run(int64_t{}); else run(int32_t{});
}

bool check_embedding_meta(Array meta, int64_t weights_numel, bool int8_rows, int64_t total_dim, bool has_psw,
                          int64_t state_rows, int64_t state_elems, const std::string& op_name) {
  const char* op = op_name.c_str();
  const int64_t* m = host_vec<int64_t>(op, "meta", meta);
  const int64_t num_features = static_cast<int64_t>(meta.shape(0)) / emb::kMetaCols;
  if (static_cast<int64_t>(meta.shape(0)) != num_features * emb::kMetaCols) {
    value_error(op, ": meta must have num_features * ", std::to_string(emb::kMetaCols), " elements");
  }
  return emb::check_embedding_meta(op, weights_numel, int8_rows, m, num_features, total_dim, has_psw, state_rows,
                                   state_elems);
}

void embedding_bags_backward(Array weights, Array meta, Array indices, Array offsets, int64_t batch,
                             std::optional<Array> per_sample_weights, std::optional<Array> argmax, Array grad_out,
                             int64_t total_dim, int optimizer, double lr, double eps, double beta1, double beta2,
                             double step_size, bool stochastic_rounding, uint64_t seed,
                             std::optional<Array> grad_weights, std::optional<Array> state0,
                             std::optional<Array> state1, std::optional<Array> grad_per_sample_weights,
                             int64_t max_dim, int num_threads, const std::string& op_name,
                             uintptr_t stream, std::optional<Array> error_flag) {
  const char* op = op_name.c_str();
  const Common c = check_common(op, weights, meta, indices, offsets, batch);
  if (c.storage == Storage::kInt8) value_error(op, ": int8 tables are inference-only, got a backward call");
  if (per_sample_weights) check_acc_array(op, "per_sample_weights", *per_sample_weights, weights, c.storage, c.num_indices);
  if (argmax) check_int64(op, "argmax", *argmax, weights, checked_mul(batch, total_dim, op, "batch * total_dim"));
  check_out(op, "grad_out", grad_out, weights, c.storage, checked_mul(batch, total_dim, op, "batch * total_dim"));
  if (grad_weights) check_out(op, "grad_weights", *grad_weights, weights, c.storage, weights.size());
  float* s[2] = {nullptr, nullptr};
  int64_t sn[2] = {0, 0};
  const std::optional<Array>* states[2] = {&state0, &state1};
  for (int k = 0; k < 2; ++k) {
    if (!*states[k]) continue;
    const Array& st = **states[k];
    check_same_device(op, k ? "state1" : "state0", st, "weight", weights);
    if (st.dtype() != nb::dtype<float>()) type_error(op, ": optimizer state must be float32, got ", dtype_name(st.dtype()));
    check_contiguous(op, k ? "state1" : "state0", st);
    s[k] = static_cast<float*>(st.data());
    sn[k] = static_cast<int64_t>(st.size());
  }
  if (grad_per_sample_weights) {
    check_acc_array(op, "grad_per_sample_weights", *grad_per_sample_weights, weights, c.storage, c.num_indices);
  }
  if (optimizer < 0 || optimizer > 4) value_error(op, ": optimizer code must be in [0, 4], got ", std::to_string(optimizer));
  const emb::UpdateParams u = update_params(optimizer, lr, eps, beta1, beta2, step_size, stochastic_rounding, seed);
  const void* psw = per_sample_weights ? per_sample_weights->data() : nullptr;
  const int64_t* am = argmax ? static_cast<const int64_t*>(argmax->data()) : nullptr;
  void* gw = grad_weights ? grad_weights->data() : nullptr;
  void* gpsw = grad_per_sample_weights ? grad_per_sample_weights->data() : nullptr;
  if (is_cuda(weights)) {
#ifdef RECOPS_WITH_CUDA
    int32_t* flag = error_flag_ptr(op, error_flag ? &*error_flag : nullptr, weights);
    nb::gil_scoped_release release;
    cuda::launch_embedding_bags_backward(cuda_storage(c.storage), weights.data(),
                                         static_cast<const int64_t*>(meta.data()), c.num_features, max_dim,
                                         indices.data(), c.idx64, offsets.data(), batch, c.num_indices,
                                         static_cast<const float*>(psw), am, grad_out.data(), total_dim, u, gw,
                                         s[0], s[1], static_cast<float*>(gpsw), flag, as_stream(stream));
#endif
    return;
  }
  (void)max_dim;
  (void)stream;
  (void)error_flag;
  nb::gil_scoped_release release;
  with_types(c.storage, c.idx64, [&](auto wtag, auto itag) {
    using weight_t = decltype(wtag);
    using index_t = decltype(itag);
    emb::embedding_bags_backward<weight_t, index_t>(
        op, static_cast<weight_t*>(weights.data()), static_cast<int64_t>(weights.size()),
        static_cast<const int64_t*>(meta.data()), c.num_features, static_cast<const index_t*>(indices.data()),
        c.num_indices, static_cast<const index_t*>(offsets.data()), batch, psw, am, grad_out.data(), total_dim, u,
        static_cast<weight_t*>(gw), s[0], s[1], sn[0], sn[1], gpsw, num_threads);
  });
}

// Asks Linux for transparent huge pages on the 2 MiB-aligned interior of a CPU buffer that has not been touched
// yet (embedding tables: random row reads and updates miss the TLB on every row with 4 KiB pages). Returns the
// bytes advised (0 off Linux, for CUDA or small buffers, or when the kernel refuses); never fails.
int64_t advise_huge_pages(Array buffer) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (is_cuda(buffer)) return 0;
  constexpr uintptr_t kHuge = uintptr_t{1} << 21;
  const auto begin = reinterpret_cast<uintptr_t>(buffer.data());
  const uintptr_t end = begin + buffer.nbytes();
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1), hi = end & ~(kHuge - 1);
  if (hi <= lo) return 0;
  return madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE) == 0 ? static_cast<int64_t>(hi - lo) : 0;
#else
  (void)buffer;
  return 0;
#endif
}

}  // namespace

void bind_embedding(nb::module_& m) {
  using namespace nb::literals;
  m.def("advise_huge_pages", &advise_huge_pages, "buffer"_a.noconvert(),
        "madvise(MADV_HUGEPAGE) on the 2 MiB-aligned interior of a CPU buffer; returns the bytes advised.");
  m.def("check_embedding_bags", &check_embedding_bags, "meta"_a.noconvert(), "indices"_a.noconvert(),
        "offsets"_a.noconvert(), "batch"_a, "feature_names"_a.none(), "op"_a,
        "Raise the CPU core's ValueError for bad offsets or an index out of range (host arrays; meta flattened).");
  m.def("check_embedding_meta", &check_embedding_meta, "meta"_a.noconvert(), "weights_numel"_a, "int8_rows"_a,
        "total_dim"_a, "has_psw"_a, "state_rows"_a, "state_elems"_a, "op"_a,
        "Raise the core's ValueError for a bad meta (host array, flattened); returns whether some output column is "
        "written by no feature.");
  m.def("embedding_bags_forward", &embedding_bags_forward, "weights"_a.noconvert(), "meta"_a.noconvert(),
        "indices"_a.noconvert(), "offsets"_a.noconvert(), "batch"_a, nb::kw_only(),
        "per_sample_weights"_a.noconvert() = nb::none(),
        "out"_a.noconvert(), "total_dim"_a, "argmax"_a.noconvert() = nb::none(), "max_dim"_a = 0,
        "num_threads"_a = 1, "feature_names"_a = nb::none(), "op"_a = "embedding_bag", "stream"_a = 0,
        "error_flag"_a.noconvert() = nb::none(),
        "Pooled lookups of F features over flat tables into out [B, total_dim] (cpp/embedding/embedding_bag.h).");
  m.def("embedding_bags_backward", &embedding_bags_backward, "weights"_a.noconvert(), "meta"_a.noconvert(),
        "indices"_a.noconvert(), "offsets"_a.noconvert(), "batch"_a, nb::kw_only(),
        "per_sample_weights"_a.noconvert() = nb::none(), "argmax"_a.noconvert() = nb::none(),
        "grad_out"_a.noconvert(), "total_dim"_a, "optimizer"_a, "lr"_a = 0.0, "eps"_a = 0.0, "beta1"_a = 0.0,
        "beta2"_a = 0.0, "step_size"_a = 0.0, "stochastic_rounding"_a = false, "seed"_a = 0,
        "grad_weights"_a.noconvert() = nb::none(), "state0"_a.noconvert() = nb::none(),
        "state1"_a.noconvert() = nb::none(), "grad_per_sample_weights"_a.noconvert() = nb::none(),
        "max_dim"_a = 0, "num_threads"_a = 1, "op"_a = "embedding_bag", "stream"_a = 0,
        "error_flag"_a.noconvert() = nb::none(),
        "Backward of embedding_bags_forward fused with an optimizer update (0 = dense gradient).");
}

}  // namespace recops::bindings
