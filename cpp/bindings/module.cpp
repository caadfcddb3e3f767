// SPDX-License-Identifier: Apache-2.0
// The recops._C extension: the only translation units that see nanobind are in cpp/bindings/.
#include <nanobind/nanobind.h>

#include "common/cpu_isa.h"

namespace nb = nanobind;

namespace recops::bindings {
void bind_jagged(nb::module_& m);
void bind_hstu(nb::module_& m);
void bind_losses(nb::module_& m);
void bind_embedding(nb::module_& m);
void bind_retrieval(nb::module_& m);
}

NB_MODULE(_C, m) {
  m.doc() = "recops compiled kernels (torch-free; tensors cross via DLPack)";
  m.def("has_cuda", []() {
#ifdef RECOPS_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "True if this build contains the CUDA kernels.");
  m.def("has_openmp", []() {
#ifdef RECOPS_WITH_OPENMP
    return true;
#else
    return false;
#endif
  }, "True if the CPU kernels were built with OpenMP.");
  m.def("cpu_isa", &recops::selected_isa_name,
        "The CPU code path of every family: avx512, avx2 or generic (RECOPS_CPU_ISA can force it down; families "
        "without AVX-512 kernels run their AVX2 ones on avx512).");
  recops::bindings::bind_jagged(m);
  recops::bindings::bind_hstu(m);
  recops::bindings::bind_losses(m);
  recops::bindings::bind_embedding(m);
  recops::bindings::bind_retrieval(m);
}
