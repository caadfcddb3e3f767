// SPDX-License-Identifier: Apache-2.0
// Bindings of the losses family: check, dispatch on dtype and device, call the core or the CUDA launcher.
#include <nanobind/stl/optional.h>

#include <optional>

#include "bindings/checks.h"
#include "common/checked_math.h"
#include "losses/ordinal.h"
#include "losses/sampled_softmax.h"
#ifdef RECOPS_WITH_CUDA
#include "losses/losses_cuda.h"
#endif

namespace recops::bindings {
namespace {

using losses::Reduction;

// The primary float input: float32/float64 on cpu, float32/bfloat16 on cuda. Returns true for the wide type
// (float64 on cpu, never on cuda) and sets *bf16 for bfloat16.
bool check_loss_dtype(const char* op, const char* arg, const Array& a, bool* bf16) {
  check_supported_device(op, arg, a);
  const auto dt = a.dtype();
  *bf16 = false;
  if (is_cuda(a)) {
    if (dt == nb::dtype<float>()) return false;
    if (dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat) && dt.bits == 16 && dt.lanes == 1) {
      *bf16 = true;
      return false;
    }
    type_error(op, ": ", arg, " must be float32 or bfloat16 on cuda, got ", dtype_name(dt));
  }
  if (dt == nb::dtype<double>()) return true;
  if (dt != nb::dtype<float>()) type_error(op, ": ", arg, " must be float32 or float64 on cpu, got ", dtype_name(dt));
  return false;
}

// Same device and dtype as ref, contiguous, ndim dimensions.
void check_like(const char* op, const char* arg, const Array& a, const char* ref_arg, const Array& ref, size_t ndim) {
  check_same_device(op, arg, a, ref_arg, ref);
  check_same_dtype(op, arg, a, ref_arg, ref);
  check_ndim(op, arg, a, ndim);
  check_contiguous(op, arg, a);
}

void check_labels_array(const char* op, const char* arg, const Array& a, const Array& ref, int64_t num_samples) {
  check_same_device(op, arg, a, "the inputs", ref);
  if (a.dtype() != nb::dtype<int64_t>()) type_error(op, ": ", arg, " must be int64, got ", dtype_name(a.dtype()));
  check_ndim(op, arg, a, 1);
  check_dim(op, arg, a, 0, num_samples);
  check_contiguous(op, arg, a);
}

// The shared fields of the call's parameters: weights [B], grad_loss [B] or one element, loss [B] (none) or
// one element, the reduction code, min_gap, and (CUDA) the error flag.
void fill_common(losses::LossParams& c, const char* op, const Array& ref, const char* ref_arg, int64_t num_samples,
                 const std::optional<Array>& weights, int reduction, double min_gap,
                 const std::optional<Array>& grad_loss, Array& loss, [[maybe_unused]] const std::optional<Array>& flag) {
  if (reduction < 0 || reduction > 2) {
    value_error(op, ": reduction must be 0 (none), 1 (sum) or 2 (mean), got ", std::to_string(reduction));
  }
  c.num_samples = num_samples;
  c.reduction = static_cast<Reduction>(reduction);
  c.min_gap = min_gap;
  if (weights) {
    check_like(op, "weights", *weights, ref_arg, ref, 1);
    check_dim(op, "weights", *weights, 0, num_samples);
    c.weights = weights->data();
  }
  if (grad_loss) {
    check_same_device(op, "grad_loss", *grad_loss, ref_arg, ref);
    check_same_dtype(op, "grad_loss", *grad_loss, ref_arg, ref);
    check_contiguous(op, "grad_loss", *grad_loss);
    const bool per_sample = c.reduction == Reduction::kNone;
    const int64_t want = per_sample ? num_samples : 1;
    if (static_cast<int64_t>(grad_loss->size()) != want) {
      value_error(op, ": grad_loss must have ", std::to_string(want), " elements, got ",
                  std::to_string(grad_loss->size()));
    }
    c.grad_loss = grad_loss->data();
    c.grad_loss_stride = per_sample ? 1 : 0;
  }
  check_same_device(op, "loss", loss, ref_arg, ref);
  check_same_dtype(op, "loss", loss, ref_arg, ref);
  check_contiguous(op, "loss", loss);
  const int64_t want = c.reduction == Reduction::kNone ? num_samples : 1;
  if (static_cast<int64_t>(loss.size()) != want) {
    value_error(op, ": loss must have ", std::to_string(want), " elements, got ", std::to_string(loss.size()));
  }
  c.loss = loss.data();
#ifdef RECOPS_WITH_CUDA
  if (is_cuda(ref)) c.error_flag = error_flag_ptr(op, flag ? &*flag : nullptr, ref);
#endif
}

// Gradient outputs: all given (checked like `like`) or none. Returns their data pointers (null when absent).
void* grad_ptr(const char* op, const char* arg, const std::optional<Array>& g, const Array& like, const char* like_arg) {
  if (!g) return nullptr;
  check_like(op, arg, *g, like_arg, like, like.ndim());
  for (size_t d = 0; d < like.ndim(); ++d) check_dim(op, arg, *g, d, like.shape(d));
  return g->data();
}

#ifdef RECOPS_WITH_CUDA
float* workspace_ptr(const char* op, const std::optional<Array>& ws, const Array& ref, int64_t numel) {
  if (!ws || ws->dtype() != nb::dtype<float>() || static_cast<int64_t>(ws->size()) < numel) {
    type_error(op, ": workspace must be a float32 device tensor of at least ", std::to_string(numel), " elements");
  }
  check_same_device(op, "workspace", *ws, "the inputs", ref);
  return static_cast<float*>(ws->data());
}
#endif

// Runs the call on ref's device: the CPU core (float32/float64) or the CUDA launcher (float32/bfloat16).
template <typename Params, typename Cpu, typename Gpu>
void dispatch([[maybe_unused]] const char* op, const Array& ref, Params& p, bool f64, [[maybe_unused]] bool bf16,
              [[maybe_unused]] int64_t num_partials, [[maybe_unused]] const std::optional<Array>& workspace,
              [[maybe_unused]] uintptr_t stream, Cpu cpu, [[maybe_unused]] Gpu gpu) {
  if (is_cuda(ref)) {
#ifdef RECOPS_WITH_CUDA
    p.workspace = workspace_ptr(op, workspace, ref, cuda::loss_workspace_numel(p.num_samples, num_partials));
    nb::gil_scoped_release release;
    gpu(p, bf16, as_stream(stream));
#endif
    return;
  }
  nb::gil_scoped_release release;
  if (f64) cpu(p, double{}); else cpu(p, float{});
}

void ordinal_logistic_loss(Array scores, Array thresholds, Array labels, std::optional<Array> weights,
                           int reduction, double min_gap, std::optional<Array> grad_loss, Array loss,
                           std::optional<Array> grad_scores, std::optional<Array> grad_thresholds, int num_threads,
                           uintptr_t stream, std::optional<Array> workspace, std::optional<Array> error_flag) {
  constexpr const char* op = "ordinal_logistic_loss";
  bool bf16 = false;
  const bool f64 = check_loss_dtype(op, "scores", scores, &bf16);
  check_ndim(op, "scores", scores, 1);
  check_contiguous(op, "scores", scores);
  const int64_t num_samples = scores.shape(0);
  check_like(op, "thresholds", thresholds, "scores", scores, 1);
  check_labels_array(op, "labels", labels, scores, num_samples);
  losses::OrdinalParams p;
  fill_common(p, op, scores, "scores", num_samples, weights, reduction, min_gap, grad_loss, loss, error_flag);
  if (grad_scores.has_value() != grad_thresholds.has_value()) {
    value_error(op, ": grad_scores and grad_thresholds must be given together");
  }
  p.labels = static_cast<const int64_t*>(labels.data());
  p.scores = scores.data();
  p.thresholds = thresholds.data();
  p.num_thresholds = thresholds.shape(0);
  p.with_grad = grad_scores.has_value();
  p.grad_scores = grad_ptr(op, "grad_scores", grad_scores, scores, "scores");
  p.grad_thresholds = grad_ptr(op, "grad_thresholds", grad_thresholds, thresholds, "thresholds");
  dispatch(op, scores, p, f64, bf16, p.num_thresholds, workspace, stream,
           [&](const auto& q, auto tag) { losses::ordinal_logistic_loss<decltype(tag)>(q, num_threads); },
           RECOPS_CUDA_FN(cuda::launch_ordinal_logistic_loss));
}

void gnolr_loss(Array cos, Array gamma, Array thresholds, Array levels, std::optional<Array> weights, int reduction,
                double min_gap, bool nested, std::optional<Array> grad_loss, Array loss,
                std::optional<Array> grad_cos, std::optional<Array> grad_gamma,
                std::optional<Array> grad_thresholds, int num_threads, uintptr_t stream,
                std::optional<Array> workspace, std::optional<Array> error_flag) {
  constexpr const char* op = "gnolr_loss";
  bool bf16 = false;
  const bool f64 = check_loss_dtype(op, "cos", cos, &bf16);
  check_ndim(op, "cos", cos, 2);
  check_contiguous(op, "cos", cos);
  const int64_t num_samples = cos.shape(0), num_levels = cos.shape(1);
  check_like(op, "gamma", gamma, "cos", cos, 1);
  check_dim(op, "gamma", gamma, 0, num_levels);
  check_like(op, "thresholds", thresholds, "cos", cos, 1);
  check_dim(op, "thresholds", thresholds, 0, num_levels);
  check_labels_array(op, "levels", levels, cos, num_samples);
  losses::GnolrParams p;
  fill_common(p, op, cos, "cos", num_samples, weights, reduction, min_gap, grad_loss, loss, error_flag);
  if (grad_cos.has_value() != grad_gamma.has_value() || grad_cos.has_value() != grad_thresholds.has_value()) {
    value_error(op, ": grad_cos, grad_gamma and grad_thresholds must be given together");
  }
  p.labels = static_cast<const int64_t*>(levels.data());
  p.cos = cos.data();
  p.num_levels = num_levels;
  p.gamma = gamma.data();
  p.thresholds = thresholds.data();
  p.nested = nested;
  p.with_grad = grad_cos.has_value();
  p.grad_cos = grad_ptr(op, "grad_cos", grad_cos, cos, "cos");
  p.grad_gamma = grad_ptr(op, "grad_gamma", grad_gamma, gamma, "gamma");
  p.grad_thresholds = grad_ptr(op, "grad_thresholds", grad_thresholds, thresholds, "thresholds");
  dispatch(op, cos, p, f64, bf16, 2 * num_levels, workspace, stream,
           [&](const auto& q, auto tag) { losses::gnolr_loss<decltype(tag)>(q, num_threads); },
           RECOPS_CUDA_FN(cuda::launch_gnolr_loss));
}

// thresholds: float32 or float64 host copy, or None (GNOLR: no order to check).
void check_ordinal(Array labels, int64_t hi, std::optional<Array> thresholds, const char* arg, const char* op) {
  const int64_t* lab = host_vec<int64_t>(op, arg, labels);
  const int64_t n = static_cast<int64_t>(labels.shape(0));
  if (thresholds && thresholds->dtype() == nb::dtype<double>()) {
    const double* th = host_vec<double>(op, "thresholds", *thresholds);
    losses::check_ordinal_data(op, arg, lab, n, hi, th, static_cast<int64_t>(thresholds->shape(0)));
  } else {
    const float* th = thresholds ? host_vec<float>(op, "thresholds", *thresholds) : nullptr;
    losses::check_ordinal_data(op, arg, lab, n, hi, th, thresholds ? static_cast<int64_t>(thresholds->shape(0)) : 0);
  }
}

// The sampled-softmax call's parameters (one dtype for every float array: float32 or float64 on cpu, float32 on
// cuda).
losses::SampledSoftmaxParams sampled_softmax_params(const char* op, const Array& queries, const Array& items,
                                                    const Array& positives, const std::optional<Array>& negatives,
                                                    const std::optional<Array>& log_q, int64_t num_negatives,
                                                    bool generate, uint64_t seed, double inv_temperature,
                                                    bool in_batch, bool remove_accidental_hits, bool* f64) {
  bool bf16 = false;
  *f64 = check_loss_dtype(op, "queries", queries, &bf16);
  if (bf16) type_error(op, ": queries must be float32 on cuda, got bfloat16");
  check_like(op, "queries", queries, "queries", queries, 2);
  check_like(op, "items", items, "queries", queries, 2);
  check_dim(op, "items", items, 1, static_cast<int64_t>(queries.shape(1)));
  const int64_t rows = static_cast<int64_t>(queries.shape(0));
  check_labels_array(op, "positives", positives, queries, rows);
  losses::SampledSoftmaxParams p;
  p.queries = queries.data();
  p.items = items.data();
  p.num_rows = rows;
  p.dim = static_cast<int64_t>(queries.shape(1));
  p.num_items = static_cast<int64_t>(items.shape(0));
  p.positives = static_cast<const int64_t*>(positives.data());
  p.num_negatives = num_negatives;
  p.generate = generate;
  p.seed = seed;
  if (negatives) {
    check_same_device(op, "negatives", *negatives, "queries", queries);
    if (negatives->dtype() != nb::dtype<int64_t>()) {
      type_error(op, ": negatives must be int64, got ", dtype_name(negatives->dtype()));
    }
    check_contiguous(op, "negatives", *negatives);
    p.per_row = negatives->ndim() == 2;
    if (p.per_row) {
      check_dim(op, "negatives", *negatives, 0, rows);
      check_dim(op, "negatives", *negatives, 1, num_negatives);
    } else {
      check_ndim(op, "negatives", *negatives, 1);
      check_dim(op, "negatives", *negatives, 0, num_negatives);
    }
    p.negatives = static_cast<const int64_t*>(negatives->data());
  }
  if (log_q) {
    check_like(op, "log_q", *log_q, "queries", queries, 1);
    check_dim(op, "log_q", *log_q, 0, p.num_items);
    p.log_q = log_q->data();
  }
  p.inv_temperature = inv_temperature;
  p.in_batch = in_batch;
  p.remove_accidental_hits = remove_accidental_hits;
  return p;
}

void check_row_array(const char* op, const char* arg, const Array& a, const Array& queries, int64_t numel) {
  check_like(op, arg, a, "queries", queries, a.ndim());
  if (static_cast<int64_t>(a.size()) != numel) {
    value_error(op, ": ", arg, " must have ", std::to_string(numel), " elements, got ", std::to_string(a.size()));
  }
}

// Runs a sampled-softmax call on queries' device: the CPU core (float32/float64, which validates everything
// itself) or, for cuda float32, the host-side size checks and then the CUDA launcher (ids and log_q are checked
// on the device, into the error flag).
template <typename Cpu, typename Gpu>
void sampled_softmax_dispatch([[maybe_unused]] const char* op, const Array& queries,
                              const losses::SampledSoftmaxParams& p, bool f64, [[maybe_unused]] uintptr_t stream,
                              [[maybe_unused]] const std::optional<Array>& error_flag, Cpu cpu,
                              [[maybe_unused]] Gpu gpu) {
  if (is_cuda(queries)) {
#ifdef RECOPS_WITH_CUDA
    int32_t* flag = error_flag_ptr(op, error_flag ? &*error_flag : nullptr, queries);
    losses::check_sampled_softmax_sizes<float>(p);
    if (!p.negatives && !p.generate && p.num_negatives > 0 && p.num_rows > 0) {  // the core's message
      value_error(op, ": ", std::to_string(p.num_negatives), " negatives need ids or generation");
    }
    nb::gil_scoped_release release;
    gpu(p, flag, as_stream(stream));
#endif
    return;
  }
  nb::gil_scoped_release release;
  if (f64) cpu(p, double{}); else cpu(p, float{});
}

void sampled_softmax_forward(Array queries, Array items, Array positives, std::optional<Array> negatives,
                             std::optional<Array> log_q, int64_t num_negatives, bool generate, uint64_t seed,
                             double inv_temperature, bool in_batch, bool remove_accidental_hits, Array loss,
                             Array lse, int num_threads, uintptr_t stream, std::optional<Array> error_flag) {
  const char* op = "sampled_softmax_loss";
  bool f64 = false;
  auto p = sampled_softmax_params(op, queries, items, positives, negatives, log_q, num_negatives, generate, seed,
                                  inv_temperature, in_batch, remove_accidental_hits, &f64);
  check_row_array(op, "loss", loss, queries, p.num_rows);
  check_row_array(op, "lse", lse, queries, p.num_rows);
  p.loss = loss.data();
  p.lse = lse.data();
  sampled_softmax_dispatch(
      op, queries, p, f64, stream, error_flag,
      [&](const auto& q, auto tag) { losses::sampled_softmax_forward<decltype(tag)>(q, num_threads); },
      RECOPS_CUDA_FN(cuda::launch_sampled_softmax_forward));
}

void sampled_softmax_backward(Array grad_loss, Array queries, Array items, Array positives,
                              std::optional<Array> negatives, std::optional<Array> log_q, Array lse,
                              int64_t num_negatives, bool generate, uint64_t seed, double inv_temperature,
                              bool in_batch, bool remove_accidental_hits, Array grad_queries, Array grad_items,
                              int num_threads, uintptr_t stream, std::optional<Array> error_flag) {
  const char* op = "sampled_softmax_loss";
  bool f64 = false;
  auto p = sampled_softmax_params(op, queries, items, positives, negatives, log_q, num_negatives, generate, seed,
                                  inv_temperature, in_batch, remove_accidental_hits, &f64);
  check_row_array(op, "grad_loss", grad_loss, queries, p.num_rows);
  check_row_array(op, "lse", lse, queries, p.num_rows);
  check_row_array(op, "grad_queries", grad_queries, queries, static_cast<int64_t>(queries.size()));
  check_row_array(op, "grad_items", grad_items, queries, static_cast<int64_t>(items.size()));
  p.grad_loss = grad_loss.data();
  p.lse = lse.data();
  p.grad_queries = grad_queries.data();
  p.grad_items = grad_items.data();
  sampled_softmax_dispatch(
      op, queries, p, f64, stream, error_flag,
      [&](const auto& q, auto tag) { losses::sampled_softmax_backward<decltype(tag)>(q, num_threads); },
      RECOPS_CUDA_FN(cuda::launch_sampled_softmax_backward));
}

// The core's data checks of a sampled-softmax call on host copies (after a CUDA kernel flagged bad input):
// positives [L] int64, negatives [M] / [L, M] int64 or None, log_q [V] float32/float64 or None.
void check_sampled_softmax(Array positives, std::optional<Array> negatives, std::optional<Array> log_q,
                           int64_t dim, int64_t num_items, int64_t num_negatives, bool generate,
                           double inv_temperature, bool in_batch) {
  const char* op = "sampled_softmax_loss";
  losses::SampledSoftmaxParams p;
  p.positives = host_vec<int64_t>(op, "positives", positives);
  p.num_rows = static_cast<int64_t>(positives.shape(0));
  p.dim = dim;
  p.num_items = num_items;
  p.num_negatives = num_negatives;
  p.generate = generate;
  p.inv_temperature = inv_temperature;
  p.in_batch = in_batch;
  if (negatives) {
    if (is_cuda(*negatives) || negatives->dtype() != nb::dtype<int64_t>() || negatives->ndim() < 1 ||
        negatives->ndim() > 2) {
      type_error(op, ": negatives must be a 1-D or 2-D cpu int64 array, got ", dtype_name(negatives->dtype()),
                 " on ", device_name(*negatives));
    }
    check_contiguous(op, "negatives", *negatives);
    p.per_row = negatives->ndim() == 2;
    const int64_t want = p.per_row ? checked_mul(p.num_rows, num_negatives, op) : num_negatives;
    if (static_cast<int64_t>(negatives->size()) != want) {
      value_error(op, ": negatives must have ", std::to_string(want), " elements, got ",
                  std::to_string(negatives->size()));
    }
    p.negatives = static_cast<const int64_t*>(negatives->data());
  }
  const bool f64 = log_q && log_q->dtype() == nb::dtype<double>();
  if (log_q) {
    p.log_q = f64 ? static_cast<const void*>(host_vec<double>(op, "log_q", *log_q, num_items))
                  : static_cast<const void*>(host_vec<float>(op, "log_q", *log_q, num_items));
  }
  if (f64) losses::check_sampled_softmax<double>(p);
  else losses::check_sampled_softmax<float>(p);
}

void sampled_softmax_negatives(int64_t rows, int64_t m, int64_t num_items, uint64_t seed, Array out) {
  const char* op = "sampled_softmax_negatives";
  check_supported_device(op, "out", out);
  if (is_cuda(out) || out.dtype() != nb::dtype<int64_t>()) type_error(op, ": out must be a cpu int64 array");
  check_contiguous(op, "out", out);
  if (rows < 0 || m < 0) value_error(op, ": sizes must be non-negative");
  if (static_cast<int64_t>(out.size()) != checked_mul(rows, m, op)) value_error(op, ": out must have rows * m elements");
  losses::sampled_softmax_negatives(rows, m, num_items, seed, static_cast<int64_t*>(out.data()));
}

}  // namespace

void bind_losses(nb::module_& m) {
  using namespace nb::literals;
  m.def("ordinal_logistic_loss", &ordinal_logistic_loss, "scores"_a.noconvert(), "thresholds"_a.noconvert(),
        "labels"_a.noconvert(), "weights"_a.noconvert() = nb::none(), nb::kw_only(), "reduction"_a, "min_gap"_a,
        "grad_loss"_a.noconvert() = nb::none(), "loss"_a.noconvert(), "grad_scores"_a.noconvert() = nb::none(),
        "grad_thresholds"_a.noconvert() = nb::none(), "num_threads"_a = 1, "stream"_a = 0,
        "workspace"_a.noconvert() = nb::none(), "error_flag"_a.noconvert() = nb::none(),
        "Proportional-odds loss into loss [B] or [1]; with grad_scores/grad_thresholds also its gradient.");
  m.def("gnolr_loss", &gnolr_loss, "cos"_a.noconvert(), "gamma"_a.noconvert(), "thresholds"_a.noconvert(),
        "levels"_a.noconvert(), "weights"_a.noconvert() = nb::none(), nb::kw_only(), "reduction"_a, "min_gap"_a,
        "nested"_a,
        "grad_loss"_a.noconvert() = nb::none(), "loss"_a.noconvert(), "grad_cos"_a.noconvert() = nb::none(),
        "grad_gamma"_a.noconvert() = nb::none(), "grad_thresholds"_a.noconvert() = nb::none(),
        "num_threads"_a = 1, "stream"_a = 0, "workspace"_a.noconvert() = nb::none(),
        "error_flag"_a.noconvert() = nb::none(),
        "GNOLR loss into loss [B] or [1]; with grad_cos/grad_gamma/grad_thresholds also its gradient.");
  m.def("sampled_softmax_forward", &sampled_softmax_forward, "queries"_a.noconvert(), "items"_a.noconvert(),
        "positives"_a.noconvert(), "negatives"_a.noconvert().none(), "log_q"_a.noconvert().none(), nb::kw_only(),
        "num_negatives"_a, "generate"_a, "seed"_a, "inv_temperature"_a, "in_batch"_a, "remove_accidental_hits"_a,
        "loss"_a.noconvert(), "lse"_a.noconvert(), "num_threads"_a = 1, "stream"_a = 0,
        "error_flag"_a.noconvert() = nb::none(),
        "Per-row sampled-softmax loss [L] and log-sum-exp [L] (cpp/losses/sampled_softmax.h).");
  m.def("sampled_softmax_backward", &sampled_softmax_backward, "grad_loss"_a.noconvert(), "queries"_a.noconvert(),
        "items"_a.noconvert(), "positives"_a.noconvert(), "negatives"_a.noconvert().none(),
        "log_q"_a.noconvert().none(), "lse"_a.noconvert(), nb::kw_only(), "num_negatives"_a, "generate"_a, "seed"_a,
        "inv_temperature"_a, "in_batch"_a, "remove_accidental_hits"_a, "grad_queries"_a.noconvert(),
        "grad_items"_a.noconvert(), "num_threads"_a = 1, "stream"_a = 0, "error_flag"_a.noconvert() = nb::none(),
        "Gradient of the per-row sampled-softmax loss w.r.t. queries [L, D] and items [V, D] (fully written).");
  m.def("sampled_softmax_negatives", &sampled_softmax_negatives, "rows"_a, "m"_a, "num_items"_a, "seed"_a,
        "out"_a.noconvert(), "The ids the kernel draws for rows [0, rows) with num_negatives = m: out [rows, m].");
  m.def("check_sampled_softmax", &check_sampled_softmax, "positives"_a.noconvert(), "negatives"_a.noconvert().none(),
        "log_q"_a.noconvert().none(), nb::kw_only(), "dim"_a, "num_items"_a, "num_negatives"_a, "generate"_a,
        "inv_temperature"_a, "in_batch"_a,
        "Raise the CPU core's ValueError for bad sizes, ids out of [0, num_items) or a non-finite log_q (host "
        "arrays).");
  m.def("check_ordinal", &check_ordinal, "labels"_a.noconvert(), "hi"_a, "thresholds"_a.noconvert().none(), "arg"_a,
        "op"_a, "Raise the CPU core's ValueError for thresholds out of order or labels outside [0, hi] (host arrays).");
#ifdef RECOPS_WITH_CUDA
  m.def("loss_workspace_numel", &cuda::loss_workspace_numel, "num_samples"_a, "num_partials"_a,
        "float32 elements of the CUDA loss workspace for B samples and P partial sums per block.");
#endif
}

}  // namespace recops::bindings
