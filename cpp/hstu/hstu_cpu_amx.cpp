// SPDX-License-Identifier: Apache-2.0
// HSTU and softmax attention CPU kernels on bfloat16 operands (see hstu_kernels_impl.h and bf16_tile_impl.h):
// the AVX-512 kernels with their GEMMs on AMX tiles or AVX512-BF16 dot products, fp32 accumulation and pointwise
// math. Chosen at run time (cpu_isa.h: selected_bf16_unit); never on a CPU without AVX512-BF16. Off x86 this
// namespace holds nothing that runs (the dispatcher never selects it). Every header comes before the pragma.
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "common/parallel.h"
#include "hstu/hstu_plan.h"

#if defined(__x86_64__)
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,amx-tile,amx-bf16,fma,avx2")
#define RECOPS_HSTU_BF16 1
#endif
#define RECOPS_HSTU_ISA bf16
#define RECOPS_HSTU_VBYTES 64
#define RECOPS_HSTU_NV 4
#include "hstu/hstu_kernels_impl.h"
#if defined(__x86_64__)
#pragma GCC pop_options
#endif
