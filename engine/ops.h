// The compute kernels BERT is made of, on raw f32 buffers (row-major, T rows of C columns).
// Each lives in its own file; backward passes will sit beside their forward.
#pragma once
#include <cstdint>

namespace mb {

// out[t, :] = table[ids[t], :]   (table is [V, C]; ids are checked by the caller)
void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t T, int64_t C);

// out[T, N] (row stride ldo) = inp[T, K] · W[N, K]^T + b[N]; b may be null.
void linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t T, int64_t K, int64_t N,
                    int64_t ldo);
inline void linear_forward(float* out, const float* inp, const float* W, const float* b, int64_t T, int64_t K,
                           int64_t N) {
  linear_forward(out, inp, W, b, T, K, N, N);
}

// out = LayerNorm(inp (+ residual)) * w + b over rows of C. residual may be null. out may alias inp.
// mean/rstd (length T) may be null; when given they receive the row statistics (for backward).
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* residual, const float* w,
                       const float* b, int64_t T, int64_t C, float eps);

// In place, n elements. Exact GELU: 0.5·x·(1 + erf(x/√2)); tanh GELU: HF "gelu_new".
void gelu_forward(float* x, int64_t n);
void gelu_tanh_forward(float* x, int64_t n);
void tanh_forward(float* x, int64_t n);

// Row-wise softmax in place over T rows of C.
void softmax_forward(float* x, int64_t T, int64_t C);

// Multi-head self-attention over packed sequences (no padding anywhere).
// qkv: [T, ld_qkv] rows holding Q at columns [0, H), K at [H, 2H), V at [2H, 3H), H = heads·head_dim.
// Sequence i occupies rows [offsets[i], offsets[i+1]). ctx: [T, H] = softmax(Q·Kᵀ/√d)·V per head.
void attention_forward(float* ctx, const float* qkv, int64_t ld_qkv, const int32_t* offsets, int64_t num_seqs,
                       int64_t heads, int64_t head_dim);

}  // namespace mb
