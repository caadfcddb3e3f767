// SPDX-License-Identifier: Apache-2.0
// Dropout: validation and run-time ISA dispatch (kernels in dropout_impl.h).
#include "nn/dropout.h"

#include "common/check.h"
#include "common/cpu_isa.h"
#include "hstu/attention_dropout.h"

namespace recops::nn {

#define RECOPS_DROPOUT_DECLARE_ISA(ns)                                                                  \
  namespace ns {                                                                                        \
  template <typename T> void run(const T*, T*, int64_t, uint64_t, uint32_t, double, int);               \
  }
RECOPS_DROPOUT_DECLARE_ISA(generic)
RECOPS_DROPOUT_DECLARE_ISA(avx2)
RECOPS_DROPOUT_DECLARE_ISA(avx512)
#undef RECOPS_DROPOUT_DECLARE_ISA

template <typename T>
void dropout(const T* x, T* out, int64_t n, double p, uint64_t seed, int num_threads) {
  RECOPS_CHECK(n >= 0, "dropout: the element count must be >= 0, got ", n);
  RECOPS_CHECK(p >= 0.0 && p < 1.0, "dropout: p must be in [0, 1), got ", p);
  if (n == 0) return;
  isa_pick(&generic::run<T>, &avx2::run<T>, &avx512::run<T>)(x, out, n, seed, hstu::dropout_threshold(p),
                                                               1.0 / (1.0 - p), num_threads);
}

template void dropout<float>(const float*, float*, int64_t, double, uint64_t, int);
template void dropout<double>(const double*, double*, int64_t, double, uint64_t, int);

}  // namespace recops::nn
