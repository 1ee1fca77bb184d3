// Teacher → student knowledge distillation for GLUE classifiers, shared by the compression
// methods (MB-BERT, Pea-KD). Per batch:
//   loss = (1 − α)·CE(y, z_s) + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + β·hidden term
// over the chosen (student layer, teacher layer) pairs of hidden states, one of:
//   AllTokens (MB-BERT):     Σ_pairs MSE(h_s, h_t) over every token of the batch (sequences are
//                            packed, so there is no padding);
//   ClsNormalized (PKD, Pea-KD's patience loss): mean over pairs of MSE(h_s[CLS]/‖h_s[CLS]‖,
//                            h_t[CLS]/‖h_t[CLS]‖), i.e. PyTorch's mse_loss over the stacked
//                            [batch, pairs, H] normalised vectors as the PKD/Pea-KD code computes it.
// Regression tasks (STS-B) use MSE(y, z_s) for the CE term and MSE(z_t, z_s) for the KD term.
// The teacher runs in eval mode (no dropout) without a tape; it is never modified. Its outputs can
// instead be computed once for the whole training set (TeacherOutputs; ClsNormalized only), which
// every epoch and every student of a run then reuses.
// The student trains with AdamW (models/training.h), is evaluated on dev after each epoch (or
// several times an epoch), and the best evaluation (by default the task's main metric) is kept:
// saved to OUT and left in the student.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/glue.h"
#include "io/tokenizer.h"
#include "models/bert.h"
#include "models/training.h"

namespace mb {

// Hidden states to match, as indices into BertModel::hidden_states' all_layers
// (0 = embedding output, i = output of layer i−1).
struct HiddenPair {
  int student = 0, teacher = 0;
};

enum class HiddenLoss { AllTokens, ClsNormalized };

struct DistillOptions {
  TrainOptions train;          // lr, batch_size, seed, warm-up, weight decay, clipping, log_steps
  int epochs = 1;
  int max_len = 128;
  int eval_batch_size = 64;
  double alpha = 0.7;          // weight of the KD term (1 − α on CE)
  double temperature = 2.0;
  double beta = 1.0;           // weight of the hidden-state MSE
  std::vector<HiddenPair> hidden_pairs;
  HiddenLoss hidden_loss = HiddenLoss::AllTokens;
  // Model selection. By default: the task's GLUE metrics on data.dev, the highest main metric kept.
  // `evaluate` replaces that evaluation (Pea-KD's PTP stage: the loss on teacher-derived dev
  // labels); `select_metric` names which of its metrics selects, `select_lower` keeps the lowest.
  // Under MPI `evaluate` runs on every rank (it may be collective) and rank 0's metric selects.
  std::function<std::map<std::string, double>(const BertModel&)> evaluate;
  std::string select_metric;
  bool select_lower = false;
  int evals_per_epoch = 1;     // evaluations spread evenly over each epoch (the last at its end)
  bool progress = true;        // progress line on stderr
  std::string tokenizer_dir;   // vocab.txt etc. copied next to the saved model
};

// A task's data, read and tokenized once (shared by every step of a compression run).
struct DistillData {
  GlueTask task;
  Tokenizer tokenizer;
  std::vector<Encoding> train;           // tokenized training examples
  std::vector<int32_t> train_labels;     // class per example (classification)
  std::vector<float> train_scores;       // score per example (regression)
  GlueSplit dev;
};

// Reads GLUE_DIR/<task>/{train,dev}.tsv with the tokenizer of tokenizer_dir. max_train_examples
// > 0 keeps a random subset of that many training examples (fixed by seed).
DistillData load_distill_data(const std::string& glue_dir, const std::string& task, const std::string& tokenizer_dir,
                              int max_len, int64_t max_train_examples, uint64_t seed);

// The teacher's outputs on a list of examples, eval mode (deterministic), computed once.
struct TeacherOutputs {
  Tensor logits;             // [n, num_labels]
  std::map<int, Tensor> cls; // hidden-state index (as in HiddenPair) → [n, H] [CLS] vectors
};
TeacherOutputs teacher_outputs(const BertModel& teacher, const std::vector<Encoding>& examples,
                               const std::vector<int>& cls_layers, int batch_size);

// Refuses (mb::Error naming dir) a teacher that is not a fine-tuned classifier for `task`: no
// classifier of the task's size, or config.json's finetuning_task names another task.
void check_teacher(const BertModel& teacher, const GlueTask& task, const std::string& dir);

// Makes out_dir the home of one compression run: records `options` in out_dir/options.json, or,
// when a run is already there, refuses (mb::Error) unless it had the same options, so that a
// rerun continues it and never mixes two runs.
void claim_run_dir(const std::string& out_dir, const nlohmann::json& options);

struct DistillResult {
  std::map<std::string, double> best_metrics;  // dev metrics of the kept epoch
  double best_metric = 0;                      // its selecting metric
  int best_epoch = 0;                          // 1-based
  int64_t best_step = 0;                       // the update after which it was evaluated
  int64_t steps = 0;                           // optimizer steps taken
  double seconds = 0;                          // wall time
};

// Trains `student` in place (all its parameters) and leaves the best epoch's weights in it; saves
// that model to out_dir (config.json + model.safetensors + vocab) and logs JSON lines to
// out_dir/train_log.jsonl. `teacher` may be null when α = 0 and β = 0 (plain fine-tuning) or when
// `targets` holds its outputs on data.train (logits, and the [CLS] vectors of every pair's teacher
// layer; ClsNormalized only).
DistillResult distill(BertModel& student, const BertModel* teacher, const DistillData& data, const DistillOptions& opt,
                      const std::string& out_dir, const TeacherOutputs* targets = nullptr);

// A deep copy (owned tensors, fresh Vars): training the copy never touches the original.
BertModel clone_model(const BertModel& model);

// 64-bit FNV-1a over every parameter's name and bytes: equal for identical weights. Used to record
// which model was whose teacher.
uint64_t weights_fingerprint(const BertModel& model);

}  // namespace mb
