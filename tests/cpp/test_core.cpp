// SPDX-License-Identifier: Apache-2.0
// C++ core test driver, built with -fsanitize=address,undefined in CI (RECOPS_BUILD_TESTS, RECOPS_SANITIZE).
// It drives the core directly, valid and invalid inputs, so the sanitizers see every path the Python tests
// reach. Exit code 0 on success; each failure prints its line.
#include <cstdint>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "jagged/jagged.h"

namespace {

int g_failures = 0;

#define EXPECT(cond)                                                  \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                   \
    }                                                                 \
  } while (0)

template <typename Fn>
void expect_value_error(const char* what, const std::string& needle, Fn&& fn) {
  try {
    fn();
    std::fprintf(stderr, "FAIL %s: no exception\n", what);
    ++g_failures;
  } catch (const std::invalid_argument& e) {
    if (std::string(e.what()).find(needle) == std::string::npos) {
      std::fprintf(stderr, "FAIL %s: message '%s' lacks '%s'\n", what, e.what(), needle.c_str());
      ++g_failures;
    }
  }
}

template <typename index_t>
void test_round_trips(int threads) {
  using namespace recops::jagged;
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t batch = rng() % 9;
    const int64_t dim = rng() % 5;
    const int64_t max_len = rng() % 6;
    std::vector<index_t> offsets(batch + 1, 0);
    for (int64_t b = 0; b < batch; ++b) offsets[b + 1] = offsets[b] + static_cast<index_t>(rng() % 8);
    const int64_t total = offsets[batch];
    std::vector<uint32_t> values(total * dim);
    for (auto& v : values) v = rng();
    std::vector<uint32_t> padded(batch * max_len * dim, 1);
    jagged_to_padded<uint32_t, index_t>(values.data(), total, dim, offsets.data(), batch, max_len, 0xABCDu,
                                        padded.data(), threads);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t t = 0; t < max_len; ++t) {
        for (int64_t d = 0; d < dim; ++d) {
          const bool in = t < offsets[b + 1] - offsets[b];
          const uint32_t want = in ? values[(offsets[b] + t) * dim + d] : 0xABCDu;
          EXPECT(padded[(b * max_len + t) * dim + d] == want);
        }
      }
    }
    std::vector<uint32_t> back(total * dim, 1);
    padded_to_jagged<uint32_t, index_t>(padded.data(), batch, max_len, dim, offsets.data(), total, true,
                                        back.data(), threads);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t r = offsets[b]; r < offsets[b + 1]; ++r) {
        for (int64_t d = 0; d < dim; ++d) {
          const uint32_t want = r - offsets[b] < max_len ? values[r * dim + d] : 0u;
          EXPECT(back[r * dim + d] == want);
        }
      }
    }
  }
}

void test_bad_inputs() {
  using namespace recops::jagged;
  float values[8] = {0};
  float out[64] = {0};
  const int64_t bad_start[] = {1, 4, 8};
  const int64_t decreasing[] = {0, 5, 3, 8};
  const int64_t wrong_end[] = {0, 4, 7};
  const int32_t huge_end[] = {0, 4, 2147483647};
  const int64_t negative[] = {0, -5, 8};
  auto j2p = [&](const int64_t* o, int64_t b) {
    return [&values, &out, o, b] {
      jagged_to_padded<uint32_t, int64_t>(reinterpret_cast<uint32_t*>(values), 8, 1, o, b, 4, 0u,
                                          reinterpret_cast<uint32_t*>(out), 2);
    };
  };
  expect_value_error("start", "offsets must start at 0, got offsets[0]=1", j2p(bad_start, 2));
  expect_value_error("decreasing", "non-decreasing, got offsets[1]=5 > offsets[2]=3", j2p(decreasing, 3));
  expect_value_error("end", "offsets[-1] must equal the number of values rows L=8, got 7", j2p(wrong_end, 2));
  expect_value_error("negative", "non-decreasing", j2p(negative, 2));
  expect_value_error("huge", "got 2147483647", [&] {
    jagged_to_padded<uint32_t, int32_t>(reinterpret_cast<uint32_t*>(values), 8, 1, huge_end, 2, 4, 0u,
                                        reinterpret_cast<uint32_t*>(out), 1);
  });
  expect_value_error("max_len", "max_len must be >= 0", [&] {
    const int64_t ok[] = {0, 8};
    jagged_to_padded<uint32_t, int64_t>(reinterpret_cast<uint32_t*>(values), 8, 1, ok, 1, -1, 0u,
                                        reinterpret_cast<uint32_t*>(out), 1);
  });
  expect_value_error("too long", "got length 8 for sequence 0", [&] {
    const int64_t ok[] = {0, 8};
    padded_to_jagged<uint32_t, int64_t>(reinterpret_cast<uint32_t*>(out), 1, 4, 1, ok, 8, false,
                                        reinterpret_cast<uint32_t*>(values), 1);
  });
  expect_value_error("overflow", "overflows int64", [&] {
    const int64_t ok[] = {0, 8};
    jagged_to_padded<uint32_t, int64_t>(reinterpret_cast<uint32_t*>(values), 8, int64_t{1} << 40, ok, 1,
                                        int64_t{1} << 40, 0u, reinterpret_cast<uint32_t*>(out), 1);
  });
}

void test_empty() {
  using namespace recops::jagged;
  const int64_t zero[] = {0};
  // B = 0, L = 0, null data pointers: valid and touches nothing.
  jagged_to_padded<uint16_t, int64_t>(nullptr, 0, 3, zero, 0, 5, uint16_t{0}, nullptr, 2);
  padded_to_jagged<uint16_t, int64_t>(nullptr, 0, 5, 3, zero, 0, false, nullptr, 2);
  const int64_t empties[] = {0, 0, 0};
  uint8_t out[2 * 3 * 2];
  jagged_to_padded<uint8_t, int64_t>(nullptr, 0, 2, empties, 2, 3, uint8_t{9}, out, 2);
  for (uint8_t v : out) EXPECT(v == 9);
}

}  // namespace

int main() {
  for (int threads : {1, 2, 4}) {
    test_round_trips<int32_t>(threads);
    test_round_trips<int64_t>(threads);
  }
  test_bad_inputs();
  test_empty();
  if (g_failures) {
    std::fprintf(stderr, "%d failure(s)\n", g_failures);
    return 1;
  }
  std::printf("recops core tests passed\n");
  return 0;
}
