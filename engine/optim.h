// Optimisation: AdamW, gradient-norm clipping and the linear warm-up/decay schedule, each matching
// PyTorch 1.13 / Hugging Face Trainer exactly so that a run here follows the same trajectory.
//
// Parameters are plain (value, grad) tensor pairs, so nothing here depends on the autograd tape.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace mb {

// F32 tensors of the same shape, owned by the caller (they must outlive the optimizer). An undefined
// (or null) grad means "no gradient this step": the parameter is skipped entirely (no update, no
// weight decay, no state step), as torch does for grad=None.
struct ParamRef {
  std::string name;
  Tensor* value = nullptr;
  Tensor* grad = nullptr;
};

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
};

// HF convention: no weight decay on biases and LayerNorm weights.
bool default_no_decay(const std::string& name);

// torch.optim.AdamW (amsgrad off, maximize off), with two param groups: decay / no decay.
class AdamW {
 public:
  using NoDecay = std::function<bool(const std::string& name)>;

  // Values that are views of read-only memory (a mapped file) are made owned copies in place.
  AdamW(std::vector<ParamRef> params, AdamWConfig config = {}, NoDecay no_decay = default_no_decay);

  // One update of every parameter with a defined grad, at learning rate lr.
  void step(double lr);
  // The same with each grad taken as grad · grad_scale (what clip_grad_norm would have left in
  // it, bit for bit), and with zero_grads the grads set to 0 once read: clipping, the update and
  // zeroing in one pass over memory instead of three.
  void step(double lr, float grad_scale, bool zero_grads);

  int64_t step_count() const { return steps_; }  // calls to step()
  const AdamWConfig& config() const { return config_; }
  const std::vector<ParamRef>& params() const { return params_; }

  // Checkpointing. Tensors: "<prefix><param>.exp_avg" and "<prefix><param>.exp_avg_sq" (views of
  // the live state: write them out before the next step). JSON: config, step count, per-parameter
  // step counts (torch keeps one per parameter; they differ when some grads were missing).
  std::vector<std::pair<std::string, Tensor>> state_tensors(const std::string& prefix = "optimizer.") const;
  nlohmann::json state_json() const;
  // Restores what the two above wrote (tensors are copied; other entries in the map are ignored).
  // Like torch's load_state_dict, the saved hyper-parameters replace the constructor's. Throws
  // mb::Error naming the parameter when the set of parameters, a shape or a field does not match.
  void load_state(const nlohmann::json& state, const std::map<std::string, Tensor>& tensors,
                  const std::string& prefix = "optimizer.");

 private:
  struct Slot {
    Tensor exp_avg, exp_avg_sq;
    int64_t steps = 0;
    bool decay = true;
  };
  std::vector<ParamRef> params_;
  std::vector<Slot> slots_;
  AdamWConfig config_;
  int64_t steps_ = 0;
};

// torch.nn.utils.clip_grad_norm_ (L2): the global norm over all defined grads, computed in double;
// grads are scaled by max_norm / (norm + 1e-6) when that is < 1. Returns the norm before clipping.
// A non-finite norm is returned as is and the grads are left alone (the caller should skip the step).
double clip_grad_norm(const std::vector<ParamRef>& params, double max_norm);
// Its two halves: the global L2 norm of the defined grads (in double), and the factor
// clip_grad_norm scales the grads by (1 when the norm is within max_norm or not finite).
double grad_norm(const std::vector<ParamRef>& params);
float clip_coefficient(double norm, double max_norm);

// HF get_linear_schedule_with_warmup: the lr for the optimizer step that follows `step` steps
// already taken: base_lr * step/warmup during warm-up, then linear decay to 0 at total_steps.
double linear_warmup_decay(int64_t step, int64_t warmup_steps, int64_t total_steps, double base_lr);

}  // namespace mb
