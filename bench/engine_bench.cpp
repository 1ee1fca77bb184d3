// engine_bench: GEMM back-ends, the element-wise and attention ops, one encoder layer, and
// whole-model forward and training step at the standard shapes.
// Counters: tokens/s and GFLOP/s (FLOPs as docs/METHODS.md counts them, for the layer and model
// rows; a training step counts 3× the forward's FLOPs), GB/s for the memory-bound ops.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "engine/cpu.h"
#include "engine/functional.h"
#include "engine/gemm.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "models/bert.h"
#include "models/counting.h"
#include "models/shipped_configs.h"
#include "models/training.h"

namespace {

std::vector<float> random_vec(size_t n, uint64_t seed) {
  mb::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.normal());
  return v;
}

// The ceiling every GFLOP/s counter below is to be read against: fused multiply-adds on arg 0
// threads at once (0: mb::num_threads()), each thread 12 independent accumulator vectors (enough to
// cover the FMA latency on both pipes) and no memory traffic. GFLOP/s is the sum over the threads.
// Timed here, beside the products, because the clock of these shared machines moves from run to
// run: a product's share of this figure, measured in the same run, is its efficiency.
#if defined(__x86_64__)
// One loop per vector width, compiled for it alone and run where the CPU level has it (engine/cpu.h).
#define MB_FMA_LOOP(name, isa, Vec, lanes, splat, fmadd)                                          \
  __attribute__((target(isa))) float name(int64_t steps) {                                        \
    Vec acc[12];                                                                                  \
    _Pragma("GCC unroll 12") for (int j = 0; j < 12; ++j) acc[j] = splat(1.0f + 0.01f * float(j)); \
    const Vec scale = splat(0.9999999f), shift = splat(1e-7f);                                    \
    for (int64_t i = 0; i < steps; ++i) {                                                         \
      _Pragma("GCC unroll 12") for (int j = 0; j < 12; ++j) acc[j] = fmadd(acc[j], scale, shift); \
    }                                                                                             \
    float total = 0;                                                                              \
    for (int j = 0; j < 12; ++j) {                                                                \
      float x[lanes];                                                                             \
      std::memcpy(x, &acc[j], sizeof x);                                                          \
      for (float v : x) total += v;                                                               \
    }                                                                                             \
    return total;                                                                                 \
  }
// (distinct starting values, or the compiler merges equal chains)
MB_FMA_LOOP(fma_loop_avx512, "avx512f", __m512, 16, _mm512_set1_ps, _mm512_fmadd_ps)
MB_FMA_LOOP(fma_loop_avx2, "avx2,fma", __m256, 8, _mm256_set1_ps, _mm256_fmadd_ps)
#undef MB_FMA_LOOP
#endif

void BM_fma_peak(benchmark::State& st) {
#if !defined(__x86_64__)
  return st.SkipWithError("x86-64 only");
#else
  const mb::CpuLevel level = mb::cpu_level();
  if (level == mb::CpuLevel::Baseline) return st.SkipWithError("the CPU level in use has no FMA");
  const bool wide = level == mb::CpuLevel::AVX512;
  const int lanes = wide ? 16 : 8;
  const int threads = st.range(0) > 0 ? int(st.range(0)) : mb::num_threads();
  constexpr int64_t kSteps = 4 << 20;  // 1.6 GFLOP a thread: ~8 ms at 200 GFLOP/s
  std::vector<float> sink(static_cast<size_t>(threads), 0.0f);
  for (auto _ : st) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&sink, t, wide] { sink[size_t(t)] = wide ? fma_loop_avx512(kSteps) : fma_loop_avx2(kSteps); });
    for (std::thread& th : pool) th.join();
    benchmark::DoNotOptimize(sink.data());
  }
  st.SetLabel(std::to_string(lanes * 32) + "-bit vectors, " + std::to_string(threads) + " thread(s)");
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * 12 * lanes * double(kSteps) * threads * double(st.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
#endif
}

// x[T,K] · W[N,K]^T: the shape of every BERT projection.
void BM_sgemm(benchmark::State& st) {
  const auto backend = mb::available_gemm_backends()[size_t(st.range(0))];
  const int64_t M = st.range(1), N = st.range(2), K = st.range(3);
  mb::set_gemm_backend(backend);
  auto a = random_vec(size_t(M * K), 1), b = random_vec(size_t(N * K), 2);
  std::vector<float> c(size_t(M * N));
  for (auto _ : st) {
    mb::sgemm(false, true, M, N, K, 1.0f, a.data(), K, b.data(), K, 0.0f, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  st.SetLabel(mb::gemm_backend_name(backend));
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(M * N * K) * double(st.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
  mb::set_gemm_backend(mb::available_gemm_backends().front());
}

const mb::BertModel& model_for(const std::string& shape) {
  static std::map<std::string, std::unique_ptr<mb::BertModel>> cache;
  auto& m = cache[shape];
  if (!m) {
    mb::BertConfig c = mb::bert_config_from_json(nlohmann::json::parse(mb::shipped_configs().at(shape)), shape);
    m = std::make_unique<mb::BertModel>(mb::BertModel::init_random(c, 0));
  }
  return *m;
}

const char* kShapes[] = {"tiny", "mini", "small", "medium", "base"};

mb::Batch random_batch(const mb::BertModel& m, int64_t batch, int64_t seq) {
  mb::Batch b;
  mb::Rng rng(7);
  for (int64_t i = 0; i < batch; ++i) {
    std::vector<int32_t> ids(static_cast<size_t>(seq));
    for (auto& id : ids) id = int32_t(1 + rng.below(uint64_t(m.config.vocab_size - 1)));
    b.add(ids, {});
  }
  return b;
}

void set_token_counters(benchmark::State& st, double tokens, double flops) {
  st.counters["tokens/s"] = benchmark::Counter(tokens * double(st.iterations()), benchmark::Counter::kIsRate);
  st.counters["GFLOP/s"] = benchmark::Counter(flops * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_forward(benchmark::State& st) {
  const mb::BertModel& m = model_for(kShapes[st.range(0)]);
  const int64_t batch = st.range(1), seq = st.range(2);
  const mb::Batch b = random_batch(m, batch, seq);
  for (auto _ : st) {
    const mb::Tensor h = m.encode(b);
    benchmark::DoNotOptimize(h.raw());
  }
  st.SetLabel(kShapes[st.range(0)]);
  set_token_counters(st, double(batch * seq), mb::count_model(m, double(seq)).flops() * double(batch));
}

// The same on weights packed once for the GEMM kernel (BertModel::pack_for_inference), as the
// CLI's inference commands run.
void BM_forward_packed(benchmark::State& st) {
  mb::BertModel m = model_for(kShapes[st.range(0)]);  // a copy: same weights, its own packed copies
  m.pack_for_inference();
  const int64_t batch = st.range(1), seq = st.range(2);
  const mb::Batch b = random_batch(m, batch, seq);
  for (auto _ : st) {
    const mb::Tensor h = m.encode(b);
    benchmark::DoNotOptimize(h.raw());
  }
  st.SetLabel(std::string(kShapes[st.range(0)]) + (m.packed_bytes() ? ", packed" : ", nothing packed"));
  set_token_counters(st, double(batch * seq), mb::count_model(m, double(seq)).flops() * double(batch));
}

// The packed GEMM (weights reordered once, what inference runs: oneDNN's brgemm where it has one for
// the precision, else the engine's own kernels; the label says which) on one BERT-base
// projection: rows (arg 0) × N (arg 1) × K (arg 2), cycling through 12 distinct weights as a forward
// pass does (12 layers), so that the weights come from memory rather than the cache. arg 3 = 1: bias +
// GELU as the kernel's post-op (the FFN's first product). arg 4: the precision (0 f32, 1 bf16, 2 int8).
void BM_gemm_packed(benchmark::State& st) {
  const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
  const auto epilogue = st.range(3) ? mb::Epilogue::Gelu : mb::Epilogue::None;
  const mb::Precision precision = st.range(4) == 2 ? mb::Precision::Int8 : st.range(4) == 1 ? mb::Precision::BF16 : mb::Precision::F32;
  st.SetLabel(std::string(mb::precision_name(precision)) + " " + mb::packed_gemm_kernel(precision));
  std::vector<std::shared_ptr<mb::PackedWeight>> w;
  for (uint64_t l = 0; l < 12; ++l) w.push_back(mb::pack_weight(random_vec(size_t(N * K), 10 + l).data(), N, K, precision));
  if (!w[0]) {
    st.SkipWithError("no packed kernel for this CPU and precision");
    return;
  }
  const auto a = random_vec(size_t(M * K), 1), bias = random_vec(size_t(N), 2);
  std::vector<float> c(size_t(M * N));
  size_t l = 0;
  for (auto _ : st) {
    mb::gemm_packed(*w[l], M, a.data(), bias.data(), c.data(), N, epilogue);
    l = (l + 1) % w.size();
    benchmark::DoNotOptimize(c.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(M * N * K) * double(st.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// Q, K and V projections of BERT-base through sgemm: three GEMMs (arg 1 = 0, what training runs:
// the checkpoint's three weight tensors used in place) or one GEMM over the weights side by side
// [3W, H] (arg 1 = 1; inference fuses them this way, packed: BertModel::pack_for_inference).
void BM_qkv(benchmark::State& st) {
  const int64_t T = st.range(0), H = 768, W = 768;
  const bool packed = st.range(1) != 0;
  auto x = random_vec(size_t(T * H), 1), w = random_vec(size_t(3 * W * H), 2);
  std::vector<float> out(static_cast<size_t>(T * 3 * W));
  for (auto _ : st) {
    if (packed) {
      mb::sgemm(false, true, T, 3 * W, H, 1.0f, x.data(), H, w.data(), H, 0.0f, out.data(), 3 * W);
    } else {
      for (int64_t j = 0; j < 3; ++j)
        mb::sgemm(false, true, T, W, H, 1.0f, x.data(), H, w.data() + j * W * H, H, 0.0f, out.data() + j * W, 3 * W);
    }
    benchmark::DoNotOptimize(out.data());
  }
  st.SetLabel(packed ? "one GEMM, packed weights" : "three GEMMs");
  set_token_counters(st, double(T), 2.0 * double(T * 3 * W * H));
}

// --- Ops at BERT-base widths over T tokens (arg 0). Memory-bound: GB/s of the bytes they touch.
void set_bytes_counter(benchmark::State& st, double bytes) {
  st.counters["GB/s"] = benchmark::Counter(bytes * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void BM_op_bias_gelu(benchmark::State& st) {  // after the FFN's first GEMM: [T, 3072]
  const int64_t T = st.range(0), N = 3072;
  auto x = random_vec(size_t(T * N), 1), bias = random_vec(size_t(N), 2);
  std::vector<float> y(x.size());
  for (auto _ : st) {
    std::copy(x.begin(), x.end(), y.begin());
    mb::bias_gelu_forward(y.data(), nullptr, bias.data(), T, N, false);
    benchmark::DoNotOptimize(y.data());
  }
  set_bytes_counter(st, 2.0 * 4.0 * double(T * N));
}

void BM_op_gelu_backward(benchmark::State& st) {  // GELU's backward over the FFN's [T, 3072]
  const int64_t T = st.range(0), N = 3072;
  auto x = random_vec(size_t(T * N), 1), g = random_vec(size_t(T * N), 2);
  std::vector<float> dx(x.size(), 0.0f);
  for (auto _ : st) {
    mb::gelu_backward(dx.data(), x.data(), g.data(), T * N);
    benchmark::DoNotOptimize(dx.data());
  }
  set_bytes_counter(st, 4.0 * 4.0 * double(T * N));
}

// K-prune's normal equations for one batch of 32 sentences (420 rows) in double: AᵀA's lower
// triangle and AᵀR, A the kept units' activations [420, n], R the targets [420, 768].
void BM_gemm_tn_f64(benchmark::State& st) {
  const int64_t n = st.range(0), rows = 420, H = 768;
  std::vector<double> a(size_t(rows * n)), r(size_t(rows * H)), ata(size_t(n * n)), atr(size_t(n * H));
  mb::Rng rng(3);
  for (double& v : a) v = rng.normal();
  for (double& v : r) v = rng.normal();
  for (auto _ : st) {
    mb::gemm_tn_f64(n, n, rows, a.data(), n, a.data(), n, ata.data(), n, /*lower=*/true);
    mb::gemm_tn_f64(n, H, rows, a.data(), n, r.data(), H, atr.data(), H);
    benchmark::DoNotOptimize(atr.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(rows) * (double(n) * double(n + 1) / 2 + double(n * H)) *
                                                  double(st.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

void BM_op_layernorm_residual(benchmark::State& st) {  // residual + LayerNorm: [T, 768]
  const int64_t T = st.range(0), C = 768;
  auto x = random_vec(size_t(T * C), 1), r = random_vec(size_t(T * C), 2), w = random_vec(size_t(C), 3),
       b = random_vec(size_t(C), 4);
  std::vector<float> y(x.size());
  for (auto _ : st) {
    mb::layernorm_forward(y.data(), nullptr, nullptr, x.data(), r.data(), w.data(), b.data(), T, C, 1e-12f);
    benchmark::DoNotOptimize(y.data());
  }
  set_bytes_counter(st, 3.0 * 4.0 * double(T * C));
}

void BM_op_attention(benchmark::State& st) {  // 12 heads of 64 over sequences of 128
  const int64_t T = st.range(0), L = 128, heads = 12, dh = 64, W = heads * dh;
  auto q = random_vec(size_t(T * W), 1), k = random_vec(size_t(T * W), 2), v = random_vec(size_t(T * W), 3);
  std::vector<float> ctx(size_t(T * W));
  std::vector<int32_t> offsets;
  for (int64_t t = 0; t <= T; t += L) offsets.push_back(int32_t(t));
  const int64_t n = int64_t(offsets.size()) - 1;
  for (auto _ : st) {
    mb::attention_forward(ctx.data(), q.data(), W, k.data(), W, v.data(), W, offsets.data(), n, heads, dh);
    benchmark::DoNotOptimize(ctx.data());
  }
  set_token_counters(st, double(T), double(n) * 4.0 * double(L * L * W));
}

void BM_op_dropout_mask(benchmark::State& st) {  // attention-probability masks of one base layer
  const int64_t n = st.range(0) * 12 * 128;
  std::vector<float> keep(static_cast<size_t>(n));
  mb::Rng rng(1);
  for (auto _ : st) {
    mb::fill_dropout_mask(keep.data(), n, 0.1f, rng);
    benchmark::DoNotOptimize(keep.data());
  }
  set_bytes_counter(st, 4.0 * double(n));
}

// The optimizer's part of a training step on BERT-base's 109.5 M parameters in one tensor (its
// pieces split it as they split the model's): the gradient norm, then AdamW with the clip scale,
// zeroing the gradient. Bytes: g read twice (norm, update) and zeroed; w, m, v read and written.
void BM_op_adamw(benchmark::State& st) {
  const int64_t n = 109482240;
  mb::Tensor w = mb::Tensor::from_vector(random_vec(size_t(n), 1), {n}), g = mb::Tensor::zeros({n});
  const std::vector<float> grads = random_vec(size_t(n), 2);
  mb::AdamW opt({{"w", &w, &g}}, {.weight_decay = 0.01});
  for (auto _ : st) {
    st.PauseTiming();
    std::memcpy(g.f32(), grads.data(), size_t(n) * 4);
    st.ResumeTiming();
    opt.step(1e-4, mb::clip_coefficient(mb::grad_norm({{"w", &w, &g}}), 1.0), true);
    benchmark::DoNotOptimize(w.f32());
  }
  set_bytes_counter(st, 4.0 * 9.0 * double(n));
}

// --- One encoder layer (forward, inference) of a shape at batch × 128.
void BM_layer(benchmark::State& st) {
  const mb::BertModel& m = model_for(kShapes[st.range(0)]);
  const int64_t batch = st.range(1), seq = 128;
  const mb::Batch b = random_batch(m, batch, seq);
  mb::NoGrad no_grad;
  const mb::Var x(mb::Tensor::from_vector(random_vec(size_t(batch * seq * m.config.hidden_size), 5),
                                          {batch * seq, m.config.hidden_size}));
  for (auto _ : st) {
    const mb::Var y = m.layer_forward(m.layers[0], x, b);
    benchmark::DoNotOptimize(y.data());
  }
  const mb::ModelCounts c = mb::count_model(m, double(seq));
  st.SetLabel(kShapes[st.range(0)]);
  set_token_counters(st, double(batch * seq), (c.layers[0].mha_flops + c.layers[0].ffn_flops) * double(batch));
}

// --- Training step: forward with dropout, cross-entropy, backward, clipping, AdamW.
void BM_train_step(benchmark::State& st) {
  const std::string shape = kShapes[st.range(0)];
  mb::BertConfig c = mb::bert_config_from_json(nlohmann::json::parse(mb::shipped_configs().at(shape)), shape);
  mb::BertModel m = mb::BertModel::init_random(c, 0);  // its own copy: the step changes the weights
  m.set_requires_grad(true);
  const int64_t batch = st.range(1), seq = 128;
  const mb::Batch b = random_batch(m, batch, seq);
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = int32_t(i % 2);
  const std::vector<mb::ParamRef> params = mb::trainable_params(m);
  mb::AdamW adam(params, mb::AdamWConfig{0.9, 0.999, 1e-8, 0.01});
  mb::Rng dropout_rng(3);
  const mb::ForwardOptions train{true, &dropout_rng};
  const mb::LinearPrecisionScope precision(st.range(2) ? mb::Precision::BF16 : mb::Precision::F32);
  for (auto _ : st) {
    const mb::Var logits = m.classifier_logits(m.pooled_output(b, m.hidden_states(b, train)), train);
    const mb::Var loss = mb::cross_entropy(logits, labels);
    mb::backward(loss);
    mb::optimizer_step(adam, params, 1e-5, 1.0);
    benchmark::DoNotOptimize(loss.data());
  }
  st.SetLabel(shape + (st.range(2) ? ", bf16 products" : ", f32"));
  set_token_counters(st, double(batch * seq), 3.0 * mb::count_model(m, double(seq)).flops() * double(batch));
}

// One linear layer's training products at 1,024 rows (BERT-base batch 8 × 128), forward and backward
// (dX and dW), as linear() runs them: f32, or bf16 mixed precision with its conversions of x, W and dY.
void BM_linear_train(benchmark::State& st) {
  const bool bf16 = st.range(0) != 0;
  const int64_t T = 1024, N = st.range(1), K = st.range(2);
  const auto x = random_vec(size_t(T * K), 1), W = random_vec(size_t(N * K), 2), dy = random_vec(size_t(T * N), 3);
  const auto b = random_vec(size_t(N), 4);
  std::vector<float> y(size_t(T * N)), dx(size_t(T * K)), dW(size_t(N * K)), db(static_cast<size_t>(N));
  std::vector<uint16_t> xh(x.size()), Wh(W.size());
  for (auto _ : st) {
    if (bf16) {
      mb::convert_f32_to_bf16(x.data(), xh.data(), xh.size());
      mb::convert_f32_to_bf16(W.data(), Wh.data(), Wh.size());
      mb::linear_forward_bf16(y.data(), xh.data(), Wh.data(), b.data(), T, K, N, N);
      mb::linear_backward_bf16(dx.data(), dW.data(), db.data(), dy.data(), xh.data(), Wh.data(), T, K, N);
    } else {
      mb::linear_forward(y.data(), x.data(), W.data(), b.data(), T, K, N);
      mb::linear_backward(dx.data(), dW.data(), db.data(), dy.data(), x.data(), W.data(), T, K, N);
    }
    benchmark::DoNotOptimize(dW.data());
  }
  st.SetLabel(bf16 ? std::string("bf16 (") + mb::gemm_bf16_kernel() + ")" : "f32");
  st.counters["GFLOP/s"] = benchmark::Counter(6.0 * double(T * N * K) * double(st.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// K-prune's products as it runs them, one batch of 32 sentences (420 rows) at a time, against
// the same rows merged 4 batches to a product (1,680 rows): the forward x·Wᵀ and the input
// gradient dY·W of one BERT-base projection, bf16 (linear()'s --bf16 products). Both forms run in
// every iteration, one after the other, so that the machine's phase changes reach both alike;
// each gets its own GFLOP/s counter.
void BM_gemm_bf16_rows(benchmark::State& st) {
  const int64_t N = st.range(0), K = st.range(1), T = 420, G = 4;
  std::vector<uint16_t> x(size_t(G * T * K)), dy(size_t(G * T * N)), W(size_t(N * K));
  mb::convert_f32_to_bf16(random_vec(x.size(), 1).data(), x.data(), x.size());
  mb::convert_f32_to_bf16(random_vec(dy.size(), 2).data(), dy.data(), dy.size());
  mb::convert_f32_to_bf16(random_vec(W.size(), 3).data(), W.data(), W.size());
  std::vector<float> y(size_t(G * T * N)), dx(size_t(G * T * K), 0.0f);
  auto products = [&](int64_t rows) {
    for (int64_t r0 = 0; r0 < G * T; r0 += rows) {
      mb::gemm_bf16(false, true, rows, N, K, x.data() + r0 * K, K, W.data(), K, 0.0f, y.data() + r0 * N, N);
      mb::gemm_bf16(false, false, rows, K, N, dy.data() + r0 * N, N, W.data(), K, 1.0f, dx.data() + r0 * K, K);
    }
  };
  products(T);
  products(G * T);
  double split = 0, merged = 0;
  for (auto _ : st) {
    const auto t0 = std::chrono::steady_clock::now();
    products(T);
    const auto t1 = std::chrono::steady_clock::now();
    products(G * T);
    split += std::chrono::duration<double>(t1 - t0).count();
    merged += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  }
  const double flop = 4.0 * double(G * T * N * K) * double(st.iterations());
  st.counters["GFLOP/s_420_rows"] = flop / split / 1e9;
  st.counters["GFLOP/s_1680_rows"] = flop / merged / 1e9;
  st.SetLabel(std::string("bf16 (") + mb::gemm_bf16_kernel() + ")");
}

void gemm_args(benchmark::internal::Benchmark* b) {
  for (int64_t be = 0; be < int64_t(mb::available_gemm_backends().size()); ++be) {
    b->Args({be, 128, 768, 768});     // batch 1 projection
    b->Args({be, 1024, 3072, 768});   // batch 8 FFN in
  }
}

void forward_args(benchmark::internal::Benchmark* b) {
  for (int64_t shape : {0, 1, 4})
    for (int64_t batch : {1, 8}) b->Args({shape, batch, 128});
}

void shape_batch_args(benchmark::internal::Benchmark* b) {
  for (int64_t shape : {0, 1, 4})
    for (int64_t batch : {1, 8}) b->Args({shape, batch});
}

}  // namespace

BENCHMARK(BM_fma_peak)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_sgemm)->Apply(gemm_args)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_gemm_packed)
    ->Args({128, 2304, 768, 0, 0})->Args({128, 768, 768, 0, 0})->Args({128, 3072, 768, 0, 0})->Args({128, 3072, 768, 1, 0})
    ->Args({128, 768, 3072, 0, 0})->Args({1024, 2304, 768, 0, 0})->Args({1024, 3072, 768, 0, 0})->Args({1024, 3072, 768, 1, 0})->Args({1024, 768, 3072, 0, 0})
    ->Args({128, 768, 768, 0, 1})->Args({128, 3072, 768, 1, 1})->Args({1024, 3072, 768, 1, 1})
    ->Args({128, 768, 768, 0, 2})->Args({128, 3072, 768, 1, 2})->Args({1024, 3072, 768, 1, 2})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_qkv)->Args({128, 0})->Args({128, 1})->Args({1024, 0})->Args({1024, 1})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_op_bias_gelu)->Arg(128)->Arg(1024)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_op_gelu_backward)->Arg(128)->Arg(1024)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_gemm_tn_f64)->Arg(768)->Arg(1536)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_op_layernorm_residual)->Arg(128)->Arg(1024)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_op_attention)->Arg(128)->Arg(1024)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_op_dropout_mask)->Arg(128)->Arg(1024)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_op_adamw)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_gemm_bf16_rows)->Args({768, 768})->Args({3072, 768})->Args({768, 3072})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_layer)->Apply(shape_batch_args)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_forward)->Apply(forward_args)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_forward_packed)->Apply(forward_args)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_train_step)->Args({0, 8, 0})->Args({1, 8, 0})->Args({4, 8, 0})->Args({0, 8, 1})->Args({1, 8, 1})->Args({4, 8, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_linear_train)
    ->Args({0, 768, 768})->Args({1, 768, 768})->Args({0, 3072, 768})->Args({1, 3072, 768})->Args({0, 768, 3072})->Args({1, 768, 3072})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
  mb::set_num_threads(0);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
