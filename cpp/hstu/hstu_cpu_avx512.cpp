// SPDX-License-Identifier: Apache-2.0
// HSTU attention CPU kernels for the avx512 instruction set (see hstu_kernels_impl.h); chosen at run time. Off x86
// this namespace holds portable code (never selected there). Every header comes before the pragma.
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "common/parallel.h"
#include "hstu/hstu_plan.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma,avx2")
#endif
#define RECOPS_HSTU_ISA avx512
#define RECOPS_HSTU_VBYTES 64
#define RECOPS_HSTU_NV 4
#include "hstu/hstu_kernels_impl.h"
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC pop_options
#endif
