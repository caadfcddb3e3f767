// SPDX-License-Identifier: Apache-2.0
// Bindings of the elementwise nn kernels: counter-based dropout (cpp/nn/dropout.h).
#include "bindings/checks.h"
#include "nn/dropout.h"

namespace recops::bindings {
namespace {

// out = dropout(x) for contiguous float32/float64 CPU arrays of one shape (out may be x).
void dropout(Array x, Array out, double p, uint64_t seed, int num_threads) {
  constexpr const char* op = "dropout";
  if (is_cuda(x)) type_error(op, ": x must be on the cpu here, got ", device_name(x));
  check_supported_device(op, "x", x);
  check_same_device(op, "out", out, "x", x);
  check_same_dtype(op, "out", out, "x", x);
  check_contiguous(op, "x", x);
  check_contiguous(op, "out", out);
  if (out.size() != x.size()) {
    value_error(op, ": out must have x's ", std::to_string(x.size()), " elements, got ", std::to_string(out.size()));
  }
  const auto n = static_cast<int64_t>(x.size());
  if (x.dtype() == nb::dtype<float>()) {
    nb::gil_scoped_release release;
    nn::dropout(static_cast<const float*>(x.data()), static_cast<float*>(out.data()), n, p, seed, num_threads);
  } else if (x.dtype() == nb::dtype<double>()) {
    nb::gil_scoped_release release;
    nn::dropout(static_cast<const double*>(x.data()), static_cast<double*>(out.data()), n, p, seed, num_threads);
  } else {
    type_error(op, ": x must be float32 or float64, got ", dtype_name(x.dtype()));
  }
}

}  // namespace

void bind_nn(nb::module_& m) {
  using namespace nb::literals;
  m.def("dropout", &dropout, "x"_a.noconvert(), "out"_a.noconvert(), "p"_a, "seed"_a, "num_threads"_a = 1,
        "Counter-based dropout of a contiguous array into out (cpp/nn/dropout.h).");
}

}  // namespace recops::bindings
