#include "engine/autograd.h"

#include <cstring>
#include <vector>

#include "engine/error.h"

namespace mb {

Var::Var(Tensor value, bool requires_grad) : node_(std::make_shared<Node>()) {
  node_->value = std::move(value);
  node_->requires_grad = requires_grad;
}

Tensor& Var::grad() const {
  MB_CHECK(node_, "grad() of an undefined Var");
  if (!node_->grad.defined()) node_->grad = Tensor::zeros(node_->value.shape());
  return node_->grad;
}

namespace {
thread_local bool t_grad_enabled = true;
thread_local std::vector<std::function<void()>> t_tape;
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
NoGrad::NoGrad() : previous_(t_grad_enabled) { t_grad_enabled = false; }
NoGrad::~NoGrad() { t_grad_enabled = previous_; }

bool needs_grad(std::initializer_list<const Var*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Var* v : inputs)
    if (v && v->requires_grad()) return true;
  return false;
}

void record_backward(std::function<void()> fn) { t_tape.push_back(std::move(fn)); }

Var make_output(Tensor value, bool record) { return Var(std::move(value), record); }

namespace {
void run_tape() {
  // Closures free their saved tensors as they are destroyed, newest first.
  while (!t_tape.empty()) {
    std::function<void()> fn = std::move(t_tape.back());
    t_tape.pop_back();
    fn();
  }
}
}  // namespace

void backward(const Var& loss) {
  MB_CHECK(loss.defined() && loss.numel() == 1, "backward() needs a scalar loss");
  MB_CHECK(loss.requires_grad(), "backward(): the loss does not depend on anything that requires a gradient");
  loss.grad().f32()[0] += 1.0f;
  run_tape();
}

void backward(const Var& out, const Tensor& grad_out) {
  MB_CHECK(out.requires_grad(), "backward(): the output does not depend on anything that requires a gradient");
  MB_CHECK(grad_out.shape() == out.shape(), "backward(): gradient shape " + shape_str(grad_out.shape()) +
                                                " differs from the output's " + shape_str(out.shape()));
  float* g = out.grad().f32();
  const float* src = grad_out.f32();
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) g[i] += src[i];
  run_tape();
}

void clear_tape() { t_tape.clear(); }
size_t tape_size() { return t_tape.size(); }

}  // namespace mb
