// Multi-head self-attention over packed sequences: per (sequence, head),
//   P = softmax(Q·Kᵀ/√d),  ctx = (P ⊙ keep)·V,
// with keep the attention-dropout scale (absent at inference). No padding is ever computed.
#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/cpu_kernels.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/ops.h"

namespace mb {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Rows = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using RowsOut = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
using Square = Eigen::Map<RowMat>;
using ConstSquare = Eigen::Map<const RowMat>;

// Start of each sequence's probability block (heads·L² floats per sequence).
std::vector<int64_t> probs_offsets(const int32_t* offsets, int64_t num_seqs, int64_t heads) {
  std::vector<int64_t> start(size_t(num_seqs) + 1, 0);
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t L = offsets[s + 1] - offsets[s];
    start[size_t(s) + 1] = start[size_t(s)] + heads * L * L;
  }
  return start;
}

std::atomic<bool> g_attention_kernels{true};

}  // namespace

void set_attention_kernels(bool on) { g_attention_kernels = on; }

int64_t attention_probs_size(const int32_t* offsets, int64_t num_seqs, int64_t heads) {
  return probs_offsets(offsets, num_seqs, heads).back();
}

void attention_forward(float* ctx, const float* q, int64_t ld_q, const float* k, int64_t ld_k, const float* v,
                       int64_t ld_v, const int32_t* offsets, int64_t num_seqs, int64_t heads, int64_t head_dim,
                       float* probs, const float* keep) {
  const int64_t W = heads * head_dim;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const std::vector<int64_t> pstart = probs_offsets(offsets, num_seqs, heads);
  const CpuKernels& kern = cpu_kernels();
  const bool fast = g_attention_kernels && head_dim % kern.lanes == 0;
  // One task per (sequence, head): each is independent and touches only its own ctx columns.
#pragma omp parallel
  {
    // Per-thread L×L buffers when probs are not kept; 64-byte aligned so that the vectorised
    // softmax needs no scalar head. Kept by each (pooled) OpenMP thread between calls: allocating
    // and zero-filling them anew was 2% of a bert-tiny forward pass.
    static thread_local std::vector<float> scratch_storage;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < num_seqs * heads; ++task) {
      const int64_t s = task / heads, h = task % heads;
      const int64_t begin = offsets[s], L = offsets[s + 1] - offsets[s];
      if (L == 0) continue;
      Rows qh(q + begin * ld_q + h * head_dim, L, head_dim, Eigen::OuterStride<>(ld_q));
      Rows kh(k + begin * ld_k + h * head_dim, L, head_dim, Eigen::OuterStride<>(ld_k));
      Rows vh(v + begin * ld_v + h * head_dim, L, head_dim, Eigen::OuterStride<>(ld_v));
      const int64_t at = pstart[size_t(s)] + h * L * L;
      // Probabilities go to `probs` when kept for backward, else to scratch; the dropped copy
      // (training) always to scratch, and after it the kernels' scaled Kᵀ.
      const int64_t kt_size = fast ? head_dim * attention_pad(L) : 0;
      const size_t need = size_t((probs ? 0 : L * L) + (keep ? L * L : 0) + kt_size) + 16;
      if (scratch_storage.size() < need) scratch_storage.resize(need);
      float* scratch = scratch_storage.data() + (16 - (reinterpret_cast<uintptr_t>(scratch_storage.data()) / 4) % 16) % 16;
      float* p = probs ? probs + at : scratch;
      float* dropped = keep ? scratch + (probs ? 0 : L * L) : nullptr;
      float* kt = scratch + (probs ? 0 : L * L) + (keep ? L * L : 0);
      float* out = ctx + begin * W + h * head_dim;
      if (fast) {
        kern.attention_head(out, W, p, q + begin * ld_q + h * head_dim, ld_q, k + begin * ld_k + h * head_dim, ld_k,
                       v + begin * ld_v + h * head_dim, ld_v, L, head_dim, scale, keep ? keep + at : nullptr, dropped,
                       kt, probs != nullptr);
        continue;
      }
      Square pm(p, L, L);
      pm.noalias() = (qh * scale) * kh.transpose();
      softmax_forward(p, L, L);
      if (keep) Square(dropped, L, L) = pm.cwiseProduct(ConstSquare(keep + at, L, L));
      RowsOut(out, L, head_dim, Eigen::OuterStride<>(W)).noalias() = ConstSquare(keep ? dropped : p, L, L) * vh;
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dctx, const float* q, const float* k,
                        const float* v, const float* probs, const float* keep, const int32_t* offsets,
                        int64_t num_seqs, int64_t heads, int64_t head_dim) {
  const int64_t W = heads * head_dim;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  const std::vector<int64_t> pstart = probs_offsets(offsets, num_seqs, heads);
  const CpuKernels& kern = cpu_kernels();
  const bool fast = g_attention_kernels && head_dim % kern.lanes == 0;
#pragma omp parallel
  {
    static thread_local std::vector<float> buf;  // as scratch_storage above
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < num_seqs * heads; ++task) {
      const int64_t s = task / heads, h = task % heads;
      const int64_t begin = offsets[s], L = offsets[s + 1] - offsets[s];
      if (L == 0) continue;
      const int64_t col = begin * W + h * head_dim;
      const int64_t at = pstart[size_t(s)] + h * L * L;
      if (fast) {
        const size_t need = size_t(3 * L * L + head_dim * attention_pad(L));
        if (buf.size() < need) buf.resize(need);
        kern.attention_head_backward(dq + col, dk + col, dv + col, dctx + col, q + col, k + col, v + col, W, probs + at,
                                keep ? keep + at : nullptr, L, head_dim, scale, buf.data());
        continue;
      }
      const Eigen::OuterStride<> st(W);
      Rows qh(q + col, L, head_dim, st), kh(k + col, L, head_dim, st), vh(v + col, L, head_dim, st);
      Rows g(dctx + col, L, head_dim, st);
      ConstSquare p(probs + at, L, L);
      if (buf.size() < size_t(2 * L * L)) buf.resize(size_t(2 * L * L));
      Square dp(buf.data(), L, L), pd(buf.data() + L * L, L, L);
      if (keep) pd = p.cwiseProduct(ConstSquare(keep + at, L, L));
      else pd = p;
      RowsOut(dv + col, L, head_dim, st).noalias() += pd.transpose() * g;  // dV += (P⊙keep)ᵀ·dctx
      dp.noalias() = g * vh.transpose();                                  // d(P⊙keep)
      if (keep) dp = dp.cwiseProduct(ConstSquare(keep + at, L, L));
      // Softmax backward: dS = P ⊙ (dP − rowsum(dP ⊙ P)); fold in the 1/√d of the scores.
      for (int64_t i = 0; i < L; ++i) {
        const float dot = dp.row(i).dot(p.row(i));
        dp.row(i) = (p.row(i).array() * (dp.row(i).array() - dot) * scale).matrix();
      }
      RowsOut(dq + col, L, head_dim, st).noalias() += dp * kh;
      RowsOut(dk + col, L, head_dim, st).noalias() += dp.transpose() * qh;
    }
  }
}

Var attention(const Var& q, const Var& k, const Var& v, const std::vector<int32_t>& offsets, int64_t heads, float p,
              bool train, Rng* rng, DrawSlice slice) {
  const int64_t T = q.dim(0), W = q.dim(1);
  MB_CHECK(k.shape() == q.shape() && v.shape() == q.shape(), "attention: q, k and v shapes differ");
  MB_CHECK(heads > 0 && W % heads == 0, "attention: width " + std::to_string(W) + " is not a multiple of the head count");
  MB_CHECK(offsets.back() == T, "attention: offsets do not cover the tokens");
  const int64_t n = int64_t(offsets.size()) - 1, dh = W / heads;
  const bool rec = needs_grad({&q, &k, &v});
  const bool drop = train && p > 0.0f;
  MB_CHECK(!drop || rng, "attention: dropout needs a random generator");
  Tensor probs, keep;
  if (rec || drop) probs = Tensor::empty({attention_probs_size(offsets.data(), n, heads)});
  if (drop) {
    keep = Tensor::empty(probs.shape());
    fill_dropout_mask(keep.f32(), keep.numel(), p, *rng, slice);
  }
  Var out = make_output(Tensor::empty({T, W}), rec);
  attention_forward(out.mutable_data(), q.data(), W, k.data(), W, v.data(), W, offsets.data(), n, heads, dh,
                    probs.defined() ? probs.f32() : nullptr, drop ? keep.f32() : nullptr);
  if (rec)
    record_backward([q, k, v, out, offsets, heads, dh, n, probs, keep, drop] {
      if (!out.has_grad()) return;
      // Each input may or may not need its gradient; scratch stands in for the ones that don't.
      Tensor scratch;
      auto grad_or_scratch = [&](const Var& x) -> float* {
        if (x.requires_grad()) return x.grad().f32();
        if (!scratch.defined()) scratch = Tensor::zeros(x.shape());
        return scratch.f32();
      };
      float *gq = grad_or_scratch(q), *gk = grad_or_scratch(k), *gv = grad_or_scratch(v);
      attention_backward(gq, gk, gv, out.grad().f32(), q.data(), k.data(), v.data(), probs.f32(),
                         drop ? keep.f32() : nullptr, offsets.data(), n, heads, dh);
    });
  return out;
}

Tensor attention_fused_qkv(const Tensor& qkv, const std::vector<int32_t>& offsets, int64_t heads, bool swap_qk) {
  const int64_t T = qkv.dim(0), W3 = qkv.dim(1), W = W3 / 3;
  MB_CHECK(W3 % 3 == 0 && heads > 0 && W % heads == 0, "attention_fused_qkv: width is not 3 × heads × head size");
  MB_CHECK(offsets.back() == T, "attention_fused_qkv: offsets do not cover the tokens");
  const float* first = qkv.f32();
  const float* second = first + W;
  const float* q = swap_qk ? second : first;
  const float* k = swap_qk ? first : second;
  Tensor out = Tensor::empty({T, W});
  attention_forward(out.f32(), q, W3, k, W3, first + 2 * W, W3, offsets.data(), int64_t(offsets.size()) - 1, heads,
                    W / heads, nullptr, nullptr);
  return out;
}

}  // namespace mb
