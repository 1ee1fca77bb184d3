// The compute kernels BERT is made of, on raw f32 buffers (row-major, T rows of C columns).
// Each op's forward and backward sit side by side in one file. Backward kernels ACCUMULATE into
// their gradient outputs (+=); a null gradient pointer means "not needed".
#pragma once
#include <cstdint>

#include "engine/rng.h"

namespace mb {

// out[t, :] = table[ids[t], :]   (table is [V, C]; ids are checked by the caller)
void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t T, int64_t C);
// out[t] = Σ_i tables[i][ids[i][t]] over n tables: BERT's word, position and token-type rows
// in one pass (inference; the ids are checked by the caller).
void embedding_sum_forward(float* out, const int32_t* const* ids, const float* const* tables, int n, int64_t T,
                           int64_t C);
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t T, int64_t C);

// out[T, N] (row stride ldo) = inp[T, K] · W[N, K]^T + b[N]; b may be null.
void linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t T, int64_t K, int64_t N,
                    int64_t ldo);
inline void linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t T, int64_t K,
                           int64_t N) {
  linear_forward(out, inp, W, b, T, K, N, N);
}
void linear_backward(float* dinp, float* dW, float* db, const float* dout, const float* inp, const float* W, int64_t T,
                     int64_t K, int64_t N);
// The same with the operands as bfloat16 bits (inp [T, K], W [N, K]), products in gemm_bf16 (engine/gemm.h):
// bf16 mixed-precision training. The backward rounds dout to bf16 for the two products; the bias
// gradient sums it in f32.
void linear_forward_bf16(float* out, const uint16_t* inp, const uint16_t* W, const float* b, int64_t T, int64_t K,
                         int64_t N, int64_t ldo);
void linear_backward_bf16(float* dinp, float* dW, float* db, const float* dout, const uint16_t* inp,
                          const uint16_t* W, int64_t T, int64_t K, int64_t N);

// out = LayerNorm(inp (+ residual)) * w + b over rows of C. residual may be null. out may alias inp.
// mean/rstd (length T) may be null; when given they receive the row statistics (for backward).
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* residual, const float* w,
                       const float* b, int64_t T, int64_t C, float eps);
// inp is the normalised input (the sum, when a residual was fused).
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp, const float* w,
                        const float* mean, const float* rstd, int64_t T, int64_t C);

// Inverted-dropout scales: keep[i] = 0 with probability p, else 1/(1-p). Reserves slice.total draws
// of rng (n when the slice is whole) and uses draws slice.first … slice.first + n − 1, in parallel;
// the values equal those serial rng.uniform() calls, whatever the thread count.
void fill_dropout_mask(float* keep, int64_t n, float p, Rng& rng, DrawSlice slice = {});

// In place, n elements. Exact GELU: 0.5·x·(1 + erf(x/√2)); tanh GELU: HF "gelu_new".
void gelu_forward(float* x, int64_t n);
void gelu_tanh_forward(float* x, int64_t n);
void tanh_forward(float* x, int64_t n);
// inp: the activation's input; out: its output (tanh).
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);
void gelu_tanh_backward(float* dinp, const float* inp, const float* dout, int64_t n);
void tanh_backward(float* dinp, const float* out, const float* dout, int64_t n);
// out[T, N] = GELU(out + bias) row by row (the pass after the FFN's first GEMM); when pre is given
// it receives out + bias, the activation's input, for the backward pass.
void bias_gelu_forward(float* out, float* pre, const float* bias, int64_t T, int64_t N, bool tanh_form);

// Row-wise softmax in place over T rows of C.
void softmax_forward(float* x, int64_t T, int64_t C);

// Multi-head self-attention over packed sequences (no padding anywhere).
// q, k, v: [T, W] with row strides ld_q/ld_k/ld_v, W = heads·head_dim. Sequence i occupies rows
// [offsets[i], offsets[i+1]). ctx: [T, W] = softmax(Q·Kᵀ/√d)·V per head.
// probs (optional): receives every (sequence, head) probability matrix, sequence by sequence
// and head by head (attention_probs_size() floats); keep = optional dropout scale per
// probability (0 or 1/(1-p)), applied to probs before they multiply V.
void attention_forward(float* ctx, const float* q, int64_t ld_q, const float* k, int64_t ld_k, const float* v,
                       int64_t ld_v, const int32_t* offsets, int64_t num_seqs, int64_t heads, int64_t head_dim,
                       float* probs = nullptr, const float* keep = nullptr);
// attention_forward's own register-blocked kernels for Q·Kᵀ and P·V (engine/cpu_kernels.h, at the
// CPU level in use; head sizes that are multiples of the level's vector width) instead of Eigen's
// general product: always built, and on (default) or off process-wide, for A/B runs and the tests
// that compare the two.
void set_attention_kernels(bool on);
// Size of the probs buffer: Σ_i heads·L_i².
int64_t attention_probs_size(const int32_t* offsets, int64_t num_seqs, int64_t heads);
void attention_backward(float* dq, float* dk, float* dv, const float* dctx, const float* q, const float* k,
                        const float* v, const float* probs, const float* keep, const int32_t* offsets,
                        int64_t num_seqs, int64_t heads, int64_t head_dim);

}  // namespace mb
