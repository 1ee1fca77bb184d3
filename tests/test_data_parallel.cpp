// Data-parallel training without MPI: the ranks are emulated in one process. Each rank's share of a
// global batch, trained with its slice of the global dropout masks and its loss weighted by its
// share, must give the global batch's logits and, summed over the ranks, its gradients, for any
// number of ranks (empty shares included). tests/mpi_data_parallel.sh runs the same under mpirun.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/distributed.h"
#include "engine/functional.h"
#include "engine/ops.h"
#include "models/bert.h"
#include "models/data_parallel.h"
#include "models/training.h"
#include "tests/test_util.h"

namespace {

mb::Batch global_batch() {
  // 7 sequences of different lengths, ids inside a 64-word vocabulary, pairs with token types.
  mb::Batch b;
  const int lengths[] = {5, 9, 3, 12, 7, 2, 10};
  int next = 1;
  for (int L : lengths) {
    std::vector<int32_t> ids, types;
    for (int t = 0; t < L; ++t) {
      ids.push_back(int32_t((next++ * 37) % 63 + 1));
      types.push_back(t >= L / 2 ? 1 : 0);
    }
    b.add(ids, types);
  }
  return b;
}

mb::BertModel small_classifier() {
  const nlohmann::json j = {{"vocab_size", 64},           {"hidden_size", 16},          {"num_hidden_layers", 2},
                            {"num_attention_heads", 2},   {"intermediate_size", 24},    {"max_position_embeddings", 16},
                            {"hidden_dropout_prob", 0.2}, {"attention_probs_dropout_prob", 0.2},
                            {"id2label", {{"0", "a"}, {"1", "b"}, {"2", "c"}}}};
  return mb::BertModel::init_random(mb::bert_config_from_json(j, "small config"), 11);
}

double max_abs(const float* p, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(p[i])));
  return m;
}

}  // namespace

TEST_CASE("shares of a global batch: contiguous, balanced, placed") {
  for (int size = 1; size <= 5; ++size)
    for (int64_t n = 0; n <= 12; ++n) {
      int64_t expect_first = 0;
      for (int r = 0; r < size; ++r) {
        const mb::ShareRange s = mb::share_range(n, r, size);
        CHECK(s.first == expect_first);
        CHECK(s.size() >= n / size);
        CHECK(s.size() <= n / size + 1);
        expect_first = s.end;
      }
      CHECK(expect_first == n);
    }
  const mb::Batch g = global_batch();
  const mb::BatchShare s = mb::share_of(g, 1, 3);  // sequences 2 and 3 (lengths 3 and 12)
  CHECK(s.seqs.first == 2);
  CHECK(s.seqs.end == 4);
  CHECK(s.batch.offsets == std::vector<int32_t>{0, 3, 15});
  CHECK(s.place.tokens_before == 14);
  CHECK(s.place.tokens_total == g.num_tokens());
  CHECK(s.place.squares_before == 25 + 81);
  CHECK(s.place.squares_total == 25 + 81 + 9 + 144 + 49 + 4 + 100);
  CHECK(s.place.seqs_before == 2);
  CHECK(std::equal(s.batch.input_ids.begin(), s.batch.input_ids.end(), g.input_ids.begin() + 14));
  CHECK(mb::share_of(g, 0, 8).seqs.size() == 0);  // 7 sequences, 8 ranks: rank 0 has none
}

TEST_CASE("a dropout mask's slice is the slice of the whole mask, and uses the whole block of draws") {
  const int64_t total = 10000;
  std::vector<float> whole(total), part(300);
  mb::Rng a(5), b(5);
  mb::fill_dropout_mask(whole.data(), total, 0.3f, a);
  mb::fill_dropout_mask(part.data(), 300, 0.3f, b, mb::DrawSlice{4321, total});
  CHECK(std::equal(part.begin(), part.end(), whole.begin() + 4321));
  CHECK(a.state() == b.state());  // the next call draws the same on every rank
  CHECK(mbtest::error_of([&] { mb::fill_dropout_mask(part.data(), 300, 0.3f, b, mb::DrawSlice{9800, total}); })
            .find("outside a block of 10000") != std::string::npos);
  CHECK(mb::dropout_rng_for_step(42, 7).state() == mb::dropout_rng_for_step(42, 7).state());
  CHECK(mb::dropout_rng_for_step(42, 7).state() != mb::dropout_rng_for_step(42, 8).state());
  CHECK(mb::dropout_rng_for_step(42, 7).state() != mb::dropout_rng_for_step(43, 7).state());
}

TEST_CASE("ranks emulated in one process: logits and summed gradients equal the global batch's") {
  const mb::BertModel model = small_classifier();
  const std::vector<mb::ParamRef> params = mb::trainable_params(model);
  const mb::Batch g = global_batch();
  const std::vector<int32_t> labels = {0, 2, 1, 1, 0, 2, 2};
  const uint64_t seed = 9;
  auto zero_grads = [&] {
    for (const mb::ParamRef& p : params) std::memset(p.grad->raw(), 0, p.grad->nbytes());
  };

  // The global batch on one process.
  zero_grads();
  mb::Rng rng = mb::dropout_rng_for_step(seed, 3);
  const mb::ForwardOptions whole{true, &rng};
  const mb::Var logits = model.classifier_logits(model.pooled_output(g, model.hidden_states(g, whole)), whole);
  const mb::Var loss = mb::cross_entropy(logits, labels);
  mb::backward(loss);
  std::vector<std::vector<float>> want;
  for (const mb::ParamRef& p : params) want.emplace_back(p.grad->f32(), p.grad->f32() + p.grad->numel());
  // Dropout is on: a share that ignored its placement would draw other masks (checked below).
  const mb::Var plain = model.classifier_logits(model.pooled_output(g, model.hidden_states(g, {})), {});
  CHECK(max_abs(plain.data(), plain.numel()) > 0);
  bool dropout_changes_logits = false;
  for (int64_t i = 0; i < logits.numel(); ++i) dropout_changes_logits |= std::fabs(logits.data()[i] - plain.data()[i]) > 1e-4;
  REQUIRE(dropout_changes_logits);

  for (int ranks : {1, 2, 3, 4, 8}) {
    CAPTURE(ranks);
    zero_grads();
    double loss_sum = 0;
    for (int r = 0; r < ranks; ++r) {
      const mb::BatchShare s = mb::share_of(g, r, ranks);
      if (s.seqs.size() == 0) continue;
      mb::Rng rank_rng = mb::dropout_rng_for_step(seed, 3);
      const mb::ForwardOptions fo = s.forward(&rank_rng);
      const mb::Var z = model.classifier_logits(model.pooled_output(s.batch, model.hidden_states(s.batch, fo)), fo);
      for (int64_t i = 0; i < z.numel(); ++i)
        CHECK(std::fabs(z.data()[i] - logits.data()[s.seqs.first * z.dim(1) + i]) <= 1e-5);
      const mb::Var l = mb::scale(
          mb::cross_entropy(z, std::vector<int32_t>(labels.begin() + s.seqs.first, labels.begin() + s.seqs.end)),
          float(double(s.seqs.size()) / double(g.num_seqs())));
      mb::backward(l);
      loss_sum += l.data()[0];
    }
    CHECK(std::fabs(loss_sum - loss.data()[0]) <= 1e-5 * std::fabs(loss.data()[0]));
    for (size_t i = 0; i < params.size(); ++i) {
      CAPTURE(params[i].name);
      const double scale = std::max(1e-6, max_abs(want[i].data(), int64_t(want[i].size())));
      double diff = 0;
      for (size_t k = 0; k < want[i].size(); ++k)
        diff = std::max(diff, std::fabs(double(params[i].grad->f32()[k]) - want[i][k]));
      CHECK(diff <= 1e-5 * scale);
    }
  }

  // The same shares without their placement draw the wrong masks: the check above can fail.
  const mb::BatchShare s = mb::share_of(g, 1, 2);
  mb::Rng wrong_rng = mb::dropout_rng_for_step(seed, 3);
  const mb::ForwardOptions unplaced{true, &wrong_rng};
  const mb::Var z = model.classifier_logits(model.pooled_output(s.batch, model.hidden_states(s.batch, unplaced)), unplaced);
  double diff = 0;
  for (int64_t i = 0; i < z.numel(); ++i)
    diff = std::max(diff, double(std::fabs(z.data()[i] - logits.data()[s.seqs.first * z.dim(1) + i])));
  CHECK(diff > 1e-4);
}

TEST_CASE("one process: the collectives are identities") {
  CHECK(mb::dist::size() == 1);
  CHECK(mb::dist::rank() == 0);
  CHECK(mb::dist::rank_prefix().empty());
  CHECK(mb::sum_over_ranks(2.5) == 2.5);
  const mb::BertModel model = small_classifier();
  const std::vector<mb::ParamRef> params = mb::trainable_params(model);
  params[0].grad->f32()[0] = 3.0f;
  mb::allreduce_gradients(params);
  CHECK(params[0].grad->f32()[0] == 3.0f);
}
