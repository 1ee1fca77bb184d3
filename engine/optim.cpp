#include "engine/optim.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "engine/cpu_kernels.h"
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
  std::set<const void*> values;
  for (const ParamRef& p : params_) {
    MB_CHECK(p.value && p.value->defined() && p.value->dtype() == DType::F32,
             "AdamW: parameter '" + p.name + "' must be a defined F32 tensor");
    MB_CHECK(seen.insert(p.name).second, "AdamW: duplicate parameter name '" + p.name + "'");
    p.value->make_owned();  // updated in place: a view of a read-only mapping must be copied first
    // step() updates all parameters at once, in parallel: memory listed twice would race.
    MB_CHECK(p.value->numel() == 0 || values.insert(p.value->raw()).second,
             "AdamW: parameter '" + p.name + "' is the memory of one listed already");
    // State is allocated up front (torch does it at the first grad; the memory is the same after
    // one step) so that every checkpoint has the same tensors.
    slots_.push_back({Tensor::zeros(p.value->shape()), Tensor::zeros(p.value->shape()), 0, !no_decay(p.name)});
  }
}

namespace {

// The optimizer's passes stream every parameter (110 M floats at BERT-base) through memory. They
// run as one parallel loop over fixed-size pieces of all tensors together: one loop per tensor
// put ~200 fork/join barriers in a step and left the small tensors to one thread.
constexpr int64_t kPiece = int64_t(1) << 16;

struct Piece {
  size_t param;
  int64_t begin, end;
};

std::vector<Piece> pieces_of(const std::vector<ParamRef>& params) {
  std::vector<Piece> out;
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamRef& p = params[i];
    if (!p.grad || !p.grad->defined()) continue;
    const int64_t n = p.grad->numel();
    for (int64_t b = 0; b < n; b += kPiece) out.push_back({i, b, std::min(n, b + kPiece)});
  }
  return out;
}

}  // namespace

void AdamW::step(double lr) { step(lr, 1.0f, false); }

void AdamW::step(double lr, float grad_scale, bool zero_grads) {
  ++steps_;
  const AdamWConfig& c = config_;
  // Per parameter: its scalars, in double, applied in float, in torch's order of operations
  // (_single_tensor_adamw).
  struct Update {
    float* w;
    float* g;
    float* m;
    float* v;
    AdamWScalars s;
  };
  const float b1 = float(c.beta1), b2 = float(c.beta2), a1 = float(1.0 - c.beta1), a2 = float(1.0 - c.beta2);
  const float eps = float(c.eps);
  std::vector<Update> updates(params_.size(), Update{});
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamRef& p = params_[i];
    if (!p.grad || !p.grad->defined()) continue;
    MB_CHECK(p.grad->dtype() == DType::F32 && p.grad->shape() == p.value->shape(),
             "AdamW: grad of '" + p.name + "' has shape " + shape_str(p.grad->shape()) + ", expected F32 " +
                 shape_str(p.value->shape()));
    Slot& s = slots_[i];
    const int64_t t = ++s.steps;
    updates[i] = {p.value->f32(),
                  p.grad->f32(),
                  s.exp_avg.f32(),
                  s.exp_avg_sq.f32(),
                  {grad_scale, float(1.0 - lr * (s.decay ? c.weight_decay : 0.0)), b1, a1, b2, a2,
                   float(lr / (1.0 - std::pow(c.beta1, double(t)))),
                   float(std::sqrt(1.0 - std::pow(c.beta2, double(t)))), eps, false}};
  }
  // A grad is zeroed as soon as it is read, unless two parameters share one (then after all).
  std::vector<const float*> grads;
  for (const Update& u : updates)
    if (u.g) grads.push_back(u.g);
  std::sort(grads.begin(), grads.end());
  const bool zero_after = zero_grads && std::adjacent_find(grads.begin(), grads.end()) != grads.end();
  const bool zero_now = zero_grads && !zero_after;
  for (Update& u : updates) u.s.zero_grad = zero_now;
  const std::vector<Piece> pieces = pieces_of(params_);
  const int64_t count = int64_t(pieces.size());
  // The update at the CPU level's width (engine/cpu_kernels.h: the same bits at every level).
  const auto kernel = cpu_kernels().adamw;
#pragma omp parallel for schedule(static) if (count > 1)
  for (int64_t k = 0; k < count; ++k) {
    const Piece& piece = pieces[size_t(k)];
    const Update& u = updates[piece.param];
    kernel(u.w + piece.begin, u.g + piece.begin, u.m + piece.begin, u.v + piece.begin, piece.end - piece.begin, u.s);
  }
  if (zero_after)
    for (size_t i = 0; i < updates.size(); ++i)
      if (updates[i].g) std::fill(updates[i].g, updates[i].g + params_[i].grad->numel(), 0.0f);
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

double grad_norm(const std::vector<ParamRef>& params) {
  const std::vector<Piece> pieces = pieces_of(params);
  const int64_t count = int64_t(pieces.size());
  // Each piece's Σ g² in 32 interleaved partial sums (one running sum is a chain of dependent
  // additions, 4 cycles each), at the level's width; the pieces' sums added in piece order, so
  // that the norm has the same bits whatever the thread count (an OpenMP reduction adds the
  // threads' partial sums in the order they finish: from three threads on, a clipped step could
  // differ between two runs in the clip coefficient's last bit).
  const auto sum_squares = cpu_kernels().sum_squares;
  std::vector<double> sums(size_t(count), 0.0);
#pragma omp parallel for schedule(static) if (count > 1)
  for (int64_t k = 0; k < count; ++k) {
    const Piece& piece = pieces[size_t(k)];
    sums[size_t(k)] = sum_squares(params[piece.param].grad->f32() + piece.begin, piece.end - piece.begin);
  }
  double sum = 0.0;
  for (double s : sums) sum += s;
  return std::sqrt(sum);
}

float clip_coefficient(double norm, double max_norm) {
  const double coef = max_norm / (norm + 1e-6);
  return std::isfinite(norm) && coef < 1.0 ? float(coef) : 1.0f;
}

double clip_grad_norm(const std::vector<ParamRef>& params, double max_norm) {
  const double norm = grad_norm(params);
  const float f = clip_coefficient(norm, max_norm);
  if (f == 1.0f) return norm;
  const std::vector<Piece> pieces = pieces_of(params);
  const int64_t count = int64_t(pieces.size());
#pragma omp parallel for schedule(static) if (count > 1)
  for (int64_t k = 0; k < count; ++k) {
    const Piece& piece = pieces[size_t(k)];
    float* g = params[piece.param].grad->f32();
    for (int64_t j = piece.begin; j < piece.end; ++j) g[j] *= f;
  }
  return norm;
}

double linear_warmup_decay(int64_t step, int64_t warmup_steps, int64_t total_steps, double base_lr) {
  if (step < warmup_steps) return base_lr * double(step) / double(std::max<int64_t>(1, warmup_steps));
  return base_lr * std::max(0.0, double(total_steps - step) / double(std::max<int64_t>(1, total_steps - warmup_steps)));
}

}  // namespace mb
