// SPDX-License-Identifier: Apache-2.0
// HSTU attention CPU kernels for the generic instruction set (see hstu_kernels_impl.h); chosen at run time.
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "common/parallel.h"
#include "hstu/hstu_plan.h"

#define RECOPS_HSTU_ISA generic
#define RECOPS_HSTU_VBYTES 16
#define RECOPS_HSTU_NV 2
#include "hstu/hstu_kernels_impl.h"
