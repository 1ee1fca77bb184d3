#include "models/training.h"

#include <cmath>
#include <cstring>
#include <iostream>

#include "engine/error.h"
#include "io/checkpoint.h"

namespace mb {

std::vector<ParamRef> trainable_params(const BertModel& model) {
  model.require_f32_weights("model", "training");
  model.unpack();  // the weights are about to change: packed copies would go stale
  std::vector<ParamRef> refs;
  for (const auto& [name, v] : model.named_parameters()) {
    v.set_requires_grad(true);
    v.grad();  // allocate now: AdamW keeps pointers to the value and grad tensors
    refs.push_back({name, &v.value(), &v.grad()});
  }
  return refs;
}

double optimizer_step(AdamW& opt, const std::vector<ParamRef>& params, double lr, double max_grad_norm) {
  bool same = params.size() == opt.params().size();
  for (size_t i = 0; same && i < params.size(); ++i) same = params[i].grad == opt.params()[i].grad;
  MB_CHECK(same, "optimizer_step: params are not the ones the optimizer was built from");
  const double norm = max_grad_norm > 0 ? grad_norm(params) : 0.0;
  if (std::isfinite(norm)) {
    // Clipping, the update and zeroing the grads in one pass (AdamW::step).
    opt.step(lr, max_grad_norm > 0 ? clip_coefficient(norm, max_grad_norm) : 1.0f, true);
    return norm;
  }
  std::cerr << "minibridge: warning: non-finite gradient norm, update skipped\n";
  for (const ParamRef& p : params)
    if (p.grad && p.grad->defined()) std::memset(p.grad->raw(), 0, p.grad->nbytes());
  return norm;
}

void save_training_checkpoint(const std::string& dir, const BertModel& model, const AdamW& opt,
                              const nlohmann::json& state, const std::vector<std::pair<std::string, Tensor>>& extra) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : model.named_tensors()) tensors.emplace_back("model." + name, t);
  for (auto& entry : opt.state_tensors()) tensors.push_back(std::move(entry));
  tensors.insert(tensors.end(), extra.begin(), extra.end());
  nlohmann::json full = state;
  full["optimizer"] = opt.state_json();
  save_checkpoint(dir, tensors, full);
}

void load_parameters(const BertModel& model, const std::map<std::string, Tensor>& tensors, const std::string& prefix,
                     const std::string& source) {
  for (const auto& [name, v] : model.named_parameters()) {
    auto it = tensors.find(prefix + name);
    MB_CHECK(it != tensors.end(), source + ": lacks parameter '" + name + "'");
    MB_CHECK(it->second.shape() == v.shape() && it->second.dtype() == DType::F32,
             source + ": parameter '" + name + "' has shape " + shape_str(it->second.shape()) + ", the model has " +
                 shape_str(v.shape()));
    v.value().make_owned();
    std::memcpy(v.value().raw(), it->second.raw(), it->second.nbytes());
  }
}

nlohmann::json load_training_checkpoint(const std::string& dir, const BertModel& model, AdamW& opt) {
  const Checkpoint ck = load_checkpoint(dir);
  load_training_checkpoint(ck, model, opt);
  return ck.state;
}

void load_training_checkpoint(const Checkpoint& ck, const BertModel& model, AdamW& opt) {
  load_parameters(model, ck.tensors, "model.", ck.dir);
  MB_CHECK(ck.state.contains("optimizer"), ck.dir + ": state.json lacks the optimizer state");
  try {
    opt.load_state(ck.state["optimizer"], ck.tensors);
  } catch (const Error& e) {
    throw Error(ck.dir + ": " + e.what());
  }
}

nlohmann::json train_log_line(int64_t step, double loss, double lr, double grad_norm, double tokens_per_s,
                              double elapsed_s) {
  return {{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm}, {"tokens_per_s", tokens_per_s},
          {"elapsed_s", elapsed_s}};
}

}  // namespace mb
