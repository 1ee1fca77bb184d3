// Teacher → student knowledge distillation for GLUE classifiers, shared by the compression
// methods (MB-BERT now; Pea-KD can reuse it). Per batch:
//   loss = (1 − α)·CE(y, z_s) + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + β·Σ_pairs MSE(h_s, h_t)
// where the MSE runs over every token of the batch (sequences are packed, so there is no padding)
// for each chosen (student layer, teacher layer) pair of hidden states. Regression tasks (STS-B)
// use MSE(y, z_s) for the CE term and MSE(z_t, z_s) for the KD term.
// The teacher runs in eval mode (no dropout) without a tape; it is never modified.
// The student trains with AdamW (models/training.h), is evaluated on dev after each epoch, and
// the best epoch (by the task's main metric) is kept: saved to OUT and left in the student.
#pragma once
#include <cstdint>
#include <map>
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

struct DistillOptions {
  TrainOptions train;          // lr, batch_size, seed, warm-up, weight decay, clipping, log_steps
  int epochs = 1;
  int max_len = 128;
  int eval_batch_size = 64;
  double alpha = 0.7;          // weight of the KD term (1 − α on CE)
  double temperature = 2.0;
  double beta = 1.0;           // weight of the hidden-state MSE
  std::vector<HiddenPair> hidden_pairs;
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

struct DistillResult {
  std::map<std::string, double> best_metrics;  // dev metrics of the kept epoch
  double best_metric = 0;                      // its main metric
  int best_epoch = 0;                          // 1-based
  int64_t steps = 0;                           // optimizer steps taken
  double seconds = 0;                          // wall time
};

// Trains `student` in place (all its parameters) and leaves the best epoch's weights in it; saves
// that model to out_dir (config.json + model.safetensors + vocab) and logs JSON lines to
// out_dir/train_log.jsonl. `teacher` may be null when α = 0 and β = 0 (plain fine-tuning).
DistillResult distill(BertModel& student, const BertModel* teacher, const DistillData& data, const DistillOptions& opt,
                      const std::string& out_dir);

// A deep copy (owned tensors, fresh Vars): training the copy never touches the original.
BertModel clone_model(const BertModel& model);

// 64-bit FNV-1a over every parameter's name and bytes: equal for identical weights. Used to record
// which model was whose teacher.
uint64_t weights_fingerprint(const BertModel& model);

}  // namespace mb
