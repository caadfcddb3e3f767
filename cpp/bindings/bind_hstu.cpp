// SPDX-License-Identifier: Apache-2.0
// Bindings of the HSTU attention family: check, fill HstuArgs, dispatch on dtype and device, call.
#include <nanobind/stl/optional.h>

#include <optional>

#include "bindings/checks.h"
#include "hstu/hstu_attention.h"
#ifdef RECOPS_WITH_CUDA
#include "hstu/hstu_cuda.h"
#endif

namespace recops::bindings {
namespace {

using Opt = std::optional<Array>;

// [L, H, D] with a contiguous last dimension (rows and heads may be strided).
void check_qkv(const char* op, const char* arg, const Array& a, const Array& ref) {
  check_same_device(op, arg, a, "q", ref);
  check_same_dtype(op, arg, a, "q", ref);
  check_ndim(op, arg, a, 3);
  if (a.shape(2) > 1 && a.stride(2) != 1) type_error(op, ": ", arg, " must have a contiguous last dimension");
}

// Optional 1-D tensor of `len` elements (len < 0: any), contiguous, on ref's device with the given dtype.
const void* vec_ptr(const char* op, const char* arg, const Opt& a, const Array& ref, nb::dlpack::dtype dt,
                    int64_t len) {
  if (!a) return nullptr;
  check_same_device(op, arg, *a, "q", ref);
  if (a->dtype() != dt) type_error(op, ": ", arg, " must be ", dtype_name(dt), ", got ", dtype_name(a->dtype()));
  check_ndim(op, arg, *a, 1);
  if (len >= 0) check_dim(op, arg, *a, 0, len);
  check_contiguous(op, arg, *a);
  return a->data();
}

template <typename T>
hstu::HstuArgs<T> make_args(const char* op, Array q, Array k, Array v, Array offsets, int64_t max_seq_len,
                            double alpha, double scale, const Opt& row_scale, const Opt& num_targets,
                            int64_t contextual_len, int64_t max_attn_len, const Opt& pos_bias,
                            const Opt& timestamps, const Opt& time_bias, double time_bucket_base) {
  hstu::HstuArgs<T> a;
  const int64_t L = q.shape(0), H = q.shape(1);
  check_qkv(op, "k", k, q);
  check_qkv(op, "v", v, q);
  for (auto [arr, name] : {std::pair<const Array*, const char*>{&k, "k"}, {&v, "v"}}) {
    check_dim(op, name, *arr, 0, L);
    check_dim(op, name, *arr, 1, H);
  }
  check_dim(op, "k", k, 2, q.shape(2));
  check_same_device(op, "offsets", offsets, "q", q);
  if (offsets.dtype() != nb::dtype<int64_t>()) type_error(op, ": offsets must be int64 here");
  check_ndim(op, "offsets", offsets, 1);
  if (offsets.shape(0) < 1) value_error(op, ": offsets must have at least 1 element, got 0");
  check_contiguous(op, "offsets", offsets);
  if (max_seq_len < 1) value_error(op, ": max_seq_len must be >= 1, got ", std::to_string(max_seq_len));
  a.q = static_cast<const T*>(q.data());
  a.q_row = q.stride(0); a.q_head = q.stride(1);
  a.k = static_cast<const T*>(k.data());
  a.k_row = k.stride(0); a.k_head = k.stride(1);
  a.v = static_cast<const T*>(v.data());
  a.v_row = v.stride(0); a.v_head = v.stride(1);
  a.offsets = static_cast<const int64_t*>(offsets.data());
  a.num_seqs = static_cast<int64_t>(offsets.shape(0)) - 1;
  a.total_len = L; a.num_heads = H; a.dqk = q.shape(2); a.dv = v.shape(2); a.max_seq_len = max_seq_len;
  a.alpha = alpha; a.scale = scale;
  a.row_scale = static_cast<const T*>(vec_ptr(op, "attn_scale", row_scale, q, q.dtype(), L));
  a.num_targets = static_cast<const int64_t*>(
      vec_ptr(op, "num_targets", num_targets, q, nb::dtype<int64_t>(), a.num_seqs));
  a.contextual_len = contextual_len; a.max_attn_len = max_attn_len;
  a.pos_bias = static_cast<const T*>(vec_ptr(op, "pos_bias", pos_bias, q, q.dtype(), 2 * max_seq_len - 1));
  a.timestamps = static_cast<const int64_t*>(vec_ptr(op, "timestamps", timestamps, q, nb::dtype<int64_t>(), L));
  a.time_bias = static_cast<const T*>(vec_ptr(op, "time_bias", time_bias, q, q.dtype(), -1));
  a.num_buckets = time_bias ? static_cast<int64_t>(time_bias->shape(0)) : 0;
  a.time_bucket_base = time_bucket_base;
  return a;
}

void check_out(const char* op, const char* arg, const Array& out, const Array& ref, int64_t L, int64_t H,
               int64_t D) {
  check_same_device(op, arg, out, "q", ref);
  check_same_dtype(op, arg, out, "q", ref);
  check_ndim(op, arg, out, 3);
  check_dim(op, arg, out, 0, L);
  check_dim(op, arg, out, 1, H);
  check_dim(op, arg, out, 2, D);
  check_contiguous(op, arg, out);
}

void check_q(const char* op, const Array& q) {
  check_supported_device(op, "q", q);
  if (!is_cuda(q) && q.dtype() != nb::dtype<float>() && q.dtype() != nb::dtype<double>()) {
    type_error(op, ": q must be float32 or float64 on cpu, got ", dtype_name(q.dtype()));
  }
  check_ndim(op, "q", q, 3);
  if (q.shape(2) > 1 && q.stride(2) != 1) type_error(op, ": q must have a contiguous last dimension");
}

#ifdef RECOPS_WITH_CUDA
cuda::HstuDtype cuda_dtype(const char* op, const Array& q) {
  if (q.dtype() == nb::dtype<float>()) return cuda::HstuDtype::kFloat32;
  if (q.dtype() == nb::dlpack::dtype{static_cast<uint8_t>(nb::dlpack::dtype_code::Float), 16, 1}) {
    return cuda::HstuDtype::kFloat16;
  }
  if (q.dtype() == nb::dlpack::dtype{static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1}) {
    return cuda::HstuDtype::kBFloat16;
  }
  type_error(op, ": q must be float32, float16 or bfloat16 on cuda, got ", dtype_name(q.dtype()));
}

// The CUDA launch parameters. make_args<float> is used only to check shapes and read pointers and strides
// (its typed pointers are reinterpreted: storage may be 16-bit).
template <typename A>
cuda::HstuCudaParams cuda_params(const A& a, const Opt& error_flag, const Array& q, const char* op) {
  if (a.dqk > 256 || a.dv > 256) {
    value_error(op, ": head dims must be <= 256 on cuda, got dqk=", std::to_string(a.dqk), ", dv=",
                std::to_string(a.dv));
  }
  cuda::HstuCudaParams p;
  p.q = a.q; p.q_row = a.q_row; p.q_head = a.q_head;
  p.k = a.k; p.k_row = a.k_row; p.k_head = a.k_head;
  p.v = a.v; p.v_row = a.v_row; p.v_head = a.v_head;
  p.offsets = a.offsets; p.num_seqs = a.num_seqs; p.total_len = a.total_len; p.num_heads = a.num_heads;
  p.dqk = a.dqk; p.dv = a.dv; p.max_seq_len = a.max_seq_len;
  p.alpha = static_cast<float>(a.alpha); p.scale = static_cast<float>(a.scale);
  p.row_scale = a.row_scale; p.num_targets = a.num_targets;
  p.contextual_len = a.contextual_len; p.max_attn_len = a.max_attn_len;
  p.pos_bias = a.pos_bias; p.timestamps = a.timestamps; p.time_bias = a.time_bias;
  p.num_buckets = a.num_buckets; p.time_bucket_base = a.time_bucket_base;
  p.error_flag = error_flag_ptr(op, error_flag ? &*error_flag : nullptr, q);
  return p;
}
#endif

void hstu_attention_fwd(Array q, Array k, Array v, Array offsets, int64_t max_seq_len, double alpha, double scale,
                        Opt row_scale, Opt num_targets, int64_t contextual_len, int64_t max_attn_len, Opt pos_bias,
                        Opt timestamps, Opt time_bias, double time_bucket_base, Array out, int num_threads,
                        [[maybe_unused]] uintptr_t stream, [[maybe_unused]] Opt error_flag) {
  constexpr const char* op = "hstu_attention";
  check_q(op, q);
  if (is_cuda(q)) {
#ifdef RECOPS_WITH_CUDA
    auto a = make_args<float>(op, q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets,
                              contextual_len, max_attn_len, pos_bias, timestamps, time_bias, time_bucket_base);
    check_out(op, "out", out, q, a.total_len, a.num_heads, a.dv);
    auto p = cuda_params(a, error_flag, q, op);
    p.out = out.data();
    const auto dt = cuda_dtype(op, q);
    nb::gil_scoped_release release;
    cuda::launch_hstu_attention_fwd(p, dt, as_stream(stream));
#endif
    return;
  }
  auto call = [&](auto tag) {
    using T = decltype(tag);
    auto a = make_args<T>(op, q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len,
                          max_attn_len, pos_bias, timestamps, time_bias, time_bucket_base);
    check_out(op, "out", out, q, a.total_len, a.num_heads, a.dv);
    a.out = static_cast<T*>(out.data());
    nb::gil_scoped_release release;
    hstu::hstu_attention_fwd<T>(a, num_threads);
  };
  if (q.dtype() == nb::dtype<float>()) call(float{}); else call(double{});
}

void hstu_attention_bwd(Array grad_out, Array q, Array k, Array v, Array offsets, int64_t max_seq_len,
                        double alpha, double scale, Opt row_scale, Opt num_targets, int64_t contextual_len,
                        int64_t max_attn_len, Opt pos_bias, Opt timestamps, Opt time_bias, double time_bucket_base,
                        Array dq, Array dk, Array dv, Opt d_pos_bias, Opt d_time_bias, int num_threads,
                        [[maybe_unused]] uintptr_t stream, [[maybe_unused]] Opt error_flag) {
  constexpr const char* op = "hstu_attention_backward";
  check_q(op, q);
  if (is_cuda(q)) {
#ifdef RECOPS_WITH_CUDA
    auto a = make_args<float>(op, q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets,
                              contextual_len, max_attn_len, pos_bias, timestamps, time_bias, time_bucket_base);
    check_out(op, "grad_out", grad_out, q, a.total_len, a.num_heads, a.dv);
    check_out(op, "dq", dq, q, a.total_len, a.num_heads, a.dqk);
    check_out(op, "dk", dk, q, a.total_len, a.num_heads, a.dqk);
    check_out(op, "dv", dv, q, a.total_len, a.num_heads, a.dv);
    auto p = cuda_params(a, error_flag, q, op);
    p.grad_out = grad_out.data();
    p.dq = dq.data();
    p.dk = dk.data();
    p.dv_out = dv.data();
    // bias gradients are float32 on cuda (atomics), zeroed by the caller
    if (pos_bias && d_pos_bias) {
      p.d_pos_bias = static_cast<float*>(const_cast<void*>(
          vec_ptr(op, "d_pos_bias", d_pos_bias, q, nb::dtype<float>(), 2 * max_seq_len - 1)));
    }
    if (time_bias && d_time_bias) {
      p.d_time_bias = static_cast<float*>(const_cast<void*>(
          vec_ptr(op, "d_time_bias", d_time_bias, q, nb::dtype<float>(), a.num_buckets)));
    }
    const auto dt = cuda_dtype(op, q);
    nb::gil_scoped_release release;
    cuda::launch_hstu_attention_bwd(p, dt, as_stream(stream));
#endif
    return;
  }
  auto call = [&](auto tag) {
    using T = decltype(tag);
    auto a = make_args<T>(op, q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len,
                          max_attn_len, pos_bias, timestamps, time_bias, time_bucket_base);
    check_out(op, "grad_out", grad_out, q, a.total_len, a.num_heads, a.dv);
    check_out(op, "dq", dq, q, a.total_len, a.num_heads, a.dqk);
    check_out(op, "dk", dk, q, a.total_len, a.num_heads, a.dqk);
    check_out(op, "dv", dv, q, a.total_len, a.num_heads, a.dv);
    a.grad_out = static_cast<const T*>(grad_out.data());
    a.dq = static_cast<T*>(dq.data());
    a.dk = static_cast<T*>(dk.data());
    a.dv_out = static_cast<T*>(dv.data());
    if (pos_bias && d_pos_bias) {
      a.d_pos_bias = static_cast<T*>(const_cast<void*>(
          vec_ptr(op, "d_pos_bias", d_pos_bias, q, q.dtype(), 2 * max_seq_len - 1)));
    }
    if (time_bias && d_time_bias) {
      a.d_time_bias = static_cast<T*>(const_cast<void*>(
          vec_ptr(op, "d_time_bias", d_time_bias, q, q.dtype(), a.num_buckets)));
    }
    nb::gil_scoped_release release;
    hstu::hstu_attention_bwd<T>(a, num_threads);
  };
  if (q.dtype() == nb::dtype<float>()) call(float{}); else call(double{});
}

void hstu_check(Array offsets, int64_t total_len, int64_t max_seq_len, Opt num_targets, const char* op) {
  if (is_cuda(offsets) || offsets.dtype() != nb::dtype<int64_t>() || offsets.ndim() != 1 || offsets.shape(0) < 1) {
    type_error(op, ": hstu_check needs int64 cpu offsets");
  }
  check_contiguous(op, "offsets", offsets);
  const int64_t num_seqs = static_cast<int64_t>(offsets.shape(0)) - 1;
  const int64_t* nt = static_cast<const int64_t*>(vec_ptr(op, "num_targets", num_targets, offsets,
                                                          nb::dtype<int64_t>(), num_seqs));
  hstu::check_hstu_lengths(op, static_cast<const int64_t*>(offsets.data()), num_seqs, total_len, max_seq_len, nt);
}

}  // namespace

void bind_hstu(nb::module_& m) {
  using namespace nb::literals;
  m.def("hstu_attention_fwd", &hstu_attention_fwd, "q"_a.noconvert(), "k"_a.noconvert(), "v"_a.noconvert(),
        "offsets"_a.noconvert(), "max_seq_len"_a, "alpha"_a, "scale"_a, "row_scale"_a.noconvert().none(),
        "num_targets"_a.noconvert().none(), "contextual_len"_a, "max_attn_len"_a, "pos_bias"_a.noconvert().none(),
        "timestamps"_a.noconvert().none(), "time_bias"_a.noconvert().none(), "time_bucket_base"_a,
        "out"_a.noconvert(), "num_threads"_a = 1, "stream"_a = 0, "error_flag"_a.noconvert() = nb::none(),
        "HSTU attention forward into out [L, H, dv] (see cpp/hstu/hstu_attention.h).");
  m.def("hstu_attention_bwd", &hstu_attention_bwd, "grad_out"_a.noconvert(), "q"_a.noconvert(),
        "k"_a.noconvert(), "v"_a.noconvert(), "offsets"_a.noconvert(), "max_seq_len"_a, "alpha"_a, "scale"_a,
        "row_scale"_a.noconvert().none(), "num_targets"_a.noconvert().none(), "contextual_len"_a,
        "max_attn_len"_a, "pos_bias"_a.noconvert().none(), "timestamps"_a.noconvert().none(),
        "time_bias"_a.noconvert().none(), "time_bucket_base"_a, "dq"_a.noconvert(), "dk"_a.noconvert(),
        "dv"_a.noconvert(), "d_pos_bias"_a.noconvert().none(), "d_time_bias"_a.noconvert().none(),
        "num_threads"_a = 1, "stream"_a = 0, "error_flag"_a.noconvert() = nb::none(),
        "HSTU attention backward into dq, dk, dv and the bias gradients.");
  m.def("hstu_check", &hstu_check, "offsets"_a.noconvert(), "total_len"_a, "max_seq_len"_a,
        "num_targets"_a.noconvert().none(), "op"_a,
        "Raise the kernels' ValueError for bad offsets, lengths or num_targets (host arrays).");
  m.def("hstu_cpu_isa", &hstu::hstu_cpu_isa, "CPU code path of the HSTU kernels: avx512, avx2 or generic.");
}

}  // namespace recops::bindings
