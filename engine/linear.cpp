// Linear layer: y = x·Wᵀ + b (W in PyTorch's [out, in] layout).
#include <algorithm>
#include <cstring>
#include <map>
#include <tuple>

#include "engine/error.h"
#include "engine/functional.h"
#include "engine/gemm.h"
#include "engine/ops.h"

namespace mb {

namespace {

// Where oneDNN's matmul kernel on the unpacked weight beats sgemm (bias broadcast first, beta = 1).
// Measured on Zen 5, 2 threads, GFLOP/s matmul vs sgemm: K > N (BERT's FFN-out and the like)
// 340 vs 257 at 1,024 rows (3072 → 768), 343 vs 283 (1024 → 256), 379 vs 303 (512 → 128); few
// rows: 128 rows 310 vs 265 (768²), 294 vs 251 (768 → 3072), 322 vs 156 (3072 → 768). Elsewhere
// sgemm is level or ahead: N > K at 1,024 rows (340 vs 328, 347 vs 316), and a vocabulary-wide
// output at few rows (the masked-LM decoder, 154 rows, 768 → 30522: 241 vs 252).
bool matmul_wins(int64_t T, int64_t K, int64_t N) { return K > N || (T <= 256 && N <= 4 * K); }

// Broadcast the bias into the output first and let the GEMM accumulate onto it (beta = 1):
// this folds the bias add into the GEMM's single pass over C.
void broadcast_bias(float* out, const float* b, int64_t T, int64_t N, int64_t ldo) {
#pragma omp parallel for if (T * N > 65536)
  for (int64_t t = 0; t < T; ++t) std::memcpy(out + t * ldo, b, size_t(N) * 4);
}

// db += column sums of dY, walking rows (contiguous) within column blocks: vectorised, no races,
// and the same additions in the same order whatever the thread count.
void bias_backward(float* db, const float* dout, int64_t T, int64_t N) {
  const int64_t block = 256;
#pragma omp parallel for if (T * N > 65536)
  for (int64_t n0 = 0; n0 < N; n0 += block) {
    const int64_t n1 = std::min(N, n0 + block);
    float acc[block] = {0};
    for (int64_t t = 0; t < T; ++t) {
      const float* row = dout + t * N;
      for (int64_t n = n0; n < n1; ++n) acc[n - n0] += row[n];
    }
    for (int64_t n = n0; n < n1; ++n) db[n] += acc[n - n0];
  }
}

Precision& linear_precision_setting() {
  static Precision p = Precision::F32;
  return p;
}

FrozenWeightsBf16Scope::Copies*& open_frozen_copies() {
  static FrozenWeightsBf16Scope::Copies* open = nullptr;
  return open;
}

}  // namespace

// (data, rows, cols) of an f32 weight → that weight (held, so that its storage cannot be freed and
// reused by another tensor while the key names it) and its bf16 copy.
struct FrozenWeightsBf16Scope::Copies {
  std::map<std::tuple<const void*, int64_t, int64_t>, std::pair<Tensor, Tensor>> by_weight;
};

FrozenWeightsBf16Scope::FrozenWeightsBf16Scope() : copies_(new Copies), saved_(open_frozen_copies()) {
  open_frozen_copies() = copies_;
}
FrozenWeightsBf16Scope::~FrozenWeightsBf16Scope() {
  open_frozen_copies() = saved_;
  delete copies_;
}
size_t FrozenWeightsBf16Scope::conversions() const { return copies_->by_weight.size(); }

Tensor bf16_weight(const Var& W) {
  const Tensor& w = W.value();
  FrozenWeightsBf16Scope::Copies* open = open_frozen_copies();
  if (!open || W.requires_grad() || w.ndim() != 2) return w.to_dtype(DType::BF16);
  const auto key = std::make_tuple(static_cast<const void*>(w.raw()), w.dim(0), w.dim(1));
  auto it = open->by_weight.find(key);
  if (it == open->by_weight.end()) it = open->by_weight.emplace(key, std::make_pair(w, w.to_dtype(DType::BF16))).first;
  return it->second.second;
}

void set_linear_precision(Precision p) {
  MB_CHECK(p != Precision::Int8, "linear products train in f32 or bf16, not int8");
  linear_precision_setting() = p;
}
Precision linear_precision() { return linear_precision_setting(); }

void linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t T, int64_t K, int64_t N,
                    int64_t ldo) {
  if (matmul_wins(T, K, N) && gemm_weight(W, N, K, T, inp, b, out, ldo)) return;
  if (b) broadcast_bias(out, b, T, N, ldo);
  sgemm(false, true, T, N, K, 1.0f, inp, K, W, K, b ? 1.0f : 0.0f, out, ldo);
}

void linear_backward(float* dinp, float* dW, float* db, const float* dout, const float* inp, const float* W, int64_t T,
                     int64_t K, int64_t N) {
  if (dinp) sgemm(false, false, T, K, N, 1.0f, dout, N, W, K, 1.0f, dinp, K);  // dX += dY·W
  if (dW) sgemm(true, false, N, K, T, 1.0f, dout, N, inp, K, 1.0f, dW, K);     // dW += dYᵀ·X
  if (db) bias_backward(db, dout, T, N);
}

void linear_forward_bf16(float* out, const uint16_t* inp, const uint16_t* W, const float* b, int64_t T, int64_t K,
                         int64_t N, int64_t ldo) {
  if (b) broadcast_bias(out, b, T, N, ldo);
  gemm_bf16(false, true, T, N, K, inp, K, W, K, b ? 1.0f : 0.0f, out, ldo);
}

void linear_backward_bf16(float* dinp, float* dW, float* db, const float* dout, const uint16_t* inp,
                          const uint16_t* W, int64_t T, int64_t K, int64_t N) {
  if (dinp || dW) {
    // dY rounded once for both products, as autocast's bf16 matmul backward rounds it.
    static thread_local std::vector<uint16_t> dout_h;
    if (dout_h.size() < size_t(T * N)) dout_h.resize(size_t(T * N));
    convert_f32_to_bf16(dout, dout_h.data(), size_t(T * N));
    if (dinp) gemm_bf16(false, false, T, K, N, dout_h.data(), N, W, K, 1.0f, dinp, K);  // dX += dY·W
    if (dW) gemm_bf16(true, false, N, K, T, dout_h.data(), N, inp, K, 1.0f, dW, K);     // dW += dYᵀ·X
  }
  if (db) bias_backward(db, dout, T, N);  // from f32 dY
}

Var linear(const Var& x, const Var& W, const Var& b, const PackedWeight* packed) {
  const int64_t T = x.dim(0), K = x.dim(1), N = W.dim(0);
  MB_CHECK(W.dim(1) == K, "linear: input has " + std::to_string(K) + " features, weight expects " + std::to_string(W.dim(1)));
  MB_CHECK(!b.defined() || b.numel() == N, "linear: bias size differs from the output features");
  const bool rec = needs_grad({&x, &W, &b});
  Var out = make_output(Tensor::empty({T, N}), rec);
  const float* bias = b.defined() ? b.data() : nullptr;
  if (!rec && packed && gemm_packed(*packed, T, x.data(), bias, out.mutable_data(), N)) return out;
  MB_CHECK(W.value().dtype() == DType::F32, std::string("linear: the weight is stored in ") +
                                                dtype_name(W.value().dtype()) +
                                                " (a quantized model) and runs only on its packed kernel, which did not take this product");
  // bf16 mixed precision (linear_precision()): the product on bf16 copies of x and W, kept for the
  // backward pass; the bias and its gradient stay f32.
  const bool bf16 = linear_precision() == Precision::BF16;
  Tensor x_h, w_h;
  if (bf16) {
    x_h = x.value().to_dtype(DType::BF16);
    w_h = bf16_weight(W);
    linear_forward_bf16(out.mutable_data(), x_h.data<uint16_t>(), w_h.data<uint16_t>(), bias, T, K, N, N);
  } else {
    linear_forward(out.mutable_data(), x.data(), W.data(), bias, T, K, N);
  }
  if (rec)
    record_backward([x, W, b, out, x_h, w_h, bf16, T, K, N] {
      if (!out.has_grad()) return;
      float* dx = x.requires_grad() ? x.grad().f32() : nullptr;
      float* dw = W.requires_grad() ? W.grad().f32() : nullptr;
      float* db = b.requires_grad() ? b.grad().f32() : nullptr;
      if (bf16)
        linear_backward_bf16(dx, dw, db, out.grad().f32(), x_h.data<uint16_t>(), w_h.data<uint16_t>(), T, K, N);
      else
        linear_backward(dx, dw, db, out.grad().f32(), x.data(), W.data(), T, K, N);
    });
  return out;
}

}  // namespace mb
