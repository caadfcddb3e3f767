// SPDX-License-Identifier: Apache-2.0
// HSTU attention CPU kernels for the avx2 instruction set (see hstu_kernels_impl.h); chosen at run time.
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "common/parallel.h"
#include "hstu/hstu_plan.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define RECOPS_HSTU_ISA avx2
#define RECOPS_HSTU_VBYTES 32
#define RECOPS_HSTU_NV 2
#include "hstu/hstu_kernels_impl.h"
#pragma GCC pop_options
