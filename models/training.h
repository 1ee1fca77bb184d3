// What every training loop (finetune, pretrain, and later distillation) shares: hyper-parameters,
// binding AdamW to a model, the optimisation step, and checkpoints of model + optimizer + state.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/optim.h"
#include "io/checkpoint.h"
#include "models/bert.h"

namespace mb {

struct TrainOptions {
  double lr = 2e-5;
  double weight_decay = 0.0;   // HF Trainer default
  double warmup_ratio = 0.0;   // of the total steps, when warmup_steps is 0
  int64_t warmup_steps = 0;
  double max_grad_norm = 1.0;
  int batch_size = 32;
  int64_t max_steps = 0;       // > 0: stop after this many optimizer steps
  uint64_t seed = 42;
  int64_t save_steps = 500;    // checkpoint every this many steps (and at the end of each epoch)
  int64_t log_steps = 20;      // a JSON line every this many steps
  bool resume = false;         // continue from OUT/checkpoint when present
  // bf16 mixed precision: the linear layers' products in bfloat16 with f32 sums, f32 master weights,
  // gradients, optimizer state, LayerNorm, softmax and losses (engine/functional.h:
  // set_linear_precision). Teachers' forward passes in the same run use it too.
  bool bf16 = false;

  int64_t warmup_for(int64_t total_steps) const {
    return warmup_steps > 0 ? warmup_steps : int64_t(warmup_ratio * double(total_steps) + 0.5);
  }
};

// Every parameter of the model as (value, grad) references for AdamW. Requires gradients on them.
std::vector<ParamRef> trainable_params(const BertModel& model);

// After backward(): clip the global gradient norm, take an AdamW step at lr, zero the gradients.
// params are those opt was built from. Returns the gradient norm before clipping. A non-finite
// norm skips the update (and says so).
double optimizer_step(AdamW& opt, const std::vector<ParamRef>& params, double lr, double max_grad_norm);

// Copies every parameter of `model` from tensors[prefix + name] (f32, the same shape); errors start
// with `source` (the checkpoint or file the tensors come from).
void load_parameters(const BertModel& model, const std::map<std::string, Tensor>& tensors, const std::string& prefix,
                     const std::string& source);

// OUT/checkpoint: model parameters ("model.<name>"), optimizer state, `extra` tensors (named as
// given: their names must not start with "model." or "optimizer."), and `state`.
void save_training_checkpoint(const std::string& dir, const BertModel& model, const AdamW& opt,
                              const nlohmann::json& state,
                              const std::vector<std::pair<std::string, Tensor>>& extra = {});
// Restores parameters and optimizer state in place; returns the JSON state. Errors name the
// checkpoint and the parameter when the model does not match.
nlohmann::json load_training_checkpoint(const std::string& dir, const BertModel& model, AdamW& opt);
// The same from a checkpoint already read (load_checkpoint), for a caller that checks its state first.
void load_training_checkpoint(const Checkpoint& ck, const BertModel& model, AdamW& opt);

// Tokens per second, ETA etc. are reported by engine/progress.h; this formats the JSON log line
// every loop writes: {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", ...extra}.
nlohmann::json train_log_line(int64_t step, double loss, double lr, double grad_norm, double tokens_per_s,
                              double elapsed_s);

}  // namespace mb
