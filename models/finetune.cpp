#include "models/finetune.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <numeric>
#include <optional>

#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/progress.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/jsonl_log.h"
#include "models/data_parallel.h"

namespace mb {

namespace fs = std::filesystem;

namespace {

Var init_normal(Shape shape, double stddev, Rng& rng) {
  Tensor t = Tensor::empty(shape);
  fill_normal(t.f32(), t.numel(), stddev, rng);
  return Var(t);
}

// The example order of one epoch: a permutation fixed by (seed, epoch), so a resumed run
// recomputes exactly the order the interrupted one used.
std::vector<int32_t> epoch_order(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed * 1000003u + uint64_t(epoch) + 1);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  return order;
}

}  // namespace

std::vector<Encoding> encode_split(const Tokenizer& tok, const GlueSplit& split, bool pair, int max_len) {
  std::vector<Encoding> out;
  out.reserve(split.examples.size());
  for (const GlueExample& e : split.examples) out.push_back(pair ? tok.encode_pair(e.a, e.b, max_len) : tok.encode(e.a, max_len));
  return out;
}

void prepare_for_task(BertModel& m, const GlueTask& task, uint64_t seed) {
  const int64_t H = m.config.hidden_size, C = task.num_labels();
  Rng rng(seed ^ 0x5eedc1a55ull);
  if (!m.has_pooler()) {
    m.pooler_w = init_normal({H, H}, m.config.initializer_range, rng);
    m.pooler_b = Var(Tensor::zeros({H}));
  }
  if (!m.has_classifier() || m.classifier_w.dim(0) != C) {
    m.classifier_w = init_normal({C, H}, m.config.initializer_range, rng);
    m.classifier_b = Var(Tensor::zeros({C}));
  }
  m.config.id2label = task.regression ? std::vector<std::string>{"LABEL_0"} : task.labels;
  m.config.problem_type = task.regression ? "regression" : "single_label_classification";
  m.config.raw["finetuning_task"] = task.name;
  m.extra.clear();
}

std::vector<float> predict_glue(const BertModel& m, const Tokenizer& tok, const GlueSplit& split, int max_len,
                                int batch_size) {
  const bool pair = !split.examples.empty() && !split.examples.front().b.empty();
  std::vector<float> preds;
  preds.reserve(split.examples.size());
  for (size_t start = 0; start < split.examples.size(); start += size_t(batch_size)) {
    Batch b;
    const size_t end = std::min(split.examples.size(), start + size_t(batch_size));
    for (size_t i = start; i < end; ++i) {
      const GlueExample& e = split.examples[i];
      const Encoding enc = pair ? tok.encode_pair(e.a, e.b, max_len) : tok.encode(e.a, max_len);
      b.add(enc.input_ids, enc.token_type_ids);
    }
    const Tensor logits = m.classify(m.pool(b, m.encode(b)));
    const int64_t C = logits.dim(1);
    for (int64_t r = 0; r < logits.dim(0); ++r) {
      const float* z = logits.f32() + r * C;
      preds.push_back(C == 1 ? z[0] : float(std::max_element(z, z + C) - z));
    }
  }
  return preds;
}

std::map<std::string, double> evaluate_glue(const BertModel& m, const Tokenizer& tok, const GlueTask& task,
                                            const GlueSplit& split, int max_len, int batch_size) {
  MB_CHECK(split.labeled, split.path + ": has no labels to evaluate against");
  return glue_metrics(task, predict_glue(m, tok, split, max_len, batch_size), split);
}

std::map<std::string, double> finetune(const FinetuneOptions& o) {
  const LinearPrecisionScope precision(o.train.bf16 ? Precision::BF16 : Precision::F32);
  const GlueTask& task = glue_task(o.task);
  const GlueSplit train = read_glue_split(o.data_dir, task, "train");
  const GlueSplit dev = read_glue_split(o.data_dir, task, "dev");
  MB_CHECK(!train.examples.empty(), train.path + ": no training examples");
  BertModel model = BertModel::load(o.model_dir);
  model.require_f32_weights(o.model_dir, "fine-tuning");
  const Tokenizer tok = Tokenizer::from_model_dir(o.model_dir);
  prepare_for_task(model, task, o.train.seed);
  const std::vector<Encoding> enc = encode_split(tok, train, task.pair, o.max_len);

  const TrainOptions& t = o.train;
  const int64_t n = int64_t(enc.size()), B = t.batch_size;
  const int64_t steps_per_epoch = (n + B - 1) / B;
  const int64_t total = t.max_steps > 0 ? t.max_steps : steps_per_epoch * o.epochs;
  const int64_t warmup = t.warmup_for(total);

  const std::vector<ParamRef> params = trainable_params(model);
  AdamW opt(params, AdamWConfig{0.9, 0.999, 1e-8, t.weight_decay});
  // Data-parallel over MPI ranks (models/data_parallel.h): rank 0 alone writes and evaluates.
  const bool root = dist::is_root(), parallel = dist::size() > 1;
  int64_t step = 0;
  double best = -std::numeric_limits<double>::infinity();
  std::map<std::string, double> best_metrics;

  const std::string ckpt = (fs::path(o.out_dir) / "checkpoint").string();
  const std::string log_path = (fs::path(o.out_dir) / "train_log.jsonl").string();
  MB_CHECK(t.resume || !checkpoint_exists(ckpt),
           ckpt + ": a checkpoint exists; pass --resume to continue that run, or choose another --out");
  MB_CHECK(!t.resume || checkpoint_exists(ckpt), ckpt + ": no checkpoint to resume from");
  if (root) {
    create_output_dir(o.out_dir);
    if (!t.resume) fs::remove(log_path);  // a fresh run starts a fresh log
  }
  std::optional<JsonlLog> log;
  if (root) log.emplace(log_path);
  if (t.resume) {
    const nlohmann::json st = load_training_checkpoint(ckpt, model, opt);
    try {
      step = st.at("step").get<int64_t>();
      best = st.at("best").is_null() ? best : st.at("best").get<double>();
      best_metrics = st.at("best_metrics").get<std::map<std::string, double>>();
    } catch (const nlohmann::json::exception& e) {
      throw Error(ckpt + "/state.json: malformed fine-tuning state: " + e.what());
    } catch (const Error& e) {
      throw Error(ckpt + "/state.json: " + e.what());
    }
    MB_CHECK(step >= 0 && step <= total, ckpt + "/state.json: step " + std::to_string(step) + " is outside this run's 0.." +
                                             std::to_string(total) + " steps");
    if (root) {
      log->truncate_after_step(step);
      std::cerr << "minibridge: resuming " << o.out_dir << " at step " << step << "\n";
    }
  }
  broadcast_parameters(model);  // every rank starts from rank 0's weights
  auto save_state = [&] {
    save_training_checkpoint(ckpt, model, opt,
                             {{"step", step}, {"best", std::isfinite(best) ? nlohmann::json(best) : nlohmann::json()},
                              {"best_metrics", best_metrics}, {"task", task.name}, {"total_steps", total}});
  };

  ProgressOptions popt;
  popt.start_step = step;
  popt.every_steps = std::max<int64_t>(1, t.log_steps);
  std::optional<Progress> progress;
  if (root) progress.emplace(total, popt);
  const auto t0 = std::chrono::steady_clock::now();
  double loss_sum = 0;
  int64_t loss_count = 0, tokens_since_log = 0;
  auto since_log = std::chrono::steady_clock::now();
  std::vector<int32_t> order;
  int64_t order_epoch = -1;

  while (step < total) {
    const int64_t epoch = step / steps_per_epoch, k = step % steps_per_epoch;
    if (epoch != order_epoch) {
      order = epoch_order(size_t(n), t.seed, epoch);
      order_epoch = epoch;
    }
    Batch b;
    std::vector<int32_t> labels;
    std::vector<float> scores;
    for (int64_t i = k * B; i < std::min(n, (k + 1) * B); ++i) {
      const int32_t ex = order[size_t(i)];
      b.add(enc[size_t(ex)].input_ids, enc[size_t(ex)].token_type_ids);
      labels.push_back(train.examples[size_t(ex)].label);
      scores.push_back(train.examples[size_t(ex)].score);
    }
    // This rank's share of the batch; its mean loss weighted by its share of the sequences, so
    // that the gradients summed over the ranks are those of the whole batch's mean loss.
    const BatchShare share = my_share(b);
    double loss_value = 0.0;
    if (share.seqs.size() > 0) {
      Rng dropout_rng = dropout_rng_for_step(t.seed, step);
      const ForwardOptions train_mode = share.forward(&dropout_rng);
      const Var logits = model.classifier_logits(model.pooled_output(share.batch, model.hidden_states(share.batch, train_mode)),
                                                 train_mode);
      const auto first = size_t(share.seqs.first), end = size_t(share.seqs.end);
      Var loss = task.regression
                     ? mse_loss(logits, Tensor::from_vector(std::vector<float>(scores.begin() + first, scores.begin() + end),
                                                           {share.seqs.size(), 1}))
                     : cross_entropy(logits, std::vector<int32_t>(labels.begin() + first, labels.begin() + end));
      if (parallel) loss = scale(loss, float(double(share.seqs.size()) / double(b.num_seqs())));
      backward(loss);
      loss_value = loss.data()[0];
    }
    if (parallel) {
      allreduce_gradients(params);
      loss_value = sum_over_ranks(loss_value);
    }
    const double lr = linear_warmup_decay(step, warmup, total, t.lr);
    const double norm = optimizer_step(opt, params, lr, t.max_grad_norm);
    ++step;
    loss_sum += loss_value;
    ++loss_count;
    tokens_since_log += b.num_tokens();
    if (progress)
      progress->update(step, {{"epoch", std::to_string(epoch + 1)}, {"loss", fmt_num(loss_value)}, {"lr", fmt_num(lr, 2)}},
                       b.num_tokens());

    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - t0).count();
    if (root && (step % t.log_steps == 0 || step == total)) {
      const double secs = std::chrono::duration<double>(now - since_log).count();
      nlohmann::json line = train_log_line(step, loss_sum / double(loss_count), lr, norm,
                                           secs > 0 ? double(tokens_since_log) / secs : 0.0, elapsed);
      line["epoch"] = double(step) / double(steps_per_epoch);
      log->write(line);
      loss_sum = 0;
      loss_count = 0;
      tokens_since_log = 0;
      since_log = now;
    }
    const bool epoch_end = step % steps_per_epoch == 0 || step == total;
    if (root && epoch_end) {
      const std::map<std::string, double> metrics = evaluate_glue(model, tok, task, dev, o.max_len, o.eval_batch_size);
      nlohmann::json line = {{"step", step}, {"epoch", double(step) / double(steps_per_epoch)}, {"eval", metrics}};
      log->write(line);
      const double m = metrics.at(task.main_metric);
      if (!(m <= best)) {  // also takes the first epoch when the metric is NaN
        best = m;
        best_metrics = metrics;
        model.save(o.out_dir, DType::F32, o.model_dir);
      }
    }
    if (root && (epoch_end || step % t.save_steps == 0)) save_state();
  }
  if (!root) return best_metrics;  // empty: rank 0 reports
  progress->finish();
  nlohmann::json result = {{"task", task.name}, {"steps", step}, {"dev", best_metrics}};
  write_file_atomic((fs::path(o.out_dir) / "results.json").string(), result.dump(2) + "\n");
  // The final checkpoint stays (as pretrain's does): resuming a finished run only reports it.
  return best_metrics;
}

}  // namespace mb
