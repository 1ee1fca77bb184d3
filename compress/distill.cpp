#include "compress/distill.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <numeric>
#include <optional>

#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/progress.h"
#include "io/atomic_file.h"
#include "io/config.h"
#include "io/jsonl_log.h"
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
  const std::string log_path = (fs::path(out_dir) / "train_log.jsonl").string();
  std::optional<JsonlLog> log;
  if (root) {
    create_output_dir(out_dir);
    fs::remove(log_path);  // a step is redone from its start, so its log starts afresh
    log.emplace(log_path);
  }
  if (root)
    log->write({{"event", "start"},
             {"examples", n},
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
  DistillResult result;
  bool have_best = false;
  std::vector<std::pair<std::string, Tensor>> best_weights;
  const auto t0 = std::chrono::steady_clock::now();

  ProgressOptions popt;
  popt.every_steps = std::max<int64_t>(1, t.log_steps);
  if (!o.progress) popt.interval_s = 0, popt.every_steps = 0, popt.tty = 0;
  std::optional<Progress> progress;
  if (root) progress.emplace(total, popt);
  double sums[4] = {0, 0, 0, 0};  // loss, ce, kd, mse since the last log line
  int64_t count = 0, tokens_since_log = 0;
  auto since_log = t0;
  std::vector<int32_t> order;

  for (int64_t step = 0; step < total;) {
    const int64_t epoch = step / steps_per_epoch, k = step % steps_per_epoch;
    if (k == 0) order = shuffled(size_t(n), t.seed, uint64_t(epoch));
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
                                           std::chrono::duration<double>(now - t0).count());
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
  }
  if (progress) progress->finish();
  restore(student, best_weights);
  student.set_requires_grad(false);
  for (const auto& [name, v] : student.named_parameters()) v.zero_grad();
  if (root) student.save(out_dir, DType::F32, o.tokenizer_dir);
  dist::barrier();  // the saved student is complete before any rank reads it (the next step's teacher)
  result.steps = total;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (root)
    log->write({{"event", "done"}, {"best_epoch", result.best_epoch}, {"best_step", result.best_step}, {"best", result.best_metrics}, {"seconds", result.seconds}});
  return result;
}

}  // namespace mb
