// ELECTRA's replaced-token detection (models/electra.h) against the PyTorch oracle
// tests/reference/make_electra_fixtures.py: the proposals drawn, the loss terms and every gradient.
#include <doctest/doctest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/rng.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "models/electra.h"
#include "models/training.h"
#include "tests/test_util.h"

namespace {

double relative_error(const mb::Tensor& got, const mb::Tensor& want) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    num += std::pow(double(got.f32()[i]) - double(want.f32()[i]), 2);
    den += std::pow(double(want.f32()[i]), 2);
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace

TEST_CASE("ELECTRA: proposals, loss and gradients match PyTorch") {
  const std::string root = mbtest::fixtures_dir() + "/electra";
  mb::BertModel disc = mb::BertModel::load(root + "/disc");
  const mb::SafeTensorsFile f = mb::read_safetensors(root + "/electra.safetensors");
  const nlohmann::json meta = mb::read_json_file(root + "/electra.json");

  mb::Electra e = mb::Electra::attach(disc, 1, 42);
  // Everything attach() registered must be in the fixture, and nothing else: the oracle's names
  // are the engine's.
  int registered = 0;
  for (const auto& [name, v] : disc.extra) {
    const auto& name_ = name;
    CAPTURE(name_);
    REQUIRE(f.tensors.count(name) == 1);
    REQUIRE(f.tensors.at(name).shape() == v.shape());
    ++registered;
  }
  CHECK(registered == 16 + 5 + 4);  // one generator layer, its MLM head, the discriminator head
  // The fixture's values for the objective's tensors (attach() drew its own).
  for (const auto& [name, v] : disc.extra) {
    v.value().make_owned();
    std::memcpy(v.value().raw(), f.tensors.at(name).raw(), v.value().nbytes());
  }
  disc.set_requires_grad(true);
  // The embeddings are shared: the generator's are the discriminator's own Vars.
  CHECK(e.generator.word_emb.value().raw() == disc.word_emb.value().raw());

  const mb::Batch b = mbtest::fixture_batch(f);
  const std::vector<int32_t> labels = mbtest::fixture_ints(f, "labels");
  mb::ElectraStep step;
  step.sample_base = meta["sample_base"].get<uint64_t>();
  step.disc_weight = meta["disc_weight"].get<double>();
  const mb::ElectraLoss l = mb::electra_loss(disc, e, b, labels, step, mb::ForwardOptions{});
  CHECK(l.mlm == doctest::Approx(meta["mlm"].get<double>()).epsilon(1e-5));
  CHECK(l.disc == doctest::Approx(meta["disc"].get<double>()).epsilon(1e-5));
  CHECK(double(l.loss.data()[0]) == doctest::Approx(meta["loss"].get<double>()).epsilon(1e-5));
  CHECK(l.replaced == meta["replaced"].get<int64_t>());
  CHECK(l.tokens == b.num_tokens());
  CHECK(l.proposals == mbtest::fixture_ints(f, "proposals"));

  mb::backward(l.loss);
  int checked = 0;
  for (const auto& [name, v] : disc.named_parameters()) {
    if (name.find("pooler.") != std::string::npos) continue;  // not on the path of either loss
    const auto& name_ = name;
    CAPTURE(name_);
    REQUIRE(f.tensors.count("grad." + name) == 1);
    REQUIRE(v.has_grad());
    if (name.find("attention.self.key.bias") != std::string::npos) continue;  // exactly zero in theory
    CHECK(relative_error(v.grad(), f.tensors.at("grad." + name)) < 1e-4);
    ++checked;
  }
  CHECK(checked == (5 + 2 * 15) + (15 + 5) + 4);  // discriminator, generator, its head
}

TEST_CASE("ELECTRA: proposals follow the generator's softmax and do not depend on the batch split") {
  // Three rows of logits: one peaked, one uniform, one with a forbidden token (-inf weight).
  const int64_t V = 5;
  std::vector<float> rows = {4.0f, 0.0f, 0.0f, 0.0f, 0.0f,   //
                             0.0f, 0.0f, 0.0f, 0.0f, 0.0f,   //
                             1.0f, 1.0f, -1e30f, 1.0f, 2.0f};
  const mb::Tensor logits = mb::Tensor::from_vector(rows, {3, V});
  const int n = 20000;
  std::vector<std::vector<int>> counts(3, std::vector<int>(size_t(V), 0));
  for (int k = 0; k < n; ++k) {
    const std::vector<int64_t> draws = {3 * int64_t(k), 3 * int64_t(k) + 1, 3 * int64_t(k) + 2};
    const std::vector<int32_t> p = mb::sample_proposals(logits, 99, draws);
    for (int r = 0; r < 3; ++r) ++counts[size_t(r)][size_t(p[size_t(r)])];
  }
  for (int r = 0; r < 3; ++r) {
    double z = 0;
    for (int v = 0; v < V; ++v) z += std::exp(double(rows[size_t(r * V + v)]));
    for (int v = 0; v < V; ++v) {
      const double want = std::exp(double(rows[size_t(r * V + v)])) / z;
      const double got = double(counts[size_t(r)][size_t(v)]) / n;
      CAPTURE(r);
      CAPTURE(v);
      CHECK(std::abs(got - want) < 4.5 * std::sqrt(want * (1 - want) / n) + 1e-12);  // 4.5 sigma
    }
  }
  CHECK(counts[2][2] == 0);
  // A row's proposal is a function of its draw index alone: the same row drawn alone or among
  // others gets the same token.
  const std::vector<int32_t> all = mb::sample_proposals(logits, 7, {10, 11, 12});
  for (int r = 0; r < 3; ++r) {
    const mb::Tensor one = mb::Tensor::from_vector(
        std::vector<float>(rows.begin() + r * V, rows.begin() + (r + 1) * V), {1, V});
    CHECK(mb::sample_proposals(one, 7, {10 + r})[0] == all[size_t(r)]);
  }
}
