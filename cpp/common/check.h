// SPDX-License-Identifier: Apache-2.0
// Input validation for the torch-free core.
//
// RECOPS_CHECK(cond, parts...) throws std::invalid_argument with the concatenated parts when cond is false.
// nanobind turns std::invalid_argument into Python ValueError. Message form (STYLE.md section 4):
//   "<op>: <arg> <rule>, got <value>"
// Checks run before any output is written or any parallel region is entered: an exception must never
// leave an OpenMP region.
#pragma once

#include <sstream>
#include <stdexcept>
#include <utility>

namespace recops {

template <typename... Parts>
[[noreturn]] void throw_value_error(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  throw std::invalid_argument(os.str());
}

}  // namespace recops

#define RECOPS_CHECK(cond, ...)                  \
  do {                                           \
    if (!(cond)) {                               \
      ::recops::throw_value_error(__VA_ARGS__);  \
    }                                            \
  } while (0)
