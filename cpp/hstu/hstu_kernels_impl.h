// SPDX-License-Identifier: Apache-2.0
// HSTU attention CPU kernels, compiled once per instruction set. Included only by hstu_cpu_<isa>.cpp, which
// defines RECOPS_HSTU_ISA (the namespace), RECOPS_HSTU_VBYTES (vector register bytes) and RECOPS_HSTU_NV
// (vectors per micro-kernel row) and wraps the include in `#pragma GCC target`. Everything here lives in that
// ISA's namespace and calls no std:: templates, so no function compiled for a wide ISA can be merged by the
// linker into code that runs on a narrower CPU.
//
// Tiling (flash-attention style, no softmax so no running statistics):
//   forward task = (sequence, 64-row query block), all heads: for each 64-row key block that has a valid pair,
//   build the bias and mask tiles once, then per head S = (alpha q) k^T, P = SiLU(S + bias) * mask,
//   O += P v. Tiles with no valid pair are skipped; tiles where every pair is valid skip the mask.
//   backward task = one sequence, all heads, so dq/dk/dv rows and the sequence's bias partials have one owner
//   (deterministic, no atomics): key blocks outer, query blocks inner, dk/dv accumulated per key block, dq per
//   sequence.
// Small GEMMs use a register-blocked micro-kernel: 4 rows x NV vectors of accumulators, A broadcast, B loaded.

namespace recops::hstu::RECOPS_HSTU_ISA {

#if defined(__x86_64__) || defined(__i386__)
#define RECOPS_SIMD_RCP_BYTES RECOPS_HSTU_VBYTES
#endif
#include "common/simd_math.inc"
#undef RECOPS_SIMD_RCP_BYTES

#ifndef RECOPS_HSTU_BF16
#define RECOPS_HSTU_BF16 0
#endif
#include "hstu/hstu_tile_impl.h"
#include "hstu/bf16_tile_impl.h"
#include "hstu/hstu_bias_impl.h"
#include "hstu/attn_softmax_impl.h"
#include "hstu/hstu_fwd_impl.h"
#include "hstu/hstu_bwd_impl.h"

// The bf16 object runs float compute on bf16 operands (q/k/v/out/grad_out/dk/dv bf16, the rest float32).
template void run_fwd<float>(const HstuFwdParams&, const HstuPlan&, int);
template void run_bwd<float>(const HstuBwdParams&, const HstuPlan&, int);
#if !RECOPS_HSTU_BF16
template void run_fwd<double>(const HstuFwdParams&, const HstuPlan&, int);
template void run_bwd<double>(const HstuBwdParams&, const HstuPlan&, int);
#endif

}  // namespace recops::hstu::RECOPS_HSTU_ISA
