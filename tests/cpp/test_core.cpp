// SPDX-License-Identifier: Apache-2.0
// C++ core test driver, built with -fsanitize=address,undefined in CI (RECOPS_BUILD_TESTS, RECOPS_SANITIZE).
// It drives the core directly, valid and invalid inputs, so the sanitizers see every path the Python tests
// reach. Exit code 0 on success; each failure prints its line.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/checked_math.h"
#include "embedding/dynamic_table.h"
#include "embedding/embedding_bag.h"
#include "hstu/attention_dropout.h"
#include "hstu/hstu_attention.h"
#include "hstu/hstu_mask.h"
#include "jagged/jagged.h"
#include "losses/ordinal.h"
#include "losses/sampled_softmax.h"
#include "nn/dropout.h"
#include "retrieval/ivf_index.h"
#include "retrieval/topk.h"

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

// The losses' flat argument order of earlier tests, through the core's parameter structs (losses_params.h).
template <typename S>
void ordinal_loss_flat(const S* scores, int64_t n, const S* th, int64_t nt, const int64_t* labels, const S* w,
                       recops::losses::Reduction red, double min_gap, const S* gl, int64_t gls, bool with_grad,
                       S* loss, S* gs, S* gt, int threads) {
  recops::losses::OrdinalParams p;
  p.scores = scores; p.num_samples = n; p.thresholds = th; p.num_thresholds = nt; p.labels = labels;
  p.weights = w; p.reduction = red; p.min_gap = min_gap; p.grad_loss = gl; p.grad_loss_stride = gls;
  p.with_grad = with_grad; p.loss = loss; p.grad_scores = gs; p.grad_thresholds = gt;
  recops::losses::ordinal_logistic_loss<S>(p, threads);
}

template <typename S>
void gnolr_loss_flat(const S* cos, int64_t n, int64_t t, const S* gamma, const S* th, const int64_t* levels,
                     const S* w, recops::losses::Reduction red, double min_gap, bool nested, const S* gl,
                     int64_t gls, bool with_grad, S* loss, S* gc, S* gg, S* gt, int threads) {
  recops::losses::GnolrParams p;
  p.cos = cos; p.num_samples = n; p.num_levels = t; p.gamma = gamma; p.thresholds = th; p.labels = levels;
  p.weights = w; p.reduction = red; p.min_gap = min_gap; p.nested = nested; p.grad_loss = gl;
  p.grad_loss_stride = gls; p.with_grad = with_grad; p.loss = loss; p.grad_cos = gc; p.grad_gamma = gg;
  p.grad_thresholds = gt;
  recops::losses::gnolr_loss<S>(p, threads);
}

// The top-k's flat argument order of earlier tests, through the core's parameter struct (retrieval_params.h).
void topk_flat(const float* q, int64_t nq, int64_t dim, const float* e, int64_t n, const float* bias,
               const int64_t* ex, const int64_t* exo, int64_t nex, int64_t k, float* s, int64_t* ids, int threads) {
  recops::retrieval::TopkParams p;
  p.queries = q; p.num_queries = nq; p.dim = dim; p.items = e; p.num_items = n; p.item_bias = bias;
  p.exclude_ids = ex; p.exclude_offsets = exo; p.num_excludes = nex; p.k = k; p.out_scores = s; p.out_ids = ids;
  recops::retrieval::topk_inner_product(p, threads);
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

// Naive GNOLR loss of one sample from the definition: P(k) from sigmoid differences, nested sum of sub-tasks.
double naive_gnolr(const std::vector<double>& c, const std::vector<double>& gamma, const std::vector<double>& a,
                   int64_t k, bool nested) {
  const int64_t t_max = static_cast<int64_t>(gamma.size());
  std::vector<double> ge(t_max + 2, 0.0);  // P(level >= t), t = 0..T+1
  ge[0] = 1.0;
  double s = 0;
  for (int64_t t = 1; t <= t_max; ++t) {
    s += gamma[t - 1] * c[t - 1];
    ge[t] = 1.0 / (1.0 + std::exp(-(s - a[t - 1])));
  }
  auto prob = [&](int64_t j, int64_t sub) { return ge[j] - (j == sub ? 0.0 : ge[j + 1]); };
  if (!nested) return -std::log(prob(k, t_max));
  double loss = 0;
  for (int64_t sub = 1; sub <= t_max; ++sub) loss -= std::log(prob(std::min(k, sub), sub));
  return loss;
}

void test_losses(int threads) {
  using namespace recops::losses;
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  for (int64_t t_max : {1, 2, 3, 5}) {
    for (bool nested : {true, false}) {
      const int64_t batch = 4100;  // spans three reduction blocks
      std::vector<double> gamma(t_max), a(t_max), c(batch * t_max), loss(batch), w(batch);
      std::vector<int64_t> levels(batch);
      double prev = -1.0;
      for (int64_t t = 0; t < t_max; ++t) {
        gamma[t] = 1.0 + 0.5 * (unit(rng) + 1.0);
        a[t] = prev + gamma[t] + 0.5;  // keeps z_t > z_{t+1}: the naive formula stays valid
        prev = a[t];
      }
      for (auto& v : c) v = unit(rng);
      for (auto& v : w) v = 0.5 + 0.5 * unit(rng);
      for (auto& k : levels) k = static_cast<int64_t>(rng() % (t_max + 1));
      gnolr_loss_flat<double>(c.data(), batch, t_max, gamma.data(), a.data(), levels.data(), w.data(), Reduction::kNone,
                         1e-6, nested, nullptr, 0, false, loss.data(), nullptr, nullptr, nullptr, threads);
      double sum = 0;
      for (int64_t b = 0; b < batch; ++b) {
        const std::vector<double> row(c.begin() + b * t_max, c.begin() + (b + 1) * t_max);
        const double want = w[b] * naive_gnolr(row, gamma, a, levels[b], nested);
        EXPECT(std::abs(loss[b] - want) <= 1e-9 * (1.0 + std::abs(want)));
        sum += loss[b];
      }
      // fused mean + gradient; d/d a_0 against a central difference of the mean loss
      double mean = 0;
      std::vector<double> gc(batch * t_max), gg(t_max), ga(t_max);
      gnolr_loss_flat<double>(c.data(), batch, t_max, gamma.data(), a.data(), levels.data(), w.data(), Reduction::kMean,
                         1e-6, nested, nullptr, 0, true, &mean, gc.data(), gg.data(), ga.data(), threads);
      EXPECT(std::abs(mean - sum / batch) <= 1e-9 * (1.0 + std::abs(mean)));
      const double h = 1e-6;
      double up = 0, down = 0;
      a[0] += h;
      gnolr_loss_flat<double>(c.data(), batch, t_max, gamma.data(), a.data(), levels.data(), w.data(), Reduction::kMean,
                         1e-6, nested, nullptr, 0, false, &up, nullptr, nullptr, nullptr, threads);
      a[0] -= 2 * h;
      gnolr_loss_flat<double>(c.data(), batch, t_max, gamma.data(), a.data(), levels.data(), w.data(), Reduction::kMean,
                         1e-6, nested, nullptr, 0, false, &down, nullptr, nullptr, nullptr, threads);
      a[0] += h;
      EXPECT(std::abs(ga[0] - (up - down) / (2 * h)) <= 1e-5 * (1.0 + std::abs(ga[0])));
    }
  }
  // ordinal loss, float: K = 4 classes, against -log(sigmoid(theta_{k+1} - f) - sigmoid(theta_k - f))
  const float th[] = {-1.0f, 0.5f, 2.0f};
  std::vector<float> scores(300), out(300), gs(300);
  std::vector<int64_t> labels(300);
  float gt[3];
  for (size_t b = 0; b < scores.size(); ++b) {
    scores[b] = static_cast<float>(3.0 * unit(rng));
    labels[b] = static_cast<int64_t>(rng() % 4);
  }
  ordinal_loss_flat<float>(scores.data(), 300, th, 3, labels.data(), nullptr, Reduction::kNone, 1e-6, nullptr,
                               0, true, out.data(), gs.data(), gt, threads);
  for (size_t b = 0; b < scores.size(); ++b) {
    const int64_t k = labels[b];
    auto cdf = [&](int64_t j) {  // P(y <= j - 1)
      return j == 0 ? 0.0 : j == 4 ? 1.0 : 1.0 / (1.0 + std::exp(-(double(th[j - 1]) - scores[b])));
    };
    const double want = -std::log(cdf(k + 1) - cdf(k));
    EXPECT(std::abs(out[b] - want) <= 1e-5 * (1.0 + want));
  }
}

void test_losses_bad_inputs() {
  using namespace recops::losses;
  const float scores[] = {0.f, 1.f, 2.f};
  const int64_t labels[] = {0, 3, 1};
  const int64_t negative[] = {0, 1, -2};
  const float ordered[] = {0.f, 1.f};
  const float tied[] = {1.f, 1.f};
  float loss[3];
  auto olr = [&](const float* th, const int64_t* lab, double gap) {
    return [=, &loss] {
      ordinal_loss_flat<float>(scores, 3, th, 2, lab, nullptr, Reduction::kNone, gap, nullptr, 0, false, loss,
                                   nullptr, nullptr, 2);
    };
  };
  expect_value_error("label high", "labels[1] must be in [0, 3), got 3", olr(ordered, labels, 1e-6));
  expect_value_error("label negative", "labels[2] must be in [0, 3), got -2", olr(ordered, negative, 1e-6));
  expect_value_error("tied", "thresholds must be strictly increasing, got thresholds[0]=1 >= thresholds[1]=1",
                     olr(tied, negative, 1e-6));
  expect_value_error("min_gap", "min_gap must be finite and > 0", olr(ordered, negative, 0.0));
  const float cos[] = {0.f, 0.f, 0.f};
  const int64_t levels[] = {0, 2, 1};
  expect_value_error("level", "levels[1] must be in [0, 2), got 2", [&] {
    gnolr_loss_flat<float>(cos, 3, 1, ordered, ordered, levels, nullptr, Reduction::kSum, 1e-6, true, nullptr, 0, false,
                      loss, nullptr, nullptr, nullptr, 1);
  });
  // B = 0 with null data: valid; the reduced loss is 0 and the parameter gradients are zero.
  double sum = 7, gg[2] = {7, 7}, ga[2] = {7, 7};
  const double g2[] = {1, 1}, a2[] = {1, 2};
  gnolr_loss_flat<double>(nullptr, 0, 2, g2, a2, nullptr, nullptr, Reduction::kMean, 1e-6, true, nullptr, 0, true, &sum,
                     nullptr, gg, ga, 2);
  EXPECT(sum == 0 && gg[0] == 0 && gg[1] == 0 && ga[0] == 0 && ga[1] == 0);
}

// Sampled softmax: L=2 rows, D=2, V=3, shared negatives {2, 0}, against losses and gradients worked by hand;
// then ids out of range, overflowing sizes and a temperature beyond float rejected before anything is written.
recops::losses::SampledSoftmaxParams ssm_tiny(const double* q, const double* e, const int64_t* pos,
                                              const int64_t* neg, double* loss, double* lse) {
  recops::losses::SampledSoftmaxParams p;
  p.queries = q; p.items = e; p.num_rows = 2; p.dim = 2; p.num_items = 3; p.positives = pos; p.negatives = neg;
  p.num_negatives = 2; p.loss = loss; p.lse = lse;
  return p;
}

void test_sampled_softmax(int threads) {
  using namespace recops::losses;
  const double q[] = {1, 0, 0, 2};        // q0 = (1, 0), q1 = (0, 2)
  const double e[] = {1, 0, 0, 1, 1, 1};  // e0 = (1, 0), e1 = (0, 1), e2 = (1, 1)
  const int64_t pos[] = {0, 1}, neg[] = {2, 0};
  double loss[2] = {-1, -1}, lse[2] = {-1, -1};
  SampledSoftmaxParams p = ssm_tiny(q, e, pos, neg, loss, lse);
  sampled_softmax_forward<double>(p, threads);
  // row 0: candidates (0, 2, 0), the repeat of the positive masked: logits (1, 1) -> log 2.
  // row 1: candidates (1, 2, 0): logits (2, 2, 0) -> log(2 e^2 + 1) - 2.
  const double s = 2 * std::exp(2.0) + 1;
  EXPECT(std::abs(loss[0] - std::log(2.0)) < 1e-12);
  EXPECT(std::abs(loss[1] - (std::log(s) - 2)) < 1e-12);
  EXPECT(std::abs(lse[0] - (1 + std::log(2.0))) < 1e-12);
  // backward, grad_loss = 1: dq_i = sum_j (p_j - [j == 0]) e_{c_j}, de_{c_j} += (p_j - [j == 0]) q_i
  const double g[] = {1, 1};
  double gq[4], ge[6];
  std::fill(ge, ge + 6, 7.0);  // fully written
  p.grad_loss = g; p.grad_queries = gq; p.grad_items = ge;
  sampled_softmax_backward<double>(p, threads);
  const double want_gq[] = {0, 0.5, (std::exp(2.0) + 1) / s, -1 / s};
  const double want_ge[] = {-0.5, 2 / s, 0, -2 * (std::exp(2.0) + 1) / s, 0.5, 2 * std::exp(2.0) / s};
  for (int k = 0; k < 4; ++k) EXPECT(std::abs(gq[k] - want_gq[k]) < 1e-12);
  for (int k = 0; k < 6; ++k) EXPECT(std::abs(ge[k] - want_ge[k]) < 1e-12);
  // without hit removal row 0 scores three equal logits: log 3; temperature 1/2 doubles row 1's logits
  p.remove_accidental_hits = false;
  p.inv_temperature = 2.0;
  sampled_softmax_forward<double>(p, threads);
  EXPECT(std::abs(loss[0] - std::log(3.0)) < 1e-12);
  EXPECT(std::abs(loss[1] - (std::log(2 * std::exp(4.0) + 1) - 4)) < 1e-12);
  // L = 0 with an empty per-row table [0, M] (a null pointer from an empty tensor): valid, nothing written
  SampledSoftmaxParams empty = ssm_tiny(q, e, nullptr, nullptr, nullptr, nullptr);
  empty.num_rows = 0;
  empty.per_row = true;
  sampled_softmax_forward<double>(empty, threads);
  empty.grad_items = ge;
  sampled_softmax_backward<double>(empty, threads);
  for (int k = 0; k < 6; ++k) EXPECT(ge[k] == 0);
  // generated negatives are negative_id's, in [0, V)
  int64_t ids[12];
  sampled_softmax_negatives(3, 4, 5, 42, ids);
  for (int64_t k = 0; k < 12; ++k) EXPECT(ids[k] == negative_id(42, k / 4, k % 4, 5) && ids[k] >= 0 && ids[k] < 5);

  // bad input: the outputs stay untouched
  loss[0] = loss[1] = -1;
  auto forward = [threads](SampledSoftmaxParams bad) {
    return [bad, threads] { sampled_softmax_forward<double>(bad, threads); };
  };
  const int64_t pos_high[] = {0, 3}, neg_low[] = {2, -1}, neg_huge[] = {int64_t{1} << 40, 0};
  p = ssm_tiny(q, e, pos_high, neg, loss, lse);
  expect_value_error("ssm positive", "sampled_softmax_loss: positives[1] must be in [0, 3), got 3", forward(p));
  p = ssm_tiny(q, e, pos, neg_low, loss, lse);
  expect_value_error("ssm negative", "negatives[1] must be in [0, 3), got -1", forward(p));
  p = ssm_tiny(q, e, pos, neg_huge, loss, lse);
  expect_value_error("ssm huge id", "negatives[0] must be in [0, 3), got 1099511627776", forward(p));
  p = ssm_tiny(q, e, pos, neg, loss, lse);
  p.inv_temperature = 0;
  expect_value_error("ssm temperature", "temperature must be finite and > 0", forward(p));
  p.inv_temperature = std::numeric_limits<double>::infinity();
  expect_value_error("ssm temperature inf", "temperature must be finite and > 0", forward(p));
  EXPECT(loss[0] == -1 && loss[1] == -1);
  // generated M near 2^62: the scratch bytes overflow int64 (checked, no allocation attempted)
  p = ssm_tiny(q, e, pos, nullptr, loss, lse);
  p.generate = true;
  p.num_negatives = int64_t{1} << 62;
  expect_value_error("ssm scratch", "scratch bytes overflows int64", forward(p));
  p.num_negatives = std::numeric_limits<int64_t>::max();
  expect_value_error("ssm candidates", "number of candidates overflows int64", forward(p));
  p.num_negatives = 2;
  p.negatives = neg;
  expect_value_error("ssm generate+ids", "negatives must be null when they are generated", forward(p));
  // float: 1/temperature beyond FLT_MAX would turn every logit into inf or nan
  const float qf[] = {1, 0, 0, 2}, ef[] = {1, 0, 0, 1, 1, 1};
  float lf[2] = {-1, -1}, lsef[2];
  SampledSoftmaxParams pf = ssm_tiny(nullptr, nullptr, pos, neg, nullptr, nullptr);
  pf.queries = qf; pf.items = ef; pf.loss = lf; pf.lse = lsef; pf.inv_temperature = 1e39;
  expect_value_error("ssm float temperature", "1/temperature overflows the float type",
                     [&] { sampled_softmax_forward<float>(pf, threads); });
  EXPECT(lf[0] == -1);
  // rows * m overflowing int64 is rejected before it is used (no signed overflow), and V = 0 with draws
  expect_value_error("ssm draws overflow", "rows * m overflows int64",
                     [] { sampled_softmax_negatives(int64_t{1} << 40, int64_t{1} << 40, 0, 1, nullptr); });
  expect_value_error("ssm draws no items", "needs at least 1 item",
                     [] { sampled_softmax_negatives(2, 3, 0, 1, nullptr); });
}

const int32_t kZeroOffsets[1] = {0};

// Two features over two tables in one flat buffer; forward vs a naive loop, fused SGD vs a naive update,
// dense gradient, int8 rows, and bad input that must throw before anything changes.
void test_embedding(int threads) {
  using namespace recops::embedding;
  const int64_t batch = 3, total_dim = 5;
  // Table 0: 4 rows x D=3 at element 0; table 1: 2 rows x D=2 at element 12 (global rows 4..5).
  std::vector<float> w(16);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.25f * static_cast<float>(i) - 1.f;
  const int64_t meta[2 * kMetaCols] = {0, 0, 4, 3, 3, 0, 0, 12, 4, 2, 2, 2, 1, 3};
  const std::vector<int64_t> idx = {0, 3, 3, 1, 1, 0, 1};
  const std::vector<int64_t> off = {0, 2, 2, 4, 5, 5, 7};  // feature 0 bags: {0,3},{},{3,1}; feature 1: {1},{},{0,1}
  std::vector<float> out(batch * total_dim, 9.f);
  embedding_bags_forward<float, int64_t>("emb", w.data(), 16, meta, 2, idx.data(), 7, off.data(), batch, nullptr,
                                         out.data(), total_dim, nullptr, threads);
  auto row = [&](int64_t f, int64_t r, int64_t d) { return f == 0 ? w[r * 3 + d] : w[12 + r * 2 + d]; };
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t f = 0; f < 2; ++f) {
      const int64_t j = f * batch + b, dim = f == 0 ? 3 : 2, col = f == 0 ? 0 : 3;
      for (int64_t d = 0; d < dim; ++d) {
        float want = 0;
        for (int64_t i = off[j]; i < off[j + 1]; ++i) want += row(f, idx[i], d);
        if (f == 1 && off[j + 1] > off[j]) want /= static_cast<float>(off[j + 1] - off[j]);
        EXPECT(std::fabs(out[b * total_dim + col + d] - want) < 1e-6f);
      }
    }
  }
  // Fused SGD: every touched row moves by -lr * (sum of its gradients); untouched row 2 stays.
  std::vector<float> grad(batch * total_dim, 1.f), w2 = w, gw(16, 0.f);
  UpdateParams sgd;
  sgd.kind = Update::kSgd;
  sgd.lr = 0.5f;
  embedding_bags_backward<float, int64_t>("emb", w2.data(), 16, meta, 2, idx.data(), 7, off.data(), batch, nullptr,
                                          nullptr, grad.data(), total_dim, sgd, nullptr, nullptr, nullptr, 0, 0,
                                          nullptr, threads);
  EXPECT(std::fabs(w2[0] - (w[0] - 0.5f)) < 1e-6f && std::fabs(w2[9] - (w[9] - 1.0f)) < 1e-6f);
  EXPECT(w2[6] == w[6]);                                          // table 0 row 2 untouched
  EXPECT(std::fabs(w2[14] - (w[14] - 0.5f * 1.5f)) < 1e-6f);      // table 1 row 1: 1 + 1/2 (mean)
  UpdateParams dense;
  embedding_bags_backward<float, int64_t>("emb", w.data(), 16, meta, 2, idx.data(), 7, off.data(), batch, nullptr,
                                          nullptr, grad.data(), total_dim, dense, gw.data(), nullptr, nullptr, 0, 0,
                                          nullptr, threads);
  EXPECT(gw[9] == 2.f && gw[3] == 1.f && gw[6] == 0.f && std::fabs(gw[12] - 0.5f) < 1e-6f);
  // Bad index / offsets / meta: throw, and nothing is written.
  std::vector<int64_t> bad = idx;
  bad[6] = 2;  // feature 1 has 2 rows
  const std::vector<float> before = w2;
  expect_value_error("emb index", "indices[2] of feature 1 must be in [0, 2), got 2", [&] {
    embedding_bags_forward<float, int64_t>("emb", w.data(), 16, meta, 2, bad.data(), 7, off.data(), batch, nullptr,
                                           out.data(), total_dim, nullptr, threads);
  });
  expect_value_error("emb index bwd", "must be in [0, 2)", [&] {
    embedding_bags_backward<float, int64_t>("emb", w2.data(), 16, meta, 2, bad.data(), 7, off.data(), batch,
                                            nullptr, nullptr, grad.data(), total_dim, sgd, nullptr, nullptr, nullptr,
                                            0, 0, nullptr, threads);
  });
  EXPECT(w2 == before);
  const std::vector<int64_t> bad_off = {0, 2, 1, 4, 5, 5, 7};
  expect_value_error("emb offsets", "non-decreasing", [&] {
    embedding_bags_forward<float, int64_t>("emb", w.data(), 16, meta, 2, idx.data(), 7, bad_off.data(), batch,
                                           nullptr, out.data(), total_dim, nullptr, threads);
  });
  expect_value_error("emb meta", "beyond the weights buffer", [&] {
    embedding_bags_forward<float, int64_t>("emb", w.data(), 15, meta, 2, idx.data(), 7, off.data(), batch, nullptr,
                                           out.data(), total_dim, nullptr, threads);
  });
  expect_value_error("emb state", "optimizer state must have", [&] {
    UpdateParams rw;
    rw.kind = Update::kRowwiseAdagrad;
    float st[3] = {0, 0, 0};
    embedding_bags_backward<float, int64_t>("emb", w2.data(), 16, meta, 2, idx.data(), 7, off.data(), batch,
                                            nullptr, nullptr, grad.data(), total_dim, rw, nullptr, st, nullptr, 3, 0,
                                            nullptr, threads);
  });
  // int8 rowwise: one 2-dim row with scale 0.5, bias -1 -> codes {2, 4} read as {0, 1}.
  uint8_t q[10] = {2, 4};
  const float sb[2] = {0.5f, -1.f};
  std::memcpy(q + 2, sb, 8);
  const int64_t qmeta[kMetaCols] = {0, 0, 1, 2, 10, 0, 0};
  const int64_t qidx[1] = {0}, qoff[2] = {0, 1};
  float qout[2] = {7, 7};
  embedding_bags_forward<uint8_t, int64_t>("emb", q, 10, qmeta, 1, qidx, 1, qoff, 1, nullptr, qout, 2, nullptr,
                                           threads);
  EXPECT(qout[0] == 0.f && qout[1] == 1.f);
  // Empty: B = 0 and L = 0 with null data.
  embedding_bags_forward<float, int32_t>("emb", nullptr, 0, nullptr, 0, nullptr, 0, kZeroOffsets, 0, nullptr, nullptr,
                                         0, nullptr, threads);
}

// Overflow: every meta entry near 2^63 (and batch * total_dim, num_features * batch) must raise before a kernel
// reads or writes; before the checked arithmetic these wrapped, passed the bounds test and ran out of bounds.
void test_embedding_overflow() {
  using namespace recops::embedding;
  constexpr int64_t kBig = std::numeric_limits<int64_t>::max();
  std::vector<float> w(16, 1.f), out(8, 5.f), grad(8, 1.f), state(16, 0.f);
  const int64_t idx[2] = {0, 1}, off[2] = {0, 2};
  UpdateParams sgd;
  sgd.kind = Update::kSgd;
  sgd.lr = 0.1f;
  struct Case { const char* what; std::array<int64_t, kMetaCols> meta; const char* needle; };
  const Case cases[] = {
      {"weight_offset", {kBig - 5, 0, 4, 4, 4, 0, 0}, "weight_offset + rows * row_stride overflows"},
      {"rows*stride", {0, 0, int64_t{1} << 62, 4, 4, 0, 0}, "weight_offset + rows * row_stride overflows"},
      {"out_column", {0, 0, 4, 4, 4, 0, kBig - 2}, "out_column + dim overflows"},
      {"row_offset", {0, kBig - 1, 4, 4, 4, 0, 0}, "row_offset + rows overflows"},
      {"negative", {0, 0, 4, -4, -4, 0, 0}, "must be non-negative"},
  };
  for (const Case& c : cases) {
    expect_value_error(c.what, c.needle, [&] {
      embedding_bags_forward<float, int64_t>("emb", w.data(), 16, c.meta.data(), 1, idx, 2, off, 1, nullptr,
                                             out.data(), 4, nullptr, 1);
    });
    expect_value_error(c.what, c.needle, [&] {
      embedding_bags_backward<float, int64_t>("emb", w.data(), 16, c.meta.data(), 1, idx, 2, off, 1, nullptr,
                                              nullptr, grad.data(), 4, sgd, nullptr, nullptr, nullptr, 0, 0,
                                              nullptr, 1);
    });
    expect_value_error(c.what, c.needle, [&] {
      check_embedding_meta("emb", 16, false, c.meta.data(), 1, 4, false, -1, -1);
    });
  }
  EXPECT(out == std::vector<float>(8, 5.f) && w == std::vector<float>(16, 1.f));
  // int8 rows: dim + 8 must not wrap to the stride.
  const int64_t qmeta[kMetaCols] = {0, 0, 1, kBig - 4, 4, 0, 0};  // dim + 8 would wrap
  uint8_t q[16] = {};
  expect_value_error("int8 stride", "dim + 8 (int8 row stride) overflows", [&] {
    embedding_bags_forward<uint8_t, int64_t>("emb", q, 16, qmeta, 1, idx, 2, off, 1, nullptr, out.data(), 4,
                                             nullptr, 1);
  });
  // Rowwise Adagrad state rows: row_offset + rows checked against the state.
  const int64_t rmeta[kMetaCols] = {0, 2, 4, 4, 4, 0, 0};
  UpdateParams rw;
  rw.kind = Update::kRowwiseAdagrad;
  expect_value_error("state rows", "optimizer state must have 6 rows, got 4", [&] {
    embedding_bags_backward<float, int64_t>("emb", w.data(), 16, rmeta, 1, idx, 2, off, 1, nullptr, nullptr,
                                            grad.data(), 4, rw, nullptr, state.data(), nullptr, 4, 0, nullptr, 1);
  });
  // batch * total_dim and num_features * batch.
  const int64_t zero_off[1] = {0};
  expect_value_error("batch*total_dim", "batch * total_dim overflows", [&] {
    embedding_bags_forward<float, int64_t>("emb", w.data(), 16, nullptr, 0, idx, 0, zero_off, int64_t{1} << 40,
                                           nullptr, out.data(), int64_t{1} << 40, nullptr, 1);
  });
  const int64_t meta4[2 * kMetaCols] = {0, 0, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 0, 0};
  expect_value_error("features*batch", "size product overflows", [&] {
    embedding_bags_forward<float, int64_t>("emb", w.data(), 16, meta4, 2, idx, 2, off, int64_t{1} << 62, nullptr,
                                           out.data(), 4, nullptr, 1);
  });
  // Columns no feature writes are zeroed, argmax -1 (was: left uninitialised).
  const int64_t gmeta[kMetaCols] = {0, 0, 4, 2, 2, 2, 1};  // max pooling into columns [1, 3) of 4
  std::vector<float> gout(4, 7.f);
  std::vector<int64_t> am(4, 99);
  EXPECT(check_embedding_meta("emb", 16, false, gmeta, 1, 4, false, -1, -1));
  const int64_t fmeta[kMetaCols] = {0, 0, 4, 2, 2, 0, 0};
  EXPECT(!check_embedding_meta("emb", 16, false, fmeta, 1, 2, false, -1, -1));
  embedding_bags_forward<float, int64_t>("emb", w.data(), 16, gmeta, 1, idx, 2, off, 1, nullptr, gout.data(), 4,
                                         am.data(), 1);
  EXPECT(gout[0] == 0.f && gout[3] == 0.f && gout[1] == 1.f && gout[2] == 1.f);
  EXPECT(am[0] == -1 && am[3] == -1 && am[1] >= 0 && am[2] >= 0);
  // checked helpers themselves.
  EXPECT(recops::checked_add(3, 4, "t") == 7 && recops::checked_end(1, 2, 3, "t") == 7);
  expect_value_error("add", "t: size sum overflows int64", [&] { recops::checked_add(kBig, 1, "t"); });
  expect_value_error("mul", "t: size product overflows int64", [&] { recops::checked_mul(kBig / 2, 3, "t"); });
  expect_value_error("end", "t: range end overflows", [&] { recops::checked_end(1, kBig, 1, "t"); });
  expect_value_error("neg", "must be non-negative", [&] { recops::checked_add(-1, 1, "t"); });
}

// The backward's wide-row sort (2^17 rows, 20k keys: partition + in-cache bucket sorts, runs found per bucket):
// the dense gradient of sum pooling (keys per bag) and of per-sample weights (keys per position) against a naive
// scatter. Gradients are small integers, so every sum is exact whatever the order.
void test_embedding_wide(int threads) {
  using namespace recops::embedding;
  const int64_t rows = 100'000, dim = 2, batch = 500, n = 20'000;
  const int64_t meta[kMetaCols] = {0, 0, rows, dim, dim, 0, 0};
  std::vector<int64_t> idx(n), off(batch + 1);
  uint64_t s = 12345;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const int64_t r = static_cast<int64_t>((s >> 33) % rows);
    idx[i] = i % 3 == 0 ? (r % 7) * 14'000 : r;  // a third of the keys on 7 hot rows
  }
  for (int64_t b = 0; b <= batch; ++b) off[b] = b * n / batch;
  std::vector<float> grad(batch * dim), psw(n);
  for (int64_t e = 0; e < batch * dim; ++e) grad[e] = static_cast<float>(e % 5) - 2.f;
  for (int64_t i = 0; i < n; ++i) psw[i] = static_cast<float>(i % 3);
  std::vector<float> w(rows * dim, 0.f);
  for (const float* weights : {static_cast<const float*>(nullptr), static_cast<const float*>(psw.data())}) {
    std::vector<float> want(rows * dim, 0.f), got(rows * dim, 7.f);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = off[b]; i < off[b + 1]; ++i) {
        for (int64_t d = 0; d < dim; ++d) want[idx[i] * dim + d] += (weights ? weights[i] : 1.f) * grad[b * dim + d];
      }
    }
    std::fill(got.begin(), got.end(), 0.f);
    std::vector<float> gpsw(n);
    UpdateParams dense;
    embedding_bags_backward<float, int64_t>("emb", w.data(), rows * dim, meta, 1, idx.data(), n, off.data(), batch,
                                            weights, nullptr, grad.data(), dim, dense, got.data(), nullptr, nullptr,
                                            0, 0, weights ? gpsw.data() : nullptr, threads);
    EXPECT(got == want);
  }
}

// Brute-force top-k with the op's ordering (score desc, id asc), NaN and excluded rows skipped.
void brute_topk(const std::vector<float>& q, int64_t nq, int64_t dim, const std::vector<float>& e, int64_t n,
                const std::vector<int64_t>& ex, const std::vector<int64_t>& exo, int64_t k, std::vector<float>& s,
                std::vector<int64_t>& ids) {
  s.assign(nq * k, -INFINITY);
  ids.assign(nq * k, -1);
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<std::pair<float, int64_t>> all;
    for (int64_t j = 0; j < n; ++j) {
      bool skip = false;
      for (int64_t t = exo.empty() ? 0 : exo[i]; !exo.empty() && t < exo[i + 1]; ++t) skip |= ex[t] == j;
      float acc = 0;
      for (int64_t d = 0; d < dim; ++d) acc += q[i * dim + d] * e[j * dim + d];
      if (!skip && !std::isnan(acc)) all.emplace_back(acc, j);
    }
    std::sort(all.begin(), all.end(),
              [](auto a, auto b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    for (int64_t t = 0; t < k && t < static_cast<int64_t>(all.size()); ++t) {
      s[i * k + t] = all[t].first;
      ids[i * k + t] = all[t].second;
    }
  }
}

void test_topk(int threads) {
  using namespace recops::retrieval;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> small(-2, 2);  // integer data: exact sums, many ties
  for (auto [nq, n, dim, k] : {std::array<int64_t, 4>{1, 3000, 5, 7}, {9, 700, 3, 40}, {130, 300, 4, 301},
                               {2, 0, 4, 3}, {3, 10, 0, 4}, {130, 300, 300, 5}}) {
    std::vector<float> q(nq * dim), e(n * dim);
    for (auto& v : q) v = static_cast<float>(small(rng));
    for (auto& v : e) v = static_cast<float>(small(rng));
    std::vector<int64_t> exo(nq + 1, 0), ex;
    for (int64_t i = 0; i < nq; ++i) {
      for (int t = 0; t < static_cast<int>(i % 4) && n > 0; ++t) ex.push_back((i * 7 + t * 13) % n);
      exo[i + 1] = static_cast<int64_t>(ex.size());
    }
    std::vector<float> s(nq * k), rs;
    std::vector<int64_t> ids(nq * k), rids;
    topk_flat(q.data(), nq, dim, e.data(), n, nullptr, ex.data(), exo.data(),
                       static_cast<int64_t>(ex.size()), k, s.data(), ids.data(), threads);
    brute_topk(q, nq, dim, e, n, ex, exo, k, rs, rids);
    EXPECT(ids == rids);
    EXPECT(s == rs);
  }
}

void test_topk_bad_inputs() {
  using namespace recops::retrieval;
  const float q[4] = {1, 2, 3, 4}, e[8] = {};
  float s[8];
  int64_t ids[8];
  const int64_t good_off[] = {0, 1, 2}, bad_off[] = {0, 2, 1}, ex_huge[] = {0, int64_t{1} << 62}, ex_neg[] = {-1, 0};
  expect_value_error("k=0", "k must be >= 1, got 0",
                     [&] { topk_flat(q, 2, 2, e, 4, nullptr, nullptr, nullptr, 0, 0, s, ids, 2); });
  expect_value_error("huge id", "exclude_ids[1] must be in [0, 4), got 4611686018427387904", [&] {
    topk_flat(q, 2, 2, e, 4, nullptr, ex_huge, good_off, 2, 2, s, ids, 2);
  });
  expect_value_error("negative id", "exclude_ids[0] must be in [0, 4), got -1", [&] {
    topk_flat(q, 2, 2, e, 4, nullptr, ex_neg, good_off, 2, 2, s, ids, 2);
  });
  expect_value_error("offsets", "exclude_offsets", [&] {
    topk_flat(q, 2, 2, e, 4, nullptr, ex_neg, bad_off, 2, 2, s, ids, 2);
  });
  expect_value_error("overflow", "overflows", [&] {
    topk_flat(q, 2, 2, e, 4, nullptr, nullptr, nullptr, 0, int64_t{1} << 62, s, ids, 2);
  });
  expect_value_error("kmeans", "nlist must be in [1, n=2]", [&] {
    float c[6];
    kmeans(q, 2, 2, 3, 1, 0, true, c, 2);
  });
  IvfView v;
  const int64_t list_off[] = {0, 3, 2};
  const float cent[4] = {1, 0, 0, 1}, scale[2] = {1, 1};
  const int64_t vid[2] = {5, 6};
  v.centroids = cent;
  v.list_scale = scale;
  v.list_offsets = list_off;
  v.num_lists = 2;
  v.dim = 2;
  v.num_vectors = 2;
  v.codes = q;
  v.vectors = q;
  v.ids = vid;
  expect_value_error("ivf offsets", "list_offsets", [&] {
    ivf_search(v, q, 1, 1, 1, 0, nullptr, nullptr, 0, s, ids, 2);
  });
  const int64_t fixed_off[] = {0, 1, 2};
  v.list_offsets = fixed_off;
  expect_value_error("ivf nprobe", "nprobe must be >= 1", [&] {
    ivf_search(v, q, 1, 0, 1, 0, nullptr, nullptr, 0, s, ids, 2);
  });
  // Valid: both lists probed, k = 3 > n pads; vectors (1,2) and (3,4) against query (1,2): 5 and 11.
  ivf_search(v, q, 1, 2, 3, 4, nullptr, nullptr, 0, s, ids, 2);
  EXPECT(ids[0] == 6 && ids[1] == 5 && ids[2] == -1 && s[0] == 11.0f && s[1] == 5.0f && std::isinf(s[2]));
  const int64_t ex6[] = {6}, ex_off[] = {0, 1};
  ivf_search(v, q, 1, 2, 3, 0, ex6, ex_off, 1, s, ids, 2);
  EXPECT(ids[0] == 5 && ids[1] == -1);
}

}  // namespace

// ---- SIMD math (cpp/common/simd_math.inc) against libm ---------------------------------------------------

namespace simd_test {
#include "common/simd_math.inc"
}  // namespace simd_test

typedef float simd_v8f __attribute__((vector_size(32)));

// Distance in units in the last place between two finite floats of the same sign class (ordered bit patterns).
int64_t ulp_distance(float a, float b) {
  auto key = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    return i < 0 ? static_cast<int64_t>(INT32_MIN) - i : static_cast<int64_t>(i);
  };
  const int64_t d = key(a) - key(b);
  return d < 0 ? -d : d;
}

// Max ulp of fn against ref (double libm, rounded to float) over float bit patterns [lo_bits, hi_bits] by `step`.
template <typename Fn, typename Ref>
int64_t max_ulp(uint32_t lo_bits, uint32_t hi_bits, uint32_t step, Fn fn, Ref ref, float* worst) {
  int64_t worst_ulp = 0;
  simd_v8f x{};
  uint32_t lane_bits[8];
  int lane = 0;
  auto flush = [&](int n) {
    const simd_v8f y = fn(x);
    for (int l = 0; l < n; ++l) {
      float xf;
      std::memcpy(&xf, &lane_bits[l], 4);
      const float want = static_cast<float>(ref(static_cast<double>(xf)));
      const int64_t u = ulp_distance(y[l], want);
      if (u > worst_ulp) {
        worst_ulp = u;
        *worst = xf;
      }
    }
  };
  for (uint64_t b = lo_bits; b <= hi_bits; b += step) {
    lane_bits[lane] = static_cast<uint32_t>(b);
    std::memcpy(&x[lane], &lane_bits[lane], 4);
    if (++lane == 8) {
      flush(8);
      lane = 0;
    }
  }
  if (lane) flush(lane);
  return worst_ulp;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Softmax and HSTU attention (both directions, masks, dropout) against a naive double implementation of
// cpp/hstu/hstu_attention.h, forward and backward; and the dropout kernel against its scalar generator.
void test_attention(int threads) {
  using recops::hstu::AttnKind;
  const std::vector<int64_t> lengths = {0, 1, 5, 70, 130, 3};
  std::vector<int64_t> off(1, 0);
  for (int64_t n : lengths) off.push_back(off.back() + n);
  const int64_t B = static_cast<int64_t>(lengths.size()), L = off.back(), H = 2, D = 7, N = 140;
  const std::vector<int64_t> targets = {0, 1, 2, 3, 0, 1};
  std::mt19937 rng(7);
  std::normal_distribution<double> nd;
  auto randv = [&](int64_t count) {
    std::vector<double> x(count);
    for (auto& e : x) e = nd(rng);
    return x;
  };
  const std::vector<double> q = randv(L * H * D), k = randv(L * H * D), v = randv(L * H * D), go = randv(L * H * D);
  struct Opt { AttnKind kind; bool causal; int64_t ctx, window; bool tgt; double p; };
  const Opt opts[] = {{AttnKind::kSoftmax, true, 0, 0, false, 0.0}, {AttnKind::kSoftmax, false, 2, 9, true, 0.3},
                      {AttnKind::kSoftmax, true, 1, 0, true, 0.5}, {AttnKind::kSilu, false, 0, 5, false, 0.0},
                      {AttnKind::kSilu, true, 2, 0, true, 0.0}};
  for (const Opt& o : opts) {
    const bool sm = o.kind == AttnKind::kSoftmax;
    const double alpha = 0.4, scale = 0.01;
    const uint64_t seed = 0x1234567890ABCDEFull;
    std::vector<double> want(L * H * D, 0.0), wdq(L * H * D, 0.0), wdk(L * H * D, 0.0), wdv(L * H * D, 0.0);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t s = off[b], n = lengths[b];
      const auto mk = recops::hstu::HstuMask::make(o.ctx, o.window, n, o.tgt ? targets[b] : 0, o.causal);
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t i = 0; i < n; ++i) {
          std::vector<double> sc(n, 0.0), pr(n, 0.0), kp(n, 1.0);
          const uint32_t key = recops::hstu::dropout_row_key(seed, b, h, i);
          double mx = -INFINITY, sum = 0.0;
          for (int64_t j = 0; j < n; ++j) {
            double d = 0;
            for (int64_t e = 0; e < D; ++e) d += q[((s + i) * H + h) * D + e] * k[((s + j) * H + h) * D + e];
            sc[j] = alpha * d;
            if (mk.valid(i, j)) mx = std::max(mx, sc[j]);
            if (o.p > 0) kp[j] = recops::hstu::dropout_bits(key, j) >= recops::hstu::dropout_threshold(o.p)
                                     ? 1.0 / (1.0 - o.p) : 0.0;
          }
          for (int64_t j = 0; j < n; ++j) {
            if (!mk.valid(i, j)) continue;
            if (sm) {
              pr[j] = std::exp(sc[j] - mx);
              sum += pr[j];
            } else {
              pr[j] = scale * sc[j] / (1.0 + std::exp(-sc[j]));
            }
          }
          for (int64_t j = 0; j < n; ++j) {
            if (sm) pr[j] /= sum;
            for (int64_t e = 0; e < D; ++e) {
              want[((s + i) * H + h) * D + e] += pr[j] * kp[j] * v[((s + j) * H + h) * D + e];
            }
          }
          // backward
          double Di = 0;
          std::vector<double> dp(n, 0.0);
          for (int64_t j = 0; j < n; ++j) {
            for (int64_t e = 0; e < D; ++e) dp[j] += go[((s + i) * H + h) * D + e] * v[((s + j) * H + h) * D + e];
            Di += pr[j] * kp[j] * dp[j];
          }
          for (int64_t j = 0; j < n; ++j) {
            if (!mk.valid(i, j)) continue;
            double ds;
            if (sm) {
              ds = pr[j] * (dp[j] * kp[j] - Di);
            } else {
              const double sg = 1.0 / (1.0 + std::exp(-sc[j]));
              ds = dp[j] * scale * sg * (1.0 + sc[j] * (1.0 - sg));
            }
            for (int64_t e = 0; e < D; ++e) {
              wdq[((s + i) * H + h) * D + e] += alpha * ds * k[((s + j) * H + h) * D + e];
              wdk[((s + j) * H + h) * D + e] += alpha * ds * q[((s + i) * H + h) * D + e];
              wdv[((s + j) * H + h) * D + e] += pr[j] * kp[j] * go[((s + i) * H + h) * D + e];
            }
          }
        }
      }
    }
    recops::hstu::HstuBwdParams a;
    std::vector<double> out(L * H * D, -1.0), lse(L * H, 0.0), dq(L * H * D), dk(L * H * D), dv(L * H * D);
    a.kind = o.kind; a.causal = o.causal; a.dropout_p = o.p; a.seed = seed;
    a.q = q.data(); a.q_row = H * D; a.q_head = D;
    a.k = k.data(); a.k_row = H * D; a.k_head = D;
    a.v = v.data(); a.v_row = H * D; a.v_head = D;
    a.offsets = off.data(); a.num_seqs = B; a.total_len = L; a.num_heads = H; a.dqk = D; a.dv = D;
    a.max_seq_len = N; a.alpha = alpha; a.scale = scale; a.num_targets = o.tgt ? targets.data() : nullptr;
    a.contextual_len = o.ctx; a.max_attn_len = o.window; a.out = out.data(); a.lse = sm ? lse.data() : nullptr;
    recops::hstu::hstu_attention_fwd<double>(a, threads);
    double err = 0;
    for (int64_t e = 0; e < L * H * D; ++e) err = std::max(err, std::fabs(out[e] - want[e]));
    EXPECT(err < 1e-10);
    a.grad_out = go.data(); a.dq = dq.data(); a.dk = dk.data(); a.dv_out = dv.data();
    recops::hstu::hstu_attention_bwd<double>(a, threads);
    double gerr = 0;
    for (int64_t e = 0; e < L * H * D; ++e) {
      gerr = std::max({gerr, std::fabs(dq[e] - wdq[e]), std::fabs(dk[e] - wdk[e]), std::fabs(dv[e] - wdv[e])});
    }
    EXPECT(gerr < 1e-9);
  }
  // rejections of the softmax kind
  recops::hstu::HstuFwdParams a;
  a.kind = AttnKind::kSoftmax; a.offsets = off.data(); a.num_seqs = B; a.total_len = L; a.num_heads = H;
  a.dqk = D; a.dv = D; a.max_seq_len = N; a.q = q.data(); a.k = k.data(); a.v = v.data();
  std::vector<double> out(L * H * D), lse(L * H);
  a.out = out.data();
  expect_value_error("softmax without lse", "needs the lse buffer",
                     [&] { recops::hstu::hstu_attention_fwd<double>(a, threads); });
  a.lse = lse.data(); a.dropout_p = 1.0;
  expect_value_error("dropout_p 1", "dropout_p must be in [0, 1)",
                     [&] { recops::hstu::hstu_attention_fwd<double>(a, threads); });
  // dropout: every tail length, both dtypes, against the scalar generator
  for (int64_t n : {0, 1, 15, 16, 17, 100, 16385, 40000}) {
    std::vector<float> x(n), y(n);
    for (int64_t e = 0; e < n; ++e) x[e] = static_cast<float>(e + 1);
    recops::nn::dropout(x.data(), y.data(), n, 0.3, 99, threads);
    std::vector<double> xd(x.begin(), x.end()), yd(n);
    recops::nn::dropout(xd.data(), yd.data(), n, 0.3, 99, threads);
    const uint32_t key = recops::hstu::dropout_row_key(99, 0xFFFFFFFFLL, 0, 0);
    int bad = 0;
    for (int64_t e = 0; e < n; ++e) {
      const bool keep = recops::hstu::dropout_bits(key, e) >= recops::hstu::dropout_threshold(0.3);
      bad += keep != (y[e] != 0.0f) || keep != (yd[e] != 0.0) || (keep && std::fabs(yd[e] - xd[e] / 0.7) > 1e-9);
    }
    EXPECT(bad == 0);
  }
  std::vector<float> x(4);
  expect_value_error("dropout p", "dropout: p must be in [0, 1)",
                     [&] { recops::nn::dropout(x.data(), x.data(), 4, 1.0, 0, 1); });
  expect_value_error("dropout n", "dropout: the element count must be >= 0",
                     [&] { recops::nn::dropout(x.data(), x.data(), -1, 0.5, 0, 1); });
}

// The dynamic-table id map under churn: many evictions and expiries (backward-shift deletion), growth, load;
// every held id must stay findable at its row, rows distinct, and the map must agree with itself after a dump/load.
void test_dynamic_map(int threads) {
  namespace emb = recops::embedding;
  for (int policy = 0; policy < 2; ++policy) {
    emb::DynamicMapConfig c;
    c.capacity = 50;
    c.max_capacity = 200;
    c.admit_after = 2;
    c.has_ttl = true;
    c.ttl = 5;
    c.eviction = static_cast<emb::Eviction>(policy);
    c.sketch_width = 256;
    emb::DynamicIdMap m("test", c);
    std::mt19937_64 rng(7 + policy);
    std::vector<int64_t> ids(300), rows(300), nr(300), ni(300);
    for (int step = 1; step <= 60; ++step) {
      const int64_t n = static_cast<int64_t>(rng() % 300);
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t r = rng() % 400;
        ids[i] = r < 3 ? (r == 0 ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max())
                       : static_cast<int64_t>(r * 0x9E3779B97F4A7C15ULL);
      }
      emb::ResolveResult res;
      do {
        res = m.resolve(ids.data(), n, rows.data(), step % 9 != 0, step, threads, nr.data(), ni.data());
        if (res.grow_to) m.grow(res.grow_to);
      } while (res.grow_to);
      for (int64_t i = 0; i < n; ++i) EXPECT(rows[i] >= 0 && rows[i] <= m.capacity());
      // every held row's id resolves (eval) to that row unless expired
      const int64_t k = m.num_used();
      std::vector<int64_t> hid(k), hrow(k), hu(k), hf(k), back(k);
      std::vector<double> hs(k);
      m.dump(hid.data(), hrow.data(), hu.data(), hs.data(), hf.data());
      m.resolve(hid.data(), k, back.data(), false, step, threads, nullptr, nullptr);
      for (int64_t j = 0; j < k; ++j) EXPECT(back[j] == (step - hs[j] > c.ttl ? m.capacity() : hrow[j]));
      std::vector<int64_t> sorted = hrow;
      std::sort(sorted.begin(), sorted.end());
      EXPECT(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
    }
    EXPECT(m.capacity() > 50 && m.capacity() <= 200);
    const int64_t k = m.num_used();
    std::vector<int64_t> hid(k), hrow(k), hu(k), hf(k);
    std::vector<double> hs(k);
    m.dump(hid.data(), hrow.data(), hu.data(), hs.data(), hf.data());
    c.capacity = m.capacity();
    emb::DynamicIdMap copy("test", c);
    copy.load("test", hid.data(), hrow.data(), hu.data(), hs.data(), hf.data(), k, m.serial());
    std::vector<int64_t> a(k), b(k);
    m.resolve(hid.data(), k, a.data(), false, 0, threads, nullptr, nullptr);
    copy.resolve(hid.data(), k, b.data(), false, 0, threads, nullptr, nullptr);
    EXPECT(a == b);
    if (k > 1) {
      hrow[1] = hrow[0];
      expect_value_error("dynamic load: duplicate row", "held by two ids", [&] {
        copy.load("test", hid.data(), hrow.data(), hu.data(), hs.data(), hf.data(), k, m.serial());
      });
    }
  }
  emb::DynamicMapConfig bad;
  bad.capacity = 0;
  bad.max_capacity = 4;
  expect_value_error("dynamic config", "capacity", [&] { emb::DynamicIdMap x("test", bad); });
}


void test_simd_math() {
  using namespace simd_test;
  float worst = 0;
  auto vexp = [](simd_v8f v) { return simd_exp(v); };
  auto vlog = [](simd_v8f v) { return simd_log(v); };
  auto vlog12 = [](simd_v8f v) { return simd_log_1_2(v); };
  auto dexp = [](double v) { return std::exp(v); };
  auto dlog = [](double v) { return std::log(v); };
  // exp on [-87, 0] and [0, 88] (bit patterns of each sign are ordered by magnitude)
  const int64_t exp_neg = max_ulp(bits_of(0.0f) | 0x80000000u, bits_of(-87.0f), 61, vexp, dexp, &worst);
  const int64_t exp_pos = max_ulp(bits_of(0.0f), bits_of(88.0f), 61, vexp, dexp, &worst);
  // log over every positive normal and subnormal float (sampled), and [1, 2] for the cheap path
  const int64_t log_sub = max_ulp(1, 0x007fffffu, 7, vlog, dlog, &worst);
  const int64_t log_all = max_ulp(0x00800000u, 0x7f7fffffu, 127, vlog, dlog, &worst);
  const int64_t log_12 = max_ulp(bits_of(1.0f), bits_of(2.0f), 3, vlog12, dlog, &worst);
  std::printf("simd_math max ulp: exp [-87,0] %lld, exp [0,88] %lld, log subnormal %lld, log normal %lld, "
              "log [1,2] %lld\n", static_cast<long long>(exp_neg), static_cast<long long>(exp_pos),
              static_cast<long long>(log_sub), static_cast<long long>(log_all), static_cast<long long>(log_12));
  EXPECT(exp_neg <= 1);
  EXPECT(exp_pos <= 1);
  EXPECT(log_sub <= 1);
  EXPECT(log_all <= 1);
  EXPECT(log_12 <= 1);
  // specials: NaN stays NaN, the documented clamps, exp below -87 flushes to 0
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const simd_v8f sx = {nan, -inf, inf, -100.0f, 100.0f, -87.5f, 88.0f, 0.0f};
  const simd_v8f e = simd_exp(sx);
  EXPECT(std::isnan(e[0]));
  EXPECT(e[1] == 0.0f && e[3] == 0.0f && e[5] == 0.0f);
  EXPECT(e[2] == e[6] && e[4] == e[6] && std::isfinite(e[6]) && ulp_distance(e[6], std::exp(88.0f)) <= 2);
  EXPECT(e[7] == 1.0f);
  const simd_v8f lx = {nan, 1.0f, std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(),
                       std::numeric_limits<float>::max(), 0.5f, 2.0f, 1e-30f};
  const simd_v8f l = simd_log(lx);
  EXPECT(std::isnan(l[0]));
  EXPECT(l[1] == 0.0f);
  for (int i = 2; i < 8; ++i) EXPECT(ulp_distance(l[i], static_cast<float>(std::log(static_cast<double>(lx[i])))) <= 2);
  const simd_v8f rx = {1.0f, 3.0f, -7.0f, 1e-30f, 1e30f, 0.1f, 2.0f, 1.5f};
  const simd_v8f r = simd_recip(rx);
  for (int i = 0; i < 8; ++i) EXPECT(r[i] == 1.0f / rx[i]);  // no estimate macro: exact division
}

int main() {
  for (int threads : {1, 2, 4}) {
    test_round_trips<int32_t>(threads);
    test_round_trips<int64_t>(threads);
  }
  test_simd_math();
  for (int threads : {1, 2}) test_dynamic_map(threads);
  test_bad_inputs();
  test_empty();
  for (int threads : {1, 3}) test_losses(threads);
  test_losses_bad_inputs();
  for (int threads : {1, 3}) test_sampled_softmax(threads);
  for (int threads : {1, 3}) test_embedding(threads);
  for (int threads : {1, 3}) test_embedding_wide(threads);
  test_embedding_overflow();
  for (int threads : {1, 2, 3}) test_topk(threads);
  test_topk_bad_inputs();
  for (int threads : {1, 3}) test_attention(threads);
  if (g_failures) {
    std::fprintf(stderr, "%d failure(s)\n", g_failures);
    return 1;
  }
  std::printf("recops core tests passed\n");
  return 0;
}
