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

// log(u) for u in [1, 2] (Cephes logf: u = 2^e m with m in [sqrt(1/2), sqrt(2)), degree-9 polynomial in m - 1,
// about 1 ulp).
inline float log_1_2(float u) {
  const bool big = u > 1.41421356237f;
  const float m = big ? u * 0.5f : u;
  const float e = big ? 1.0f : 0.0f;
  const float x = m - 1.0f;
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

}  // namespace recops::losses::RECOPS_LOSS_ISA
