// SPDX-License-Identifier: Apache-2.0
// Sampled-softmax kernels for the generic instruction set (see sampled_softmax_impl.h); chosen at run time.
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/parallel.h"
#include "losses/sampled_softmax.h"

#define RECOPS_SSM_ISA generic
#define RECOPS_SSM_VBYTES 16
#include "losses/sampled_softmax_impl.h"
