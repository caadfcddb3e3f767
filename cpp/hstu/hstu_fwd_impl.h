// SPDX-License-Identifier: Apache-2.0
// Part of hstu_kernels_impl.h, included by it INSIDE the per-ISA namespace (no include guard, no includes):
// the forward tasks (one sequence, a run of 64-row query blocks, all heads) and their driver.

// ---------------------------------------------------------------------------------------------------------
// forward

template <typename T>
struct FwdLayout {
  int64_t DQ, DQP, DVP, BKP;
  bool softmax;
  int64_t DQ32 = 0;  // bf16 (kBf16): the q/k depth padded to the bf16 GEMMs' granule
  struct Bufs {
    T *Qp, *Oacc, *S, *bias, *mask, *rmax, *rsum, *keep;
    uint16_t *Qb, *Pb;  // bf16: the query block per head and one tile's probabilities
    int32_t* buckets;
  };
  Bufs carve(Arena& ar, int64_t H) const {
    Bufs x;
    x.Qp = ar.take<T>(kBf16 ? 0 : H * kBlockQ * DQ);
    x.Qb = ar.take<uint16_t>(kBf16 ? H * kBlockQ * DQ32 : 0);
    x.Pb = ar.take<uint16_t>(kBf16 ? kBlockQ * BKP : 0);
    x.Oacc = ar.take<T>(H * kBlockQ * DVP);
    x.S = ar.take<T>(kBlockQ * BKP);
    x.bias = ar.take<T>(kBlockQ * BKP);
    x.mask = ar.take<T>(kBlockQ * BKP);
    x.buckets = ar.take<int32_t>(kBlockQ * BKP);
    x.rmax = ar.take<T>(softmax ? H * kBlockQ : 0);  // softmax: running row maximum and sum per head
    x.rsum = ar.take<T>(softmax ? H * kBlockQ : 0);
    x.keep = ar.take<T>(softmax ? BKP : 0);           // softmax: one row's dropout keep scales
    return x;
  }
};

// One key block of one head, packed for the forward GEMMs: K^T [DQ x BKP] then V [BKP x DVP], zero-padded
// (bf16: both pair packed, K^T [DQ32 x BKP] and V [BKP x DVP]). In bytes.
template <typename T>
int64_t packed_kv_bytes(const FwdLayout<T>& lay) {
  if (kBf16) return 2 * (lay.DQ32 * lay.BKP + lay.BKP * lay.DVP);
  return static_cast<int64_t>(sizeof(T)) * (lay.DQ * lay.BKP + lay.BKP * lay.DVP);
}

template <typename T>
void pack_kv_block(const HstuFwdParams& a, const FwdLayout<T>& lay, int64_t b, int64_t kb, char* dst) {
  const int64_t s = a.offsets[b], n = a.offsets[b + 1] - s;
  const int64_t j0 = kb * kBlockK, C = imin(kBlockK, n - j0);
  const int64_t DQ = lay.DQ, BKP = lay.BKP, DVP = lay.DVP;
  for (int64_t h = 0; h < a.num_heads; ++h) {
    if constexpr (kBf16) {
      uint16_t* Kt = reinterpret_cast<uint16_t*>(dst + h * packed_kv_bytes(lay));
      bf16_pairs_t(typed<uint16_t>(a.k) + (s + j0) * a.k_row + h * a.k_head, a.k_row, C, DQ, lay.DQ32, BKP, Kt);
      bf16_pairs(typed<uint16_t>(a.v) + (s + j0) * a.v_row + h * a.v_head, a.v_row, C, a.dv, BKP, DVP,
                 Kt + lay.DQ32 * BKP);
      continue;
    }
    T* Kt = reinterpret_cast<T*>(dst + h * packed_kv_bytes(lay));
    T* Vp = Kt + DQ * BKP;
    pack_transposed(typed<T>(a.k) + (s + j0) * a.k_row + h * a.k_head, a.k_row, C, DQ, BKP, Kt);
    for (int64_t c = 0; c < BKP; ++c) {  // rows copied whole, the padding zeroed
      T* row = Vp + c * DVP;
      const int64_t w = c < C ? a.dv : 0;
      if (w) __builtin_memcpy(row, typed<T>(a.v) + (s + j0 + c) * a.v_row + h * a.v_head, w * sizeof(T));
      for (int64_t d = w; d < DVP; ++d) row[d] = T(0);
    }
  }
}

// Query blocks [qb0, qb1) of sequence b, all heads. K/V key blocks are packed into the thread's `kv` buffer
// on first use (blocks are visited in increasing order). kSoftmax: the online softmax of attn_softmax_impl.h
// in place of SiLU; the tiles are the same.
template <typename T, bool kSoftmax>
void fwd_task(const HstuFwdParams& a, const HstuPlan& plan, const FwdLayout<T>& lay, int64_t b, int64_t qb0,
              int64_t qb1, char* mem, char* kv) {
  constexpr int W = Vec<T>::kW;
  const int64_t H = a.num_heads, DQ = lay.DQ, DV = a.dv, DVP = lay.DVP, BKP = lay.BKP;
  Arena ar{mem, 0};
  const typename FwdLayout<T>::Bufs x = lay.carve(ar, H);
  const int64_t s = a.offsets[b], n = a.offsets[b + 1] - s;
  // q rows: the last nq of the sequence (incremental inference) or all; qs = q's row of absolute row i_first
  const int64_t qs = a.q_offsets ? a.q_offsets[b] : s, i_first = a.q_offsets ? n - (a.q_offsets[b + 1] - qs) : 0;
  const HstuMask mk = seq_mask(a, b, n);
  const T alpha = static_cast<T>(a.alpha);
  const bool has_bias = a.pos_bias || a.time_bias;
  const int64_t block_bytes = H * packed_kv_bytes(lay);
  const bool amx = plan.amx;
  int64_t packed_upto = 0;
  const DropoutTile drop = dropout_tile(a, b);
  const DropoutTile* dropp = (kSoftmax && a.dropout_p > 0) ? &drop : nullptr;

  for (int64_t qb = qb0; qb < qb1; ++qb) {
    // absolute rows i0 .. i0 + R - 1; their q / out / lse / row_scale rows start at qrow
    const int64_t i0 = i_first + qb * kBlockQ, R = imin(kBlockQ, n - i0), RP = round_up(R, kBf16 ? kBf16Rows : kMR);
    const int64_t qrow = qs + qb * kBlockQ;
    for (int64_t h = 0; h < H; ++h) {
      if constexpr (kBf16) {  // bf16 q as it is (alpha scales the fp32 scores)
        bf16_rows(typed<uint16_t>(a.q) + qrow * a.q_row + h * a.q_head, a.q_row, R, DQ, RP, lay.DQ32,
                  x.Qb + h * kBlockQ * lay.DQ32, lay.DQ32);
      } else {
        T* qh = x.Qp + h * kBlockQ * DQ;
        for (int64_t r = 0; r < RP; ++r) {
          const T* src = r < R ? typed<T>(a.q) + (qrow + r) * a.q_row + h * a.q_head : nullptr;
          for (int64_t d = 0; d < DQ; ++d) qh[r * DQ + d] = r < R ? alpha * src[d] : T(0);
        }
      }
      T* oh = x.Oacc + h * kBlockQ * DVP;
      for (int64_t e = 0; e < RP * DVP; ++e) oh[e] = T(0);
      if (kSoftmax) {
        for (int64_t r = 0; r < RP; ++r) x.rmax[h * kBlockQ + r] = -__builtin_inf();
        for (int64_t r = 0; r < RP; ++r) x.rsum[h * kBlockQ + r] = T(0);
      }
    }

    const int64_t nkb = (n + kBlockK - 1) / kBlockK;
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const int64_t j0 = kb * kBlockK, C = imin(kBlockK, n - j0);
      if (!mk.any(i0, i0 + R - 1, j0, j0 + C - 1)) continue;
      for (; packed_upto <= kb; ++packed_upto) pack_kv_block(a, lay, b, packed_upto, kv + packed_upto * block_bytes);
      const bool all_valid = mk.all(i0, i0 + R - 1, j0, j0 + C - 1);
      // softmax under the plain causal mask cuts each row at the diagonal itself (row_limit): no mask tile
      const bool diag_only = kSoftmax && !all_valid && mk.plain_causal(n);
      if (has_bias || (!all_valid && !diag_only)) {
        fill_tiles(a, plan, mk, s, n, i0, R, RP, j0, C, BKP, all_valid, x.bias, x.mask, x.buckets);
      }
      for (int64_t h = 0; h < H; ++h) {
        const char* kvh = kv + kb * block_bytes + h * packed_kv_bytes(lay);
        const T* Kt = reinterpret_cast<const T*>(kvh);
        const T* Vp = Kt + DQ * BKP;
        const uint16_t* Ktb = reinterpret_cast<const uint16_t*>(kvh);  // bf16
        const uint16_t* Vb = Ktb + lay.DQ32 * BKP;
        T* oh = x.Oacc + h * kBlockQ * DVP;
        // softmax on a plain-causal diagonal tile: only the lower triangle's GEMM blocks (row_limit cuts the rest)
        const bool diag = !kBf16 && kSoftmax && diag_only && i0 == j0;
        if constexpr (kBf16) {
          bgemm<false>(amx, RP, BKP, lay.DQ32, x.Qb + h * kBlockQ * lay.DQ32, lay.DQ32, Ktb, 2 * BKP,
                       reinterpret_cast<float*>(x.S), BKP);
        } else if (diag) {
          gemm_diag_scores<T>(RP, BKP, DQ, x.Qp + h * kBlockQ * DQ, DQ, Kt, BKP, x.S, BKP);
        } else {
          gemm<T, false>(RP, BKP, DQ, x.Qp + h * kBlockQ * DQ, DQ, Kt, BKP, x.S, BKP);
        }
        if (kSoftmax) {
          // padding key columns (c >= C) get probability 0, not exp(0 - m): masked_scores cuts them
          softmax_fwd_tile(x.S, all_valid || diag_only ? nullptr : x.mask, diag_only ? j0 : -1, R, RP, C, BKP,
                           x.rmax + h * kBlockQ, x.rsum + h * kBlockQ, oh, DVP, dropp, x.keep, h, i0, j0,
                           kBf16 ? alpha : T(1), x.Pb);
        } else {
          for (int64_t r = 0; r < RP; ++r) {
            T* srow = x.S + r * BKP;
            for (int64_t c = 0; c < BKP; c += W) {
              V<T> sv = vload(srow + c);
              if constexpr (kBf16) sv *= alpha;
              if (has_bias) sv += vload(x.bias + r * BKP + c);
              V<T> p = sv * vsigmoid<T>(sv);
              if (!all_valid) p *= vload(x.mask + r * BKP + c);
              if constexpr (kBf16) {
                store_bf16(x.Pb + r * BKP + c, p);  // P goes to its GEMM as bf16 only
              } else {
                vstore(srow + c, p);
              }
            }
          }
        }
        if constexpr (kBf16) {
          bgemm<true>(amx, RP, DVP, round_up(C, kBf16Depth), x.Pb, BKP, Vb, 2 * DVP, reinterpret_cast<float*>(oh),
                      DVP);
        } else if (diag) {
          gemm_diag_values<T>(RP, DVP, C, x.S, BKP, Vp, DVP, oh, DVP);
        } else {
          gemm<T, true>(RP, DVP, C, x.S, BKP, Vp, DVP, oh, DVP);
        }
      }
    }

    for (int64_t r = 0; r < R; ++r) {
      const T sc = a.row_scale ? typed<T>(a.row_scale)[qrow + r] : static_cast<T>(a.scale);
      for (int64_t h = 0; h < H; ++h) {
        const T* src = x.Oacc + h * kBlockQ * DVP + r * DVP;
        const int64_t orow = ((qrow + r) * H + h) * DV;
        T mul = sc;
        if (kSoftmax) {  // out = O / l; lse = m + log(l), +inf for a row with no allowed key (its out is 0)
          const T l = x.rsum[h * kBlockQ + r];
          mul = l > T(0) ? T(1) / l : T(0);
          typed<T>(a.lse)[(qrow + r) * H + h] = l > T(0) ? x.rmax[h * kBlockQ + r] + scalar_log(l)
                                                            : __builtin_inf();
        }
        if constexpr (kBf16) {
          bf16_store(reinterpret_cast<const float*>(src), static_cast<float>(mul), DV, typed<uint16_t>(a.out) + orow);
        } else {
          for (int64_t d = 0; d < DV; ++d) typed<T>(a.out)[orow + d] = mul * src[d];
        }
      }
    }
  }
}

template <typename T>
void run_fwd(const HstuFwdParams& a, const HstuPlan& plan, int threads) {
  constexpr int W = Vec<T>::kW;
  const bool softmax = a.kind == AttnKind::kSoftmax;
  FwdLayout<T> lay{a.dqk, round_up(a.dqk, W), round_up(a.dv, W), round_up(kBlockK, W), softmax,
                   round_up(a.dqk, kBf16Depth)};
  Arena probe;
  lay.carve(probe, a.num_heads);
  const int64_t kv_bytes = (plan.max_len + kBlockK - 1) / kBlockK * a.num_heads * packed_kv_bytes(lay);
  const int64_t kv_offset = probe.used;  // bytes
  probe.take<char>(kv_bytes);
  const int nt = static_cast<int>(imax(1, imin(imin(threads, 256), plan.num_tasks)));
  Scratch scratch(nt, probe.used);
  if (!scratch.ok()) throw_alloc_failure(softmax ? "jagged_attention" : "hstu_attention");
  parallel_tasks(plan.num_tasks, nt, [&](int64_t t, int tid) {
    char* mem = scratch.blocks[tid];
    char* kv = mem + kv_offset;
    if constexpr (kBf16) bf16_begin(plan.amx);
    if (softmax) {
      fwd_task<T, true>(a, plan, lay, plan.task_seq[t], plan.task_qbegin[t], plan.task_qend[t], mem, kv);
    } else {
      fwd_task<T, false>(a, plan, lay, plan.task_seq[t], plan.task_qbegin[t], plan.task_qend[t], mem, kv);
    }
    if constexpr (kBf16) bf16_done(plan.amx);
  });
}
