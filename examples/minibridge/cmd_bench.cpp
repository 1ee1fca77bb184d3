// bench: times whole-model forward passes (or training steps) of a model directory on synthetic
// input and prints one JSON line: median and min milliseconds, tokens/s, peak RSS.
//
//   minibridge bench --model DIR --batch 8 --seq 128 [--train] [--threads 2] [--lengths varied]
//
// Inputs are random token ids from a fixed seed (or, with --inputs, ids read from a JSON file so
// that other engines can be fed exactly the same sequences); --dump writes the last hidden states
// of the first forward pass so those engines' outputs can be checked against ours. Timing belongs
// here (and in bench/compare.py), never in pass/fail tests.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "engine/autograd.h"
#include "engine/cpu.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/gemm.h"
#include "engine/memory_usage.h"
#include "engine/optim.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "io/config.h"
#include "io/glue.h"
#include "models/bert.h"
#include "models/finetune.h"
#include "models/training.h"
#include <nlohmann/json.hpp>

namespace mbcli {

namespace {

struct BenchOptions {
  std::string model;
  int batch = 1;
  int seq = 128;
  bool train = false;
  int threads = 0;
  std::string gemm;
  int warmup = -1;  // -1: 2 forward passes, 1 training step
  int iters = -1;   // -1: 10 forward passes, 5 training steps
  std::string lengths = "fixed";
  uint64_t seed = 1234;
  std::string inputs;  // JSON file with "input_ids" (and optionally "token_type_ids"): lists of sequences
  std::string dump;    // write the first forward's last hidden states here (raw little-endian f32)
  bool no_pack = false;  // forward passes on the unpacked weights (the A/B of the packed GEMM path)
  PrecisionFlags precision;  // --bf16 / --int8 encoder weights and products
};

// A GLUE-like length in [8, S]: skewed towards short sequences (8 + (S-8)·u², mean ≈ 8 + (S-8)/3),
// as sentence and sentence-pair tasks are.
int varied_length(mb::Rng& rng, int S) {
  if (S <= 8) return S;
  const double u = rng.uniform();
  return 8 + int(double(S - 8 + 1) * u * u);
}

// Random ids: [CLS] … [SEP] when the vocabulary has them, word pieces from the bulk of the
// vocabulary otherwise; token types 0 then 1 (a sentence pair) when the model has two types.
mb::Batch synthetic_batch(const BenchOptions& o, const mb::BertConfig& c) {
  mb::Rng rng(o.seed);
  const int64_t V = c.vocab_size;
  const int64_t lo = V > 2000 ? 999 : 1;
  mb::Batch b;
  for (int i = 0; i < o.batch; ++i) {
    const int len = o.lengths == "varied" ? varied_length(rng, o.seq) : o.seq;
    std::vector<int32_t> ids(static_cast<size_t>(len)), types(static_cast<size_t>(len), 0);
    for (int t = 0; t < len; ++t) ids[size_t(t)] = int32_t(lo + int64_t(rng.below(uint64_t(V - lo))));
    if (V > 102 && len >= 2) {
      ids.front() = 101;
      ids.back() = 102;
    }
    if (c.type_vocab_size >= 2)
      for (int t = len / 2; t < len; ++t) types[size_t(t)] = 1;
    b.add(ids, types);
  }
  return b;
}

mb::Batch batch_from_file(const std::string& path) {
  const nlohmann::json j = mb::read_json_file(path);
  MB_CHECK(j.is_object() && j.contains("input_ids") && j["input_ids"].is_array() && !j["input_ids"].empty(),
           path + ": expected {\"input_ids\": [[...], ...], \"token_type_ids\": [[...], ...]}");
  const nlohmann::json& ids = j["input_ids"];
  const bool has_types = j.contains("token_type_ids");
  MB_CHECK(!has_types || (j["token_type_ids"].is_array() && j["token_type_ids"].size() == ids.size()),
           path + ": token_type_ids must list as many sequences as input_ids");
  mb::Batch b;
  for (size_t i = 0; i < ids.size(); ++i) {
    try {
      const auto seq = ids[i].get<std::vector<int32_t>>();
      const auto types = has_types ? j["token_type_ids"][i].get<std::vector<int32_t>>()
                                   : std::vector<int32_t>(seq.size(), 0);
      MB_CHECK(!seq.empty() && types.size() == seq.size(), "lengths differ or the sequence is empty");
      b.add(seq, types);
    } catch (const std::exception& e) {
      throw mb::Error(path + ": sequence " + std::to_string(i) + ": " + e.what());
    }
  }
  return b;
}

void write_dump(const std::string& path, const mb::Tensor& hidden) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  MB_CHECK(out, path + ": cannot open for writing");
  out.write(static_cast<const char*>(hidden.raw()), std::streamsize(hidden.nbytes()));
  MB_CHECK(out.good(), path + ": write failed");
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void run_bench(const BenchOptions& o) {
  MB_CHECK(o.lengths == "fixed" || o.lengths == "varied", "--lengths must be fixed or varied, got '" + o.lengths + "'");
  mb::set_num_threads(o.threads);
  if (!o.gemm.empty()) mb::set_gemm_backend(mb::parse_gemm_backend(o.gemm));
  const int warmup = o.warmup >= 0 ? o.warmup : (o.train ? 1 : 2);
  const int iters = o.iters > 0 ? o.iters : (o.train ? 5 : 10);

  const auto t_load = std::chrono::steady_clock::now();
  mb::BertModel model = mb::BertModel::load(o.model);
  const double load_ms = ms_since(t_load);
  MB_CHECK(!o.inputs.empty() || o.seq <= model.config.max_position_embeddings,
           "--seq " + std::to_string(o.seq) + " exceeds the model's max_position_embeddings " +
               std::to_string(model.config.max_position_embeddings));
  double weight_bytes = 0;
  for (const auto& [name, t] : model.named_tensors()) weight_bytes += double(t.nbytes());
  const mb::Precision precision = o.precision.precision();
  // With --train, --bf16 is bf16 mixed-precision training (the linear layers' products in bf16).
  MB_CHECK(precision == mb::Precision::F32 || (o.train ? precision == mb::Precision::BF16 : !o.no_pack),
           std::string("--") + mb::precision_name(precision) +
               (o.train ? " has no training mode (--bf16 has: mixed precision)"
                        : " is for forward passes on packed weights (not with --no-pack)"));
  const mb::LinearPrecisionScope train_precision(o.train ? precision : mb::Precision::F32);
  if (o.train || o.no_pack) model.require_f32_weights(o.model, o.train ? "--train" : "--no-pack");
  if (!o.train && !o.no_pack) pack_model(model, precision, o.model);

  const mb::Batch batch = o.inputs.empty() ? synthetic_batch(o, model.config) : batch_from_file(o.inputs);
  model.validate(batch);
  const int64_t tokens = batch.num_tokens();
  int64_t max_len = 0;
  for (int64_t i = 0; i < batch.num_seqs(); ++i) max_len = std::max(max_len, batch.length(i));

  std::vector<double> times;
  times.reserve(size_t(iters));
  double first_loss = NAN, last_loss = NAN;

  if (!o.train) {
    for (int i = 0; i < warmup + iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const mb::Tensor hidden = model.encode(batch);
      const double ms = ms_since(t0);
      if (i == 0 && !o.dump.empty()) write_dump(o.dump, hidden);
      if (i >= warmup) times.push_back(ms);
    }
  } else {
    MB_CHECK(o.dump.empty(), "--dump is for forward passes (not --train)");
    // A classification model as fine-tuning makes it: pooler + classifier added when absent.
    if (!model.has_pooler() || !model.has_classifier()) {
      const mb::GlueTask task{"bench", false, false, {"LABEL_0", "LABEL_1"}, "accuracy"};
      mb::prepare_for_task(model, task, o.seed);
    }
    const int64_t C = model.classifier_w.dim(0);
    mb::Rng label_rng(o.seed ^ 0x1abe1ull);
    std::vector<int32_t> labels;
    std::vector<float> targets;
    for (int64_t i = 0; i < batch.num_seqs(); ++i) {
      labels.push_back(int32_t(label_rng.below(uint64_t(C))));
      targets.push_back(float(label_rng.uniform() * 5.0));
    }
    const bool regression = C == 1;
    const std::vector<mb::ParamRef> params = mb::trainable_params(model);
    mb::AdamW opt(params, mb::AdamWConfig{0.9, 0.999, 1e-8, 0.01});
    mb::Rng dropout_rng(o.seed);
    const mb::ForwardOptions train_mode{true, &dropout_rng};
    for (int i = 0; i < warmup + iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      const mb::Var logits =
          model.classifier_logits(model.pooled_output(batch, model.hidden_states(batch, train_mode)), train_mode);
      const mb::Var loss = regression
                               ? mb::mse_loss(logits, mb::Tensor::from_vector(targets, {int64_t(targets.size()), 1}))
                               : mb::cross_entropy(logits, labels);
      mb::backward(loss);
      mb::optimizer_step(opt, params, 2e-5, 1.0);
      const double ms = ms_since(t0);
      last_loss = loss.data()[0];
      if (i == 0) first_loss = last_loss;
      if (i >= warmup) times.push_back(ms);
    }
  }

  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  double mean = 0;
  for (double t : times) mean += t / double(n);

  nlohmann::json j;
  j["model"] = o.model;
  j["batch"] = batch.num_seqs();
  j["seq"] = o.inputs.empty() ? int64_t(o.seq) : max_len;
  j["lengths"] = o.inputs.empty() ? o.lengths : "file";
  j["tokens"] = tokens;
  j["padded_tokens"] = batch.num_seqs() * (o.inputs.empty() ? int64_t(o.seq) : max_len);
  j["threads"] = mb::num_threads();
  j["gemm"] = mb::gemm_backend_name(mb::gemm_backend());
  j["cpu_level"] = mb::cpu_level_name(mb::cpu_level());
  j["mode"] = o.train ? "train" : "forward";
  j["packed_weights_mb"] = double(model.packed_bytes()) / (1024.0 * 1024.0);
  j["precision"] = mb::precision_name(o.train ? mb::linear_precision() : model.packed_precision());
  j["warmup"] = warmup;
  j["iters"] = iters;
  j["median_ms"] = median;
  j["min_ms"] = sorted.front();
  j["mean_ms"] = mean;
  j["times_ms"] = times;
  j["tokens_per_s"] = median > 0 ? double(tokens) * 1000.0 / median : 0.0;
  j["peak_rss_mb"] = mb::peak_rss_mib();
  j["weights_mb"] = weight_bytes / (1024.0 * 1024.0);
  j["load_ms"] = load_ms;
  if (o.train) {
    j["loss_first"] = first_loss;
    j["loss_last"] = last_loss;
  }
  std::cout << j.dump() << "\n";
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "time forward passes (or training steps) on synthetic input; prints one JSON line");
  cmd->add_option("--model", o->model, "Hugging Face BERT model directory")->required();
  cmd->add_option("--batch", o->batch, "sequences per forward pass")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--seq", o->seq, "tokens per sequence (the longest, with --lengths varied)")
      ->check(CLI::Range(2, 1 << 20));
  cmd->add_flag("--train", o->train,
                "time training steps: forward with dropout + cross-entropy on random labels + backward + AdamW "
                "(a pooler and a 2-label classifier are added when the model has none); with --bf16: bf16 mixed precision");
  cmd->add_option("--threads", o->threads, "threads for OpenMP, OpenBLAS and oneDNN (default: MB_NUM_THREADS or all)");
  cmd->add_option("--gemm", o->gemm, "GEMM back-end: onednn, openblas or eigen (default: MB_GEMM or fastest)");
  cmd->add_option("--warmup", o->warmup, "untimed runs first (default: 2 forward / 1 training step)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--iters", o->iters, "timed runs (default: 10 forward / 5 training steps)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--lengths", o->lengths,
                  "fixed: every sequence --seq tokens; varied: GLUE-like random lengths in [8, --seq] (fixed seed)")
      ->check(CLI::IsMember({"fixed", "varied"}));
  cmd->add_option("--seed", o->seed, "seed of the random ids, lengths, labels and dropout");
  cmd->add_option("--inputs", o->inputs,
                  "JSON file {\"input_ids\": [[...], ...], \"token_type_ids\": [[...], ...]} to run instead of "
                  "random ids (--batch, --seq and --lengths are then ignored)");
  cmd->add_option("--dump", o->dump,
                  "write the first forward pass's last hidden states [tokens, hidden] here as raw little-endian "
                  "float32, sequences packed back to back");
  cmd->add_flag("--no-pack", o->no_pack,
                "forward passes on the weights as loaded, without packing them for the GEMM kernel first");
  add_precision_flags(cmd, o->precision);
  cmd->callback([o] { run_bench(*o); });
}

}  // namespace mbcli
