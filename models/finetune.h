// Fine-tuning and evaluation on GLUE tasks, with Hugging Face run_glue's defaults (lr 2e-5, batch
// 32, 3 epochs, max length 128, no warm-up, linear decay, AdamW, gradient clipping at 1.0).
#pragma once
#include <map>
#include <string>

#include "io/glue.h"
#include "io/tokenizer.h"
#include "models/bert.h"
#include "models/training.h"

namespace mb {

struct FinetuneOptions {
  std::string model_dir, task, data_dir, out_dir;
  TrainOptions train;
  int epochs = 3;
  int max_len = 128;
  int eval_batch_size = 64;
};

// Trains, evaluates on dev after each epoch, keeps the best model (by the task's main metric) in
// out_dir, logs to out_dir/train_log.jsonl and checkpoints to out_dir/checkpoint (kept at the end:
// resuming a finished run changes nothing). Returns the best dev metrics.
std::map<std::string, double> finetune(const FinetuneOptions& opt);

// Makes the model a classifier (or regressor) for the task: the task's labels, a pooler, and a
// classifier of the right size (fresh, BERT's init, when absent or of another size); drops the
// pre-training heads, as HF's BertForSequenceClassification does.
void prepare_for_task(BertModel& model, const GlueTask& task, uint64_t seed);

// Every example of a split, tokenized (pairs when `pair`), truncated to max_len.
std::vector<Encoding> encode_split(const Tokenizer& tok, const GlueSplit& split, bool pair, int max_len);

// Dev/test predictions: class index (classification) or score (regression) per example.
std::vector<float> predict_glue(const BertModel& model, const Tokenizer& tok, const GlueSplit& split, int max_len,
                                int batch_size);
// GLUE metrics of the model on a labelled split.
std::map<std::string, double> evaluate_glue(const BertModel& model, const Tokenizer& tok, const GlueTask& task,
                                            const GlueSplit& split, int max_len, int batch_size);

}  // namespace mb
