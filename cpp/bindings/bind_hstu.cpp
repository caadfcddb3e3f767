// SPDX-License-Identifier: Apache-2.0
// Bindings of the HSTU attention family: check, fill the parameters (hstu_params.h), dispatch on dtype and
// device, call.
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

constexpr nb::dlpack::dtype kBf16{static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};

// bfloat16 q/k/v on the CPU: the bf16 kernels (hstu_attention.h), whose other floating arrays are float32.
bool cpu_bf16(const Array& q) { return !is_cuda(q) && q.dtype() == kBf16; }

// The dtype of row_scale, the biases, their gradients and lse on the CPU: q's, float32 beside bf16 q.
nb::dlpack::dtype cpu_param_dtype(const Array& q) { return cpu_bf16(q) ? nb::dtype<float>() : q.dtype(); }

void check_q(const char* op, const Array& q) {
  check_supported_device(op, "q", q);
  if (cpu_bf16(q)) {
    if (std::string(hstu::hstu_bf16_unit()) == "none") {
      type_error(op, ": q is bfloat16 but this CPU has no bf16 unit (AMX or AVX512-BF16) or RECOPS_CPU_ISA forced "
                 "it off; pass float32");
    }
  } else if (!is_cuda(q) && q.dtype() != nb::dtype<float>() && q.dtype() != nb::dtype<double>()) {
    type_error(op, ": q must be float32, float64 or (with a bf16 unit) bfloat16 on cpu, got ", dtype_name(q.dtype()));
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
#endif

// The forward fields of the call's parameters from its arrays, for the CPU and CUDA alike (one spelling of
// each option: cpp/hstu/hstu_params.h). Shapes, devices and dtypes are checked here.
void fill_params(hstu::HstuFwdParams& a, const char* op, const Array& q, const Array& k, const Array& v,
                 const Array& offsets, int64_t max_seq_len, double alpha, double scale, const Opt& row_scale,
                 const Opt& num_targets, int64_t contextual_len, int64_t max_attn_len, const Opt& pos_bias,
                 const Opt& timestamps, const Opt& time_bias, double time_bucket_base,
                 [[maybe_unused]] const Opt& error_flag, const Opt& q_offsets = std::nullopt) {
  check_q(op, q);
  // with q_offsets (incremental inference) q holds only each sequence's last rows: k, v, timestamps have L rows
  const int64_t Lq = q.shape(0), H = q.shape(1), L = q_offsets ? static_cast<int64_t>(k.shape(0)) : Lq;
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
  a.q = q.data(); a.q_row = q.stride(0); a.q_head = q.stride(1);
  a.k = k.data(); a.k_row = k.stride(0); a.k_head = k.stride(1);
  a.v = v.data(); a.v_row = v.stride(0); a.v_head = v.stride(1);
  a.offsets = static_cast<const int64_t*>(offsets.data());
  a.num_seqs = static_cast<int64_t>(offsets.shape(0)) - 1;
  a.total_len = L; a.num_heads = H; a.dqk = q.shape(2); a.dv = v.shape(2); a.max_seq_len = max_seq_len;
  a.alpha = alpha; a.scale = scale;
  a.row_scale = vec_ptr(op, "attn_scale", row_scale, q, cpu_param_dtype(q), Lq);
  a.num_targets = static_cast<const int64_t*>(
      vec_ptr(op, "num_targets", num_targets, q, nb::dtype<int64_t>(), a.num_seqs));
  a.contextual_len = contextual_len; a.max_attn_len = max_attn_len;
  a.pos_bias = vec_ptr(op, "pos_bias", pos_bias, q, cpu_param_dtype(q), 2 * max_seq_len - 1);
  a.timestamps = static_cast<const int64_t*>(vec_ptr(op, "timestamps", timestamps, q, nb::dtype<int64_t>(), L));
  a.time_bias = vec_ptr(op, "time_bias", time_bias, q, cpu_param_dtype(q), -1);
  a.num_buckets = time_bias ? static_cast<int64_t>(time_bias->shape(0)) : 0;
  a.time_bucket_base = time_bucket_base;
  if (q_offsets) {
    if (is_cuda(q)) value_error(op, ": q_offsets (incremental inference) runs on the CPU only");
    a.q_offsets = static_cast<const int64_t*>(
        vec_ptr(op, "q_offsets", q_offsets, q, nb::dtype<int64_t>(), a.num_seqs + 1));
    a.q_total_len = Lq;
  }
  if (is_cuda(q)) {
    if (a.dqk > 256 || a.dv > 256) {
      value_error(op, ": head dims must be <= 256 on cuda, got dqk=", std::to_string(a.dqk), ", dv=",
                  std::to_string(a.dv));
    }
#ifdef RECOPS_WITH_CUDA
    a.error_flag = error_flag_ptr(op, error_flag ? &*error_flag : nullptr, q);
#endif
  }
}

void* out_ptr(const char* op, const char* arg, const Array& out, const Array& ref, int64_t L, int64_t H,
              int64_t D) {
  check_same_device(op, arg, out, "q", ref);
  check_same_dtype(op, arg, out, "q", ref);
  check_ndim(op, arg, out, 3);
  check_dim(op, arg, out, 0, L);
  check_dim(op, arg, out, 1, H);
  check_dim(op, arg, out, 2, D);
  check_contiguous(op, arg, out);
  return out.data();
}

// A bias gradient [len]: q's dtype on the CPU, float32 accumulators on CUDA (atomics; zeroed by the caller).
void* bias_grad_ptr(const char* op, const char* arg, const Opt& bias, const Opt& grad, const Array& q,
                    int64_t len) {
  if (!bias || !grad) return nullptr;
  return const_cast<void*>(vec_ptr(op, arg, grad, q, is_cuda(q) ? nb::dtype<float>() : cpu_param_dtype(q), len));
}

// The CPU entries by compute type: the float32/float64 templates, or the bf16 kernels.
struct Bf16Tag {};
template <typename T>
void cpu_fwd(const hstu::HstuFwdParams& p, T, int threads) { hstu::hstu_attention_fwd<T>(p, threads); }
void cpu_fwd(const hstu::HstuFwdParams& p, Bf16Tag, int threads) { hstu::hstu_attention_fwd_bf16(p, threads); }
template <typename T>
void cpu_bwd(const hstu::HstuBwdParams& p, T, int threads) { hstu::hstu_attention_bwd<T>(p, threads); }
void cpu_bwd(const hstu::HstuBwdParams& p, Bf16Tag, int threads) { hstu::hstu_attention_bwd_bf16(p, threads); }

// Runs the call on q's device: the CPU core for float32/float64/bfloat16, the CUDA launcher otherwise.
template <typename Params, typename Cpu, typename Gpu>
void dispatch([[maybe_unused]] const char* op, const Array& q, const Params& a, Cpu cpu,
              [[maybe_unused]] Gpu gpu, [[maybe_unused]] uintptr_t stream) {
  if (is_cuda(q)) {
#ifdef RECOPS_WITH_CUDA
    const auto dt = cuda_dtype(op, q);
    nb::gil_scoped_release release;
    gpu(a, dt, as_stream(stream));
#endif
    return;
  }
  nb::gil_scoped_release release;
  if (cpu_bf16(q)) {
    cpu(a, Bf16Tag{});
  } else if (q.dtype() == nb::dtype<float>()) {
    cpu(a, float{});
  } else {
    cpu(a, double{});
  }
}

void hstu_attention_fwd(Array q, Array k, Array v, Array offsets, int64_t max_seq_len, double alpha, double scale,
                        Opt row_scale, Opt num_targets, int64_t contextual_len, int64_t max_attn_len, Opt pos_bias,
                        Opt timestamps, Opt time_bias, double time_bucket_base, Array out, bool causal,
                        int num_threads, uintptr_t stream, Opt error_flag,
    int64_t min_full_attn_seq_len, Opt q_offsets) {
  constexpr const char* op = "hstu_attention";
  hstu::HstuFwdParams a;
  fill_params(a, op, q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len,
              max_attn_len, pos_bias, timestamps, time_bias, time_bucket_base, error_flag, q_offsets);
  a.min_full_attn_seq_len = min_full_attn_seq_len;
  a.causal = causal;
  a.out = out_ptr(op, "out", out, q, q.shape(0), a.num_heads, a.dv);
  dispatch(op, q, a, [&](const auto& p, auto tag) { cpu_fwd(p, tag, num_threads); },
           RECOPS_CUDA_FN(cuda::launch_hstu_attention_fwd), stream);
}

void hstu_attention_bwd(Array grad_out, Array q, Array k, Array v, Array offsets, int64_t max_seq_len,
                        double alpha, double scale, Opt row_scale, Opt num_targets, int64_t contextual_len,
                        int64_t max_attn_len, Opt pos_bias, Opt timestamps, Opt time_bias, double time_bucket_base,
                        Array dq, Array dk, Array dv, Opt d_pos_bias, Opt d_time_bias, bool causal,
                        int num_threads, uintptr_t stream, Opt error_flag,
    int64_t min_full_attn_seq_len) {
  constexpr const char* op = "hstu_attention_backward";
  hstu::HstuBwdParams a;
  fill_params(a, op, q, k, v, offsets, max_seq_len, alpha, scale, row_scale, num_targets, contextual_len,
              max_attn_len, pos_bias, timestamps, time_bias, time_bucket_base, error_flag);
  a.min_full_attn_seq_len = min_full_attn_seq_len;
  a.causal = causal;
  const int64_t L = a.total_len, H = a.num_heads;
  a.grad_out = out_ptr(op, "grad_out", grad_out, q, L, H, a.dv);
  a.dq = out_ptr(op, "dq", dq, q, L, H, a.dqk);
  a.dk = out_ptr(op, "dk", dk, q, L, H, a.dqk);
  a.dv_out = out_ptr(op, "dv", dv, q, L, H, a.dv);
  a.d_pos_bias = bias_grad_ptr(op, "d_pos_bias", pos_bias, d_pos_bias, q, 2 * max_seq_len - 1);
  a.d_time_bias = bias_grad_ptr(op, "d_time_bias", time_bias, d_time_bias, q, a.num_buckets);
  dispatch(op, q, a, [&](const auto& p, auto tag) { cpu_bwd(p, tag, num_threads); },
           RECOPS_CUDA_FN(cuda::launch_hstu_attention_bwd), stream);
}

// [L, H] (the softmax rows' log-sum-exp), contiguous: q's dtype on the CPU (float32 beside bf16), float32 on CUDA.
void* lse_ptr(const char* op, const Array& lse, const Array& ref, int64_t L, int64_t H) {
  check_same_device(op, "lse", lse, "q", ref);
  if (is_cuda(ref)) {
    if (lse.dtype() != nb::dtype<float>()) type_error(op, ": lse must be float32 on cuda");
  } else if (lse.dtype() != cpu_param_dtype(ref)) {
    type_error(op, ": lse must be ", dtype_name(cpu_param_dtype(ref)), " (q is ", dtype_name(ref.dtype()), "), got ",
               dtype_name(lse.dtype()));
  }
  check_ndim(op, "lse", lse, 2);
  check_dim(op, "lse", lse, 0, L);
  check_dim(op, "lse", lse, 1, H);
  check_contiguous(op, "lse", lse);
  return lse.data();
}

// The softmax fields of the parameters (the rest is fill_params with no biases, alpha = the score scale).
void fill_softmax(hstu::HstuFwdParams& a, const char* op, const Array& q, const Array& k, const Array& v,
                  const Array& offsets, int64_t max_seq_len, double scale, const Opt& num_targets,
                  int64_t contextual_len, int64_t max_attn_len, bool causal, double dropout_p, uint64_t seed,
                  const Opt& error_flag, const Opt& q_offsets = std::nullopt) {
  fill_params(a, op, q, k, v, offsets, max_seq_len, scale, 1.0, std::nullopt, num_targets, contextual_len,
              max_attn_len, std::nullopt, std::nullopt, std::nullopt, 0.301, error_flag, q_offsets);
  if (!(dropout_p >= 0.0 && dropout_p < 1.0)) {
    value_error(op, ": dropout_p must be in [0, 1), got ", std::to_string(dropout_p));
  }
  a.kind = hstu::AttnKind::kSoftmax;
  a.causal = causal;
  a.dropout_p = dropout_p;
  a.seed = seed;
}

void jagged_attention_fwd(Array q, Array k, Array v, Array offsets, int64_t max_seq_len, double scale,
                          Opt num_targets, int64_t contextual_len, int64_t max_attn_len, bool causal,
                          double dropout_p, uint64_t seed, Array out, Array lse, int num_threads, uintptr_t stream,
                          Opt error_flag,
    int64_t min_full_attn_seq_len, Opt q_offsets) {
  constexpr const char* op = "jagged_attention";
  hstu::HstuFwdParams a;
  fill_softmax(a, op, q, k, v, offsets, max_seq_len, scale, num_targets, contextual_len, max_attn_len, causal,
               dropout_p, seed, error_flag, q_offsets);
  a.min_full_attn_seq_len = min_full_attn_seq_len;
  a.out = out_ptr(op, "out", out, q, q.shape(0), a.num_heads, a.dv);
  a.lse = lse_ptr(op, lse, q, q.shape(0), a.num_heads);
  dispatch(op, q, a, [&](const auto& p, auto tag) { cpu_fwd(p, tag, num_threads); },
           RECOPS_CUDA_FN(cuda::launch_jagged_attention_fwd), stream);
}

void jagged_attention_bwd(Array grad_out, Array q, Array k, Array v, Array out, Array lse, Array offsets,
                          int64_t max_seq_len, double scale, Opt num_targets, int64_t contextual_len,
                          int64_t max_attn_len, bool causal, double dropout_p, uint64_t seed, Array dq, Array dk,
                          Array dv, int num_threads, uintptr_t stream, Opt error_flag,
    int64_t min_full_attn_seq_len) {
  constexpr const char* op = "jagged_attention_backward";
  hstu::HstuBwdParams a;
  fill_softmax(a, op, q, k, v, offsets, max_seq_len, scale, num_targets, contextual_len, max_attn_len, causal,
               dropout_p, seed, error_flag);
  a.min_full_attn_seq_len = min_full_attn_seq_len;
  const int64_t L = a.total_len, H = a.num_heads;
  a.out = out_ptr(op, "out", out, q, L, H, a.dv);
  a.lse = lse_ptr(op, lse, q, L, H);
  a.grad_out = out_ptr(op, "grad_out", grad_out, q, L, H, a.dv);
  a.dq = out_ptr(op, "dq", dq, q, L, H, a.dqk);
  a.dk = out_ptr(op, "dk", dk, q, L, H, a.dqk);
  a.dv_out = out_ptr(op, "dv", dv, q, L, H, a.dv);
  dispatch(op, q, a, [&](const auto& p, auto tag) { cpu_bwd(p, tag, num_threads); },
           RECOPS_CUDA_FN(cuda::launch_jagged_attention_bwd), stream);
}

void check_hstu(Array offsets, int64_t total_len, int64_t max_seq_len, Opt num_targets, const char* op) {
  const int64_t* off = host_vec<int64_t>(op, "offsets", offsets);
  if (offsets.shape(0) < 1) value_error(op, ": offsets must have at least 1 element, got 0");
  const int64_t num_seqs = static_cast<int64_t>(offsets.shape(0)) - 1;
  const int64_t* nt = num_targets ? host_vec<int64_t>(op, "num_targets", *num_targets, num_seqs) : nullptr;
  hstu::check_hstu_lengths(op, off, num_seqs, total_len, max_seq_len, nt);
}

}  // namespace

void bind_hstu(nb::module_& m) {
  using namespace nb::literals;
  m.def("hstu_attention_fwd", &hstu_attention_fwd, "q"_a.noconvert(), "k"_a.noconvert(), "v"_a.noconvert(),
        "offsets"_a.noconvert(), "max_seq_len"_a, "alpha"_a, "scale"_a, "row_scale"_a.noconvert().none(),
        "num_targets"_a.noconvert().none(), "contextual_len"_a, "max_attn_len"_a, "pos_bias"_a.noconvert().none(),
        "timestamps"_a.noconvert().none(), "time_bias"_a.noconvert().none(), "time_bucket_base"_a,
        "out"_a.noconvert(), "causal"_a = true, "num_threads"_a = 1, "stream"_a = 0,
        "error_flag"_a.noconvert() = nb::none(), "min_full_attn_seq_len"_a = 0,
        "q_offsets"_a.noconvert() = nb::none(),
        "HSTU attention forward into out [L, H, dv] (see cpp/hstu/hstu_attention.h).");
  m.def("hstu_attention_bwd", &hstu_attention_bwd, "grad_out"_a.noconvert(), "q"_a.noconvert(),
        "k"_a.noconvert(), "v"_a.noconvert(), "offsets"_a.noconvert(), "max_seq_len"_a, "alpha"_a, "scale"_a,
        "row_scale"_a.noconvert().none(), "num_targets"_a.noconvert().none(), "contextual_len"_a,
        "max_attn_len"_a, "pos_bias"_a.noconvert().none(), "timestamps"_a.noconvert().none(),
        "time_bias"_a.noconvert().none(), "time_bucket_base"_a, "dq"_a.noconvert(), "dk"_a.noconvert(),
        "dv"_a.noconvert(), "d_pos_bias"_a.noconvert().none(), "d_time_bias"_a.noconvert().none(),
        "causal"_a = true, "num_threads"_a = 1, "stream"_a = 0, "error_flag"_a.noconvert() = nb::none(),
        "min_full_attn_seq_len"_a = 0,
        "HSTU attention backward into dq, dk, dv and the bias gradients.");
  m.def("jagged_attention_fwd", &jagged_attention_fwd, "q"_a.noconvert(), "k"_a.noconvert(), "v"_a.noconvert(),
        "offsets"_a.noconvert(), "max_seq_len"_a, "scale"_a, "num_targets"_a.noconvert().none(),
        "contextual_len"_a, "max_attn_len"_a, "causal"_a, "dropout_p"_a, "seed"_a, "out"_a.noconvert(),
        "lse"_a.noconvert(), "num_threads"_a = 1, "stream"_a = 0, "error_flag"_a.noconvert() = nb::none(),
        "min_full_attn_seq_len"_a = 0, "q_offsets"_a.noconvert() = nb::none(),
        "Jagged softmax attention forward into out [L, H, dv] and lse [L, H] (cpp/hstu/hstu_attention.h).");
  m.def("jagged_attention_bwd", &jagged_attention_bwd, "grad_out"_a.noconvert(), "q"_a.noconvert(),
        "k"_a.noconvert(), "v"_a.noconvert(), "out"_a.noconvert(), "lse"_a.noconvert(), "offsets"_a.noconvert(),
        "max_seq_len"_a, "scale"_a, "num_targets"_a.noconvert().none(), "contextual_len"_a, "max_attn_len"_a,
        "causal"_a, "dropout_p"_a, "seed"_a, "dq"_a.noconvert(), "dk"_a.noconvert(), "dv"_a.noconvert(),
        "num_threads"_a = 1, "stream"_a = 0, "error_flag"_a.noconvert() = nb::none(),
        "min_full_attn_seq_len"_a = 0,
        "Jagged softmax attention backward into dq, dk, dv.");
  m.def("check_hstu", &check_hstu, "offsets"_a.noconvert(), "total_len"_a, "max_seq_len"_a,
        "num_targets"_a.noconvert().none(), "op"_a,
        "Raise the kernels' ValueError for bad offsets, lengths or num_targets (host arrays).");
  m.def("hstu_cpu_isa", &hstu::hstu_cpu_isa, "CPU code path of the HSTU kernels: avx512, avx2 or generic.");
  m.def("hstu_bf16_unit", &hstu::hstu_bf16_unit,
        "The bf16 unit of the HSTU and softmax attention kernels' bfloat16 path: amx, avx512_bf16 or none.");
  m.def("hstu_force_bf16_unit", &hstu::hstu_force_bf16_unit, "unit"_a,
        "Benchmarks and tests: run later bf16 attention calls on unit amx, avx512_bf16 or none (upcast).");
}

}  // namespace recops::bindings
