// Reverse-mode autograd: a Var is a shared handle to a value tensor and its gradient; ops that see
// an input requiring a gradient push a backward closure onto a tape, and backward() runs the tape
// in reverse. Gradients accumulate (+=), so a tensor used twice (Pea-KD's shared layers) receives
// the sum of both uses.
//
// Recording happens only when grad mode is on and some input requires a gradient: inference on a
// model whose parameters do not require gradients costs no tape at all; NoGrad switches it off
// explicitly.
#pragma once
#include <functional>
#include <memory>

#include "engine/tensor.h"

namespace mb {

class Var {
 public:
  Var() = default;
  explicit Var(Tensor value, bool requires_grad = false);

  bool defined() const { return node_ && node_->value.defined(); }
  Tensor& value() const { return node_->value; }
  // The gradient, zero-filled on first access (same shape as the value).
  Tensor& grad() const;
  bool has_grad() const { return node_ && node_->grad.defined(); }
  void zero_grad() const { if (node_) node_->grad = Tensor(); }
  bool requires_grad() const { return node_ && node_->requires_grad; }
  void set_requires_grad(bool on) const { node_->requires_grad = on; }

  const Shape& shape() const { return node_->value.shape(); }
  int64_t dim(int i) const { return node_->value.dim(i); }
  int64_t numel() const { return node_ ? node_->value.numel() : 0; }
  const float* data() const { return node_->value.f32(); }
  float* mutable_data() const { return node_->value.f32(); }
  bool same(const Var& other) const { return node_ == other.node_; }

 private:
  struct Node {
    Tensor value, grad;
    bool requires_grad = false;
  };
  std::shared_ptr<Node> node_;
};

// Whether ops record backward closures (thread-local; default on).
bool grad_enabled();

class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool previous_;
};

// True when an op with these inputs must record (grad mode on, some input requires a gradient).
bool needs_grad(std::initializer_list<const Var*> inputs);
// Records a backward closure (called by ops only when needs_grad(...) was true).
void record_backward(std::function<void()> fn);
// A new output Var; requires_grad when `record` is true.
Var make_output(Tensor value, bool record);

// Seeds d(loss)/d(loss) = 1 (loss must hold one element), runs the tape in reverse and clears it.
void backward(const Var& loss);
// Same from a non-scalar output with a given upstream gradient (same shape as out).
void backward(const Var& out, const Tensor& grad_out);
// Drops everything recorded (e.g. after a forward pass whose loss is not needed).
void clear_tape();
size_t tape_size();

}  // namespace mb
