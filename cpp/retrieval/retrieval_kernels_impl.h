// SPDX-License-Identifier: Apache-2.0
// Retrieval CPU kernels (fused matmul + top-k, IVF scan), compiled once per instruction set. Included only by topk_cpu_<isa>.cpp,
// which defines RECOPS_TOPK_ISA (the namespace) and RECOPS_TOPK_VBYTES (vector register bytes) and wraps the
// include in `#pragma GCC target`. Nothing here calls std:: templates, so no function compiled for a wide ISA
// can be merged by the linker into code that runs on a narrower CPU.
//
// Task = (query superblock of kQuerySuper queries, item split). Per item tile: pack kTileN items transposed
// ([D][kTileN], zero-padded), then for every 4-query micro block compute the [4][kTileN] score tile with a
// register-blocked micro-kernel (4 rows x 2 vectors of accumulators, query broadcast, tile loaded) and push
// the tile's candidates into the queries' min-heaps (root = worst kept hit). A candidate must be >= the root
// score to be looked at, so after the first tiles almost every score costs one compare.
//
// IVF search: one query per task; coarse list scores go through the same heap code (nprobe best lists),
// probed lists are scanned with vectorised decode-and-dot (uint8 -> float, binary16 -> float by bit
// manipulation) into a num_candidates heap, and the candidates are re-scored (optionally exactly) into the
// final k heap keyed by the caller's ids.

namespace recops::retrieval::RECOPS_TOPK_ISA {

typedef float VF __attribute__((vector_size(RECOPS_TOPK_VBYTES)));
constexpr int kW = RECOPS_TOPK_VBYTES / sizeof(float);
constexpr int kNV = 2;
typedef int32_t VI32 __attribute__((vector_size(RECOPS_TOPK_VBYTES)));

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

inline VF vload(const float* p) {
  VF v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// C[r][j] = sum_d A[r * dim + d] * B[d * kTileN + j] for r < kMicroRows, j < kTileN.
inline void score_tile(int64_t dim, const float* A, const float* B, float* C) {
  for (int64_t j = 0; j < kTileN; j += kNV * kW) {
    VF acc[kMicroRows][kNV] = {};
    for (int64_t d = 0; d < dim; ++d) {
      VF b[kNV];
      for (int v = 0; v < kNV; ++v) b[v] = vload(B + d * kTileN + j + v * kW);
      for (int r = 0; r < kMicroRows; ++r) {
        const float a = A[r * dim + d];
        for (int v = 0; v < kNV; ++v) acc[r][v] += a * b[v];
      }
    }
    for (int r = 0; r < kMicroRows; ++r) {
      for (int v = 0; v < kNV; ++v) __builtin_memcpy(C + r * kTileN + j + v * kW, &acc[r][v], sizeof(VF));
    }
  }
}

// a is a worse hit than b: lower score, or equal score and higher id.
inline bool worse(float sa, int64_t ia, float sb, int64_t ib) { return sa < sb || (sa == sb && ia > ib); }

inline void sift_down(float* s, int64_t* id, int64_t size, int64_t i) {
  const float vs = s[i];
  const int64_t vi = id[i];
  for (;;) {
    int64_t c = 2 * i + 1;
    if (c >= size) break;
    if (c + 1 < size && worse(s[c + 1], id[c + 1], s[c], id[c])) ++c;
    if (!worse(s[c], id[c], vs, vi)) break;
    s[i] = s[c];
    id[i] = id[c];
    i = c;
  }
  s[i] = vs;
  id[i] = vi;
}

inline void push(float* s, int64_t* id, int64_t& size, int64_t k, float vs, int64_t vi) {
  if (size < k) {
    int64_t i = size++;
    while (i > 0) {
      const int64_t parent = (i - 1) / 2;
      if (!worse(vs, vi, s[parent], id[parent])) break;
      s[i] = s[parent];
      id[i] = id[parent];
      i = parent;
    }
    s[i] = vs;
    id[i] = vi;
  } else if (worse(s[0], id[0], vs, vi)) {
    s[0] = vs;
    id[0] = vi;
    sift_down(s, id, size, 0);
  }
}

// In-place heap sort into best-first order, then -1 / -inf padding up to k.
inline void finish(float* s, int64_t* id, int64_t size, int64_t k) {
  for (int64_t end = size - 1; end > 0; --end) {
    const float ts = s[0];
    const int64_t ti = id[0];
    s[0] = s[end];
    id[0] = id[end];
    s[end] = ts;
    id[end] = ti;
    sift_down(s, id, end, 0);
  }
  for (int64_t j = size; j < k; ++j) {
    s[j] = -__builtin_inff();
    id[j] = -1;
  }
}

inline bool contains_sorted(const int64_t* a, int64_t n, int64_t x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (a[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo < n && a[lo] == x;
}

inline void run_task(const TopkPlan& p, int64_t task, float* scratch) {
  const int64_t D = p.dim, Q = p.num_queries, k = p.k;
  const int64_t sb = task / p.num_splits, split = task % p.num_splits;
  const int64_t q0 = sb * kQuerySuper, q1 = imin(Q, q0 + kQuerySuper), nq = q1 - q0;
  const int64_t n_begin = split * p.split_items, n_end = imin(p.num_items, n_begin + p.split_items);
  float* tile = scratch;
  float* C = tile + D * kTileN;
  float* qpack = C + kMicroRows * kTileN;
  const int64_t nq_pad = (nq + kMicroRows - 1) / kMicroRows * kMicroRows;
  for (int64_t i = 0; i < nq_pad * D; ++i) qpack[i] = i < nq * D ? p.queries[q0 * D + i] : 0.0f;
  float* hs = p.heap_scores + (split * Q) * k;
  int64_t* hi = p.heap_ids + (split * Q) * k;
  int64_t* hsize = p.heap_sizes + split * Q;
  for (int64_t q = q0; q < q1; ++q) hsize[q] = 0;
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kTileN) {
    const int64_t nv = imin(kTileN, n_end - n0);
    for (int64_t j = 0; j < kTileN; ++j) {
      const float* row = p.items + (n0 + j) * D;
      if (j < nv) {
        for (int64_t d = 0; d < D; ++d) tile[d * kTileN + j] = row[d];
      } else {
        for (int64_t d = 0; d < D; ++d) tile[d * kTileN + j] = 0.0f;
      }
    }
    for (int64_t m = 0; m < nq; m += kMicroRows) {
      score_tile(D, qpack + m * D, tile, C);
      for (int64_t r = 0; r < kMicroRows && m + r < nq; ++r) {
        const int64_t q = q0 + m + r;
        float* s = hs + q * k;
        int64_t* id = hi + q * k;
        int64_t& size = hsize[q];
        const float* crow = C + r * kTileN;
        const int64_t* ex = p.excl_ids ? p.excl_ids + p.excl_offsets[q] : nullptr;
        const int64_t nex = p.excl_ids ? p.excl_offsets[q + 1] - p.excl_offsets[q] : 0;
        float thr = size < k ? -__builtin_inff() : s[0];
        for (int64_t j0 = 0; j0 < nv; j0 += kW) {
          // Whole-vector reject first: once the heap is full almost no score reaches its root.
          if (j0 + kW <= nv) {
            VF sv = vload(crow + j0);
            if (p.item_bias) sv += vload(p.item_bias + n0 + j0);
            const VI32 pass = sv >= thr;
            int32_t any = 0;
            for (int i = 0; i < kW; ++i) any |= pass[i];
            if (!any) continue;
          }
          for (int64_t j = j0; j < imin(j0 + kW, nv); ++j) {
            const float sc = p.item_bias ? crow[j] + p.item_bias[n0 + j] : crow[j];
            if (!(sc >= thr)) continue;  // NaN never passes
            if (nex && contains_sorted(ex, nex, n0 + j)) continue;
            push(s, id, size, k, sc, n0 + j);
            if (size == k) thr = s[0];
          }
        }
      }
    }
  }
  if (p.sort_heaps) {
    for (int64_t q = q0; q < q1; ++q) finish(hs + q * k, hi + q * k, hsize[q], k);
  }
}

typedef uint8_t VU8 __attribute__((vector_size(kW)));
typedef uint16_t VU16 __attribute__((vector_size(kW * 2)));
typedef uint32_t VU32 __attribute__((vector_size(kW * 4)));

inline float hsum(VF v) {
  float s = 0.0f;
  for (int i = 0; i < kW; ++i) s += v[i];
  return s;
}

inline float dot_f32(const float* a, const float* b, int64_t dim) {
  VF acc = {};
  int64_t d = 0;
  for (; d + kW <= dim; d += kW) acc += vload(a + d) * vload(b + d);
  float s = hsum(acc);
  for (; d < dim; ++d) s += a[d] * b[d];
  return s;
}

inline float dot_u8(const float* a, const uint8_t* c, int64_t dim) {
  VF acc = {};
  int64_t d = 0;
  for (; d + kW <= dim; d += kW) {
    VU8 u;
    __builtin_memcpy(&u, c + d, sizeof(u));
    acc += vload(a + d) * __builtin_convertvector(u, VF);
  }
  float s = hsum(acc);
  for (; d < dim; ++d) s += a[d] * static_cast<float>(c[d]);
  return s;
}

// binary16 -> float32 for finite values (normal and subnormal): shift exponent and mantissa into place, then
// one multiply by 2^112 re-biases the exponent (and normalises subnormals); the sign is OR-ed back in.
inline VF half_to_float(VU16 h) {
  const VU32 w = __builtin_convertvector(h, VU32);
  const VU32 mag = (w & 0x7fffu) << 13;
  VF f;
  __builtin_memcpy(&f, &mag, sizeof(f));
  f *= 0x1p112f;
  VU32 bits;
  __builtin_memcpy(&bits, &f, sizeof(bits));
  bits |= (w & 0x8000u) << 16;
  __builtin_memcpy(&f, &bits, sizeof(f));
  return f;
}

inline float half_to_float(uint16_t h) {
  const uint32_t mag = static_cast<uint32_t>(h & 0x7fffu) << 13;
  float f;
  __builtin_memcpy(&f, &mag, sizeof(f));
  f *= 0x1p112f;
  return (h & 0x8000u) ? -f : f;
}

inline float dot_f16(const float* a, const uint16_t* c, int64_t dim) {
  VF acc = {};
  int64_t d = 0;
  for (; d + kW <= dim; d += kW) {
    VU16 h;
    __builtin_memcpy(&h, c + d, sizeof(h));
    acc += vload(a + d) * half_to_float(h);
  }
  float s = hsum(acc);
  for (; d < dim; ++d) s += a[d] * half_to_float(c[d]);
  return s;
}

inline void ivf_query(const IvfPlan& p, int64_t q, float* fs, int64_t* is) {
  const IvfView& v = p.index;
  const int64_t D = v.dim, kc = p.num_candidates, k = p.k;
  const float* x = p.queries + q * D;
  float* ls = fs;
  float* qd = ls + p.nprobe;
  float* cs = qd + D;
  float* fsc = cs + kc;
  int64_t* li = is;
  int64_t* ci = li + p.nprobe;
  int64_t* fid = ci + kc;
  int64_t nl = 0;
  for (int64_t j = 0; j < v.num_lists; ++j) {
    if (v.list_offsets[j + 1] == v.list_offsets[j]) continue;
    push(ls, li, nl, p.nprobe, dot_f32(x, v.centroids + j * D, D) * v.list_scale[j], j);
  }
  float c0 = 0.0f;
  for (int64_t d = 0; d < D; ++d) {
    if (v.storage == IvfStorage::kInt8) {
      qd[d] = x[d] * v.vscale[d];
      c0 += x[d] * v.vmin[d];
    } else {
      qd[d] = x[d];
    }
  }
  const int64_t* ex = p.excl_ids ? p.excl_ids + p.excl_offsets[q] : nullptr;
  const int64_t nex = p.excl_ids ? p.excl_offsets[q + 1] - p.excl_offsets[q] : 0;
  int64_t nc = 0;
  float thr = -__builtin_inff();
  for (int64_t l = 0; l < nl; ++l) {
    const int64_t j = li[l];
    for (int64_t i = v.list_offsets[j]; i < v.list_offsets[j + 1]; ++i) {
      float a;
      if (v.storage == IvfStorage::kInt8) {
        a = c0 + dot_u8(qd, static_cast<const uint8_t*>(v.codes) + i * D, D);
      } else if (v.storage == IvfStorage::kFloat16) {
        a = dot_f16(qd, static_cast<const uint16_t*>(v.codes) + i * D, D);
      } else {
        a = dot_f32(qd, static_cast<const float*>(v.codes) + i * D, D);
      }
      if (!(a >= thr)) continue;
      if (nex && contains_sorted(ex, nex, v.ids[i])) continue;
      push(cs, ci, nc, kc, a, i);
      if (nc == kc) thr = cs[0];
    }
  }
  int64_t nf = 0;
  for (int64_t c = 0; c < nc; ++c) {
    const float s = p.rerank ? dot_f32(x, v.vectors + ci[c] * D, D) : cs[c];
    push(fsc, fid, nf, k, s, v.ids[ci[c]]);
  }
  finish(fsc, fid, nf, k);
  for (int64_t j = 0; j < k; ++j) {
    p.out_scores[q * k + j] = fsc[j];
    p.out_ids[q * k + j] = fid[j];
  }
}

void run_ivf_search(const IvfPlan& p, int threads) {
  const int64_t fper = ivf_fscratch(p), iper = ivf_iscratch(p);
  parallel_tasks(p.num_queries, threads, [&](int64_t q, int tid) {
    ivf_query(p, q, p.fscratch + tid * fper, p.iscratch + tid * iper);
  });
}

void run_topk(const TopkPlan& p, int threads) {
  const int64_t num_super = (p.num_queries + kQuerySuper - 1) / kQuerySuper;
  parallel_tasks(num_super * p.num_splits, threads, [&](int64_t task, int tid) {
    run_task(p, task, p.scratch + tid * p.scratch_per_thread);
  });
}

}  // namespace recops::retrieval::RECOPS_TOPK_ISA
