#include "compress/distill.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <numeric>
#include <optional>

#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/progress.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "io/jsonl_log.h"
#include "io/safetensors.h"
#include "models/data_parallel.h"
#include "models/finetune.h"

namespace mb {

namespace fs = std::filesystem;

namespace {

// A permutation of 0..n-1 fixed by (seed, salt).
std::vector<int32_t> shuffled(size_t n, uint64_t seed, uint64_t salt) {
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed * 1000003u + salt + 1);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  return order;
}

std::vector<std::pair<std::string, Tensor>> snapshot(const BertModel& m) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, v] : m.named_parameters()) out.emplace_back(name, v.value().clone());
  return out;
}

void restore(const BertModel& m, const std::vector<std::pair<std::string, Tensor>>& snap) {
  const auto params = m.named_parameters();
  MB_CHECK(params.size() == snap.size(), "distill: model changed shape during training");
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor& dst = params[i].second.value();
    dst.make_owned();
    std::memcpy(dst.raw(), snap[i].second.raw(), snap[i].second.nbytes());
  }
}

// The kept evaluation, as distill.json and the checkpoint state hold it (a NaN metric as null),
// with the run's size, which a resumed or reused run must match.
nlohmann::json result_json(const DistillResult& r, int64_t total, int64_t n) {
  return {{"steps", total},
          {"examples", n},
          {"best_metrics", r.best_metrics},
          {"best_metric", std::isfinite(r.best_metric) ? nlohmann::json(r.best_metric) : nlohmann::json()},
          {"best_epoch", r.best_epoch},
          {"best_step", r.best_step}};
}
void read_result_json(const nlohmann::json& j, int64_t total, int64_t n, DistillResult& r) {
  MB_CHECK(j.at("steps").get<int64_t>() == total && j.at("examples").get<int64_t>() == n,
           "made with " + j.at("steps").dump() + " updates on " + j.at("examples").dump() + " examples, this run has " +
               std::to_string(total) + " on " + std::to_string(n));
  r.best_metrics = j.at("best_metrics").get<std::map<std::string, double>>();
  r.best_metric = j.at("best_metric").is_null() ? std::nan("") : j.at("best_metric").get<double>();
  r.best_epoch = j.at("best_epoch").get<int>();
  r.best_step = j.at("best_step").get<int64_t>();
}

// Rows `rows` of a [n, C] tensor.
Tensor take_rows(const Tensor& t, const std::vector<int32_t>& rows) {
  const int64_t C = t.dim(1);
  Tensor out = Tensor::empty({int64_t(rows.size()), C});
  for (size_t i = 0; i < rows.size(); ++i)
    std::memcpy(out.f32() + int64_t(i) * C, t.f32() + int64_t(rows[i]) * C, size_t(C) * sizeof(float));
  return out;
}

// The row of each sequence's first token ([CLS]) in a packed batch.
std::vector<int32_t> cls_rows(const Batch& b) { return std::vector<int32_t>(b.offsets.begin(), b.offsets.end() - 1); }

Tensor l2_normalized(const Tensor& t) {
  NoGrad no_grad;
  return l2_normalize_rows(Var(t, false)).value();
}

}  // namespace

TeacherOutputs teacher_outputs(const BertModel& teacher, const std::vector<Encoding>& examples,
                               const std::vector<int>& cls_layers, int batch_size) {
  MB_CHECK(teacher.has_classifier(), "teacher outputs: the teacher has no classifier");
  for (int l : cls_layers)
    MB_CHECK(l >= 0 && l <= int(teacher.layers.size()), "teacher outputs: no hidden state " + std::to_string(l));
  const int64_t n = int64_t(examples.size()), C = teacher.config.num_labels(), H = teacher.config.hidden_size;
  TeacherOutputs out;
  // Under MPI each rank runs the teacher on its share of the examples, and the zeros elsewhere
  // sum (exactly) to every rank's full copy.
  const ShareRange mine = share_range(n, dist::rank(), dist::size());
  out.logits = Tensor::zeros({n, C});
  for (int l : cls_layers) out.cls[l] = Tensor::zeros({n, H});
  NoGrad no_grad;
  for (int64_t start = mine.first; start < mine.end; start += batch_size) {
    const int64_t end = std::min(mine.end, start + int64_t(batch_size));
    Batch b;
    for (int64_t i = start; i < end; ++i) b.add(examples[size_t(i)].input_ids, examples[size_t(i)].token_type_ids);
    std::vector<Var> all;
    const Var h = teacher.hidden_states(b, {}, cls_layers.empty() ? nullptr : &all);
    const Tensor z = teacher.classifier_logits(teacher.pooled_output(b, h)).value();
    std::memcpy(out.logits.f32() + start * C, z.f32(), size_t((end - start) * C) * sizeof(float));
    for (auto& [l, t] : out.cls) {
      const Tensor rows = take_rows(all[size_t(l)].value(), cls_rows(b));
      std::memcpy(t.f32() + start * H, rows.f32(), size_t((end - start) * H) * sizeof(float));
    }
  }
  dist::allreduce_sum(out.logits.f32(), out.logits.numel());
  for (auto& [l, t] : out.cls) dist::allreduce_sum(t.f32(), t.numel());
  return out;
}

void check_teacher(const BertModel& teacher, const GlueTask& task, const std::string& dir) {
  MB_CHECK(teacher.has_classifier() && teacher.config.num_labels() == task.num_labels(),
           dir + ": not a fine-tuned " + task.name + " model (needs a classifier with " +
               std::to_string(task.num_labels()) + " outputs; run `minibridge finetune` first)");
  if (auto it = teacher.config.raw.find("finetuning_task"); it != teacher.config.raw.end() && it->is_string()) {
    const std::string tuned = it->get<std::string>();
    bool same = false;
    try {
      same = glue_task(tuned).name == task.name;
    } catch (const Error&) {
    }
    MB_CHECK(same, dir + ": the teacher was fine-tuned on " + tuned + ", not " + task.name);
  }
}

void claim_run_dir(const std::string& out_dir, const nlohmann::json& options) {
  create_output_dir(out_dir);
  const std::string path = (fs::path(out_dir) / "options.json").string();
  if (fs::exists(path)) {
    const nlohmann::json old = read_json_file(path);
    MB_CHECK(old == options, path + ": this directory holds a run with other options (" + old.dump() +
                                 "); choose another --out");
  } else {
    write_file_atomic(path, options.dump(2) + "\n");
  }
}

DistillData load_distill_data(const std::string& glue_dir, const std::string& task_name, const std::string& tokenizer_dir,
                              int max_len, int64_t max_train_examples, uint64_t seed) {
  const GlueTask& task = glue_task(task_name);
  DistillData d{task, Tokenizer::from_model_dir(tokenizer_dir), {}, {}, {}, read_glue_split(glue_dir, task, "dev")};
  const GlueSplit train = read_glue_split(glue_dir, task, "train");
  MB_CHECK(!train.examples.empty(), train.path + ": no training examples");
  MB_CHECK(d.dev.labeled && !d.dev.examples.empty(), d.dev.path + ": no labelled dev examples");
  std::vector<int32_t> pick(train.examples.size());
  std::iota(pick.begin(), pick.end(), 0);
  if (max_train_examples > 0 && size_t(max_train_examples) < pick.size()) {
    pick = shuffled(train.examples.size(), seed, 0x5b5e7ull);
    pick.resize(size_t(max_train_examples));
    std::sort(pick.begin(), pick.end());  // keep the file's order within the subset
  }
  for (int32_t i : pick) {
    const GlueExample& e = train.examples[size_t(i)];
    d.train.push_back(task.pair ? d.tokenizer.encode_pair(e.a, e.b, max_len) : d.tokenizer.encode(e.a, max_len));
    d.train_labels.push_back(e.label);
    d.train_scores.push_back(e.score);
  }
  return d;
}

BertModel clone_model(const BertModel& m) {
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, t] : m.named_tensors()) tensors[name] = t.clone();
  BertConfig c = m.config;
  write_layer_structure(c, m.layer_structure());
  return BertModel::from_tensors(c, tensors, "model copy");
}

uint64_t weights_fingerprint(const BertModel& m) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* p, size_t n) {
    const unsigned char* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  };
  for (const auto& [name, v] : m.named_parameters()) {
    mix(name.data(), name.size());
    mix(v.value().raw(), v.value().nbytes());
  }
  return h;
}

DistillResult distill(BertModel& student, const BertModel* teacher, const DistillData& data, const DistillOptions& o,
                      const std::string& out_dir, const TeacherOutputs* targets) {
  const LinearPrecisionScope precision(o.train.bf16 ? Precision::BF16 : Precision::F32);
  const bool use_teacher = o.alpha > 0 || (o.beta > 0 && !o.hidden_pairs.empty());
  MB_CHECK(!use_teacher || teacher || targets, "distill: alpha > 0 or beta > 0 needs a teacher");
  if (use_teacher && targets) {
    MB_CHECK(targets->logits.dim(0) == int64_t(data.train.size()),
             "distill: teacher outputs for " + std::to_string(targets->logits.dim(0)) + " examples, not " +
                 std::to_string(data.train.size()));
    MB_CHECK(o.hidden_pairs.empty() || o.hidden_loss == HiddenLoss::ClsNormalized,
             "distill: precomputed teacher outputs hold [CLS] vectors only");
    for (const HiddenPair& p : o.hidden_pairs)
      MB_CHECK(targets->cls.count(p.teacher), "distill: no precomputed teacher hidden state " + std::to_string(p.teacher));
  }
  MB_CHECK(o.evals_per_epoch >= 1, "distill: evals_per_epoch must be >= 1");
  MB_CHECK(o.alpha >= 0 && o.alpha <= 1, "distill: alpha must be in [0, 1]");
  MB_CHECK(o.temperature > 0, "distill: temperature must be > 0");
  MB_CHECK(o.epochs >= 1, "distill: epochs must be >= 1");
  MB_CHECK(student.has_classifier() && student.config.num_labels() == data.task.num_labels(),
           "distill: the student needs a " + data.task.name + " classifier");
  for (const HiddenPair& p : o.hidden_pairs) {
    MB_CHECK(p.student >= 0 && p.student <= int(student.layers.size()),
             "distill: hidden pair names student layer " + std::to_string(p.student) + " of " +
                 std::to_string(student.layers.size()));
    MB_CHECK(!teacher || targets || (p.teacher >= 0 && p.teacher <= int(teacher->layers.size())),
             "distill: hidden pair names teacher layer " + std::to_string(p.teacher));
  }
  const bool regression = data.task.regression;
  const TrainOptions& t = o.train;
  const int64_t n = int64_t(data.train.size()), B = t.batch_size;
  MB_CHECK(n > 0, "distill: no training examples");
  const int64_t steps_per_epoch = (n + B - 1) / B;
  const int64_t total = t.max_steps > 0 ? std::min<int64_t>(t.max_steps, steps_per_epoch * o.epochs)
                                        : steps_per_epoch * o.epochs;
  const int64_t warmup = t.warmup_for(total);

  // Data-parallel over MPI ranks (models/data_parallel.h): rank 0 alone evaluates and writes.
  const bool root = dist::is_root(), parallel = dist::size() > 1;
  const fs::path dir = out_dir;
  const std::string log_path = (dir / "train_log.jsonl").string(), ckpt = (dir / "checkpoint").string(),
                    done_path = (dir / "distill.json").string();
  DistillResult result;

  // A distillation that finished (distill.json, written after the model) is not redone: its model
  // is loaded into the student. One that was stopped resumes from OUT/checkpoint.
  if (fs::exists(done_path)) {
    const nlohmann::json j = read_json_file(done_path);
    try {
      read_result_json(j, total, n, result);
      result.steps = total;
      result.seconds = j.at("seconds").get<double>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(done_path + ": malformed: " + e.what());
    } catch (const Error& e) {
      throw Error(done_path + ": " + e.what());
    }
    const std::string weights = (dir / "model.safetensors").string();
    load_parameters(student, read_safetensors(weights).tensors, "", weights);
    if (root) std::cerr << "minibridge: " << out_dir << ": distillation complete, not redone\n";
    return result;
  }
  const bool resume = checkpoint_exists(ckpt);

  std::optional<JsonlLog> log;
  if (root) {
    create_output_dir(out_dir);
    if (!resume) fs::remove(log_path);  // a fresh start starts a fresh log
    log.emplace(log_path);
  }
  if (root && !resume)
    log->write({{"event", "start"},
             {"examples", n},
             {"precision", t.bf16 ? "bf16" : "f32"},
             {"epochs", o.epochs},
             {"steps", total},
             {"alpha", o.alpha},
             {"temperature", o.temperature},
             {"beta", o.beta},
             {"lr", t.lr},
             {"batch_size", B},
             {"teacher", use_teacher},
             {"hidden_loss", o.hidden_loss == HiddenLoss::ClsNormalized ? "cls_normalized" : "all_tokens"}});

  const std::vector<ParamRef> params = trainable_params(student);
  AdamW opt(params, AdamWConfig{0.9, 0.999, 1e-8, t.weight_decay});

  bool have_best = false;
  std::vector<std::pair<std::string, Tensor>> best_weights;
  double sums[4] = {0, 0, 0, 0};  // loss, ce, kd, mse since the last log line
  int64_t count = 0, start = 0;
  double seconds_before = 0;
  if (resume) {
    // The checkpoint holds the student, AdamW, the best evaluation's weights ("best.<name>") and
    // where the loop was; the data order and dropout are functions of (seed, epoch, update).
    const nlohmann::json st = load_training_checkpoint(ckpt, student, opt);
    try {
      read_result_json(st.at("result"), total, n, result);
      start = st.at("step").get<int64_t>();
      MB_CHECK(start >= 0 && start <= total, "update " + std::to_string(start) + " is outside 0.." + std::to_string(total));
      for (int i = 0; i < 4; ++i) sums[i] = st.at("window").at(size_t(i)).get<double>();
      count = st.at("window_count").get<int64_t>();
      have_best = st.at("have_best").get<bool>();
      seconds_before = st.at("seconds").get<double>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(ckpt + "/state.json: malformed distillation state: " + e.what());
    } catch (const Error& e) {
      throw Error(ckpt + "/state.json: " + e.what());
    }
    if (have_best) {
      const Checkpoint ck = load_checkpoint(ckpt);
      for (const auto& [name, v] : student.named_parameters()) {
        auto it = ck.tensors.find("best." + name);
        MB_CHECK(it != ck.tensors.end() && it->second.shape() == v.shape(),
                 ck.dir + ": checkpoint lacks the best evaluation's '" + name + "'");
        best_weights.emplace_back(name, it->second.clone());
      }
    }
    if (root) {
      log->truncate_after_step(start);
      std::cerr << "minibridge: resuming " << out_dir << " at update " << start << "\n";
    }
  }
  broadcast_parameters(student);  // every rank starts from rank 0's weights

  const bool cls_only = o.hidden_loss == HiddenLoss::ClsNormalized;
  const std::string select = o.select_metric.empty() ? data.task.main_metric : o.select_metric;
  // Evaluation points inside an epoch: after update ⌊j·steps_per_epoch / evals_per_epoch⌋, j = 1..E.
  auto evaluates_at = [&](int64_t step) {
    if (step == total) return true;
    const int64_t k = (step - 1) % steps_per_epoch + 1;
    for (int64_t j = 1; j <= o.evals_per_epoch; ++j)
      if (k == j * steps_per_epoch / o.evals_per_epoch) return true;
    return false;
  };
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] { return seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  auto save_state = [&](int64_t step) {
    std::vector<std::pair<std::string, Tensor>> best;
    if (have_best)
      for (const auto& [name, w] : best_weights) best.emplace_back("best." + name, w);
    save_training_checkpoint(ckpt, student, opt,
                             {{"step", step}, {"result", result_json(result, total, n)},
                              {"window", {sums[0], sums[1], sums[2], sums[3]}}, {"window_count", count},
                              {"have_best", have_best}, {"seconds", seconds()}},
                             best);
  };

  ProgressOptions popt;
  popt.start_step = start;
  popt.every_steps = std::max<int64_t>(1, t.log_steps);
  if (!o.progress) popt.interval_s = 0, popt.every_steps = 0, popt.tty = 0;
  std::optional<Progress> progress;
  if (root) progress.emplace(total, popt);
  int64_t tokens_since_log = 0;
  auto since_log = t0;
  std::vector<int32_t> order;
  int64_t order_epoch = -1;

  for (int64_t step = start; step < total;) {
    const int64_t epoch = step / steps_per_epoch, k = step % steps_per_epoch;
    if (epoch != order_epoch) {
      order = shuffled(size_t(n), t.seed, uint64_t(epoch));
      order_epoch = epoch;
    }
    Batch b;
    std::vector<int32_t> labels, examples;
    std::vector<float> scores;
    for (int64_t i = k * B; i < std::min(n, (k + 1) * B); ++i) {
      const int32_t ex = order[size_t(i)];
      b.add(data.train[size_t(ex)].input_ids, data.train[size_t(ex)].token_type_ids);
      labels.push_back(data.train_labels[size_t(ex)]);
      scores.push_back(data.train_scores[size_t(ex)]);
      examples.push_back(ex);
    }

    // This rank's share of the batch (models/data_parallel.h). Each loss term is a mean over the
    // batch's sequences (CE, KD, [CLS] MSE) or tokens (all-token MSE): weighted by this share's
    // part of those, the gradients summed over the ranks are the whole batch's.
    const BatchShare share = my_share(b);
    const Batch& sb = share.batch;
    const auto first = examples.begin() + share.seqs.first, last = examples.begin() + share.seqs.end;
    const std::vector<int32_t> s_examples(first, last);
    const float seq_weight = parallel ? float(double(share.seqs.size()) / double(b.num_seqs())) : 1.0f;
    const float token_weight = parallel ? float(double(sb.num_tokens()) / double(b.num_tokens())) : 1.0f;
    double values[4] = {0, 0, 0, 0};  // loss, ce, kd, hidden mse of this share (weighted)
    if (share.seqs.size() > 0) {
      // Teacher: precomputed, or run now (on the share) in eval mode without a tape. For the
      // [CLS] loss t_hidden holds the normalised [CLS] vectors, otherwise every token's state.
      Tensor t_logits;
      std::vector<Tensor> t_hidden;
      if (use_teacher && targets) {
        t_logits = take_rows(targets->logits, s_examples);
        for (const HiddenPair& p : o.hidden_pairs)
          t_hidden.push_back(l2_normalized(take_rows(targets->cls.at(p.teacher), s_examples)));
      } else if (use_teacher) {
        NoGrad no_grad;
        std::vector<Var> all;
        const Var h = teacher->hidden_states(sb, {}, o.hidden_pairs.empty() ? nullptr : &all);
        t_logits = teacher->classifier_logits(teacher->pooled_output(sb, h)).value();
        for (const HiddenPair& p : o.hidden_pairs) {
          const Tensor& t = all[size_t(p.teacher)].value();
          t_hidden.push_back(cls_only ? l2_normalized(take_rows(t, cls_rows(sb))) : t);
        }
      }

      Rng dropout_rng = dropout_rng_for_step(t.seed, step);
      const ForwardOptions train_mode = share.forward(&dropout_rng);
      std::vector<Var> s_all;
      const Var s_h = student.hidden_states(sb, train_mode, o.hidden_pairs.empty() ? nullptr : &s_all);
      const Var logits = student.classifier_logits(student.pooled_output(sb, s_h), train_mode);
      const size_t a = size_t(share.seqs.first), z = size_t(share.seqs.end);
      const Var ce = regression ? mse_loss(logits, Tensor::from_vector(std::vector<float>(scores.begin() + a, scores.begin() + z),
                                                                      {share.seqs.size(), 1}))
                                : cross_entropy(logits, std::vector<int32_t>(labels.begin() + a, labels.begin() + z));
      Var loss = o.alpha < 1 ? scale(ce, float(1 - o.alpha) * seq_weight) : Var();
      values[1] = ce.data()[0] * seq_weight;
      auto accumulate = [&loss](const Var& term) { loss = loss.defined() ? add(loss, term) : term; };
      if (use_teacher && o.alpha > 0) {
        const Var kd = regression ? mse_loss(logits, t_logits) : kl_div_with_temperature(logits, t_logits, float(o.temperature));
        values[2] = kd.data()[0] * seq_weight;
        accumulate(scale(kd, float(o.alpha) * seq_weight));
      }
      if (use_teacher && o.beta > 0 && !o.hidden_pairs.empty()) {
        // AllTokens: β·Σ_pairs MSE; ClsNormalized: β·mean over pairs (PKD's mse over the stack).
        const float w = cls_only ? float(o.beta / double(o.hidden_pairs.size())) * seq_weight : float(o.beta) * token_weight;
        for (size_t i = 0; i < o.hidden_pairs.size(); ++i) {
          const Var& h = s_all[size_t(o.hidden_pairs[i].student)];
          const Var mse = mse_loss(cls_only ? l2_normalize_rows(gather_rows(h, cls_rows(sb))) : h, t_hidden[i]);
          values[3] += mse.data()[0] * (cls_only ? seq_weight / double(o.hidden_pairs.size()) : token_weight);
          accumulate(scale(mse, w));
        }
      }
      backward(loss);
      values[0] = loss.data()[0];
    }
    if (parallel) {
      allreduce_gradients(params);
      dist::allreduce_sum(values, 4);
    }
    const double lr = linear_warmup_decay(step, warmup, total, t.lr);
    const double norm = optimizer_step(opt, params, lr, t.max_grad_norm);
    ++step;
    for (int i = 0; i < 4; ++i) sums[i] += values[i];
    ++count;
    tokens_since_log += b.num_tokens();
    if (progress)
      progress->update(step, {{"epoch", std::to_string(epoch + 1)}, {"loss", fmt_num(values[0])}, {"lr", fmt_num(lr, 2)}},
                       b.num_tokens());

    const auto now = std::chrono::steady_clock::now();
    if (root && (step % t.log_steps == 0 || step == total)) {
      const double secs = std::chrono::duration<double>(now - since_log).count();
      nlohmann::json line = train_log_line(step, sums[0] / double(count), lr, norm,
                                           secs > 0 ? double(tokens_since_log) / secs : 0.0,
                                           seconds());
      line["ce"] = sums[1] / double(count);
      line["kd"] = sums[2] / double(count);
      line["hidden_mse"] = sums[3] / double(count);
      line["epoch"] = double(step) / double(steps_per_epoch);
      log->write(line);
      std::fill(std::begin(sums), std::end(sums), 0.0);
      count = tokens_since_log = 0;
      since_log = now;
    }
    if (evaluates_at(step)) {
      // Rank 0 evaluates (o.evaluate runs on every rank: it may be collective); every rank keeps
      // the same best weights from rank 0's metric.
      std::map<std::string, double> metrics;
      double m = 0;
      if (o.evaluate) metrics = o.evaluate(student);
      if (root) {
        if (!o.evaluate)
          metrics = evaluate_glue(student, data.tokenizer, data.task, data.dev, o.max_len, o.eval_batch_size);
        MB_CHECK(metrics.count(select), "distill: the evaluation gives no metric " + select);
        m = metrics.at(select);
        log->write({{"step", step}, {"epoch", double(step) / double(steps_per_epoch)}, {"eval", metrics}});
      }
      dist::broadcast(&m, sizeof m);
      const bool better = o.select_lower ? m < result.best_metric : m > result.best_metric;
      if (!have_best || better) {  // the first evaluation is kept even when its metric is NaN
        have_best = true;
        result.best_metric = m;
        result.best_metrics = metrics;
        result.best_epoch = int(epoch + 1);
        result.best_step = step;
        best_weights = snapshot(student);
      }
    }
    if (root && step < total && (evaluates_at(step) || (t.save_steps > 0 && step % t.save_steps == 0))) save_state(step);
  }
  if (progress) progress->finish();
  restore(student, best_weights);
  student.set_requires_grad(false);
  for (const auto& [name, v] : student.named_parameters()) v.zero_grad();
  result.steps = total;
  result.seconds = seconds();
  if (root) {
    // The model, then distill.json saying it is complete, then the checkpoint is no longer needed.
    student.save(out_dir, DType::F32, o.tokenizer_dir);
    nlohmann::json done = result_json(result, total, n);
    done["seconds"] = result.seconds;
    write_file_atomic(done_path, done.dump(2) + "\n");
    fs::remove_all(ckpt);
    log->write({{"event", "done"}, {"best_epoch", result.best_epoch}, {"best_step", result.best_step}, {"best", result.best_metrics}, {"seconds", result.seconds}});
  }
  dist::barrier();  // the saved student is complete before any rank reads it (the next step's teacher)
  return result;
}

}  // namespace mb
