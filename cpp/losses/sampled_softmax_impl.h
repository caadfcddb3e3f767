// SPDX-License-Identifier: Apache-2.0
// Sampled-softmax kernels for one instruction set: included by sampled_softmax_cpu_<isa>.cpp with
// RECOPS_SSM_ISA set to the namespace, under that file's target pragma. Inputs are validated by the caller,
// which also allocates the scratch (SampledSoftmaxScratch). No std:: template is instantiated here (no vector, fill, copy,
// min or max): a weak copy compiled for this ISA could replace the portable one at link time.
// The dot products are `omp simd` reductions the compiler vectorises for the file's ISA; the float exponentials
// run on vectors of RECOPS_SSM_VBYTES bytes (common/simd_math.inc, about 1 ulp), float64 uses libm.
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/parallel.h"
#include "losses/sampled_softmax.h"

namespace recops::losses::RECOPS_SSM_ISA {
namespace {

typedef float VF __attribute__((vector_size(RECOPS_SSM_VBYTES)));
#include "common/simd_math.inc"

// x[j] <- exp(x[j] - m) for j < count (-inf gives 0); returns their sum.
inline float exp_shifted(float* x, int64_t count, float m) {
  constexpr int W = RECOPS_SSM_VBYTES / 4;
  VF acc{};
  int64_t j = 0;
  for (; j + W <= count; j += W) {
    VF v;
    __builtin_memcpy(&v, x + j, sizeof(v));
    v = simd_exp(v - m);
    acc += v;
    __builtin_memcpy(x + j, &v, sizeof(v));
  }
  float s = 0.0f;
  for (int l = 0; l < W; ++l) s += acc[l];
  for (; j < count; ++j) {
    x[j] = std::exp(x[j] - m);
    s += x[j];
  }
  return s;
}

inline double exp_shifted(double* x, int64_t count, double m) {
  double s = 0.0;
  for (int64_t j = 0; j < count; ++j) {
    x[j] = std::exp(x[j] - m);
    s += x[j];
  }
  return s;
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t d) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < d; ++k) s += a[k] * b[k];
  return s;
}

template <typename T>
inline void axpy(T c, const T* x, T* y, int64_t d) {
#pragma omp simd
  for (int64_t k = 0; k < d; ++k) y[k] += c * x[k];
}

// Four dot products with one query row at once: four independent accumulators hide the reduction latency that
// one `dot` at a time leaves exposed (D is small: 50-128).
template <typename T>
inline void dot4(const T* q, const T* a0, const T* a1, const T* a2, const T* a3, int64_t d, T* out) {
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t k = 0; k < d; ++k) {
    const T x = q[k];
    s0 += x * a0[k];
    s1 += x * a1[k];
    s2 += x * a2[k];
    s3 += x * a3[k];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

// y += c0 x0 + c1 x1 + c2 x2 + c3 x3 (one pass over y instead of four).
template <typename T>
inline void axpy4(const T* c, const T* x0, const T* x1, const T* x2, const T* x3, T* y, int64_t d) {
  const T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
#pragma omp simd
  for (int64_t k = 0; k < d; ++k) y[k] += (c0 * x0[k] + c1 * x1[k]) + (c2 * x2[k] + c3 * x3[k]);
}

inline int64_t num_candidates(const SampledSoftmaxParams& p) {
  return 1 + p.num_negatives + (p.in_batch ? p.num_rows - 1 : 0);
}

// Candidate ids of row i into ids [C]; masked candidates get -1.
inline void row_candidates(const SampledSoftmaxParams& p, int64_t i, int64_t* ids) {
  const int64_t pos = p.positives[i], m = p.num_negatives;
  ids[0] = pos;
  int64_t* neg = ids + 1;
  if (p.generate) {
    for (int64_t j = 0; j < m; ++j) neg[j] = negative_id(p.seed, i, j, p.num_items);
  } else if (m > 0) {
    const int64_t* src = p.per_row ? p.negatives + i * m : p.negatives;
    for (int64_t j = 0; j < m; ++j) neg[j] = src[j];
  }
  int64_t c = 1 + m;
  if (p.in_batch) {
    for (int64_t r = 0; r < p.num_rows; ++r) {
      if (r != i) ids[c++] = p.positives[r];
    }
  }
  if (p.remove_accidental_hits) {
    for (int64_t j = 1; j < c; ++j) {
      if (ids[j] == pos) ids[j] = -1;
    }
  }
}

// logits [C] of row i (masked: -inf); returns their max.
template <typename T>
inline T row_logits(const SampledSoftmaxParams& p, int64_t i, const int64_t* ids, int64_t count, T* logits) {
  const T* q = static_cast<const T*>(p.queries) + i * p.dim;
  const T* items = static_cast<const T*>(p.items);
  const T* log_q = static_cast<const T*>(p.log_q);
  const T inv_t = static_cast<T>(p.inv_temperature);
  const int64_t d = p.dim;
  T mx = -std::numeric_limits<T>::infinity();
  int64_t j = 0;
  for (; j + 4 <= count; j += 4) {  // groups of four unmasked candidates (the common case)
    if ((ids[j] | ids[j + 1] | ids[j + 2] | ids[j + 3]) < 0) break;
    T z[4];
    dot4(q, items + ids[j] * d, items + ids[j + 1] * d, items + ids[j + 2] * d, items + ids[j + 3] * d, d, z);
    for (int u = 0; u < 4; ++u) {
      T zu = z[u] * inv_t;
      if (log_q) zu -= log_q[ids[j + u]];
      logits[j + u] = zu;
      mx = zu > mx ? zu : mx;
    }
  }
  for (; j < count; ++j) {
    const int64_t id = ids[j];
    if (id < 0) {
      logits[j] = -std::numeric_limits<T>::infinity();
      continue;
    }
    T z = dot(q, items + id * d, d) * inv_t;
    if (log_q) z -= log_q[id];
    logits[j] = z;
    mx = z > mx ? z : mx;
  }
  return mx;
}

// log sum exp of logits [C] (overwritten with exp(logit - max)).
template <typename T>
inline T row_lse(T* logits, int64_t count, T mx) {
  if (!(mx < std::numeric_limits<T>::infinity() && mx > -std::numeric_limits<T>::infinity())) return mx;
  return mx + std::log(exp_shifted(logits, count, mx));
}

}  // namespace

template <typename T>
void forward(const SampledSoftmaxParams& p, const SampledSoftmaxScratch& s, int num_threads) {
  const int64_t count = num_candidates(p);
  parallel_for(0, s.tasks, 1, num_threads, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int64_t* ids = s.ids + t * count;
      T* logits = static_cast<T*>(s.logits) + t * count;
      T* loss = static_cast<T*>(p.loss);
      T* lse = static_cast<T*>(p.lse);
      const int64_t r0 = t * s.rows_per_task;
      const int64_t r1 = r0 + s.rows_per_task < p.num_rows ? r0 + s.rows_per_task : p.num_rows;
      for (int64_t i = r0; i < r1; ++i) {
        row_candidates(p, i, ids);
        const T mx = row_logits(p, i, ids, count, logits);
        const T positive = logits[0];
        lse[i] = row_lse(logits, count, mx);
        loss[i] = lse[i] - positive;
      }
    }
  });
}

template <typename T>
void backward(const SampledSoftmaxParams& p, const SampledSoftmaxScratch& s, int num_threads) {
  const int64_t count = num_candidates(p), d = p.dim, v = p.num_items, table = v * d;
  T* grad_items = static_cast<T*>(p.grad_items);
  T* partial = static_cast<T*>(s.partial);
  parallel_for(0, s.tasks, 1, num_threads, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      T* ge = t == 0 ? grad_items : partial + (t - 1) * table;
      for (int64_t e = 0; e < table; ++e) ge[e] = T(0);
      int64_t* ids = s.ids + t * count;
      T* logits = static_cast<T*>(s.logits) + t * count;
      const T* queries = static_cast<const T*>(p.queries);
      const T* items = static_cast<const T*>(p.items);
      const T* lse = static_cast<const T*>(p.lse);
      const T* g = static_cast<const T*>(p.grad_loss);
      const T inv_t = static_cast<T>(p.inv_temperature);
      const int64_t r0 = t * s.rows_per_task;
      const int64_t r1 = r0 + s.rows_per_task < p.num_rows ? r0 + s.rows_per_task : p.num_rows;
      for (int64_t i = r0; i < r1; ++i) {
        row_candidates(p, i, ids);
        row_logits(p, i, ids, count, logits);
        const T* q = queries + i * d;
        T* dq = static_cast<T*>(p.grad_queries) + i * d;
        for (int64_t k = 0; k < d; ++k) dq[k] = T(0);
        const T gi = g[i] * inv_t;
        const T li = lse[i];
        if (li < std::numeric_limits<T>::infinity() && li > -std::numeric_limits<T>::infinity()) {
          exp_shifted(logits, count, li);  // the softmax probabilities
        } else {
          for (int64_t j = 0; j < count; ++j) logits[j] = std::exp(logits[j] - li);
        }
        int64_t j = 0;
        for (; j + 4 <= count; j += 4) {  // dq from four candidates per pass (unmasked groups)
          if ((ids[j] | ids[j + 1] | ids[j + 2] | ids[j + 3]) < 0) break;
          T c[4];
          for (int u = 0; u < 4; ++u) c[u] = gi * (logits[j + u] - (j + u == 0 ? T(1) : T(0)));
          axpy4(c, items + ids[j] * d, items + ids[j + 1] * d, items + ids[j + 2] * d, items + ids[j + 3] * d, dq,
                d);
          for (int u = 0; u < 4; ++u) {
            if (c[u] != T(0)) axpy(c[u], q, ge + ids[j + u] * d, d);
          }
        }
        for (; j < count; ++j) {
          const int64_t id = ids[j];
          if (id < 0) continue;
          const T c = gi * (logits[j] - (j == 0 ? T(1) : T(0)));
          if (c == T(0)) continue;
          axpy(c, items + id * d, dq, d);
          axpy(c, q, ge + id * d, d);
        }
      }
    }
  });
  if (s.tasks > 1) {  // add the task buffers in task order: deterministic for a thread count
    parallel_for(0, v, 64, num_threads, [&](int64_t b, int64_t e) {
      for (int64_t t = 1; t < s.tasks; ++t) {
        const T* src = partial + (t - 1) * table;
        for (int64_t r = b; r < e; ++r) axpy(T(1), src + r * d, grad_items + r * d, d);
      }
    });
  }
}

template void forward<float>(const SampledSoftmaxParams&, const SampledSoftmaxScratch&, int);
template void forward<double>(const SampledSoftmaxParams&, const SampledSoftmaxScratch&, int);
template void backward<float>(const SampledSoftmaxParams&, const SampledSoftmaxScratch&, int);
template void backward<double>(const SampledSoftmaxParams&, const SampledSoftmaxScratch&, int);

}  // namespace recops::losses::RECOPS_SSM_ISA
