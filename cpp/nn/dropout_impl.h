// SPDX-License-Identifier: Apache-2.0
// The dropout kernel, compiled once per instruction set. Included only by dropout_cpu_<isa>.cpp, which defines
// RECOPS_DROPOUT_ISA (the namespace) and RECOPS_DROPOUT_VBYTES (vector register bytes) and wraps the include in
// `#pragma GCC target`. Calls no std:: templates (nothing compiled for a wide ISA can be merged into narrower code).

namespace recops::nn::RECOPS_DROPOUT_ISA {

using hstu::dropout_bits;
using hstu::dropout_row_key;

typedef uint32_t VU __attribute__((vector_size(RECOPS_DROPOUT_VBYTES)));
typedef float VF __attribute__((vector_size(RECOPS_DROPOUT_VBYTES)));
constexpr int kLanes = RECOPS_DROPOUT_VBYTES / 4;
constexpr int64_t kChunk = 1 << 14;  // elements per task: divides 2^32, so a chunk never straddles a key change

#include "hstu/dropout_simd.inc"

template <typename T>
void chunk(const T* x, T* out, int64_t e0, int64_t e1, uint64_t seed, uint32_t thr, T scale) {
  const uint32_t key = dropout_row_key(seed, 0xFFFFFFFFLL, 0, e0 >> 32);
  int64_t e = e0;
  if constexpr (sizeof(T) == 4) {
    for (; e + kLanes <= e1; e += kLanes) {
      const VU bits = dropout_bits_vec(key, e);
      VF v;
      __builtin_memcpy(&v, x + e, sizeof(v));
      v = bits >= thr ? v * scale : VF{};
      __builtin_memcpy(out + e, &v, sizeof(v));
    }
  } else {
    for (; e + kLanes <= e1; e += kLanes) {
      const VU bits = dropout_bits_vec(key, e);
      for (int l = 0; l < kLanes; ++l) out[e + l] = bits[l] >= thr ? x[e + l] * scale : T(0);
    }
  }
  for (; e < e1; ++e) out[e] = dropout_bits(key, e) >= thr ? x[e] * scale : T(0);
}

template <typename T>
void run(const T* x, T* out, int64_t n, uint64_t seed, uint32_t thr, double scale, int threads) {
  const int64_t tasks = (n + kChunk - 1) / kChunk;
  const T sc = static_cast<T>(scale);
  parallel_for(0, tasks, 4, threads, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t e0 = t * kChunk, e1 = e0 + kChunk < n ? e0 + kChunk : n;
      chunk(x, out, e0, e1, seed, thr, sc);
    }
  });
}

template void run<float>(const float*, float*, int64_t, uint64_t, uint32_t, double, int);
template void run<double>(const double*, double*, int64_t, uint64_t, uint32_t, double, int);

}  // namespace recops::nn::RECOPS_DROPOUT_ISA
