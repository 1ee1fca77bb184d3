#include "engine/optim.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "engine/error.h"

namespace mb {

bool default_no_decay(const std::string& name) {
  auto ends_with = [&](const std::string& s) {
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  return ends_with(".bias") || name == "bias" || name.find("LayerNorm") != std::string::npos ||
         name.find("layer_norm") != std::string::npos;
}

AdamW::AdamW(std::vector<ParamRef> params, AdamWConfig config, NoDecay no_decay)
    : params_(std::move(params)), config_(config) {
  std::set<std::string> seen;
  for (const ParamRef& p : params_) {
    MB_CHECK(p.value && p.value->defined() && p.value->dtype() == DType::F32,
             "AdamW: parameter '" + p.name + "' must be a defined F32 tensor");
    MB_CHECK(seen.insert(p.name).second, "AdamW: duplicate parameter name '" + p.name + "'");
    p.value->make_owned();  // updated in place: a view of a read-only mapping must be copied first
    // State is allocated up front (torch does it at the first grad; the memory is the same after
    // one step) so that every checkpoint has the same tensors.
    slots_.push_back({Tensor::zeros(p.value->shape()), Tensor::zeros(p.value->shape()), 0, !no_decay(p.name)});
  }
}

void AdamW::step(double lr) {
  ++steps_;
  const AdamWConfig& c = config_;
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamRef& p = params_[i];
    if (!p.grad || !p.grad->defined()) continue;
    MB_CHECK(p.grad->dtype() == DType::F32 && p.grad->shape() == p.value->shape(),
             "AdamW: grad of '" + p.name + "' has shape " + shape_str(p.grad->shape()) + ", expected F32 " +
                 shape_str(p.value->shape()));
    Slot& s = slots_[i];
    const int64_t t = ++s.steps;
    // Scalars in double, applied in float, in torch's order of operations (_single_tensor_adamw).
    const float decay = float(1.0 - lr * (s.decay ? c.weight_decay : 0.0));
    const float b1 = float(c.beta1), b2 = float(c.beta2), a1 = float(1.0 - c.beta1), a2 = float(1.0 - c.beta2);
    const float step_size = float(lr / (1.0 - std::pow(c.beta1, double(t))));
    const float bc2_sqrt = float(std::sqrt(1.0 - std::pow(c.beta2, double(t))));
    const float eps = float(c.eps);
    float* w = p.value->f32();
    const float* g = p.grad->f32();
    float* m = s.exp_avg.f32();
    float* v = s.exp_avg_sq.f32();
    const int64_t n = p.value->numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t j = 0; j < n; ++j) {
      w[j] *= decay;
      m[j] = m[j] * b1 + a1 * g[j];
      v[j] = v[j] * b2 + a2 * g[j] * g[j];
      w[j] += -step_size * (m[j] / (std::sqrt(v[j]) / bc2_sqrt + eps));
    }
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back(prefix + params_[i].name + ".exp_avg", slots_[i].exp_avg);
    out.emplace_back(prefix + params_[i].name + ".exp_avg_sq", slots_[i].exp_avg_sq);
  }
  return out;
}

nlohmann::json AdamW::state_json() const {
  nlohmann::json steps = nlohmann::json::object();
  for (size_t i = 0; i < params_.size(); ++i) steps[params_[i].name] = slots_[i].steps;
  return {{"type", "AdamW"},
          {"step", steps_},
          {"betas", {config_.beta1, config_.beta2}},
          {"eps", config_.eps},
          {"weight_decay", config_.weight_decay},
          {"param_steps", steps}};
}

void AdamW::load_state(const nlohmann::json& state, const std::map<std::string, Tensor>& tensors,
                       const std::string& prefix) {
  const std::string where = "optimizer state: ";
  AdamWConfig c;
  int64_t steps = 0;
  std::vector<int64_t> param_steps(params_.size());
  try {
    MB_CHECK(state.value("type", "") == "AdamW", where + "not an AdamW state (type '" +
                                                     state.value("type", "") + "')");
    steps = state.at("step").get<int64_t>();
    c.beta1 = state.at("betas").at(0).get<double>();
    c.beta2 = state.at("betas").at(1).get<double>();
    c.eps = state.at("eps").get<double>();
    c.weight_decay = state.at("weight_decay").get<double>();
    const nlohmann::json& ps = state.at("param_steps");
    MB_CHECK(ps.is_object() && ps.size() == params_.size(),
             where + "has " + std::to_string(ps.size()) + " parameters, the optimizer " +
                 std::to_string(params_.size()));
    for (size_t i = 0; i < params_.size(); ++i) {
      MB_CHECK(ps.contains(params_[i].name), where + "has no entry for parameter '" + params_[i].name + "'");
      param_steps[i] = ps.at(params_[i].name).get<int64_t>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + "malformed: " + e.what());
  }
  // Validate everything before changing anything, so a failed load leaves the optimizer intact.
  auto find = [&](const ParamRef& p, const char* what) -> const Tensor& {
    const std::string key = prefix + p.name + what;
    auto it = tensors.find(key);
    MB_CHECK(it != tensors.end(), where + "missing tensor '" + key + "'");
    MB_CHECK(it->second.dtype() == DType::F32 && it->second.shape() == p.value->shape(),
             where + "tensor '" + key + "' is " + dtype_name(it->second.dtype()) + " " +
                 shape_str(it->second.shape()) + ", parameter '" + p.name + "' is F32 " +
                 shape_str(p.value->shape()));
    return it->second;
  };
  for (const ParamRef& p : params_) find(p, ".exp_avg"), find(p, ".exp_avg_sq");
  for (size_t i = 0; i < params_.size(); ++i) {
    slots_[i].exp_avg = find(params_[i], ".exp_avg").clone();
    slots_[i].exp_avg_sq = find(params_[i], ".exp_avg_sq").clone();
    slots_[i].steps = param_steps[i];
  }
  config_ = c;
  steps_ = steps;
}

double clip_grad_norm(const std::vector<ParamRef>& params, double max_norm) {
  double sum = 0.0;
  for (const ParamRef& p : params) {
    if (!p.grad || !p.grad->defined()) continue;
    const float* g = p.grad->f32();
    const int64_t n = p.grad->numel();
    double s = 0.0;
#pragma omp parallel for reduction(+ : s) if (n > 65536)
    for (int64_t j = 0; j < n; ++j) s += double(g[j]) * double(g[j]);
    sum += s;
  }
  const double norm = std::sqrt(sum);
  const double coef = max_norm / (norm + 1e-6);
  if (!std::isfinite(norm) || coef >= 1.0) return norm;
  const float f = float(coef);
  for (const ParamRef& p : params) {
    if (!p.grad || !p.grad->defined()) continue;
    float* g = p.grad->f32();
    const int64_t n = p.grad->numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t j = 0; j < n; ++j) g[j] *= f;
  }
  return norm;
}

double linear_warmup_decay(int64_t step, int64_t warmup_steps, int64_t total_steps, double base_lr) {
  if (step < warmup_steps) return base_lr * double(step) / double(std::max<int64_t>(1, warmup_steps));
  return base_lr * std::max(0.0, double(total_steps - step) / double(std::max<int64_t>(1, total_steps - warmup_steps)));
}

}  // namespace mb
