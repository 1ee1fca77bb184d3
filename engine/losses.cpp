// Losses: cross-entropy, mean squared error, and temperature-scaled KL divergence for distillation.
// Row reductions run in double: they are cheap and keep the scalar loss accurate.
#include <cmath>
#include <vector>

#include "engine/error.h"
#include "engine/functional.h"

namespace mb {

namespace {

// softmax(z/T) of one row into out; returns log Σ exp(z/T) (for log-softmax).
double softmax_row(const float* z, int64_t C, double T, double* out) {
  double mx = z[0] / T;
  for (int64_t c = 1; c < C; ++c) mx = std::max(mx, z[c] / T);
  double sum = 0;
  for (int64_t c = 0; c < C; ++c) sum += (out[c] = std::exp(z[c] / T - mx));
  for (int64_t c = 0; c < C; ++c) out[c] /= sum;
  return mx + std::log(sum);
}

Var scalar_output(double value, bool rec) {
  Tensor t = Tensor::empty({1});
  t.f32()[0] = float(value);
  return make_output(t, rec);
}

}  // namespace

Var cross_entropy(const Var& logits, const std::vector<int32_t>& labels) {
  const int64_t N = logits.dim(0), C = logits.dim(1);
  MB_CHECK(int64_t(labels.size()) == N, "cross_entropy: " + std::to_string(labels.size()) + " labels for " + std::to_string(N) + " rows");
  int64_t valid = 0;
  for (int32_t y : labels) {
    MB_CHECK(y == -100 || (y >= 0 && y < C), "cross_entropy: label " + std::to_string(y) + " outside [0, " + std::to_string(C) + ")");
    valid += y != -100;
  }
  // Softmax rows are kept: they are the gradient (minus the one-hot), up to the 1/valid scale.
  Tensor probs = Tensor::empty({N, C});
  std::vector<double> row(static_cast<size_t>(C));
  double loss = 0;
  for (int64_t i = 0; i < N; ++i) {
    const float* z = logits.data() + i * C;
    const double lse = softmax_row(z, C, 1.0, row.data());
    for (int64_t c = 0; c < C; ++c) probs.f32()[i * C + c] = float(row[size_t(c)]);
    if (labels[size_t(i)] != -100) loss += lse - z[labels[size_t(i)]];
  }
  // No valid label: the loss is 0 with no gradient (PyTorch would return NaN).
  const bool rec = needs_grad({&logits}) && valid > 0;
  Var out = scalar_output(valid ? loss / double(valid) : 0.0, rec);
  if (rec)
    record_backward([logits, labels, out, probs, N, C, valid] {
      if (!out.has_grad()) return;
      const float g = out.grad().f32()[0] / float(valid);
      float* d = logits.grad().f32();
      for (int64_t i = 0; i < N; ++i) {
        const int32_t y = labels[size_t(i)];
        if (y == -100) continue;
        for (int64_t c = 0; c < C; ++c) d[i * C + c] += g * (probs.f32()[i * C + c] - (c == y ? 1.0f : 0.0f));
      }
    });
  return out;
}

Var mse_loss(const Var& pred, const Tensor& target) {
  MB_CHECK(pred.shape() == target.shape(), "mse_loss: prediction " + shape_str(pred.shape()) + " and target " +
                                               shape_str(target.shape()) + " differ");
  const int64_t n = pred.numel();
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(pred.data()[i]) - double(target.f32()[i]);
    sum += d * d;
  }
  const bool rec = needs_grad({&pred});
  Var out = scalar_output(sum / double(n), rec);
  if (rec)
    record_backward([pred, target, out, n] {
      if (!out.has_grad()) return;
      const float g = 2.0f * out.grad().f32()[0] / float(n);
      float* d = pred.grad().f32();
      for (int64_t i = 0; i < n; ++i) d[i] += g * (pred.data()[i] - target.f32()[i]);
    });
  return out;
}

Var kl_div_with_temperature(const Var& student, const Tensor& teacher, float temperature) {
  MB_CHECK(student.shape() == teacher.shape(), "kl_div: student " + shape_str(student.shape()) + " and teacher " +
                                                   shape_str(teacher.shape()) + " logits differ");
  MB_CHECK(temperature > 0, "kl_div: temperature must be positive");
  const int64_t N = student.dim(0), C = student.dim(1);
  const double T = temperature;
  Tensor diff = Tensor::empty({N, C});  // softmax(s/T) − softmax(t/T): the gradient's shape
  std::vector<double> ps(static_cast<size_t>(C)), pt(static_cast<size_t>(C));
  double kl = 0;
  for (int64_t i = 0; i < N; ++i) {
    const double lse_s = softmax_row(student.data() + i * C, C, T, ps.data());
    const double lse_t = softmax_row(teacher.f32() + i * C, C, T, pt.data());
    for (int64_t c = 0; c < C; ++c) {
      const double log_pt = teacher.f32()[i * C + c] / T - lse_t, log_ps = student.data()[i * C + c] / T - lse_s;
      if (pt[size_t(c)] > 0) kl += pt[size_t(c)] * (log_pt - log_ps);
      diff.f32()[i * C + c] = float(ps[size_t(c)] - pt[size_t(c)]);
    }
  }
  const bool rec = needs_grad({&student});
  Var out = scalar_output(T * T * kl / double(N), rec);
  if (rec)
    record_backward([student, out, diff, N, C, T] {
      if (!out.has_grad()) return;
      // d/ds [T²·KL/N] = T·(p_s − p_t)/N
      const float g = out.grad().f32()[0] * float(T / double(N));
      float* d = student.grad().f32();
      for (int64_t i = 0; i < N * C; ++i) d[i] += g * diff.f32()[i];
    });
  return out;
}

}  // namespace mb
