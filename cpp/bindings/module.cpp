// SPDX-License-Identifier: Apache-2.0
// The recops._C extension: the only translation units that see nanobind are in cpp/bindings/.
#include <nanobind/nanobind.h>

#include <nanobind/stl/string.h>

#include "common/cpu_isa.h"
#include "common/error_bits.h"
#include "embedding/embedding_params.h"

namespace nb = nanobind;

namespace recops::bindings {
void bind_jagged(nb::module_& m);
void bind_hstu(nb::module_& m);
void bind_losses(nb::module_& m);
void bind_embedding(nb::module_& m);
void bind_dynamic(nb::module_& m);
void bind_retrieval(nb::module_& m);
void bind_nn(nb::module_& m);
}

NB_MODULE(_C, m) {
  m.doc() = "recops compiled kernels (torch-free; tensors cross via DLPack)";
  // DynamicIdMap objects still referenced from module globals when the interpreter exits are not leaks.
  nb::set_leak_warnings(false);
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
  // Codes shared with the core, by name (Python reads these, never positions or literals).
  namespace emb = recops::embedding;
  nb::dict err, meta, opt, pool;
  err["bad_offsets"] = int{recops::kErrBadOffsets};
  err["too_long"] = int{recops::kErrTooLong};
  err["bad_index"] = int{recops::kErrBadIndex};
  err["bad_order"] = int{recops::kErrBadOrder};
  err["non_finite"] = int{recops::kErrNonFinite};
  meta["weight_offset"] = int{emb::kWeightOffset};
  meta["row_offset"] = int{emb::kRowOffset};
  meta["num_rows"] = int{emb::kNumRows};
  meta["dim"] = int{emb::kDim};
  meta["row_stride"] = int{emb::kRowStride};
  meta["pooling"] = int{emb::kPooling};
  meta["out_column"] = int{emb::kOutColumn};
  opt["dense"] = static_cast<int>(emb::Update::kDenseGrad);
  opt["sgd"] = static_cast<int>(emb::Update::kSgd);
  opt["adagrad"] = static_cast<int>(emb::Update::kAdagrad);
  opt["rowwise_adagrad"] = static_cast<int>(emb::Update::kRowwiseAdagrad);
  opt["adam"] = static_cast<int>(emb::Update::kAdam);
  pool["sum"] = static_cast<int>(emb::Pooling::kSum);
  pool["mean"] = static_cast<int>(emb::Pooling::kMean);
  pool["max"] = static_cast<int>(emb::Pooling::kMax);
  m.attr("ERROR_BITS") = err;
  m.attr("EMBEDDING_META_COLUMNS") = meta;
  m.attr("EMBEDDING_META_NUM_COLUMNS") = int{emb::kMetaCols};
  m.attr("EMBEDDING_OPTIMIZERS") = opt;
  m.attr("EMBEDDING_POOLING") = pool;
  recops::bindings::bind_jagged(m);
  recops::bindings::bind_hstu(m);
  recops::bindings::bind_losses(m);
  recops::bindings::bind_embedding(m);
  recops::bindings::bind_dynamic(m);
  recops::bindings::bind_retrieval(m);
  recops::bindings::bind_nn(m);
}
