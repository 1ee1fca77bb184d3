// Helpers for the tests that compare the distillation code (compress/distill, Pea-KD, MB-BERT) with
// the PyTorch oracles of tests/reference/make_kd_fixtures.py: a training set made of a fixture's
// packed batch, the distillation loss composed from the engine's ops exactly as distill() composes
// it, and distill() run on the whole set as one batch per update with every update's weights kept.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "compress/distill.h"
#include "engine/functional.h"
#include "io/data_dir.h"
#include "io/safetensors.h"
#include "models/bert.h"
#include "tests/test_util.h"

namespace kdtest {

// ‖got − want‖ / ‖want‖ (Frobenius), in double.
inline double rel_error(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += std::pow(double(got[i]) - double(want[i]), 2);
    den += std::pow(double(want[i]), 2);
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

inline double rel(double got, double want) { return std::fabs(got - want) / std::max(std::fabs(want), 1e-300); }

// One update's train_log.jsonl line against the oracle's: loss, CE, KD and hidden terms within 1e-5,
// the gradient norm within 1e-4 (relative). Returns the largest relative error.
inline double check_logged_update(const nlohmann::json& got, const nlohmann::json& want) {
  double worst = 0;
  for (const char* key : {"loss", "ce", "kd", "hidden_mse", "grad_norm"}) {
    const std::string key_ = key;
    CAPTURE(key_);
    const double e = rel(got[key].get<double>(), want[key].get<double>());
    CHECK(e < (key_ == "grad_norm" ? 1e-4 : 1e-5));
    worst = std::max(worst, e);
  }
  return worst;
}

// The change the updates made to a tensor, from `initial`, against the oracle's change:
// rel_error(got − initial, want − initial).
inline double change_error(const mb::Tensor& got, const mb::Tensor& want, const mb::Tensor& initial) {
  std::vector<float> d_got(size_t(got.numel())), d_want(size_t(got.numel()));
  for (int64_t i = 0; i < got.numel(); ++i) {
    d_got[size_t(i)] = got.f32()[i] - initial.f32()[i];
    d_want[size_t(i)] = want.f32()[i] - initial.f32()[i];
  }
  return rel_error(d_got.data(), d_want.data(), got.numel());
}

// A classification training set (SST-2's task record: 2 labels) of the batch's sequences.
inline mb::DistillData fixture_data(const mb::Batch& b, const std::vector<int32_t>& labels) {
  mb::DistillData d{mb::glue_task("SST-2"), mb::Tokenizer::from_model_dir(mb::default_vocab_dir()), {}, labels,
                    std::vector<float>(labels.size(), 0.0f), {}};
  for (int64_t s = 0; s < b.num_seqs(); ++s) {
    const auto from = size_t(b.offsets[size_t(s)]), to = size_t(b.offsets[size_t(s + 1)]);
    d.train.push_back({std::vector<int32_t>(b.input_ids.begin() + long(from), b.input_ids.begin() + long(to)),
                       std::vector<int32_t>(b.token_type_ids.begin() + long(from), b.token_type_ids.begin() + long(to))});
  }
  return d;
}

// The rows of each sequence's [CLS] token in a packed batch.
inline std::vector<int32_t> cls_rows(const mb::Batch& b) {
  return std::vector<int32_t>(b.offsets.begin(), b.offsets.end() - 1);
}

struct KdLoss {
  mb::Var loss;
  double ce = 0, kd = 0, hidden = 0;
  std::vector<mb::Var> student_hidden;
  mb::Var logits;
};

// distill()'s loss on one batch, eval-mode forward (dropout is off in the fixtures anyway):
// (1 − α)·CE + α·T²·KL + β·hidden term, the hidden term being the mean over pairs of the MSE of
// L2-normalised [CLS] rows (cls_only, Pea-KD) or the sum over pairs of the all-token MSE (MB-BERT).
// teacher_hidden[i] is pair i's teacher state: [CLS] rows (cls_only) or every token's.
inline KdLoss kd_loss(const mb::BertModel& student, const mb::Batch& b, const std::vector<int32_t>& labels,
                      const mb::Tensor& teacher_logits, const std::vector<mb::Tensor>& teacher_hidden,
                      const std::vector<mb::HiddenPair>& pairs, bool cls_only, double alpha, double T, double beta) {
  KdLoss r;
  const mb::Var h = student.hidden_states(b, {}, &r.student_hidden);
  r.logits = student.classifier_logits(student.pooled_output(b, h));
  const mb::Var ce = mb::cross_entropy(r.logits, labels);
  const mb::Var kd = mb::kl_div_with_temperature(r.logits, teacher_logits, float(T));
  r.ce = ce.data()[0];
  r.kd = kd.data()[0];
  r.loss = mb::add(mb::scale(ce, float(1 - alpha)), mb::scale(kd, float(alpha)));
  for (size_t i = 0; i < pairs.size(); ++i) {
    const mb::Var& hs = r.student_hidden[size_t(pairs[i].student)];
    mb::Tensor target = teacher_hidden[i];
    if (cls_only) {
      mb::NoGrad no_grad;
      target = mb::l2_normalize_rows(mb::Var(target, false)).value();
    }
    const mb::Var mse = mb::mse_loss(cls_only ? mb::l2_normalize_rows(mb::gather_rows(hs, cls_rows(b))) : hs, target);
    const double w = cls_only ? beta / double(pairs.size()) : beta;
    r.hidden += mse.data()[0] * (cls_only ? 1.0 / double(pairs.size()) : 1.0);
    r.loss = mb::add(r.loss, mb::scale(mse, float(w)));
  }
  return r;
}

// Per-update weights of a distill() run (the evaluation after every update keeps a copy) and its
// logged loss lines.
struct KdRun {
  std::vector<std::map<std::string, mb::Tensor>> weights;  // after update 1, 2, ...
  std::vector<nlohmann::json> log;                         // the train_log.jsonl lines with "loss"
};

// distill() over `data` as one batch per update for `updates` updates (epochs of one batch each);
// every update is followed by an evaluation that snapshots the weights, and the last one is kept.
inline KdRun run_distill(mb::BertModel& student, const mb::BertModel* teacher, const mb::DistillData& data,
                         mb::DistillOptions o, int updates, const std::string& dir,
                         const mb::TeacherOutputs* targets = nullptr) {
  KdRun run;
  o.train.batch_size = int(data.train.size());
  o.train.log_steps = 1;
  o.train.save_steps = 0;
  o.epochs = updates;
  o.evals_per_epoch = 1;
  o.progress = false;
  o.select_metric = "update";
  o.select_lower = false;
  o.evaluate = [&run](const mb::BertModel& m) {
    std::map<std::string, mb::Tensor> w;
    for (const auto& [name, v] : m.named_parameters()) w[name] = v.value().clone();
    run.weights.push_back(std::move(w));
    return std::map<std::string, double>{{"update", double(run.weights.size())}};
  };
  mb::distill(student, teacher, data, o, dir, targets);
  for (const nlohmann::json& j : mbtest::json_lines(mbtest::read_file(dir + "/train_log.jsonl")))
    if (j.contains("loss")) run.log.push_back(j);
  return run;
}

}  // namespace kdtest
