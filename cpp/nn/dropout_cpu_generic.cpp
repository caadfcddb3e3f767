// SPDX-License-Identifier: Apache-2.0
// Dropout kernel for the generic instruction set (see dropout_impl.h); chosen at run time. Every header comes before
// the pragma.
#include <cstdint>

#include "common/parallel.h"
#include "hstu/attention_dropout.h"
#include "nn/dropout.h"

#define RECOPS_DROPOUT_ISA generic
#define RECOPS_DROPOUT_VBYTES 16
#include "nn/dropout_impl.h"
