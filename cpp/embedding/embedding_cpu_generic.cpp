// SPDX-License-Identifier: Apache-2.0
// Embedding-bag CPU kernels for the baseline x86-64 / any instruction set (see embedding_kernels_impl.h).
#include "embedding/embedding_kernels.h"

#define RECOPS_EMB_ISA generic
#include "embedding/embedding_kernels_impl.h"
