// SPDX-License-Identifier: Apache-2.0
// Retrieval CPU kernels (fused matmul + top-k, IVF scan), compiled once per instruction set. Included only by topk_cpu_<isa>.cpp,
// which defines RECOPS_TOPK_ISA (the namespace) and RECOPS_TOPK_VBYTES (vector register bytes) and wraps the
// include in `#pragma GCC target`. Nothing here calls std:: templates, so no function compiled for a wide ISA
// can be merged by the linker into code that runs on a narrower CPU.
//
// Task = (query superblock of kQuerySuper queries, item split). Per item tile: pack kTileN items transposed
// ([D][kTileN], zero-padded), then for every kMR-query micro block compute the [kMR][kTileN] score tile with a
// register-blocked micro-kernel (kMR rows x 2 vectors of accumulators, query broadcast, tile loaded) and push
// the tile's candidates into the queries' min-heaps (root = worst kept hit). A candidate must be >= the root
// score to be looked at, so after the first tiles almost every score costs one compare.
//
// IVF search: the nprobe best lists per query come from the fused top-k over the scaled list directions
// (ivf_index.cpp); then one query per task: the probed lists are scanned with vectorised decode-and-dot (uint8 -> float, binary16 -> float by bit
// manipulation) into a num_candidates heap, and the candidates are re-scored (optionally exactly) into the
// final k heap keyed by the caller's ids.

namespace recops::retrieval::RECOPS_TOPK_ISA {

typedef float VF __attribute__((vector_size(RECOPS_TOPK_VBYTES)));
constexpr int kW = RECOPS_TOPK_VBYTES / sizeof(float);
constexpr int kNV = 2;
// Micro-kernel rows: kMR x kNV accumulators + kNV tile vectors + 1 broadcast must fit the register file
// (32 zmm with AVX-512: 8 x 2; 16 ymm / xmm otherwise: 6 x 2).
#if RECOPS_TOPK_VBYTES == 64
constexpr int kMR = 8;
#else
constexpr int kMR = 6;
#endif
static_assert(kMR <= kMicroRows, "scratch is sized for kMicroRows");
typedef int32_t VI32 __attribute__((vector_size(RECOPS_TOPK_VBYTES)));

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

inline VF vload(const float* p) {
  VF v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// C[r][j] = sum_d A[r * dim + d] * B[d * kTileN + j] for r < kMR, j < kTileN.
inline void score_tile(int64_t dim, const float* A, const float* B, float* C) {
  for (int64_t j = 0; j < kTileN; j += kNV * kW) {
    VF acc[kMR][kNV] = {};
    for (int64_t d = 0; d < dim; ++d) {
      VF b[kNV];
      for (int v = 0; v < kNV; ++v) b[v] = vload(B + d * kTileN + j + v * kW);
      for (int r = 0; r < kMR; ++r) {
        const float a = A[r * dim + d];
        for (int v = 0; v < kNV; ++v) acc[r][v] += a * b[v];
      }
    }
    for (int r = 0; r < kMR; ++r) {
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

typedef uint32_t VU32 __attribute__((vector_size(kW * 4)));
typedef float V4 __attribute__((vector_size(16)));

// Horizontal sum: fold the register into 4 lanes with vector adds, then a 2-level tree (a scalar loop over
// 16 lanes would be a 16-add dependency chain per dot product).
inline float hsum(VF v) {
  V4 acc;
  __builtin_memcpy(&acc, &v, sizeof(acc));
  for (int c = 1; c < kW / 4; ++c) {
    V4 part;
    __builtin_memcpy(&part, reinterpret_cast<const char*>(&v) + 16 * c, sizeof(part));
    acc += part;
  }
  return (acc[0] + acc[2]) + (acc[1] + acc[3]);
}

// binary16 -> float32 for finite values (normal and subnormal): shift exponent and mantissa into place, then
// one multiply by 2^112 re-biases the exponent (and normalises subnormals); the sign is OR-ed back in.
inline VF half_to_float(VU32 w) {
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

inline VF load_code(const float* p) { return vload(p); }
// Zero-extend kW uint8 / uint16 codes to uint32 lanes. Written with intrinsics: GCC lowers the equivalent
// __builtin_convertvector to one scalar insert per lane.
#if defined(__x86_64__) || defined(__i386__)
inline VU32 widen(const uint8_t* p) {
  VU32 w;
#if RECOPS_TOPK_VBYTES == 64
  const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#elif RECOPS_TOPK_VBYTES == 32
  const __m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#else
  int32_t b;
  __builtin_memcpy(&b, p, sizeof(b));
  const __m128i z = _mm_setzero_si128();
  const __m128i x = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(b), z), z);
#endif
  __builtin_memcpy(&w, &x, sizeof(w));
  return w;
}
inline VU32 widen(const uint16_t* p) {
  VU32 w;
#if RECOPS_TOPK_VBYTES == 64
  const __m512i x = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif RECOPS_TOPK_VBYTES == 32
  const __m256i x = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  const __m128i x = _mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), _mm_setzero_si128());
#endif
  __builtin_memcpy(&w, &x, sizeof(w));
  return w;
}
#else
template <typename code_t>
inline VU32 widen(const code_t* p) {
  VU32 w;
  for (int i = 0; i < kW; ++i) w[i] = p[i];
  return w;
}
#endif

inline VF load_code(const uint8_t* p) { return __builtin_convertvector(__builtin_convertvector(widen(p), VI32), VF); }
inline VF load_code(const uint16_t* p) { return half_to_float(widen(p)); }
inline float code_scalar(float x) { return x; }
inline float code_scalar(uint8_t x) { return static_cast<float>(x); }
inline float code_scalar(uint16_t x) { return half_to_float(x); }

// out[r] = dot(a, rows[r]) for R consecutive rows of `dim` codes: R independent accumulator chains.
template <int R, typename code_t>
inline void dot_rows(const float* a, const code_t* rows, int64_t dim, float* out) {
  VF acc[R] = {};
  int64_t d = 0;
  for (; d + kW <= dim; d += kW) {
    const VF av = vload(a + d);
    for (int r = 0; r < R; ++r) acc[r] += av * load_code(rows + r * dim + d);
  }
  for (int r = 0; r < R; ++r) {
    float s = hsum(acc[r]);
    for (int64_t t = d; t < dim; ++t) s += a[t] * code_scalar(rows[r * dim + t]);
    out[r] = s;
  }
}

inline float dot_f32(const float* a, const float* b, int64_t dim) {
  float s;
  dot_rows<1>(a, b, dim, &s);
  return s;
}

// Scan rows [begin, end) of one list: score = c0 + dot(qd, code row), candidates into the (cs, ci) heap.
template <typename code_t>
inline void scan_list(const IvfPlan& p, const float* qd, float c0, const code_t* codes, int64_t begin, int64_t end,
                      const int64_t* ex, int64_t nex, float* cs, int64_t* ci, int64_t& nc, float& thr) {
  const int64_t D = p.index.dim, kc = p.num_candidates;
  for (int64_t i = begin; i < end; i += 4) {
    float a[4];
    const int64_t rows = imin(4, end - i);
    if (rows == 4) {
      dot_rows<4>(qd, codes + i * D, D, a);
    } else {
      for (int64_t r = 0; r < rows; ++r) dot_rows<1>(qd, codes + (i + r) * D, D, a + r);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float sc = c0 + a[r];
      if (!(sc >= thr)) continue;
      if (nex && contains_sorted(ex, nex, p.index.ids[i + r])) continue;
      push(cs, ci, nc, kc, sc, i + r);
      if (nc == kc) thr = cs[0];
    }
  }
}

inline void ivf_query(const IvfPlan& p, int64_t q, float* fs, int64_t* is) {
  const IvfView& v = p.index;
  const int64_t D = v.dim, kc = p.num_candidates, k = p.k;
  const float* x = p.queries + q * D;
  float* qd = fs;
  float* cs = qd + D;
  float* fsc = cs + kc;
  int64_t* ci = is;
  int64_t* fid = ci + kc;
  const int64_t* li = p.probe_lists + q * p.nprobe;  // best first, -1 padded
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
  for (int64_t l = 0; l < p.nprobe && li[l] >= 0; ++l) {
    const int64_t j = li[l], b = v.list_offsets[j], e = v.list_offsets[j + 1];
    if (v.storage == IvfStorage::kInt8) {
      scan_list(p, qd, c0, static_cast<const uint8_t*>(v.codes), b, e, ex, nex, cs, ci, nc, thr);
    } else if (v.storage == IvfStorage::kFloat16) {
      scan_list(p, qd, c0, static_cast<const uint16_t*>(v.codes), b, e, ex, nex, cs, ci, nc, thr);
    } else {
      scan_list(p, qd, c0, static_cast<const float*>(v.codes), b, e, ex, nex, cs, ci, nc, thr);
    }
  }
  int64_t nf = 0;
  for (int64_t c = 0; c < nc; ++c) {
    if (p.rerank && c + 4 < nc) {  // the re-rank reads scattered rows: fetch a few ahead
      const char* row = reinterpret_cast<const char*>(v.vectors + ci[c + 4] * D);
      for (int64_t off = 0; off < D * 4; off += 64) __builtin_prefetch(row + off);
    }
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

// Push the candidates of a scored tile C [kMR][kTileN] (queries q0 + m + r, items n0 + j, j < nv) into
// the queries' heaps.
inline void select_tile(const TopkPlan& p, int64_t q0, int64_t nq, int64_t m, int64_t n0, int64_t nv, const float* C,
                        float* hs, int64_t* hi, int64_t* hsize) {
  const int64_t k = p.k;
  for (int64_t r = 0; r < kMR && m + r < nq; ++r) {
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

inline void run_task(const TopkPlan& p, int64_t task, float* scratch) {
  const int64_t D = p.dim, Q = p.num_queries, k = p.k;
  const int64_t sb = task / p.num_splits, split = task % p.num_splits;
  const int64_t q0 = sb * kQuerySuper, q1 = imin(Q, q0 + kQuerySuper), nq = q1 - q0;
  const int64_t n_begin = split * p.split_items, n_end = imin(p.num_items, n_begin + p.split_items);
  float* tile = scratch;
  float* C = tile + D * kTileN;
  float* qpack = C + kMicroRows * kTileN;
  const int64_t nq_pad = (nq + kMR - 1) / kMR * kMR;
  for (int64_t i = 0; i < nq_pad * D; ++i) qpack[i] = i < nq * D ? p.queries[q0 * D + i] : 0.0f;
  float* hs = p.heap_scores + (split * Q) * k;
  int64_t* hi = p.heap_ids + (split * Q) * k;
  int64_t* hsize = p.heap_sizes + split * Q;
  for (int64_t q = q0; q < q1; ++q) hsize[q] = 0;
  for (int64_t n0 = n_begin; n0 < n_end; n0 += kTileN) {
    const int64_t nv = imin(kTileN, n_end - n0);
    if (nq < 4) {  // one or few queries: plain dot products beat packing a tile for them
      for (int64_t r = 0; r < nq; ++r) {
        int64_t j = 0;
        for (; j + 4 <= nv; j += 4) dot_rows<4>(qpack + r * D, p.items + (n0 + j) * D, D, C + r * kTileN + j);
        for (; j < nv; ++j) dot_rows<1>(qpack + r * D, p.items + (n0 + j) * D, D, C + r * kTileN + j);
      }
      select_tile(p, q0, nq, 0, n0, nv, C, hs, hi, hsize);
      continue;
    }
    for (int64_t j = 0; j < kTileN; ++j) {
      const float* row = p.items + (n0 + j) * D;
      if (j < nv) {
        for (int64_t d = 0; d < D; ++d) tile[d * kTileN + j] = row[d];
      } else {
        for (int64_t d = 0; d < D; ++d) tile[d * kTileN + j] = 0.0f;
      }
    }
    for (int64_t m = 0; m < nq; m += kMR) {
      score_tile(D, qpack + m * D, tile, C);
      select_tile(p, q0, nq, m, n0, nv, C, hs, hi, hsize);
    }
  }
  if (p.sort_heaps) {
    for (int64_t q = q0; q < q1; ++q) finish(hs + q * k, hi + q * k, hsize[q], k);
  }
}

void run_topk(const TopkPlan& p, int threads) {
  const int64_t num_super = (p.num_queries + kQuerySuper - 1) / kQuerySuper;
  parallel_tasks(num_super * p.num_splits, threads, [&](int64_t task, int tid) {
    run_task(p, task, p.scratch + tid * p.scratch_per_thread);
  });
}

}  // namespace recops::retrieval::RECOPS_TOPK_ISA
