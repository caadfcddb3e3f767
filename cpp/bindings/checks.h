// SPDX-License-Identifier: Apache-2.0
// Argument checks shared by the bindings: dtype, device and layout problems raise TypeError, rank and size
// problems raise ValueError, each naming the op and the argument (STYLE.md section 4).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string>

#ifdef RECOPS_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace recops::bindings {

namespace nb = nanobind;
using Array = nb::ndarray<>;

inline std::string dtype_name(nb::dlpack::dtype t) {
  const char* kind = "?";
  switch (static_cast<nb::dlpack::dtype_code>(t.code)) {
    case nb::dlpack::dtype_code::Int: kind = "int"; break;
    case nb::dlpack::dtype_code::UInt: kind = "uint"; break;
    case nb::dlpack::dtype_code::Float: kind = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: kind = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: kind = "complex"; break;
    case nb::dlpack::dtype_code::Bool: kind = "bool"; break;
    default: kind = "other"; break;
  }
  return std::string(kind) + std::to_string(t.bits);
}

inline std::string device_name(const Array& a) {
  if (a.device_type() == nb::device::cpu::value) return "cpu";
  if (a.device_type() == nb::device::cuda::value) return "cuda:" + std::to_string(a.device_id());
  return "device_type=" + std::to_string(a.device_type());
}

inline bool is_cuda(const Array& a) { return a.device_type() == nb::device::cuda::value; }

template <typename... Parts>
[[noreturn]] void type_error(const Parts&... parts) {
  std::string s;
  ((s += parts), ...);
  throw nb::type_error(s.c_str());
}

template <typename... Parts>
[[noreturn]] void value_error(const Parts&... parts) {
  std::string s;
  ((s += parts), ...);
  throw nb::value_error(s.c_str());
}

// Dense row-major layout (size-1 dimensions may have any stride; empty arrays always pass).
inline void check_contiguous(const char* op, const char* arg, const Array& a) {
  if (a.size() == 0) return;  // empty: strides are meaningless
  int64_t expected = 1;
  for (int64_t d = static_cast<int64_t>(a.ndim()) - 1; d >= 0; --d) {
    if (a.shape(d) != 1 && a.stride(d) != expected) type_error(op, ": ", arg, " must be contiguous");
    expected *= static_cast<int64_t>(a.shape(d));
  }
}

inline void check_ndim(const char* op, const char* arg, const Array& a, size_t ndim) {
  if (a.ndim() != ndim) {
    value_error(op, ": ", arg, " must have ", std::to_string(ndim), " dimensions, got ", std::to_string(a.ndim()));
  }
}

inline void check_dim(const char* op, const char* arg, const Array& a, size_t d, int64_t size) {
  if (static_cast<int64_t>(a.shape(d)) != size) {
    value_error(op, ": ", arg, ".shape[", std::to_string(d), "] must be ", std::to_string(size), ", got ",
                std::to_string(a.shape(d)));
  }
}

inline void check_same_device(const char* op, const char* arg, const Array& a, const char* ref_arg,
                              const Array& ref) {
  if (a.device_type() != ref.device_type() || a.device_id() != ref.device_id()) {
    type_error(op, ": ", arg, " must be on the same device as ", ref_arg, " (", device_name(ref), "), got ",
               device_name(a));
  }
}

inline void check_same_dtype(const char* op, const char* arg, const Array& a, const char* ref_arg,
                             const Array& ref) {
  if (a.dtype() != ref.dtype()) {
    type_error(op, ": ", arg, " must have the dtype of ", ref_arg, " (", dtype_name(ref.dtype()), "), got ",
               dtype_name(a.dtype()));
  }
}

inline void check_supported_device(const char* op, const char* arg, const Array& a) {
  if (a.device_type() == nb::device::cpu::value) return;
#ifdef RECOPS_WITH_CUDA
  if (a.device_type() == nb::device::cuda::value) return;
  type_error(op, ": ", arg, " must be on cpu or cuda, got ", device_name(a));
#else
  type_error(op, ": ", arg, " must be on cpu (this recops build has no CUDA), got ", device_name(a));
#endif
}

// Offsets: 1-D, contiguous, int32 or int64, on ref's device. Returns true for int64.
inline bool check_offsets_array(const char* op, const char* arg, const Array& offsets, const char* ref_arg,
                                const Array& ref) {
  check_same_device(op, arg, offsets, ref_arg, ref);
  const bool i64 = offsets.dtype() == nb::dtype<int64_t>();
  if (!i64 && offsets.dtype() != nb::dtype<int32_t>()) {
    type_error(op, ": ", arg, " must be int32 or int64, got ", dtype_name(offsets.dtype()));
  }
  check_ndim(op, arg, offsets, 1);
  if (offsets.shape(0) < 1) value_error(op, ": ", arg, " must have at least 1 element, got 0");
  check_contiguous(op, arg, offsets);
  return i64;
}

// Byte size of one element; the data-movement ops support 1, 2, 4 and 8.
inline int64_t movable_elem_size(const char* op, const char* arg, const Array& a) {
  const int64_t size = a.dtype().bits / 8 * a.dtype().lanes;
  if (a.dtype().bits % 8 != 0 || (size != 1 && size != 2 && size != 4 && size != 8)) {
    type_error(op, ": ", arg, " dtype must have 1, 2, 4 or 8 bytes per element, got ", dtype_name(a.dtype()));
  }
  return size;
}

// A 1-D contiguous host array of T for the check_<family> validators (len < 0: any length). These rerun
// the CPU core's data checks on host copies when a CUDA kernel has flagged bad input.
template <typename T>
const T* host_vec(const char* op, const char* arg, const Array& a, int64_t len = -1) {
  if (is_cuda(a) || a.dtype() != nb::dtype<T>() || a.ndim() != 1) {
    type_error(op, ": ", arg, " must be a 1-D cpu ", dtype_name(nb::dtype<T>()), " array, got ", dtype_name(a.dtype()),
               " on ", device_name(a));
  }
  if (len >= 0) check_dim(op, arg, a, 0, len);
  check_contiguous(op, arg, a);
  return static_cast<const T*>(a.data());
}

#ifdef RECOPS_WITH_CUDA
// The int32 [1] device error flag that CUDA kernels OR their ErrorBits into.
inline int32_t* error_flag_ptr(const char* op, const Array* flag, const Array& ref) {
  if (flag == nullptr || flag->dtype() != nb::dtype<int32_t>() || flag->ndim() != 1 || flag->shape(0) < 1) {
    type_error(op, ": error_flag must be an int32 tensor of 1 element on the device");
  }
  check_same_device(op, "error_flag", *flag, "the inputs", ref);
  return static_cast<int32_t*>(flag->data());
}

inline cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }
#endif

// A CUDA entry point as a binding hands it on: the function in CUDA builds, nullptr in CPU-only ones (where
// the binding never calls it).
#ifdef RECOPS_WITH_CUDA
#define RECOPS_CUDA_FN(fn) (&fn)
#else
#define RECOPS_CUDA_FN(fn) nullptr
#endif

}  // namespace recops::bindings
