// SPDX-License-Identifier: Apache-2.0
// The transcendental pre-pass of the ordinal losses, compiled once per instruction set: the including .cpp
// defines RECOPS_LOSS_ISA (the namespace) and sets `#pragma GCC target`. Every function here is branch-free
// straight-line float code (selects, no calls), so the loops vectorise for the target (4 floats with SSE2, 8
// with AVX2 + FMA).
#include <cstdint>
#include <cstring>

#include "losses/ordinal_math.h"

namespace recops::losses::RECOPS_LOSS_ISA {
namespace {

// exp(x) for x <= 0 (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, degree-6 polynomial, about 1 ulp). Below
// -87 the result (< 1.7e-38) is flushed to 0; NaN stays NaN.
inline float exp_nonpos(float x) {
  const float xc = x >= -87.0f ? x : -87.0f;  // NaN -> -87: the integer path below stays defined
  const float magic = 12582912.0f;            // 1.5 * 2^23: adding it rounds to the nearest integer
  const float n = (xc * 1.44269504088896341f + magic) - magic;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // n in [-126, 0]: a normal power of two
  float scale;
  std::memcpy(&scale, &bits, 4);
  const float y = p * scale;
  return x >= -87.0f ? y : (x != x ? x : 0.0f);
}

// Cephes logf kernel: log(2^e (1 + x)) for x in [sqrt(1/2) - 1, sqrt(2) - 1), degree-9 polynomial, about 1 ulp.
inline float log_kernel(float x, float e) {
  const float z = x * x;
  float y = 7.0376836292e-2f;
  y = y * x - 1.1514610310e-1f;
  y = y * x + 1.1676998740e-1f;
  y = y * x - 1.2420140846e-1f;
  y = y * x + 1.4249322787e-1f;
  y = y * x - 1.6668057665e-1f;
  y = y * x + 2.0000714765e-1f;
  y = y * x - 2.4999993993e-1f;
  y = y * x + 3.3333331174e-1f;
  y = y * x * z;
  y += e * -2.12194440e-4f;
  y += -0.5f * z;
  return x + y + e * 0.693359375f;
}

// log(u) for u in [1, 2].
inline float log_1_2(float u) {
  const bool big = u > 1.41421356237f;
  return log_kernel((big ? u * 0.5f : u) - 1.0f, big ? 1.0f : 0.0f);
}

// log(x) for x in (0, 1] (subnormals included: they are scaled by 2^60 first).
inline float log_0_1(float x) {
  const bool tiny = x < 1e-30f;
  const float xs = tiny ? x * 1.152921504606847e18f : x;
  int32_t bits;
  std::memcpy(&bits, &xs, 4);
  float e = static_cast<float>(((bits >> 23) & 0xff) - 126);  // xs = 2^e m, m in [0.5, 1)
  bits = (bits & 0x807fffff) | 0x3f000000;
  float m;
  std::memcpy(&m, &bits, 4);
  const bool low = m < 0.70710678118f;
  const float f = low ? m + m - 1.0f : m - 1.0f;
  e = low ? e - 1.0f : e;
  const float r = log_kernel(f, e) - (tiny ? 41.58883083359672f : 0.0f);  // 60 ln 2
  return x != x ? x : r;  // the bit manipulation above would turn NaN into a number
}

// expm1(x) for x in [-ln 2, 0]: Taylor series to x^10 (truncation below 1e-8 relative there).
inline float expm1_small(float x) {
  float p = 2.7557319224e-7f;  // 1/10!
  p = p * x + 2.7557319224e-6f;
  p = p * x + 2.4801587302e-5f;
  p = p * x + 1.9841269841e-4f;
  p = p * x + 1.3888888889e-3f;
  p = p * x + 8.3333333333e-3f;
  p = p * x + 4.1666666667e-2f;
  p = p * x + 1.6666666667e-1f;
  p = p * x + 0.5f;
  p = p * x + 1.0f;
  return p * x;
}

}  // namespace

void exp_log1p(const float* z, int64_t n, float* e, float* l) {
  for (int64_t i = 0; i < n; ++i) {
    const float a = z[i] >= 0.0f ? -z[i] : z[i];  // -|z| (NaN stays NaN)
    const float ei = exp_nonpos(a);
    const float u = 1.0f + ei;
    // log1p(e) = log(u) * e / (u - 1): u - 1 is exact, so the rounding of u cancels (e < 2^-24 -> u == 1 -> e).
    const float d = u - 1.0f;
    const float ratio = ei / (d > 0.0f ? d : 1.0f);  // both select arms computed: no branch, no 0/0
    const float lg = log_1_2(u) * ratio;
    e[i] = ei;
    l[i] = d > 0.0f ? lg : ei;
  }
}

void log1mexp(const float* d, int64_t n, float* log1mexp, float* inv_expm1) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = -d[i];
    // -expm1(-d) = 1 - exp(-d): the series where it would cancel (d < ln 2), 1 - exp(-d) (>= 1/2) beyond.
    const float em_small = expm1_small(x < -0.69314718f ? -0.69314718f : x);
    const float em_large = exp_nonpos(x) - 1.0f;
    const float em = d[i] < 0.69314718f ? em_small : em_large;  // in [-1, 0)
    log1mexp[i] = log_0_1(-em);
    inv_expm1[i] = (1.0f + em) / -em;
  }
}

}  // namespace recops::losses::RECOPS_LOSS_ISA
