// SPDX-License-Identifier: Apache-2.0
// HSTU attention CPU kernels for the avx512 instruction set (see hstu_kernels_impl.h); chosen at run time.
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "common/parallel.h"
#include "hstu/hstu_plan.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma,avx2")
#define RECOPS_HSTU_ISA avx512
#define RECOPS_HSTU_VBYTES 64
#define RECOPS_HSTU_NV 4
#include "hstu/hstu_kernels_impl.h"
#pragma GCC pop_options
