// SPDX-License-Identifier: Apache-2.0
// Part of hstu_kernels_impl.h, included by it INSIDE the per-ISA namespace (no include guard, no includes):
// the backward tasks (one sequence, all heads) and their driver.

// ---------------------------------------------------------------------------------------------------------
// backward

template <typename T>
struct BwdLayout {
  int64_t DQ, DV, DQP, DVP, BKP, NQ, NB;
  bool softmax;
  int64_t DQ32 = 0, DV32 = 0;  // bf16 (kBf16): q/k and v depths padded to the bf16 GEMMs' granule
  struct Bufs {
    T *dQacc, *Kt, *Kp, *Vt, *dKacc, *dVacc, *Qp, *dOp, *S, *P, *dP, *bias, *mask, *dSsum, *dT4, *lse, *Dsum, *keep;
    // bf16: q and dout of the sequence row-major and pair packed, the key block's K^T, K and V^T pair packed,
    // and a tile's P^T, dS and dS^T
    uint16_t *Qb, *Qv, *dOb, *dOv, *KvT, *Kv, *VvT, *Pt, *dSb, *dSt;
    int32_t* buckets;
  };
  Bufs carve(Arena& ar, int64_t H) const {
    Bufs x;
    const int64_t f = kBf16 ? 0 : 1, g = kBf16 ? 1 : 0;  // which operand set this object's kernels use
    x.dQacc = ar.take<T>(H * NQ * DQP);
    x.Kt = ar.take<T>(f * H * DQ * BKP);
    x.Kp = ar.take<T>(f * H * BKP * DQP);
    x.Vt = ar.take<T>(f * H * DV * BKP);
    x.dKacc = ar.take<T>(H * BKP * DQP);
    x.dVacc = ar.take<T>(H * BKP * DVP);
    x.Qp = ar.take<T>(f * H * NQ * DQP);
    x.dOp = ar.take<T>(f * H * NQ * DVP);
    x.Qb = ar.take<uint16_t>(g * H * NQ * DQ32);
    x.Qv = ar.take<uint16_t>(g * H * NQ * DQP);
    x.dOb = ar.take<uint16_t>(g * H * NQ * DV32);
    x.dOv = ar.take<uint16_t>(g * H * NQ * DVP);
    x.KvT = ar.take<uint16_t>(g * H * DQ32 * BKP);
    x.Kv = ar.take<uint16_t>(g * H * BKP * DQP);
    x.VvT = ar.take<uint16_t>(g * H * DV32 * BKP);
    x.Pt = ar.take<uint16_t>(g * BKP * kBlockQ);
    x.dSb = ar.take<uint16_t>(g * kBlockQ * BKP);
    x.dSt = ar.take<uint16_t>(g * BKP * kBlockQ);
    x.S = ar.take<T>(kBlockQ * BKP);
    x.P = ar.take<T>(kBlockQ * BKP);
    x.dP = ar.take<T>(kBlockQ * BKP);
    x.bias = ar.take<T>(kBlockQ * BKP);
    x.mask = ar.take<T>(kBlockQ * BKP);
    x.dSsum = ar.take<T>(kBlockQ * BKP);
    x.buckets = ar.take<int32_t>(kBlockQ * BKP);
    x.dT4 = ar.take<T>(4 * NB);
    x.lse = ar.take<T>(softmax ? H * NQ : 0);   // softmax: the rows' saved log-sum-exp, per head
    x.Dsum = ar.take<T>(softmax ? H * NQ : 0);  // softmax: rowsum(dout * out), per head
    x.keep = ar.take<T>(softmax ? kBlockQ * BKP : 0);  // softmax: the tile's dropout keep scales
    return x;
  }
};

// One backward task's sequence: where it lies, its mask and the task's scratch (carved once per task).
template <typename T>
struct BwdSeq {
  const HstuBwdParams& a;
  const HstuPlan& plan;
  const BwdLayout<T>& lay;
  typename BwdLayout<T>::Bufs x;
  int64_t b, s, n, H, nblk_q;
  HstuMask mk;
  T alpha;
  bool has_bias;
  T* dpos;   // this sequence's d pos_bias partial [2N - 1] or null
  T* dtime;  // this task's d time_bias partial [num_buckets] or null
  T* dq_rows;  // where row r, head h of dq goes: dq_rows + (r * H + h) * dqk
  DropoutTile drop;
  const DropoutTile* dropp;  // softmax with dropout_p > 0, else null
};

// alpha * q and dout of the whole sequence, packed once per head (rows up to a multiple of kMR zeroed).
template <typename T>
void bwd_pack_rows(const BwdSeq<T>& q) {
  const auto& a = q.a;
  const int64_t DQ = q.lay.DQ, DV = q.lay.DV, DQP = q.lay.DQP, DVP = q.lay.DVP, NQ = q.lay.NQ;
  const int64_t nr = round_up(q.n, kBf16 ? kBlockQ : kMR);
  for (int64_t h = 0; h < q.H; ++h) {
    if constexpr (kBf16) {  // q (unscaled: alpha scales the fp32 scores) and dout, rows past n zero
      const uint16_t* q0 = typed<uint16_t>(a.q) + q.s * a.q_row + h * a.q_head;
      const uint16_t* g0 = typed<uint16_t>(a.grad_out) + q.s * q.H * DV + h * DV;
      bf16_rows(q0, a.q_row, q.n, DQ, nr, q.lay.DQ32, q.x.Qb + h * NQ * q.lay.DQ32, q.lay.DQ32);
      bf16_rows(g0, q.H * DV, q.n, DV, nr, q.lay.DV32, q.x.dOb + h * NQ * q.lay.DV32, q.lay.DV32);
      bf16_pairs(q0, a.q_row, q.n, DQ, nr, DQP, q.x.Qv + h * NQ * DQP);
      bf16_pairs(g0, q.H * DV, q.n, DV, nr, DVP, q.x.dOv + h * NQ * DVP);
      for (int64_t r = 0; q.lay.softmax && r < nr; ++r) {
        const bool in = r < q.n;
        q.x.Dsum[h * NQ + r] =
            in ? bf16_dot(g0 + r * q.H * DV, typed<uint16_t>(a.out) + ((q.s + r) * q.H + h) * DV, DV) : 0.0f;
        q.x.lse[h * NQ + r] = in ? typed<T>(a.lse)[(q.s + r) * q.H + h] : __builtin_inf();
      }
      continue;
    }
    for (int64_t r = 0; r < nr; ++r) {
      const bool in = r < q.n;
      const T* qsrc = in ? typed<T>(a.q) + (q.s + r) * a.q_row + h * a.q_head : nullptr;
      const T* gsrc = in ? typed<T>(a.grad_out) + ((q.s + r) * q.H + h) * DV : nullptr;
      T* qd = q.x.Qp + (h * NQ + r) * DQP;
      T* gd = q.x.dOp + (h * NQ + r) * DVP;
      for (int64_t d = 0; d < DQP; ++d) qd[d] = (in && d < DQ) ? q.alpha * qsrc[d] : T(0);
      for (int64_t d = 0; d < DVP; ++d) gd[d] = (in && d < DV) ? gsrc[d] : T(0);
      if (q.lay.softmax) {  // D_i = <dout_i, out_i> (dropout included: out is the dropped forward's)
        T acc = T(0);
        const T* osrc = in ? typed<T>(a.out) + ((q.s + r) * q.H + h) * DV : nullptr;
        for (int64_t d = 0; in && d < DV; ++d) acc += gsrc[d] * osrc[d];
        q.x.Dsum[h * NQ + r] = acc;
        q.x.lse[h * NQ + r] = in ? typed<T>(a.lse)[(q.s + r) * q.H + h] : __builtin_inf();
      }
    }
  }
}

// Key block [j0, j0 + C) of every head packed (K, K^T, V^T) and its dK/dV accumulators zeroed.
template <typename T>
void bwd_pack_keys(const BwdSeq<T>& q, int64_t j0, int64_t C) {
  const auto& a = q.a;
  const int64_t DQ = q.lay.DQ, DV = q.lay.DV, DQP = q.lay.DQP, DVP = q.lay.DVP, BKP = q.lay.BKP;
  for (int64_t h = 0; h < q.H; ++h) {
    if constexpr (kBf16) {
      const uint16_t* k0 = typed<uint16_t>(a.k) + (q.s + j0) * a.k_row + h * a.k_head;
      const uint16_t* v0 = typed<uint16_t>(a.v) + (q.s + j0) * a.v_row + h * a.v_head;
      bf16_pairs_t(k0, a.k_row, C, DQ, q.lay.DQ32, BKP, q.x.KvT + h * q.lay.DQ32 * BKP);
      bf16_pairs(k0, a.k_row, C, DQ, BKP, DQP, q.x.Kv + h * BKP * DQP);
      bf16_pairs_t(v0, a.v_row, C, DV, q.lay.DV32, BKP, q.x.VvT + h * q.lay.DV32 * BKP);
      continue;
    }
    T* kp = q.x.Kp + h * BKP * DQP;
    const T* k0 = typed<T>(a.k) + (q.s + j0) * a.k_row + h * a.k_head;
    const T* v0 = typed<T>(a.v) + (q.s + j0) * a.v_row + h * a.v_head;
    for (int64_t c = 0; c < BKP; ++c) {
      for (int64_t d = 0; d < DQP; ++d) kp[c * DQP + d] = (c < C && d < DQ) ? k0[c * a.k_row + d] : T(0);
    }
    pack_transposed(k0, a.k_row, C, DQ, BKP, q.x.Kt + h * DQ * BKP);
    pack_transposed(v0, a.v_row, C, DV, BKP, q.x.Vt + h * DV * BKP);
  }
  for (int64_t i = 0; i < q.H * BKP * DQP; ++i) q.x.dKacc[i] = T(0);
  for (int64_t i = 0; i < q.H * BKP * DVP; ++i) q.x.dVacc[i] = T(0);
}

// P = SiLU(S) * scale * mask and S <- SiLU'(S) * scale * mask for the tile's R rows (padding rows get 0).
template <typename T>
void bwd_scores(const BwdSeq<T>& q, int64_t i0, int64_t R, int64_t RP, bool all_valid) {
  constexpr int W = Vec<T>::kW;
  const int64_t BKP = q.lay.BKP;
  const auto& x = q.x;
  for (int64_t r = 0; r < RP; ++r) {
    const T sc =
        r < R ? (q.a.row_scale ? typed<T>(q.a.row_scale)[q.s + i0 + r] : static_cast<T>(q.a.scale)) : T(0);
    for (int64_t c = 0; c < BKP; c += W) {
      V<T> sv = vload(x.S + r * BKP + c);
      if constexpr (kBf16) sv *= q.alpha;
      if (q.has_bias) sv += vload(x.bias + r * BKP + c);
      const V<T> sig = vsigmoid<T>(sv);
      V<T> m = V<T>{} + sc;
      if (!all_valid) m *= vload(x.mask + r * BKP + c);
      vstore(x.P + r * BKP + c, sv * sig * m);
      vstore(x.S + r * BKP + c, sig * (T(1) + sv * (T(1) - sig)) * m);  // SiLU'(s) * scale * mask
    }
  }
}

// One (query block, key block) tile, all heads: dV += P^T dO, dS = (dO V^T) * S', dK += dS^T Q, dQ += dS K;
// the bias gradients' dS sum over heads is kept in dSsum.
template <typename T>
void bwd_tile(const BwdSeq<T>& q, int64_t i0, int64_t R, int64_t RP, int64_t j0, int64_t C, bool all_valid,
              bool no_tile) {
  constexpr int W = Vec<T>::kW;
  const int64_t DQ = q.lay.DQ, DV = q.lay.DV, DQP = q.lay.DQP, DVP = q.lay.DVP, BKP = q.lay.BKP, NQ = q.lay.NQ;
  const auto& x = q.x;
  if (q.has_bias) {
    for (int64_t i = 0; i < RP * BKP; ++i) x.dSsum[i] = T(0);
  }
  for (int64_t h = 0; h < q.H; ++h) {
    const T* Qp = x.Qp + (h * NQ + i0) * DQP;
    const T* dOp = x.dOp + (h * NQ + i0) * DVP;
    // softmax on a plain-causal diagonal tile: the GEMMs skip the blocks the mask zeroes (hstu_tile_impl.h);
    // scores past the diagonal are never read unmasked, dS there is forced to 0
    const bool diag = !kBf16 && q.lay.softmax && no_tile && !all_valid && i0 == j0;
    const bool amx = q.plan.amx;
    const int64_t DQ32 = q.lay.DQ32, DV32 = q.lay.DV32, R32 = round_up(R, kBf16Depth);
    if constexpr (kBf16) {
      bgemm<false>(amx, RP, BKP, DQ32, x.Qb + (h * NQ + i0) * DQ32, DQ32, x.KvT + h * DQ32 * BKP, 2 * BKP, x.S, BKP);
    } else if (diag) {
      gemm_diag_scores<T>(RP, BKP, DQ, Qp, DQP, x.Kt + h * DQ * BKP, BKP, x.S, BKP);
    } else {
      gemm<T, false>(RP, BKP, DQ, Qp, DQP, x.Kt + h * DQ * BKP, BKP, x.S, BKP);
    }
    if (q.lay.softmax) {
      softmax_bwd_scores(x.S, x.P, x.keep, no_tile ? nullptr : x.mask, no_tile && !all_valid ? j0 : -1,
                         x.lse + h * NQ + i0, R, RP, C, BKP, q.dropp, h, i0, j0, kBf16 ? q.alpha : T(1));
    } else {
      bwd_scores(q, i0, R, RP, all_valid);
    }
    if constexpr (kBf16) {  // dV += P^T dO, dP = dO V^T (P rounded to bf16 once)
      bf16_from_f32_t(x.P, BKP, R, BKP, R32, x.Pt, kBlockQ);
      bgemm<true>(amx, BKP, DVP, R32, x.Pt, kBlockQ, x.dOv + (h * NQ + i0) * DVP, 2 * DVP, x.dVacc + h * BKP * DVP,
                  DVP);
      bgemm<false>(amx, RP, BKP, DV32, x.dOb + (h * NQ + i0) * DV32, DV32, x.VvT + h * DV32 * BKP, 2 * BKP, x.dP,
                   BKP);
    } else if (diag) {
      gemm_diag_trans<T>(BKP, DVP, R, x.P, BKP, dOp, DVP, x.dVacc + h * BKP * DVP, DVP);
      gemm_diag_scores<T>(RP, BKP, DV, dOp, DVP, x.Vt + h * DV * BKP, BKP, x.dP, BKP);
    } else {
      gemm<T, true, true>(BKP, DVP, R, x.P, BKP, dOp, DVP, x.dVacc + h * BKP * DVP, DVP);
      gemm<T, false>(RP, BKP, DV, dOp, DVP, x.Vt + h * DV * BKP, BKP, x.dP, BKP);
    }
    if (q.lay.softmax) {  // dS = P * (dP * keep - D_i); where P = 0, dS = 0 (dP may be uncomputed there)
      for (int64_t r = 0; r < RP; ++r) {
        const T Dr = r < R ? x.Dsum[h * NQ + i0 + r] : T(0);
        for (int64_t c = 0; c < BKP; c += W) {
          V<T> dp = vload(x.dP + r * BKP + c);
          if (q.dropp) dp *= vload(x.keep + r * BKP + c);
          const V<T> pr = vload(x.S + r * BKP + c);
          const V<T> ds = pr * (dp - Dr);
          vstore(x.dP + r * BKP + c, diag ? (pr != T(0) ? ds : V<T>{}) : ds);
          if constexpr (kBf16) store_bf16(x.dSb + r * BKP + c, ds);
        }
      }
    } else {
      for (int64_t r = 0; r < RP; ++r) {
        for (int64_t c = 0; c < BKP; c += W) {
          const V<T> ds = vload(x.dP + r * BKP + c) * vload(x.S + r * BKP + c);
          vstore(x.dP + r * BKP + c, ds);
          if constexpr (kBf16) store_bf16(x.dSb + r * BKP + c, ds);
          if (q.has_bias) vstore(x.dSsum + r * BKP + c, vload(x.dSsum + r * BKP + c) + ds);
        }
      }
    }
    T* dq_acc = x.dQacc + (h * q.nblk_q * kBlockQ + i0) * DQP;
    if constexpr (kBf16) {  // dK += dS^T Q, dQ += dS K (dS rounded to bf16 once)
      bf16_from_f32_t(x.dP, BKP, R, BKP, R32, x.dSt, kBlockQ);
      bgemm<true>(amx, BKP, DQP, R32, x.dSt, kBlockQ, x.Qv + (h * NQ + i0) * DQP, 2 * DQP, x.dKacc + h * BKP * DQP,
                  DQP);
      bgemm<true>(amx, RP, DQP, round_up(C, kBf16Depth), x.dSb, BKP, x.Kv + h * BKP * DQP, 2 * DQP, dq_acc, DQP);
    } else if (diag) {
      gemm_diag_trans<T>(BKP, DQP, R, x.dP, BKP, Qp, DQP, x.dKacc + h * BKP * DQP, DQP);
      gemm_diag_values<T>(RP, DQP, C, x.dP, BKP, x.Kp + h * BKP * DQP, DQP, dq_acc, DQP);
    } else {
      gemm<T, true, true>(BKP, DQP, R, x.dP, BKP, Qp, DQP, x.dKacc + h * BKP * DQP, DQP);
      gemm<T, true>(RP, DQP, C, x.dP, BKP, x.Kp + h * BKP * DQP, DQP, dq_acc, DQP);
    }
  }
}

// The tile's dS sum into the sequence's pos_bias partial and the four interleaved time_bias partials.
template <typename T>
void bwd_bias_grads(const BwdSeq<T>& q, int64_t i0, int64_t R, int64_t j0, int64_t C) {
  const int64_t N = q.a.max_seq_len, BKP = q.lay.BKP, nb = q.a.num_buckets;
  for (int64_t r = 0; r < R; ++r) {
    const T* g = q.x.dSsum + r * BKP;
    if (q.dpos) {
      T* prow = q.dpos + (N - 1) + j0 - (i0 + r);  // contiguous along the row, like the forward slice
      for (int64_t c = 0; c < C; ++c) prow[c] += g[c];
    }
    if (q.dtime) {
      const int32_t* kr = q.x.buckets + r * BKP;
      for (int64_t c = 0; c < C; ++c) q.x.dT4[(c & 3) * nb + kr[c]] += g[c];
    }
  }
}

// dk/dv rows of key block [j0, j0 + C) from the accumulators.
template <typename T>
void bwd_store_keys(const BwdSeq<T>& q, int64_t j0, int64_t C) {
  const int64_t DQ = q.lay.DQ, DV = q.lay.DV, DQP = q.lay.DQP, DVP = q.lay.DVP, BKP = q.lay.BKP;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t h = 0; h < q.H; ++h) {
      const T* dks = q.x.dKacc + h * BKP * DQP + c * DQP;
      const T* dvs = q.x.dVacc + h * BKP * DVP + c * DVP;
      const int64_t kr = ((q.s + j0 + c) * q.H + h) * DQ, vr = ((q.s + j0 + c) * q.H + h) * DV;
      if constexpr (kBf16) {  // bf16 outputs; q was unscaled, so dk takes alpha here
        bf16_store(dks, q.alpha, DQ, typed<uint16_t>(q.a.dk) + kr);
        bf16_store(dvs, 1.0f, DV, typed<uint16_t>(q.a.dv_out) + vr);
      } else {
        for (int64_t d = 0; d < DQ; ++d) typed<T>(q.a.dk)[kr + d] = dks[d];
        for (int64_t d = 0; d < DV; ++d) typed<T>(q.a.dv_out)[vr + d] = dvs[d];
      }
    }
  }
}

// dq rows of the sequence (alpha * the accumulator) and the time partials folded into the sequence's.
template <typename T>
void bwd_store_rows(const BwdSeq<T>& q) {
  const int64_t DQ = q.lay.DQ, DQP = q.lay.DQP, nb = q.a.num_buckets;
  for (int64_t r = 0; r < q.n; ++r) {
    for (int64_t h = 0; h < q.H; ++h) {
      const T* src = q.x.dQacc + (h * q.nblk_q * kBlockQ + r) * DQP;
      if constexpr (kBf16) {  // a sequence in one part: bf16 dq at once (else a float partial, rounded later)
        if (!q.dq_rows) {
          bf16_store(src, q.alpha, DQ, typed<uint16_t>(q.a.dq) + ((q.s + r) * q.H + h) * DQ);
          continue;
        }
      }
      T* dst = q.dq_rows + (r * q.H + h) * DQ;
      for (int64_t d = 0; d < DQ; ++d) dst[d] = q.alpha * src[d];
    }
  }
  if (q.dtime) {
    const T* t4 = q.x.dT4;
    for (int64_t k = 0; k < nb; ++k) q.dtime[k] += (t4[k] + t4[nb + k]) + (t4[2 * nb + k] + t4[3 * nb + k]);
  }
}

// Task t: key blocks [kb0, kb1) of sequence b, all heads: key blocks outer, query blocks inner.
template <typename T>
void bwd_task(const HstuBwdParams& a, const HstuPlan& plan, const BwdLayout<T>& lay, int64_t t, char* mem) {
  const int64_t b = plan.task_seq_b[t];
  const int64_t s = a.offsets[b], n = a.offsets[b + 1] - s;
  if (n == 0) return;
  Arena ar{mem, 0};
  const int64_t N = a.max_seq_len, nb = a.num_buckets;
  T* dq_rows = plan.task_dq[t] < 0 ? (kBf16 ? nullptr : typed<T>(a.dq) + s * a.num_heads * a.dqk)
                                   : static_cast<T*>(plan.dq_partials) + plan.task_dq[t];
  BwdSeq<T> q{a, plan, lay, lay.carve(ar, a.num_heads), b, s, n, a.num_heads, (n + kBlockQ - 1) / kBlockQ,
              seq_mask(a, b, n), static_cast<T>(a.alpha), a.pos_bias || a.time_bias,
              a.d_pos_bias ? static_cast<T*>(plan.pos_partials) + t * (2 * N - 1) : nullptr,
              a.d_time_bias ? static_cast<T*>(plan.time_partials) + t * nb : nullptr, dq_rows,
              dropout_tile(a, b), nullptr};
  if (lay.softmax && a.dropout_p > 0) q.dropp = &q.drop;
  for (int64_t i = 0; i < q.H * q.nblk_q * kBlockQ * lay.DQP; ++i) q.x.dQacc[i] = T(0);
  bwd_pack_rows(q);
  // d time_bias in four interleaved partials: neighbouring keys mostly share a bucket, and one accumulator
  // would chain every add through the previous one's store.
  if (q.dtime) {
    for (int64_t i = 0; i < 4 * nb; ++i) q.x.dT4[i] = T(0);
  }
  for (int64_t kb = plan.task_kb0[t]; kb < plan.task_kb1[t]; ++kb) {
    const int64_t j0 = kb * kBlockK, C = imin(kBlockK, n - j0);
    bwd_pack_keys(q, j0, C);
    for (int64_t qb = 0; qb < q.nblk_q; ++qb) {
      const int64_t i0 = qb * kBlockQ, R = imin(kBlockQ, n - i0), RP = round_up(R, kBf16 ? kBf16Rows : kMR);
      if (!q.mk.any(i0, i0 + R - 1, j0, j0 + C - 1)) continue;
      const bool all_valid = q.mk.all(i0, i0 + R - 1, j0, j0 + C - 1);
      // softmax: no bias tile, and a fully valid or plain causal tile needs no mask tile (row_limit); SiLU: a
      // fully valid tile without biases needs neither
      const bool no_tile = lay.softmax ? (all_valid || q.mk.plain_causal(n)) : (!q.has_bias && all_valid);
      if (!no_tile) {
        fill_tiles(a, plan, q.mk, s, n, i0, R, RP, j0, C, lay.BKP, all_valid, q.x.bias, q.x.mask, q.x.buckets);
      }
      bwd_tile(q, i0, R, RP, j0, C, all_valid, no_tile);
      if (q.has_bias) bwd_bias_grads(q, i0, R, j0, C);
    }
    bwd_store_keys(q, j0, C);
  }
  bwd_store_rows(q);
}

template <typename T>
void run_bwd(const HstuBwdParams& a, const HstuPlan& plan, int threads) {
  constexpr int W = Vec<T>::kW;
  BwdLayout<T> lay{a.dqk, a.dv, round_up(a.dqk, W), round_up(a.dv, W), round_up(kBlockK, W),
                   round_up(imax(plan.max_len, 1), kBlockQ), a.time_bias ? a.num_buckets : 0,
                   a.kind == AttnKind::kSoftmax, round_up(a.dqk, kBf16Depth), round_up(a.dv, kBf16Depth)};
  Arena probe;
  lay.carve(probe, a.num_heads);
  const int nt = static_cast<int>(imax(1, imin(imin(threads, 256), plan.num_seq_tasks)));
  Scratch scratch(nt, probe.used);
  if (!scratch.ok()) throw_alloc_failure(lay.softmax ? "jagged_attention_backward" : "hstu_attention_backward");
  parallel_tasks(plan.num_seq_tasks, nt, [&](int64_t t, int tid) {
    if constexpr (kBf16) bf16_begin(plan.amx);
    bwd_task(a, plan, lay, plan.task_order[t], scratch.blocks[tid]);
    if constexpr (kBf16) bf16_done(plan.amx);
  });
}
