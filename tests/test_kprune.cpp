// K-prune (compress/kprune.h) on tiny random models: the instrumented forward, the knowledge
// measurement, KPMS, KPWT, physical removal, per-layer widths in model directories, and the CLI.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "compress/kprune.h"
#include "engine/gemm.h"
#include "engine/functional.h"
#include "engine/rng.h"
#include "io/checkpoint.h"
#include "io/glue.h"
#include "models/counting.h"
#include "models/finetune.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace {

mb::BertConfig tiny_config(int labels, int64_t vocab = 100) {
  mb::BertConfig c;
  c.vocab_size = vocab;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 48;
  c.max_position_embeddings = 128;
  c.initializer_range = 0.1;  // larger than BERT's 0.02 so that units differ visibly
  if (labels == 1) {
    c.id2label = {"LABEL_0"};
    c.problem_type = "regression";
  } else {
    c.id2label = {"a", "b", "c"};
  }
  return c;
}

mb::BertModel tiny_model(int labels, uint64_t seed = 1) { return mb::BertModel::init_random(tiny_config(labels), seed); }

// `count` batches of 6 random sequences (3..12 tokens).
std::vector<mb::Batch> random_batches(int count, uint64_t seed, int64_t vocab = 100) {
  mb::Rng rng(seed);
  std::vector<mb::Batch> out(static_cast<size_t>(count));
  for (mb::Batch& b : out)
    for (int s = 0; s < 6; ++s) {
      const int len = 3 + int(rng.below(10));
      std::vector<int32_t> ids(static_cast<size_t>(len)), types(static_cast<size_t>(len));
      for (int t = 0; t < len; ++t) {
        ids[size_t(t)] = 1 + int32_t(rng.below(uint64_t(vocab - 1)));
        types[size_t(t)] = t > len / 2 ? 1 : 0;
      }
      b.add(ids, types);
    }
  return out;
}

mb::Tensor model_logits(const mb::BertModel& m, const mb::Batch& b) { return m.classify(m.pool(b, m.encode(b))); }

double rel_err(const mb::Tensor& got, const mb::Tensor& want) {
  REQUIRE(got.numel() == want.numel());
  double num = 0, den = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double d = double(got.f32()[i]) - double(want.f32()[i]);
    num += d * d;
    den += double(want.f32()[i]) * double(want.f32()[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

std::vector<mb::Tensor> logits_of(const mb::BertModel& m, const std::vector<mb::Batch>& batches) {
  std::vector<mb::Tensor> out;
  for (const mb::Batch& b : batches) out.push_back(model_logits(m, b));
  return out;
}

}  // namespace

TEST_CASE("the instrumented forward with all masks 1 reproduces BertModel's logits") {
  for (int labels : {3, 1}) {
    const mb::BertModel m = tiny_model(labels);
    const mb::Batch b = random_batches(1, 7)[0];
    mb::MaskedForward f;
    for (int64_t j = 0; j < 4; ++j) {
      const int64_t w = j % 2 == 0 ? 32 : 48;
      std::vector<float> ones(size_t(w), 1.0f);
      f.masks.push_back(mb::Var(mb::Tensor::from_vector(ones, {w})));
    }
    const mb::Tensor got = mb::masked_forward(m, b, f).value();
    const mb::Tensor want = model_logits(m, b);
    CHECK(got.shape() == want.shape());
    CHECK(rel_err(got, want) < 1e-6);
  }
}

TEST_CASE("step-0 predictive scores are 0 (exactly, for the original model); representational ones are not") {
  for (int labels : {3, 1}) {
    CAPTURE(labels);
    const mb::BertModel m = tiny_model(labels);
    const std::vector<mb::Batch> batches = random_batches(3, 11);
    const std::vector<mb::Tensor> orig = logits_of(m, batches);
    const mb::Knowledge k = mb::measure_knowledge(m, batches, orig, 0, {}, nullptr, /*original=*/true);
    CHECK(mb::tape_size() == 0);  // the skipped backward passes leave nothing recorded
    // Not told, the measurement sees logits equal to the original ones up to the order of the sums:
    // 0 where the recorded pass repeats them bit for bit, rounding noise (~1e-20) elsewhere.
    const mb::Knowledge k0 = mb::measure_knowledge(m, batches, orig, 0, {});
    CHECK(mb::tape_size() == 0);
    REQUIRE(k.predictive.size() == 4);
    for (int64_t j = 0; j < 4; ++j) {
      REQUIRE(k.predictive[size_t(j)].size() == size_t(j % 2 == 0 ? 4 : 48));
      for (double p : k.predictive[size_t(j)]) CHECK(p == 0.0);
      for (double p : k0.predictive[size_t(j)]) CHECK(p < 1e-15);
      for (double r : k.representational[size_t(j)]) CHECK(r > 0.0);
    }
    // Once the model differs from the original, the same measurement is not zero.
    mb::BertModel cur = m;
    mb::prune_sublayer(cur, 0, {0, 2});
    const mb::Knowledge k2 = mb::measure_knowledge(cur, batches, orig, 1, {});
    CHECK(k2.predictive[0].empty());
    double total = 0;
    for (double p : k2.predictive[1]) total += p;
    CHECK(total > 0.0);
  }
}

TEST_CASE("a pass started at a sublayer from its carried input equals the pass from the embeddings") {
  // K-prune carries each sublayer's input from step to step (advance_sublayer) instead of running
  // the model from the embeddings; both must give the same numbers, bit for bit.
  auto same = [](const mb::Tensor& a, const mb::Tensor& b) {
    return a.shape() == b.shape() && std::equal(a.f32(), a.f32() + a.numel(), b.f32());
  };
  for (int labels : {3, 1}) {
    CAPTURE(labels);
    const mb::BertModel m = tiny_model(labels);
    mb::BertModel cur = m;
    mb::prune_sublayer(cur, 0, {1, 3});
    mb::prune_sublayer(cur, 1, {0, 5, 7, 40});
    const std::vector<mb::Batch> batches = random_batches(3, 13);
    const std::vector<mb::Tensor> orig = logits_of(m, batches);
    std::vector<mb::Tensor> carried = mb::sublayer_inputs(cur, batches, 0);
    for (int64_t j = 0; j < 4; ++j) {
      CAPTURE(j);
      const std::vector<mb::Tensor> fresh = mb::sublayer_inputs(cur, batches, j);
      for (size_t i = 0; i < batches.size(); ++i) CHECK(same(carried[i], fresh[i]));
      // Knowledge measured from the carried inputs (a non-zero predictive part: cur differs from m).
      const mb::Knowledge a = mb::measure_knowledge(cur, batches, orig, j, {});
      const mb::Knowledge b = mb::measure_knowledge(cur, batches, orig, j, {}, &carried);
      CHECK(a.predictive == b.predictive);
      CHECK(a.representational == b.representational);
      // KPWT from carried inputs, for a sublayer of the pruned model against the original.
      std::vector<int64_t> kept(size_t(mb::sublayer_units(cur, j)));
      std::iota(kept.begin(), kept.end(), 0);
      if (!kept.empty()) {
        const std::vector<mb::Tensor> orig_in = mb::sublayer_inputs(m, batches, j);
        CHECK(same(mb::kpwt_solve(cur, m, j, kept, batches), mb::kpwt_solve(cur, m, j, kept, batches, carried, orig_in)));
      }
      mb::advance_sublayer(cur, batches, j, carried);
    }
    // Past the last sublayer the carried state is the encoder's output.
    for (size_t i = 0; i < batches.size(); ++i) CHECK(rel_err(carried[i], cur.encode(batches[i])) < 1e-5);
  }
}

TEST_CASE("KPWT on an unpruned sublayer returns the original output projection") {
  const mb::BertModel m = tiny_model(3);
  const std::vector<mb::Batch> batches = random_batches(4, 5);
  for (int64_t j : {0, 1, 2, 3}) {
    CAPTURE(j);
    std::vector<int64_t> all(size_t(mb::sublayer_units(m, j)));
    std::iota(all.begin(), all.end(), 0);
    std::string method;
    const mb::Tensor w = mb::kpwt_solve(m, m, j, all, batches, &method);
    const mb::BertLayer& L = m.layers[size_t(j / 2)];
    const mb::Tensor& want = (j % 2 == 0 ? L.attn_out_w : L.ffn_out_w).value();
    CHECK(method == "ldlt");
    CHECK(w.shape() == want.shape());
    CHECK(rel_err(w, want) < 1e-4);
  }
}

TEST_CASE("least squares: exact fit, and a singular system still solved") {
  mb::Rng rng(3);
  const int64_t T = 50, n = 4, H = 3;
  std::vector<float> A(size_t(T * n)), W(size_t(n * H)), R(size_t(T * H), 0.0f);
  for (float& v : A) v = float(rng.normal());
  for (float& v : W) v = float(rng.normal());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < H; ++k)
      for (int64_t i = 0; i < n; ++i) R[size_t(t * H + k)] += A[size_t(t * n + i)] * W[size_t(i * H + k)];
  mb::LeastSquares ls(n, H);
  ls.add(A.data(), R.data(), 20);
  ls.add(A.data() + 20 * n, R.data() + 20 * H, T - 20);  // accumulated over two batches
  CHECK(rel_err(ls.solve(), mb::Tensor::from_vector(W, {n, H})) < 1e-5);
  CHECK(ls.method() == "ldlt");

  // Column 3 duplicates column 0: AᵀA is singular, yet A·W must still reproduce R.
  for (int64_t t = 0; t < T; ++t) A[size_t(t * n + 3)] = A[size_t(t * n)];
  std::fill(R.begin(), R.end(), 0.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < H; ++k)
      for (int64_t i = 0; i < n; ++i) R[size_t(t * H + k)] += A[size_t(t * n + i)] * W[size_t(i * H + k)];
  mb::LeastSquares sing(n, H);
  sing.add(A.data(), R.data(), T);
  const mb::Tensor w = sing.solve();
  CHECK(sing.method() != "ldlt");
  double err = 0, norm = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < H; ++k) {
      double fit = 0;
      for (int64_t i = 0; i < n; ++i) fit += double(A[size_t(t * n + i)]) * double(w.f32()[i * H + k]);
      err += (fit - R[size_t(t * H + k)]) * (fit - R[size_t(t * H + k)]);
      norm += double(R[size_t(t * H + k)]) * R[size_t(t * H + k)];
    }
  CHECK(std::sqrt(err / norm) < 1e-4);
}

TEST_CASE("KPMS equals a brute-force scan on random scores") {
  mb::Rng rng(42);
  for (int trial = 0; trial < 200; ++trial) {
    CAPTURE(trial);
    const size_t n = 1 + rng.below(40);
    std::vector<mb::UnitCandidate> c(n);
    for (auto& u : c) {
      u.score = double(rng.below(8));           // many ties
      u.flops = rng.uniform() < 0.3 ? 10 : 1;  // two costs, like heads and neurons
    }
    double total = 0;
    for (const auto& u : c) total += u.flops;
    // Some budgets equal a prefix sum exactly ("strictly below" must exclude that prefix).
    const double budget = trial % 3 == 0 ? double(rng.below(uint64_t(total) + 2)) : rng.uniform() * total * 1.1;
    const std::vector<size_t> got = mb::kpms_select(c, budget);

    // Brute force: try every prefix length of the score order, keep the longest that fits.
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t(0));
    for (size_t a = 0; a < n; ++a)  // selection sort: descending score, lower index first on ties
      for (size_t b = a + 1; b < n; ++b)
        if (c[order[b]].score > c[order[a]].score || (c[order[b]].score == c[order[a]].score && order[b] < order[a]))
          std::swap(order[a], order[b]);
    size_t best = 0;
    for (size_t k = 0; k <= n; ++k) {
      double sum = 0;
      for (size_t i = 0; i < k; ++i) sum += c[order[i]].flops;
      if (sum < budget) best = k;
    }
    std::vector<size_t> want(order.begin(), order.begin() + long(best));
    std::sort(want.begin(), want.end());
    CHECK(got == want);
  }
}

TEST_CASE("the pruned model's outputs equal the masked full model's before tuning") {
  mb::BertModel full = tiny_model(3);
  {  // output biases that are not 0, so that removing one shows
    std::vector<float> bias(32);
    for (size_t k = 0; k < bias.size(); ++k) bias[k] = 0.05f * float(int(k % 7) - 3);
    full.layers[1].attn_out_b = mb::Var(mb::Tensor::from_vector(bias, {32}));
  }
  const mb::Batch b = random_batches(1, 9)[0];
  // Layer 0: heads {1, 3}, neurons: every third; layer 1: no heads at all, 5 neurons.
  const std::vector<std::vector<int64_t>> kept = {{1, 3}, {0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45}, {}, {2, 7, 11, 30, 47}};
  mb::MaskedForward f;
  mb::BertModel pruned = full;
  for (int64_t j = 0; j < 4; ++j) {
    const int64_t units = mb::sublayer_units(full, j), per = j % 2 == 0 ? full.head_dim() : 1;
    std::vector<float> mask(size_t(units * per), 0.0f);
    for (int64_t u : kept[size_t(j)])
      for (int64_t d = 0; d < per; ++d) mask[size_t(u * per + d)] = 1.0f;
    f.masks.push_back(mb::Var(mb::Tensor::from_vector(mask, {units * per})));
    mb::prune_sublayer(pruned, j, kept[size_t(j)]);
  }
  CHECK(pruned.layers[0].num_heads == 2);
  CHECK(pruned.layers[0].q_w.shape() == mb::Shape{16, 32});
  CHECK(pruned.layers[0].attn_out_w.shape() == mb::Shape{32, 16});
  CHECK(pruned.layers[1].num_heads == 0);
  CHECK(!pruned.layers[1].q_w.defined());
  CHECK(pruned.layers[1].ffn_out_w.shape() == mb::Shape{32, 5});
  // Layer 1's attention, emptied, computes LN(x): its output bias goes with it (the authors' code,
  // METHODS.md), so the masked reference has that bias at 0.
  for (int64_t k = 0; k < 32; ++k) CHECK(pruned.layers[1].attn_out_b.value().f32()[k] == 0.0f);
  mb::BertModel reference = full;
  reference.layers[1].attn_out_b = mb::Var(mb::Tensor::zeros({32}));
  CHECK(rel_err(model_logits(pruned, b), mb::masked_forward(reference, b, f).value()) < 1e-5);
  CHECK(rel_err(model_logits(pruned, b), mb::masked_forward(full, b, f).value()) > 1e-3);  // LN(x + b_out) differs
  // The original is untouched.
  CHECK(full.layers[1].num_heads == 4);
  CHECK(full.layers[0].q_w.shape() == mb::Shape{32, 32});

  // Counting follows the actual widths: 2 + 0 heads, 16 + 5 neurons.
  const mb::ModelCounts counts = mb::count_model(pruned, 10);
  CHECK(counts.flops() == doctest::Approx(2 * mb::flops_per_head(10, 32, 8) + 21 * mb::flops_per_neuron(10, 32)));
  // Layer 1: W_O's bias and LN; W1 [5, 32] + b1 [5]; W2 [32, 5] + b2; LN.
  CHECK(counts.layers[1].params == 32 + 2 * 32 + 5 * 32 + 5 + 32 * 5 + 32 + 2 * 32);
}

TEST_CASE("per-layer widths round-trip through a model directory; plain models keep HF's config") {
  const std::string dir = mbtest::scratch_dir("kprune_roundtrip");
  mb::BertModel m = tiny_model(3);
  const mb::Batch b = random_batches(1, 4)[0];

  // Plain: no "minibridge" key, and the config is byte-identical after a load/save cycle.
  m.save(dir + "/plain");
  const std::string plain_cfg = mbtest::read_file(dir + "/plain/config.json");
  CHECK(plain_cfg.find("minibridge") == std::string::npos);
  mb::BertModel::load(dir + "/plain").save(dir + "/plain2");
  CHECK(mbtest::read_file(dir + "/plain2/config.json") == plain_cfg);

  mb::prune_sublayer(m, 0, {0, 1, 3});
  mb::prune_sublayer(m, 2, {});
  mb::prune_sublayer(m, 3, {4, 5});
  m.save(dir + "/pruned");
  const nlohmann::json cfg = mb::read_json_file(dir + "/pruned/config.json");
  const nlohmann::json want = nlohmann::json::parse(R"([
    {"kind": "encoder", "num_heads": 3, "intermediate_size": 48},
    {"kind": "encoder", "num_heads": 0, "intermediate_size": 2}])");
  CHECK(cfg["minibridge"]["layers"] == want);
  const mb::BertModel back = mb::BertModel::load(dir + "/pruned");
  CHECK(back.layers[0].num_heads == 3);
  CHECK(back.layers[1].num_heads == 0);
  CHECK(back.layers[1].intermediate_size == 2);
  const mb::Tensor a = model_logits(m, b), c = model_logits(back, b);
  CHECK(std::equal(a.f32(), a.f32() + a.numel(), c.f32()));

  // Wrong shapes name the tensor; a malformed entry names config.json.
  nlohmann::json bad = cfg;
  bad["minibridge"]["layers"][0]["num_heads"] = 2;
  mbtest::write_file(dir + "/pruned/config.json", bad.dump());
  const std::string e1 = mbtest::error_of([&] { mb::BertModel::load(dir + "/pruned"); });
  CHECK(e1.find("encoder.layer.0.attention.self.query.weight") != std::string::npos);
  CHECK(e1.find("shape") != std::string::npos);
  bad["minibridge"]["layers"][0]["num_heads"] = -1;
  mbtest::write_file(dir + "/pruned/config.json", bad.dump());
  const std::string e2 = mbtest::error_of([&] { mb::BertModel::load(dir + "/pruned"); });
  CHECK(e2.find("config.json") != std::string::npos);
  CHECK(e2.find("num_heads") != std::string::npos);
  bad["minibridge"]["layers"] = nlohmann::json::array();
  mbtest::write_file(dir + "/pruned/config.json", bad.dump());
  CHECK(mbtest::error_of([&] { mb::BertModel::load(dir + "/pruned"); }).find("num_hidden_layers is") != std::string::npos);
}

TEST_CASE("K-prune keeps FLOPs within the budget and the result runs") {
  for (int labels : {3, 1}) {
    const mb::BertModel m = tiny_model(labels, 2);
    const std::vector<mb::Batch> batches = random_batches(4, 13);
    for (double c : {0.0, 0.3, 0.6, 0.9}) {
      CAPTURE(labels);
      CAPTURE(c);
      mb::KpruneOptions opt;
      opt.constraint = c;
      opt.seq_len = 8;
      opt.progress = false;
      mb::KpruneStats st;
      const mb::BertModel p = mb::kprune(m, batches, opt, &st);
      CHECK(st.flops_before == doctest::Approx(mb::count_model(m, 8).flops()));
      CHECK(st.flops_budget == doctest::Approx((1 - c) * st.flops_before));
      CHECK(st.flops_after == doctest::Approx(mb::count_model(p, 8).flops()));
      CHECK(st.flops_after <= st.flops_budget);
      if (c > 0) CHECK(st.flops_after < st.flops_before);
      CHECK(st.steps.size() == 4);
      const mb::Tensor z = model_logits(p, batches[0]);
      CHECK(z.dim(1) == labels);
      for (int64_t i = 0; i < z.numel(); ++i) CHECK(std::isfinite(z.f32()[i]));
    }
  }
}

TEST_CASE("compress kprune CLI: results.json within budget, a loadable model directory, clear errors") {
  const std::string dir = mbtest::scratch_dir("kprune_cli");
  const mb::GlueTask& task = mb::glue_task("MRPC");
  mb::BertModel m = mb::BertModel::init_random(tiny_config(2, 30522), 3);
  mb::prepare_for_task(m, task, 0);
  m.save(dir + "/teacher", mb::DType::F32, mbtest::data_dir() + "/vocab/bert-base-uncased");

  const std::string out = dir + "/out";
  const mbtest::CliRun r = mbtest::run_cli("compress kprune --teacher " + dir + "/teacher --task MRPC --out " + out +
                                           " --constraint 0.5 --num-tokens 300 --threads 1");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const nlohmann::json res = mb::read_json_file(out + "/results.json");
  CHECK(nlohmann::json::parse(r.out) == res);
  for (const char* key : {"constraint", "flops_before", "flops_after", "flops_budget", "layers", "metric_before",
                          "metric_after", "seconds"})
    CHECK_MESSAGE(res.contains(key), key);
  CHECK(res["constraint"] == 0.5);
  CHECK(res["flops_after"].get<double>() <= res["flops_budget"].get<double>());
  CHECK(res["layers"].size() == 2);
  CHECK(res["samples"].get<int64_t>() > 0);
  const mb::BertModel p = mb::BertModel::load(out);
  CHECK(mb::count_model(p, res["seq_len"].get<double>()).flops() == doctest::Approx(res["flops_after"].get<double>()));
  CHECK(fs::exists(out + "/vocab.txt"));
  const auto log = mbtest::json_lines(mbtest::read_file(out + "/kprune_log.jsonl"));
  CHECK(log.size() == 1 + 4 + 1);  // start, one line per sublayer, done
  for (const auto& line : log)
    if (line.contains("sublayer")) CHECK(line.at("peak_rss_mb").get<double>() > 0);
  CHECK(res["weight_tuning"] == true);
  // The pruned directory runs as any model does, int8 included (within a few examples of f32)
  // where this CPU has an int8 kernel.
  if (mb::packed_gemm_available(mb::Precision::Int8)) {
    const mbtest::CliRun ev = mbtest::run_cli("eval --model " + out + " --task MRPC --int8 --threads 1");
    REQUIRE_MESSAGE(ev.status == 0, ev.err);
    CHECK(nlohmann::json::parse(ev.out)["f1"].get<double>() ==
          doctest::Approx(res["metric_after"].get<double>()).epsilon(0.03));
  }

  CHECK(r.err.find("done in") != std::string::npos);  // the progress line's end

  // The KPWT ablation: recorded as such, every step's solver "-". No progress line.
  const mbtest::CliRun plain = mbtest::run_cli("compress kprune --teacher " + dir + "/teacher --task MRPC --out " + dir +
                                               "/plain --constraint 0.5 --num-tokens 300 --threads 1 --no-eval "
                                               "--no-weight-tuning --no-progress");
  INFO(plain.err);
  REQUIRE(plain.status == 0);
  CHECK(plain.err.find("done in") == std::string::npos);
  CHECK(mb::read_json_file(dir + "/plain/results.json")["weight_tuning"] == false);
  for (const auto& line : mbtest::json_lines(mbtest::read_file(dir + "/plain/kprune_log.jsonl")))
    if (line.contains("solver")) CHECK(line["solver"] == "-");

  const mbtest::CliRun bad = mbtest::run_cli("compress kprune --teacher " + dir + "/teacher --task MRPC --out " + dir +
                                             "/bad --constraint 1.5");
  CHECK(bad.status != 0);
  CHECK(!fs::exists(dir + "/bad/results.json"));
  const mbtest::CliRun wrong_task = mbtest::run_cli("compress kprune --teacher " + dir + "/teacher --task STS-B --out " +
                                                    dir + "/bad --constraint 0.5");
  CHECK(wrong_task.status != 0);
  CHECK(wrong_task.err.find("not a fine-tuned STS-B model") != std::string::npos);
  CHECK(!fs::exists(dir + "/bad/results.json"));
}

TEST_CASE("KPWT fits the original sublayer output better than keeping the old columns") {
  const mb::BertModel m = tiny_model(3);
  const std::vector<mb::Batch> batches = random_batches(4, 21);
  for (int64_t j : {0, 1}) {
    CAPTURE(j);
    const std::vector<int64_t> kept = j == 0 ? std::vector<int64_t>{0, 2} : std::vector<int64_t>{1, 5, 8, 13, 21, 34, 40};
    mb::BertModel tuned = m, masked = m;
    mb::prune_sublayer(tuned, j, kept, mb::kpwt_solve(m, m, j, kept, batches));
    mb::prune_sublayer(masked, j, kept);
    // Squared error of each pruned sublayer's pre-LN sum against the original's.
    auto error = [&](const mb::BertModel& p) {
      double e = 0;
      for (const mb::Batch& b : batches) {
        mb::SublayerCapture got, want;
        mb::masked_forward(p, b, mb::capture_at(j, &got));
        mb::masked_forward(m, b, mb::capture_at(j, &want));
        for (int64_t i = 0; i < got.sum.numel(); ++i) {
          const double d = double(got.sum.f32()[i]) - double(want.sum.f32()[i]);
          e += d * d;
        }
      }
      return e;
    };
    const double e_tuned = error(tuned), e_masked = error(masked);
    CHECK(e_masked > 0);
    CHECK(e_tuned < 0.9 * e_masked);
  }
}

TEST_CASE("without weight tuning (the KPWT ablation) every kept output column is the original's") {
  const mb::BertModel m = tiny_model(3, 2);
  const std::vector<mb::Batch> batches = random_batches(4, 13);
  mb::KpruneOptions opt;
  opt.constraint = 0.5;
  opt.seq_len = 8;
  opt.progress = false;
  // Output-projection columns of each sublayer (head-size blocks are columns too, one by one).
  auto columns = [](const mb::Var& w) {
    std::vector<std::vector<float>> cols(size_t(w.dim(1)), std::vector<float>(size_t(w.dim(0))));
    for (int64_t r = 0; r < w.dim(0); ++r)
      for (int64_t c = 0; c < w.dim(1); ++c) cols[size_t(c)][size_t(r)] = w.data()[r * w.dim(1) + c];
    return cols;
  };
  // How many of p's output columns are not a column of the original model's same sublayer.
  auto new_columns = [&](const mb::BertModel& p) {
    int64_t fresh = 0, kept = 0;
    for (size_t l = 0; l < p.layers.size(); ++l)
      for (bool mha : {true, false}) {
        const mb::Var& w = mha ? p.layers[l].attn_out_w : p.layers[l].ffn_out_w;
        if ((mha ? p.layers[l].num_heads : p.layers[l].intermediate_size) == 0) continue;
        const auto orig = columns(mha ? m.layers[l].attn_out_w : m.layers[l].ffn_out_w);
        for (const auto& col : columns(w)) {
          ++kept;
          fresh += std::find(orig.begin(), orig.end(), col) == orig.end();
        }
      }
    REQUIRE(kept > 0);
    return fresh;
  };
  mb::KpruneStats tuned_st, plain_st;
  const mb::BertModel tuned = mb::kprune(m, batches, opt, &tuned_st);
  opt.weight_tuning = false;
  const mb::BertModel plain = mb::kprune(m, batches, opt, &plain_st);
  CHECK(plain_st.flops_after <= plain_st.flops_budget);
  CHECK(new_columns(plain) == 0);
  CHECK(new_columns(tuned) > 0);
  // The first step's decision does not depend on tuning (nothing has been tuned yet).
  CHECK(plain.layers[0].num_heads == tuned.layers[0].num_heads);
}

TEST_CASE("compress kprune: a killed run continues at the next sublayer and ends as an uninterrupted one") {
  const std::string dir = mbtest::scratch_dir("kprune_kill");
  const mb::GlueTask& task = mb::glue_task("MRPC");
  mb::BertConfig c = tiny_config(2, 30522);
  c.num_hidden_layers = 4;  // 8 sublayers
  mb::BertModel m = mb::BertModel::init_random(c, 5);
  mb::prepare_for_task(m, task, 0);
  m.save(dir + "/teacher", mb::DType::F32, mbtest::data_dir() + "/vocab/bert-base-uncased");
  const std::string common = "compress kprune --teacher " + dir + "/teacher --task MRPC --constraint 0.6 "
                             "--num-tokens 3000 --threads 1 --no-eval";
  const mbtest::CliRun full = mbtest::run_cli(common + " --out " + dir + "/full");
  REQUIRE_MESSAGE(full.status == 0, full.err);
  CHECK_FALSE(fs::exists(dir + "/full/checkpoint"));  // removed once results.json is written

  const std::string cut = dir + "/cut";
  REQUIRE(mbtest::run_cli_killed_at(common + " --out " + cut, cut + "/checkpoint/state.json"));
  REQUIRE_FALSE(fs::exists(cut + "/results.json"));
  const mbtest::CliRun again = mbtest::run_cli(common + " --out " + cut);
  REQUIRE_MESSAGE(again.status == 0, again.err);
  CHECK_MESSAGE(again.err.find("resuming K-prune at ") != std::string::npos, again.err);
  CHECK(mbtest::read_file(cut + "/model.safetensors") == mbtest::read_file(dir + "/full/model.safetensors"));
  nlohmann::json a = mb::read_json_file(dir + "/full/results.json"), b = mb::read_json_file(cut + "/results.json");
  a.erase("seconds");
  b.erase("seconds");
  CHECK(a == b);
  auto decisions = [](const std::string& log) {  // every sublayer's line once, without its time and memory
    std::vector<nlohmann::json> out;
    for (nlohmann::json l : mbtest::json_lines(mbtest::read_file(log)))
      if (l.contains("sublayer")) {
        l.erase("seconds");
        l.erase("peak_rss_mb");
        out.push_back(l);
      }
    return out;
  };
  CHECK(decisions(cut + "/kprune_log.jsonl") == decisions(dir + "/full/kprune_log.jsonl"));
  CHECK(decisions(cut + "/kprune_log.jsonl").size() == 8);

  // A finished run is not redone; other options into the same directory are refused.
  const mbtest::CliRun done = mbtest::run_cli(common + " --out " + cut);
  CHECK(done.status == 0);
  CHECK(done.err.find("already finished") != std::string::npos);
  const mbtest::CliRun other = mbtest::run_cli(common + " --seed 3 --out " + cut);
  CHECK(other.status == 1);
  CHECK_MESSAGE(other.err.find(cut + "/options.json: this directory holds a run with other options") != std::string::npos,
                other.err);

  // A damaged checkpoint state is one error naming it.
  const std::string bad = dir + "/bad";
  REQUIRE(mbtest::run_cli_killed_at(common + " --out " + bad, bad + "/checkpoint/state.json"));
  if (!fs::exists(bad + "/results.json")) {
    nlohmann::json st = mb::read_json_file(bad + "/checkpoint/state.json");
    st["next_sublayer"] = 99;
    mbtest::write_file(bad + "/checkpoint/state.json", st.dump());
    const mbtest::CliRun broken = mbtest::run_cli(common + " --out " + bad);
    CHECK(broken.status == 1);
    CHECK_MESSAGE(broken.err.find(bad + "/checkpoint/state.json: next sublayer 99 is outside") != std::string::npos,
                  broken.err);
    // The checkpoint holds only the tensors pruning replaced; the rest are read from the teacher.
    const mb::Checkpoint ck = mb::load_checkpoint(bad + "/checkpoint");
    CHECK(ck.tensors.count("bert.embeddings.word_embeddings.weight") == 0);
    CHECK(ck.tensors.count("bert.encoder.layer.3.output.dense.weight") == 0);  // FFN 3 is not reached yet
    const auto& shared = st["teacher_tensors"];
    CHECK(std::find(shared.begin(), shared.end(), "bert.embeddings.word_embeddings.weight") != shared.end());
    CHECK(ck.tensors.size() == st["tensors"].size());
    st["next_sublayer"] = 1;
    st["tensors"].push_back("bert.encoder.layer.3.output.dense.weight");  // a tensor the checkpoint lacks
    mbtest::write_file(bad + "/checkpoint/state.json", st.dump());
    const mbtest::CliRun missing = mbtest::run_cli(common + " --out " + bad);
    CHECK(missing.status == 1);
    CHECK_MESSAGE(missing.err.find(bad + "/checkpoint/state.json: lists tensor bert.encoder.layer.3.output.dense.weight, "
                                   "which") != std::string::npos,
                  missing.err);
  }
}
