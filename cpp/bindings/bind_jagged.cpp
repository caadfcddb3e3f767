// SPDX-License-Identifier: Apache-2.0
// Bindings of the jagged family: check, dispatch on element size / offsets dtype / device, call.
#include <nanobind/stl/optional.h>

#include <optional>

#include "bindings/checks.h"
#include "jagged/jagged.h"
#ifdef RECOPS_WITH_CUDA
#include "jagged/jagged_cuda.h"
#endif

namespace recops::bindings {
namespace {

// The shared fields: offsets (dtype, device), element size, sizes and (CUDA) the error flag.
void fill_common(jagged::JaggedParams& p, const char* op, const char* arg, const Array& data, const Array& offsets,
                 [[maybe_unused]] const std::optional<Array>& error_flag) {
  check_supported_device(op, arg, data);
  check_contiguous(op, arg, data);
  p.offsets_int64 = check_offsets_array(op, "offsets", offsets, arg, data);
  p.offsets = offsets.data();
  p.num_seqs = static_cast<int64_t>(offsets.shape(0)) - 1;
  p.elem_size = movable_elem_size(op, arg, data);
#ifdef RECOPS_WITH_CUDA
  if (is_cuda(data)) p.error_flag = error_flag_ptr(op, error_flag ? &*error_flag : nullptr, data);
#endif
}

// Runs the call on data's device: the CPU core or the CUDA launcher.
template <typename Params, typename Cpu, typename Gpu>
void dispatch(const Array& data, const Params& p, Cpu cpu, [[maybe_unused]] Gpu gpu,
              [[maybe_unused]] uintptr_t stream) {
  nb::gil_scoped_release release;
  if (is_cuda(data)) {
#ifdef RECOPS_WITH_CUDA
    gpu(p, as_stream(stream));
#endif
    return;
  }
  cpu(p);
}

void jagged_to_padded(Array values, Array offsets, int64_t max_len, uint64_t padding_bits, Array out,
                      int num_threads, uintptr_t stream, std::optional<Array> error_flag) {
  constexpr const char* op = "jagged_to_padded";
  jagged::JaggedToPaddedParams p;
  check_ndim(op, "values", values, 2);
  fill_common(p, op, "values", values, offsets, error_flag);
  check_same_device(op, "out", out, "values", values);
  check_same_dtype(op, "out", out, "values", values);
  check_ndim(op, "out", out, 3);
  check_contiguous(op, "out", out);
  if (max_len < 0) value_error(op, ": max_len must be >= 0, got ", std::to_string(max_len));
  p.total_len = values.shape(0);
  p.dim = values.shape(1);
  p.max_len = max_len;
  check_dim(op, "out", out, 0, p.num_seqs);
  check_dim(op, "out", out, 1, max_len);
  check_dim(op, "out", out, 2, p.dim);
  p.values = values.data();
  p.padding_bits = padding_bits;
  p.out = out.data();
  dispatch(values, p, [&](const auto& q) { jagged::jagged_to_padded(q, num_threads); },
           RECOPS_CUDA_FN(cuda::launch_jagged_to_padded), stream);
}

void padded_to_jagged(Array padded, Array offsets, bool allow_truncated, Array out, int num_threads,
                      uintptr_t stream, std::optional<Array> error_flag) {
  const char* op = allow_truncated ? "jagged_to_padded_backward" : "padded_to_jagged";
  jagged::PaddedToJaggedParams p;
  check_ndim(op, "padded", padded, 3);
  fill_common(p, op, "padded", padded, offsets, error_flag);
  check_same_device(op, "out", out, "padded", padded);
  check_same_dtype(op, "out", out, "padded", padded);
  check_ndim(op, "out", out, 2);
  check_contiguous(op, "out", out);
  if (p.num_seqs != static_cast<int64_t>(padded.shape(0))) {
    value_error(op, ": offsets must have padded.shape[0] + 1 = ", std::to_string(padded.shape(0) + 1),
                " elements, got ", std::to_string(offsets.shape(0)));
  }
  p.max_len = padded.shape(1);
  p.dim = padded.shape(2);
  check_dim(op, "out", out, 1, p.dim);
  p.total_len = out.shape(0);
  p.padded = padded.data();
  p.allow_truncated = allow_truncated;
  p.out = out.data();
  dispatch(padded, p, [&](const auto& q) { jagged::padded_to_jagged(q, num_threads); },
           RECOPS_CUDA_FN(cuda::launch_padded_to_jagged), stream);
}

void check_jagged(Array offsets, int64_t total_len, int64_t max_len, const char* op) {
  check_supported_device(op, "offsets", offsets);
  if (is_cuda(offsets)) type_error(op, ": check_jagged needs offsets on cpu, got ", device_name(offsets));
  const bool i64 = check_offsets_array(op, "offsets", offsets, "offsets", offsets);
  const int64_t num_seqs = static_cast<int64_t>(offsets.shape(0)) - 1;
  auto run = [&](const auto* off) {
    if (max_len < 0) jagged::check_offsets(op, off, num_seqs, total_len);
    else jagged::check_lengths(op, off, num_seqs, total_len, max_len);
  };
  if (i64) run(static_cast<const int64_t*>(offsets.data())); else run(static_cast<const int32_t*>(offsets.data()));
}

}  // namespace

void bind_jagged(nb::module_& m) {
  using namespace nb::literals;
  m.def("jagged_to_padded", &jagged_to_padded, "values"_a.noconvert(), "offsets"_a.noconvert(), "max_len"_a,
        "padding_bits"_a, "out"_a.noconvert(), "num_threads"_a = 1, "stream"_a = 0,
        "error_flag"_a.noconvert() = nb::none(),
        "Fill out [B, max_len, D] from values [L, D] and offsets [B+1]; padding given as raw bits.");
  m.def("padded_to_jagged", &padded_to_jagged, "padded"_a.noconvert(), "offsets"_a.noconvert(),
        "allow_truncated"_a, "out"_a.noconvert(), "num_threads"_a = 1, "stream"_a = 0,
        "error_flag"_a.noconvert() = nb::none(),
        "Fill out [L, D] from padded [B, N, D] and offsets [B+1]; rows past N are zero if allow_truncated.");
  m.def("check_jagged", &check_jagged, "offsets"_a.noconvert(), "total_len"_a, "max_len"_a, "op"_a,
        "Raise the CPU core's ValueError naming `op` unless host offsets start at 0, never decrease and end at "
        "total_len (and, with max_len >= 0, every length is <= max_len).");
}

}  // namespace recops::bindings
