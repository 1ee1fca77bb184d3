// Differentiable ops on Vars: each computes its forward with the kernels in engine/ops.h and,
// when an input requires a gradient, records its backward. Defined next to their kernels.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/autograd.h"
#include "engine/gemm.h"
#include "engine/rng.h"

namespace mb {

// Rows of `table` picked by ids: [ids.size(), C].
Var embedding(const Var& table, const std::vector<int32_t>& ids);
// Element-wise a + b (same shape).
Var add(const Var& a, const Var& b);
// x·s
Var scale(const Var& x, float s);
// x[T, C] + b[C] on every row.
Var add_bias(const Var& x, const Var& b);
// x[T, C] · m[C] column by column (K-prune's masks on the inputs of an output projection; the
// gradient with respect to m is what scores the units).
Var mask_columns(const Var& x, const Var& m);
// x[T, K] · W[N, K]ᵀ + b[N]; b may be undefined. `packed` (W packed by pack_weight, engine/gemm.h)
// is used when no gradient is recorded and the kernel takes the product; otherwise W is.
Var linear(const Var& x, const Var& W, const Var& b, const PackedWeight* packed = nullptr);
// The precision of linear() and linear_gelu()'s products on weights as they are: training, and
// forward passes without packed weights (a teacher's, K-prune's). F32 (the default), or BF16: bf16
// mixed precision, x and W rounded to bfloat16 and multiplied by gemm_bf16 (f32 sums; the backward's
// dY rounded too), while weights, gradients, optimizer state, LayerNorm, softmax, attention and the
// losses stay f32. Process-wide, like the GEMM back-end; LinearPrecisionScope sets it for a run.
void set_linear_precision(Precision p);
Precision linear_precision();
class LinearPrecisionScope {
 public:
  explicit LinearPrecisionScope(Precision p) : saved_(linear_precision()) { set_linear_precision(p); }
  ~LinearPrecisionScope() { set_linear_precision(saved_); }
  LinearPrecisionScope(const LinearPrecisionScope&) = delete;
  LinearPrecisionScope& operator=(const LinearPrecisionScope&) = delete;

 private:
  Precision saved_;
};
// While open, linear() and linear_gelu() at bf16 precision convert each frozen weight (one that
// does not require a gradient) to bf16 once and reuse the copy, instead of converting it on every
// call: for passes over a fixed model, where one weight meets hundreds of batches (K-prune's
// knowledge, weight-tuning and advance passes). Results are bit for bit those without it. The
// opener promises that no frozen weight is written in place while it is open; a weight replaced
// by a new tensor is safe (the copy is keyed by the f32 storage, which the scope holds).
// Scopes nest (the innermost is used); one thread runs the model, as everywhere in the engine.
class FrozenWeightsBf16Scope {
 public:
  FrozenWeightsBf16Scope();
  ~FrozenWeightsBf16Scope();
  FrozenWeightsBf16Scope(const FrozenWeightsBf16Scope&) = delete;
  FrozenWeightsBf16Scope& operator=(const FrozenWeightsBf16Scope&) = delete;
  // How many weights this scope has converted (a test's handle on the reuse).
  size_t conversions() const;

  struct Copies;

 private:
  Copies* copies_;
  Copies* saved_;
};
// W's bf16 copy for a product: from the open FrozenWeightsBf16Scope when W is frozen, else fresh.
Tensor bf16_weight(const Var& W);
// LayerNorm(x + residual)·w + b over the last dimension; residual may be undefined.
Var layernorm(const Var& x, const Var& w, const Var& b, float eps, const Var& residual = Var());
Var gelu(const Var& x);
Var gelu_tanh(const Var& x);
Var tanh(const Var& x);
// GELU(x·Wᵀ + b) in one GEMM and one pass (exact GELU, or the tanh form when tanh_form).
Var linear_gelu(const Var& x, const Var& W, const Var& b, bool tanh_form = false, const PackedWeight* packed = nullptr);
// Inverted dropout: zero with probability p, scale the rest by 1/(1-p). Identity when p == 0 or
// !train. Masks are drawn from rng (as if serially, so results do not depend on the thread count);
// with a slice, x is that part of a larger tensor (DrawSlice).
Var dropout(const Var& x, float p, bool train, Rng* rng, DrawSlice slice = {});
// Multi-head attention over packed sequences (see attention_forward); q, k, v: [T, heads·d].
// Attention-probability dropout with probability p when train; a slice places these sequences'
// probabilities (heads·L² each, sequence after sequence) in a larger batch's.
Var attention(const Var& q, const Var& k, const Var& v, const std::vector<int32_t>& offsets, int64_t heads,
              float p = 0.0f, bool train = false, Rng* rng = nullptr, DrawSlice slice = {});
// Inference only (no tape): attention over the output of a fused Q/K/V projection, qkv [T, 3W]
// holding Q, K and V side by side; swap_qk takes the query from the K block and the key from the
// Q block (a shared layer's swap). Returns the context [T, W].
Tensor attention_fused_qkv(const Tensor& qkv, const std::vector<int32_t>& offsets, int64_t heads, bool swap_qk);
// Rows of x: [rows.size(), C].
Var gather_rows(const Var& x, const std::vector<int32_t>& rows);
// x[R, C] with each row divided by max(‖row‖₂, eps) (PyTorch's F.normalize(x, dim=-1)).
Var l2_normalize_rows(const Var& x, float eps = 1e-12f);

// Losses (scalar Vars). Labels equal to -100 are ignored, as in PyTorch.
Var cross_entropy(const Var& logits, const std::vector<int32_t>& labels);
// mean((pred - target)²) over all elements; target has pred's shape and gets no gradient.
Var mse_loss(const Var& pred, const Tensor& target);
// T²·KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over rows (PyTorch's "batchmean").
Var kl_div_with_temperature(const Var& student_logits, const Tensor& teacher_logits, float temperature);

}  // namespace mb
