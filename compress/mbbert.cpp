#include "compress/mbbert.h"

#include "compress/low_rank_fit.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <set>
#include <sstream>

#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/progress.h"
#include "engine/threads.h"
#include "io/atomic_file.h"
#include "io/config.h"
#include "models/bridge.h"
#include "models/counting.h"
#include "models/finetune.h"

namespace mb {

namespace fs = std::filesystem;
using nlohmann::json;

MbbertAblation parse_mbbert_ablation(const std::string& name) {
  if (name == "none") return MbbertAblation::None;
  if (name == "no-kd") return MbbertAblation::NoKd;
  if (name == "one-shot") return MbbertAblation::OneShot;
  if (name == "distil-baseline") return MbbertAblation::DistilBaseline;
  throw Error("unknown ablation \"" + name + "\" (none, no-kd, one-shot, distil-baseline)");
}

const char* mbbert_ablation_name(MbbertAblation a) {
  switch (a) {
    case MbbertAblation::NoKd: return "no-kd";
    case MbbertAblation::OneShot: return "one-shot";
    case MbbertAblation::DistilBaseline: return "distil-baseline";
    default: return "none";
  }
}

std::vector<int> mbbert_blocks(int64_t num_layers, int steps, bool top_down) {
  std::vector<int> even;  // 0-based indices of the 1-based even-numbered blocks
  for (int l = 1; l < num_layers; l += 2) even.push_back(l);
  MB_CHECK(steps >= 1 && size_t(steps) <= even.size(),
           "MB-BERT: --steps must be in [1, " + std::to_string(even.size()) + "] for a " + std::to_string(num_layers) +
               "-layer model (one even-numbered block per step), got " + std::to_string(steps));
  if (top_down) std::reverse(even.begin(), even.end());
  even.resize(size_t(steps));
  return even;
}

BertConfig config_with_bridges(const BertConfig& base, const std::vector<int>& layers, int64_t rank, BridgeForm form) {
  BertConfig c = base;
  std::vector<LayerStructure> s = read_layer_structure(base, "config");
  for (int l : layers) {
    MB_CHECK(l >= 0 && size_t(l) < s.size(), "config_with_bridges: no layer " + std::to_string(l));
    s[size_t(l)] = LayerStructure::bridge(rank, form);
  }
  write_layer_structure(c, s);
  return c;
}

Var layer_pre_layernorm_output(const BertModel& m, int layer, const Var& x, const Batch& b) {
  const BertLayer& L = m.layers.at(size_t(layer));
  MB_CHECK(L.kind == LayerKind::Encoder, "layer " + std::to_string(layer) + " is not an encoder layer");
  NoGrad no_grad;
  // The same sums as BertModel::layer_forward in eval mode, stopping before the output LayerNorm.
  const Var q = linear(x, L.q_w, L.q_b), k = linear(x, L.k_w, L.k_b), v = linear(x, L.v_w, L.v_b);
  const Var ctx = attention(q, k, v, b.offsets, L.num_heads);
  const Var h = layernorm(linear(ctx, L.attn_out_w, L.attn_out_b), L.attn_ln_w, L.attn_ln_b,
                          float(m.config.layer_norm_eps), x);
  Var inter = linear(h, L.ffn_in_w, L.ffn_in_b);
  inter = m.config.hidden_act == "gelu" ? gelu(inter) : gelu_tanh(inter);
  return add(linear(inter, L.ffn_out_w, L.ffn_out_b), h);
}

namespace {

Var copy_of(const Var& v) { return Var(v.value().clone()); }

}  // namespace

BertLayer fit_bridge(const BertModel& m, int layer, const std::vector<Batch>& batches, int64_t r, BridgeForm form,
                     bool regression, uint64_t seed) {
  const int64_t H = m.config.hidden_size;
  MB_CHECK(layer >= 0 && size_t(layer) < m.layers.size(), "fit_bridge: no layer " + std::to_string(layer));
  const BertLayer& replaced = m.layers[size_t(layer)];
  MB_CHECK(replaced.kind == LayerKind::Encoder, "fit_bridge: layer " + std::to_string(layer) + " is already a bridge");
  MB_CHECK(r >= 1 && r <= H, "MB-BERT: bridge rank must be in [1, hidden_size = " + std::to_string(H) + "], got " +
                                 std::to_string(r));
  BertLayer bridge = make_bridge_layer(H, r, form);
  if (form == BridgeForm::ResidualLayerNorm) {
    bridge.bridge_ln_w = copy_of(replaced.ffn_ln_w);
    bridge.bridge_ln_b = copy_of(replaced.ffn_ln_b);
  }
  if (!regression) {
    Rng rng(seed ^ 0xb41d6eull);
    fill_normal(bridge.bridge_down_w.mutable_data(), bridge.bridge_down_w.numel(), m.config.initializer_range, rng);
    return bridge;  // B = 0, b = 0
  }

  ReducedRankRegression fit(H, H);
  for (const Batch& b : batches) {
    NoGrad no_grad;
    Var x = m.embed(b);
    for (int l = 0; l < layer; ++l) x = m.layer_forward(m.layers[size_t(l)], x, b);
    if (form == BridgeForm::ResidualLayerNorm) {
      // Target: what the bridge's low-rank branch must add to x before the LayerNorm.
      const Var y = layer_pre_layernorm_output(m, layer, x, b);
      fit.add(x.value(), add(y, scale(x, -1.0f)).value());
    } else {
      fit.add(x.value(), m.layer_forward(replaced, x, b).value());
    }
  }
  const ReducedRankRegression::Result res = fit.solve(r);
  // Stored transposed: down.weight = Aᵀ [r, H], up.weight = Bᵀ [H, r].
  float* down = bridge.bridge_down_w.mutable_data();
  float* up = bridge.bridge_up_w.mutable_data();
  for (int64_t j = 0; j < r; ++j)
    for (int64_t i = 0; i < H; ++i) {
      down[j * H + i] = res.A.f32()[i * r + j];
      up[i * r + j] = res.B.f32()[j * H + i];
    }
  std::copy(res.b.f32(), res.b.f32() + H, bridge.bridge_up_b.mutable_data());
  return bridge;
}

namespace {

// Everything the results line says about a model, besides its metric and time.
json measure(const BertModel& m, double mean_len) {
  const ModelCounts c128 = count_model(m, 128), cmean = count_model(m, mean_len);
  int lorb = 0;
  for (const BertLayer& L : m.layers) lorb += L.kind == LayerKind::Bridge;
  return {{"params", c128.total_params()}, {"flops_seq128", c128.flops()}, {"flops_mean_len", cmean.flops()},
          {"mean_len", mean_len}, {"lorb", lorb}, {"layers", m.layers.size()}};
}

// Median milliseconds to classify one dev example (batch of one), over the first n examples.
json latency_ms(const BertModel& m, const DistillData& d, int n, int max_len) {
  if (n <= 0) return json();
  std::vector<double> ms;
  for (int i = 0; i < n && size_t(i) < d.dev.examples.size(); ++i) {
    const GlueExample& e = d.dev.examples[size_t(i)];
    const Encoding enc = d.task.pair ? d.tokenizer.encode_pair(e.a, e.b, max_len) : d.tokenizer.encode(e.a, max_len);
    Batch b;
    b.add(enc.input_ids, enc.token_type_ids);
    const auto t0 = std::chrono::steady_clock::now();
    const Tensor logits = m.classify(m.pool(b, m.encode(b)));
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    (void)logits;
  }
  std::sort(ms.begin(), ms.end());
  return ms.empty() ? json() : json(ms[ms.size() / 2]);
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
}

std::string fmt(double v, const char* f) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string results_table(const std::vector<json>& lines, const MbbertOptions& o, const GlueTask& task) {
  std::ostringstream md;
  md << "# MB-BERT: " << task.name << " (" << task.main_metric << "), ablation " << mbbert_ablation_name(o.ablation)
     << "\n\nTeacher: `" << o.teacher_dir << "`; rank " << o.rank << " (" << bridge_form_name(o.form) << "), "
     << (o.regression_init ? "regression" : "skip") << " init, " << (o.top_down ? "top-down" : "bottom-up")
     << ", " << o.epochs_per_step << " epoch(s) per step, alpha " << o.alpha << ", T " << o.temperature << ", beta "
     << o.beta << ", " << num_threads() << " thread(s).\n"
     << "Blocks are 0-based layer indices. FLOPs per sequence (K-prune model: heads, FFN neurons, bridge products); "
        "latency: median ms to classify one dev example (batch 1).\n\n"
     << "| step | replaced block | #Params (M) | #LoRB (Encoder) | FLOPs s=128 (G) | FLOPs mean len (G) | " << task.main_metric
     << " | % of teacher | latency (ms) | seconds |\n|---|---|---|---|---|---|---|---|---|---|\n";
  const double base = lines.empty() ? 0 : lines.front().value("metric", 0.0);
  for (const json& l : lines) {
    std::string block = "—";
    if (l["replaced_block"].is_number()) block = std::to_string(l["replaced_block"].get<int>());
    else if (l["replaced_block"].is_array()) {
      block.clear();
      for (const auto& v : l["replaced_block"]) {
        if (!block.empty()) block += ',';
        block += std::to_string(v.get<int>());
      }
      if (o.ablation == MbbertAblation::DistilBaseline) block = "removed " + block;
    }
    const double metric = l.value("metric", 0.0);
    md << "| " << l["step"].get<int>() << " | " << block << " | " << fmt(l["params"].get<double>() / 1e6, "%.1f") << " | "
       << l["lorb"].get<int>() << " | " << fmt(l["flops_seq128"].get<double>() / 1e9, "%.3f") << " | "
       << fmt(l["flops_mean_len"].get<double>() / 1e9, "%.3f") << " | " << fmt(metric, "%.4f") << " | "
       << (base != 0 ? fmt(100.0 * metric / base, "%.1f") : std::string("—")) << " | "
       << (l["latency_ms"].is_number() ? fmt(l["latency_ms"].get<double>(), "%.2f") : std::string("—")) << " | "
       << fmt(l.value("seconds", 0.0), "%.0f") << " |\n";
  }
  return md.str();
}

json options_json(const MbbertOptions& o) {
  json j = {{"teacher", fs::absolute(o.teacher_dir).lexically_normal().string()},
          {"task", glue_task(o.task).name},
          {"steps", o.steps},
          {"rank", o.rank},
          {"order", o.top_down ? "top-down" : "bottom-up"},
          {"init", o.regression_init ? "regression" : "skip"},
          {"form", bridge_form_name(o.form)},
          {"alpha", o.alpha},
          {"temperature", o.temperature},
          {"beta", o.beta},
          {"epochs_per_step", o.epochs_per_step},
          {"ablation", mbbert_ablation_name(o.ablation)},
          {"lr", o.train.lr},
          {"batch_size", o.train.batch_size},
          {"seed", o.train.seed},
          {"max_len", o.max_len},
          {"max_train_examples", o.max_train_examples},
          {"fit_tokens", o.fit_tokens}};
  if (o.train.bf16) j["bf16"] = true;  // only when on: earlier runs' options.json still match
  return j;
}

}  // namespace

MbbertSummary run_mbbert(const MbbertOptions& o) {
  // The teacher's passes too, not only distill()'s updates.
  const LinearPrecisionScope precision(o.train.bf16 ? Precision::BF16 : Precision::F32);
  const auto run_start = std::chrono::steady_clock::now();
  BertModel teacher0 = BertModel::load(o.teacher_dir);
  teacher0.require_f32_weights(o.teacher_dir, "MiniBridgeBERT's teacher");
  const GlueTask& task = glue_task(o.task);
  check_teacher(teacher0, task, o.teacher_dir);
  for (const BertLayer& L : teacher0.layers)
    MB_CHECK(L.kind == LayerKind::Encoder, o.teacher_dir + ": the teacher already has bridges");
  const std::vector<int> blocks = mbbert_blocks(int64_t(teacher0.layers.size()), o.steps, o.top_down);
  MB_CHECK(o.rank >= 1 && o.rank <= teacher0.config.hidden_size,
           "MB-BERT: --rank must be in [1, hidden_size = " + std::to_string(teacher0.config.hidden_size) + "]");
  MB_CHECK(o.epochs_per_step >= 1, "MB-BERT: --epochs-per-step must be >= 1");

  // The output directory belongs to one run: resuming with other options would mix two runs.
  // Under MPI rank 0 alone writes (here and below); every rank trains (distill) and reads back.
  const bool root = dist::is_root();
  if (root) claim_run_dir(o.out_dir, options_json(o));
  dist::barrier();
  const fs::path out = o.out_dir;

  const DistillData data =
      load_distill_data(o.data_dir, o.task, o.teacher_dir, o.max_len, o.max_train_examples, o.train.seed);
  double mean_len = 0;
  for (const GlueExample& e : data.dev.examples) {
    const Encoding enc = task.pair ? data.tokenizer.encode_pair(e.a, e.b, o.max_len) : data.tokenizer.encode(e.a, o.max_len);
    mean_len += double(enc.input_ids.size());
  }
  mean_len /= double(data.dev.examples.size());

  // Fitting data for the regression init: the first training examples, ≥ fit_tokens tokens.
  std::vector<Batch> fit_batches;
  for (size_t i = 0, tokens = 0; i < data.train.size() && int64_t(tokens) < o.fit_tokens;) {
    Batch b;
    for (; i < data.train.size() && b.num_seqs() < 32; ++i) b.add(data.train[i].input_ids, data.train[i].token_type_ids);
    tokens += size_t(b.num_tokens());
    fit_batches.push_back(std::move(b));
  }

  MbbertSummary summary;
  auto write_results = [&] {
    std::string text;
    for (const json& l : summary.results) text += l.dump() + "\n";
    write_file_atomic((out / "results.jsonl").string(), text);
    write_file_atomic((out / "results.md").string(), results_table(summary.results, o, task));
  };
  auto step_dir = [&](int k) { return (out / ("step_" + std::to_string(k))).string(); };
  auto done_line = [&](int k, json* line) {
    const fs::path p = fs::path(step_dir(k)) / "step.json";
    if (!fs::exists(p)) return false;
    *line = read_json_file(p.string());
    if (root) std::cerr << "minibridge: " << step_dir(k) << " is complete, not redone\n";
    return true;
  };
  auto finish_step = [&](int k, const json& line) {
    if (!root) return;
    create_output_dir(step_dir(k));
    write_file_atomic((fs::path(step_dir(k)) / "step.json").string(), line.dump(2) + "\n");  // marks it complete
    summary.results.push_back(line);
    write_results();
    std::cerr << "minibridge: step " << k << ": " << line.dump() << "\n";
  };

  // Step 0: the teacher.
  if (root) {
    json line;
    if (!done_line(0, &line)) {
      const auto metrics = evaluate_glue(teacher0, data.tokenizer, task, data.dev, o.max_len, o.eval_batch_size);
      line = measure(teacher0, mean_len);
      line.update({{"step", 0}, {"replaced_block", nullptr}, {"metric", metrics.at(task.main_metric)},
                   {"dev", metrics}, {"seconds", 0.0}, {"latency_ms", latency_ms(teacher0, data, o.latency_examples, o.max_len)},
                   {"ablation", mbbert_ablation_name(o.ablation)}, {"model", o.teacher_dir},
                   {"student_fingerprint", hex64(weights_fingerprint(teacher0))}});
    }
    finish_step(0, line);
  }

  DistillOptions d;
  d.train = o.train;
  d.epochs = o.epochs_per_step;
  d.max_len = o.max_len;
  d.eval_batch_size = o.eval_batch_size;
  d.alpha = o.alpha;
  d.temperature = o.temperature;
  d.beta = o.beta;
  d.progress = o.progress;
  d.tokenizer_dir = o.teacher_dir;

  auto step_line = [&](int k, const json& replaced, const BertModel* teacher, const std::string& teacher_dir,
                       const BertModel& student, const DistillResult& r, double seconds) {
    json line = measure(student, mean_len);
    line.update({{"step", k}, {"replaced_block", replaced}, {"metric", r.best_metric}, {"dev", r.best_metrics},
                 {"seconds", seconds}, {"latency_ms", latency_ms(student, data, o.latency_examples, o.max_len)},
                 {"ablation", mbbert_ablation_name(o.ablation)}, {"model", step_dir(k)}, {"best_epoch", r.best_epoch},
                 {"train_steps", r.steps}, {"teacher_model", teacher ? json(teacher_dir) : json()},
                 {"teacher_fingerprint", teacher ? json(hex64(weights_fingerprint(*teacher))) : json()},
                 {"student_fingerprint", hex64(weights_fingerprint(student))}});
    return line;
  };

  if (o.ablation == MbbertAblation::None || o.ablation == MbbertAblation::NoKd) {
    const bool kd = o.ablation == MbbertAblation::None;
    if (!kd) d.alpha = d.beta = 0;
    for (int k = 1; k <= o.steps; ++k) {
      json line;
      if (done_line(k, &line)) {
        finish_step(k, line);
        continue;
      }
      const auto t0 = std::chrono::steady_clock::now();
      // Step k's teacher is step k−1's kept student, read back from its directory (frozen).
      const std::string prev_dir = k == 1 ? o.teacher_dir : step_dir(k - 1);
      const BertModel teacher = k == 1 ? clone_model(teacher0) : BertModel::load(prev_dir);
      const int block = blocks[size_t(k - 1)];
      BertModel student = clone_model(teacher);
      student.layers[size_t(block)] =
          fit_bridge(teacher, block, fit_batches, o.rank, o.form, o.regression_init, o.train.seed + uint64_t(k));
      write_layer_structure(student.config, student.layer_structure());
      d.hidden_pairs = {{block + 1, block + 1}};
      if (root)
        std::cerr << "minibridge: MB-BERT step " << k << "/" << o.steps << ": layer " << block << " -> bridge (rank "
                  << o.rank << ")" << (kd ? ", KD from " + prev_dir : ", no KD") << "\n";
      const DistillResult r = distill(student, kd ? &teacher : nullptr, data, d, step_dir(k));
      if (o.on_step) o.on_step(k, kd ? &teacher : nullptr, student);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (root) finish_step(k, step_line(k, block, kd ? &teacher : nullptr, prev_dir, student, r, secs));
    }
  } else {
    // One step with all `steps` blocks changed at once, distilled from the full teacher with the
    // same total number of epochs as the progressive run.
    json line;
    if (!done_line(1, &line)) {
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<int> sorted = blocks;
      std::sort(sorted.begin(), sorted.end());
      BertModel student = clone_model(teacher0);
      d.epochs = o.epochs_per_step * o.steps;
      d.hidden_pairs.clear();
      if (o.ablation == MbbertAblation::OneShot) {
        // Each bridge is fitted on the full teacher's own activations at its position.
        for (int block : sorted) {
          student.layers[size_t(block)] =
              fit_bridge(teacher0, block, fit_batches, o.rank, o.form, o.regression_init, o.train.seed + uint64_t(block));
          d.hidden_pairs.push_back({block + 1, block + 1});
        }
      } else {
        // DistilBERT-style: drop the blocks; student layer j (teacher layer kept[j]) matches the
        // teacher's hidden state just before the next kept layer.
        std::vector<int> kept;
        for (int l = 0; l < int(teacher0.layers.size()); ++l)
          if (!std::binary_search(sorted.begin(), sorted.end(), l)) kept.push_back(l);
        std::vector<BertLayer> layers;
        for (int l : kept) layers.push_back(student.layers[size_t(l)]);
        student.layers = layers;
        for (size_t j = 0; j < kept.size(); ++j)
          d.hidden_pairs.push_back({int(j) + 1, j + 1 < kept.size() ? kept[j + 1] : int(teacher0.layers.size())});
      }
      write_layer_structure(student.config, student.layer_structure());
      if (root)
        std::cerr << "minibridge: MB-BERT " << mbbert_ablation_name(o.ablation) << ": " << sorted.size() << " blocks, "
                  << d.epochs << " epochs, KD from " << o.teacher_dir << "\n";
      const DistillResult r = distill(student, &teacher0, data, d, step_dir(1));
      if (o.on_step) o.on_step(1, &teacher0, student);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (root) line = step_line(1, sorted, &teacher0, o.teacher_dir, student, r, secs);
    }
    finish_step(1, line);
  }
  if (root)
    std::cerr << "minibridge: MB-BERT done in "
            << fmt_duration(std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count()) << ": "
            << (out / "results.md").string() << "\n";
  return summary;
}

}  // namespace mb
