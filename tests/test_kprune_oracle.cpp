// K-prune (compress/kprune.h) against a decision-level PyTorch oracle written from METHODS.md
// section 2 and the authors' code (tests/reference/make_kprune_fixtures.py): on small fine-tuned
// models, every sublayer step's kept units, remaining FLOPs, knowledge scores and KPWT-tuned output
// projection, and the pruned model's logits. The knowledge at step j is measured again on the model
// K-prune held then (the pruned model's sublayers before j, the teacher's after), with
// measure_knowledge; the tuned projections are read from the pruned model (no later step changes
// them).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "compress/kprune.h"
#include "io/jsonl_log.h"
#include "io/safetensors.h"
#include "tests/test_util.h"

// CHECK(cond), clearing the bool `same` when it fails.
#define CHECK_SAME(same, ...)        \
  do {                               \
    CHECK(__VA_ARGS__);              \
    if (!(__VA_ARGS__)) same = false; \
  } while (0)

namespace {

using json = nlohmann::json;

std::vector<mb::Batch> fixture_batches(const std::string& path) {
  const mb::SafeTensorsFile f = mb::read_safetensors(path);
  std::vector<mb::Batch> out;
  for (int i = 0;; ++i) {
    std::string prefix = "b";  // "b<i>."
    prefix += std::to_string(i);
    prefix += '.';
    if (!f.tensors.count(prefix + "input_ids")) break;
    out.push_back(mbtest::fixture_batch(f, prefix));
  }
  return out;
}

// The model K-prune held before step j: the pruned model's sublayers before j (a sublayer never
// changes after its step) and the teacher's from j on.
mb::BertModel model_before(const mb::BertModel& teacher, const mb::BertModel& pruned, int64_t j) {
  mb::BertModel m = teacher;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    mb::BertLayer& L = m.layers[l];
    const mb::BertLayer& P = pruned.layers[l];
    if (int64_t(2 * l) < j) {
      L.q_w = P.q_w, L.q_b = P.q_b, L.k_w = P.k_w, L.k_b = P.k_b, L.v_w = P.v_w, L.v_b = P.v_b;
      L.attn_out_w = P.attn_out_w, L.attn_out_b = P.attn_out_b, L.num_heads = P.num_heads;
    }
    if (int64_t(2 * l + 1) < j) {
      L.ffn_in_w = P.ffn_in_w, L.ffn_in_b = P.ffn_in_b, L.ffn_out_w = P.ffn_out_w, L.ffn_out_b = P.ffn_out_b;
      L.intermediate_size = P.intermediate_size;
    }
  }
  return m;
}

// max_i |got_i − want_i| / max_i |want_i|: the error relative to the vector's scale.
double scaled_err(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num = std::max(num, std::abs(got[i] - want[i]));
    den = std::max(den, std::abs(want[i]));
  }
  return den > 0 ? num / den : num;
}

// max_i |got_i − want_i| / |want_i|.
double max_rel(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double m = 0;
  for (size_t i = 0; i < got.size(); ++i) m = std::max(m, std::abs(got[i] - want[i]) / std::abs(want[i]));
  return m;
}

std::string str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += ' ';
    s += std::to_string(v[i]);
  }
  return s + "]";
}

std::vector<double> values(const mb::Tensor& t) { return std::vector<double>(t.f32(), t.f32() + t.numel()); }

std::vector<double> flat(const json& rows) {
  std::vector<double> v;
  for (const json& r : rows)
    if (r.is_array())
      for (const json& x : r) v.push_back(x.get<double>());
    else
      v.push_back(r.get<double>());
  return v;
}

// Runs K-prune on one case of the oracle and checks it step by step; stops at the first step that
// differs (the later ones would differ because of it).
void check_case(const std::string& root, const json& c) {
  const std::string name = c.at("model").get<std::string>() + "/" + c.at("case").get<std::string>();
  CAPTURE(name);
  const json want = json::parse(mbtest::read_file(root + "/" + c.at("expected").get<std::string>()));
  const json& o = want.at("options");
  const std::string dir = root + "/" + c.at("dir").get<std::string>();
  const mb::BertModel teacher = mb::BertModel::load(dir + "/model");
  const std::vector<mb::Batch> batches = fixture_batches(dir + "/batches.safetensors");
  REQUIRE(int64_t(batches.size()) == want.at("batches").get<int64_t>());

  mb::KpruneOptions opt;
  opt.constraint = o.at("constraint");
  opt.lambda_rep = o.at("lambda_rep");
  opt.lambda_pred = o.at("lambda_pred");
  opt.mu = o.at("mu");
  opt.temperature = o.at("temperature");
  opt.seq_len = o.at("seq_len");
  opt.progress = false;
  const std::string log_path = mbtest::scratch_dir("kprune_oracle") + "/log.jsonl";
  mb::KpruneStats st;
  mb::BertModel pruned;
  {
    mb::JsonlLog log(log_path);
    pruned = mb::kprune(teacher, batches, opt, &st, &log);
  }
  const std::vector<json> log = mbtest::json_lines(mbtest::read_file(log_path));
  const json& steps = want.at("steps");
  const int64_t n_sub = 2 * int64_t(teacher.layers.size());
  REQUIRE(int64_t(steps.size()) == n_sub);
  REQUIRE(int64_t(log.size()) == n_sub);
  CHECK(st.flops_before == doctest::Approx(want.at("flops_before").get<double>()).epsilon(1e-12));
  CHECK(st.flops_budget == doctest::Approx(want.at("flops_budget").get<double>()).epsilon(1e-12));

  std::vector<mb::Tensor> orig_logits;
  for (const mb::Batch& b : batches) orig_logits.push_back(mb::masked_forward(teacher, b, {}).value());
  double worst_flops = 0, worst_w = 0, worst_rep = 0, worst_pred = 0, worst_pred_unit = 0, worst_logits = 0;
  bool same = true;  // every check so far held
  for (int64_t j = 0; j < n_sub && same; ++j) {
    CAPTURE(j);
    const json& s = steps[size_t(j)];
    // The choice and the budget left.
    CHECK(log[size_t(j)].at("step").get<int64_t>() == j);
    const std::vector<int64_t> kept = log[size_t(j)].at("kept").get<std::vector<int64_t>>();
    const std::vector<int64_t> kept_want = s.at("kept").get<std::vector<int64_t>>();
    const std::string kept_got = str(kept), kept_expected = str(kept_want);
    CAPTURE(kept_got);
    CAPTURE(kept_expected);
    CHECK_SAME(same, kept == kept_want);
    const double f_rem = log[size_t(j)].at("flops_remaining").get<double>();
    const double f_want = s.at("flops_remaining").get<double>();
    worst_flops = std::max(worst_flops, std::abs(f_rem - f_want) / std::abs(f_want));
    CHECK_SAME(same, std::abs(f_rem - f_want) <= 1e-9 * std::abs(f_want));

    // The knowledge measured at this step, on the model K-prune held then.
    const mb::BertModel before = model_before(teacher, pruned, j);
    const mb::Knowledge k = mb::measure_knowledge(before, batches, orig_logits, j, opt, nullptr, /*original=*/j == 0);
    for (int64_t u = j; u < n_sub; ++u) {
      CAPTURE(u);
      const std::vector<double> rep = s.at("representational")[size_t(u)].get<std::vector<double>>();
      const std::vector<double> pred = s.at("predictive")[size_t(u)].get<std::vector<double>>();
      const double e_rep = max_rel(k.representational[size_t(u)], rep);
      worst_rep = std::max(worst_rep, e_rep);
      CHECK_SAME(same, e_rep < 1e-4);
      if (j == 0) {  // the current model is the original: no predictive knowledge
        for (double p : k.predictive[size_t(u)]) CHECK_SAME(same, p == 0.0);
        for (double p : pred) CHECK_SAME(same, p < 1e-20);
      } else {
        const double e_pred = scaled_err(k.predictive[size_t(u)], pred);
        worst_pred = std::max(worst_pred, e_pred);
        worst_pred_unit = std::max(worst_pred_unit, max_rel(k.predictive[size_t(u)], pred));
        CHECK_SAME(same, e_pred < 1e-4);
      }
    }

    // KPWT's output projection, which no later step changes.
    const mb::BertLayer& L = pruned.layers[size_t(mb::sublayer_layer(j))];
    const mb::Var& w = mb::sublayer_is_mha(j) ? L.attn_out_w : L.ffn_out_w;
    if (kept != kept_want) continue;
    if (kept.empty()) {
      CHECK_SAME(same, !w.defined());
      continue;
    }
    REQUIRE(w.defined());
    const std::vector<double> w_want = flat(s.at("out_w"));
    const double e_w = scaled_err(values(w.value()), w_want);
    worst_w = std::max(worst_w, e_w);
    CHECK_SAME(same, e_w < 1e-4);
  }
  if (!same) return;
  for (size_t l = 0; l < pruned.layers.size(); ++l) {
    CHECK(pruned.layers[l].num_heads == want.at("layers")[l].at("heads").get<int64_t>());
    CHECK(pruned.layers[l].intermediate_size == want.at("layers")[l].at("neurons").get<int64_t>());
  }
  CHECK(st.flops_after == doctest::Approx(want.at("flops_after").get<double>()).epsilon(1e-12));
  // The pruned model's logits on the sample set.
  for (size_t i = 0; i < batches.size(); ++i) {
    const mb::Tensor z = pruned.classify(pruned.pool(batches[i], pruned.encode(batches[i])));
    const double e = scaled_err(values(z), flat(want.at("logits")[i]));
    worst_logits = std::max(worst_logits, e);
    CHECK(e < 1e-4);
  }
  std::cout << "kprune oracle " << name << ": max rel. error: flops_remaining " << worst_flops << ", representational "
            << worst_rep << ", predictive " << worst_pred << " (of the sublayer's largest), tuned W_out " << worst_w
            << " (of its largest), logits " << worst_logits << "; predictive per unit " << worst_pred_unit << "\n";
}

std::vector<json> oracle_cases(bool removes_sublayer) {
  const json cases = json::parse(mbtest::read_file(mbtest::fixtures_dir() + "/kprune/cases.json"));
  std::vector<json> out;
  for (const json& c : cases)
    if (c.at("removes_sublayer").get<bool>() == removes_sublayer) out.push_back(c);
  return out;
}

}  // namespace

TEST_CASE("K-prune makes the PyTorch oracle's choices step by step, with its tuned weights and logits") {
  const std::vector<json> cases = oracle_cases(false);
  REQUIRE(cases.size() >= 2);
  for (const json& c : cases) check_case(mbtest::fixtures_dir() + "/kprune", c);
}

// The authors' code (src/utils/arch.py: pruned_BertAttention_forward, pruned_feed_forward_chunk)
// and METHODS.md: a sublayer with nothing left computes LayerNorm(x); its output bias goes with it.
// The engine keeps the bias (LN(x + b_out), docs/KPRUNE.md "Removed sublayers"), which changes the
// scores of every later step and, in the "reg" case, the kept neurons of FFN 0: this case fails
// until prune_sublayer drops (zeroes) the output bias of a sublayer it empties.
TEST_CASE("K-prune with removed sublayers makes the oracle's choices: a removed sublayer computes LayerNorm(x)") {
  const std::vector<json> cases = oracle_cases(true);
  REQUIRE(cases.size() >= 1);
  for (const json& c : cases) check_case(mbtest::fixtures_dir() + "/kprune", c);
}
