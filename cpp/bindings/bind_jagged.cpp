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

// Calls fn(elem_t{}, index_t{}) for the storage word of `elem_size` bytes and the offsets index type.
template <typename Fn>
void dispatch_words(int64_t elem_size, bool i64, Fn&& fn) {
  auto with_index = [&](auto word) {
    if (i64) fn(word, int64_t{}); else fn(word, int32_t{});
  };
  switch (elem_size) {
    case 1: with_index(uint8_t{}); break;
    case 2: with_index(uint16_t{}); break;
    case 4: with_index(uint32_t{}); break;
    default: with_index(uint64_t{}); break;
  }
}

void jagged_to_padded(Array values, Array offsets, int64_t max_len, uint64_t padding_bits, Array out,
                      int num_threads, uintptr_t stream, std::optional<Array> error_flag) {
  constexpr const char* op = "jagged_to_padded";
  check_supported_device(op, "values", values);
  check_ndim(op, "values", values, 2);
  check_contiguous(op, "values", values);
  const bool i64 = check_offsets_array(op, "offsets", offsets, "values", values);
  const int64_t elem = movable_elem_size(op, "values", values);
  check_same_device(op, "out", out, "values", values);
  check_same_dtype(op, "out", out, "values", values);
  check_ndim(op, "out", out, 3);
  check_contiguous(op, "out", out);
  if (max_len < 0) value_error(op, ": max_len must be >= 0, got ", std::to_string(max_len));
  const int64_t num_seqs = static_cast<int64_t>(offsets.shape(0)) - 1;
  const int64_t total_len = values.shape(0), dim = values.shape(1);
  check_dim(op, "out", out, 0, num_seqs);
  check_dim(op, "out", out, 1, max_len);
  check_dim(op, "out", out, 2, dim);
  if (is_cuda(values)) {
#ifdef RECOPS_WITH_CUDA
    int32_t* flag = error_flag_ptr(op, error_flag ? &*error_flag : nullptr, values);
    nb::gil_scoped_release release;
    cuda::launch_jagged_to_padded(values.data(), total_len, dim, elem, offsets.data(), i64, num_seqs, max_len,
                                  padding_bits, out.data(), flag, as_stream(stream));
#endif
    return;
  }
  nb::gil_scoped_release release;
  dispatch_words(elem, i64, [&](auto word, auto index) {
    using elem_t = decltype(word);
    using index_t = decltype(index);
    jagged::jagged_to_padded<elem_t, index_t>(
        static_cast<const elem_t*>(values.data()), total_len, dim, static_cast<const index_t*>(offsets.data()),
        num_seqs, max_len, static_cast<elem_t>(padding_bits), static_cast<elem_t*>(out.data()), num_threads);
  });
}

void padded_to_jagged(Array padded, Array offsets, bool allow_truncated, Array out, int num_threads,
                      uintptr_t stream, std::optional<Array> error_flag) {
  const char* op = allow_truncated ? "jagged_to_padded_backward" : "padded_to_jagged";
  check_supported_device(op, "padded", padded);
  check_ndim(op, "padded", padded, 3);
  check_contiguous(op, "padded", padded);
  const bool i64 = check_offsets_array(op, "offsets", offsets, "padded", padded);
  const int64_t elem = movable_elem_size(op, "padded", padded);
  check_same_device(op, "out", out, "padded", padded);
  check_same_dtype(op, "out", out, "padded", padded);
  check_ndim(op, "out", out, 2);
  check_contiguous(op, "out", out);
  const int64_t num_seqs = padded.shape(0), max_len = padded.shape(1), dim = padded.shape(2);
  if (static_cast<int64_t>(offsets.shape(0)) != num_seqs + 1) {
    value_error(op, ": offsets must have padded.shape[0] + 1 = ", std::to_string(num_seqs + 1),
                " elements, got ", std::to_string(offsets.shape(0)));
  }
  check_dim(op, "out", out, 1, dim);
  const int64_t total_len = out.shape(0);
  if (is_cuda(padded)) {
#ifdef RECOPS_WITH_CUDA
    int32_t* flag = error_flag_ptr(op, error_flag ? &*error_flag : nullptr, padded);
    nb::gil_scoped_release release;
    cuda::launch_padded_to_jagged(padded.data(), num_seqs, max_len, dim, elem, offsets.data(), i64, total_len,
                                  allow_truncated, out.data(), flag, as_stream(stream));
#endif
    return;
  }
  nb::gil_scoped_release release;
  dispatch_words(elem, i64, [&](auto word, auto index) {
    using elem_t = decltype(word);
    using index_t = decltype(index);
    jagged::padded_to_jagged<elem_t, index_t>(static_cast<const elem_t*>(padded.data()), num_seqs, max_len, dim,
                                              static_cast<const index_t*>(offsets.data()), total_len,
                                              allow_truncated, static_cast<elem_t*>(out.data()), num_threads);
  });
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
