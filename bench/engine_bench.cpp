// engine_bench: GEMM back-ends, one encoder layer and whole-model forward at the standard shapes.
// Counters: tokens/s and GFLOP/s (FLOPs as docs/METHODS.md counts them, for the model rows).
#include <benchmark/benchmark.h>

#include <map>
#include <memory>
#include <vector>

#include "engine/gemm.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "models/bert.h"
#include "models/counting.h"
#include "models/shipped_configs.h"

namespace {

std::vector<float> random_vec(size_t n, uint64_t seed) {
  mb::Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = float(rng.normal());
  return v;
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

void BM_forward(benchmark::State& st) {
  const mb::BertModel& m = model_for(kShapes[st.range(0)]);
  const int64_t batch = st.range(1), seq = st.range(2);
  mb::Batch b;
  mb::Rng rng(7);
  for (int64_t i = 0; i < batch; ++i) {
    std::vector<int32_t> ids(static_cast<size_t>(seq));
    for (auto& id : ids) id = int32_t(1 + rng.below(uint64_t(m.config.vocab_size - 1)));
    b.add(ids, {});
  }
  for (auto _ : st) {
    const mb::Tensor h = m.encode(b);
    benchmark::DoNotOptimize(h.raw());
  }
  const double flops = mb::count_model(m, double(seq)).flops() * double(batch);
  st.SetLabel(kShapes[st.range(0)]);
  st.counters["tokens/s"] = benchmark::Counter(double(batch * seq) * double(st.iterations()), benchmark::Counter::kIsRate);
  st.counters["GFLOP/s"] = benchmark::Counter(flops * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
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

}  // namespace

BENCHMARK(BM_sgemm)->Apply(gemm_args)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_forward)->Apply(forward_args)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
  mb::set_num_threads(0);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
