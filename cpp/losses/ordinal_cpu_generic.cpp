// SPDX-License-Identifier: Apache-2.0
// Ordinal-loss pre-pass for the baseline instruction set (SSE2 on x86-64; see ordinal_math_impl.h).
#include "losses/ordinal_math.h"

#define RECOPS_LOSS_ISA generic
#include "losses/ordinal_math_impl.h"
