#include "models/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "engine/distributed.h"
#include "engine/error.h"

namespace mb {

ShareRange share_range(int64_t n, int rank, int size) {
  MB_CHECK(size >= 1 && rank >= 0 && rank < size, "share_range: rank outside 0..size-1");
  return {n * rank / size, n * (rank + 1) / size};
}

BatchShare share_of(const Batch& global, int rank, int size) {
  BatchShare s;
  s.seqs = share_range(global.num_seqs(), rank, size);
  BatchPlacement& p = s.place;
  p.seqs_before = s.seqs.first;
  p.seqs_total = global.num_seqs();
  p.tokens_total = global.num_tokens();
  for (int64_t i = 0; i < global.num_seqs(); ++i) {
    const int64_t L = global.length(i), square = L * L;
    p.squares_total += square;
    if (i < s.seqs.first) p.squares_before += square;
  }
  p.tokens_before = global.offsets[size_t(s.seqs.first)];
  const int32_t t0 = global.offsets[size_t(s.seqs.first)], t1 = global.offsets[size_t(s.seqs.end)];
  s.batch.input_ids.assign(global.input_ids.begin() + t0, global.input_ids.begin() + t1);
  s.batch.token_type_ids.assign(global.token_type_ids.begin() + t0, global.token_type_ids.begin() + t1);
  s.batch.offsets.clear();
  for (int64_t i = s.seqs.first; i <= s.seqs.end; ++i) s.batch.offsets.push_back(global.offsets[size_t(i)] - t0);
  return s;
}

BatchShare my_share(const Batch& global) { return share_of(global, dist::rank(), dist::size()); }

namespace {
GradientTraffic g_traffic;
}

GradientTraffic gradient_traffic() { return g_traffic; }

void allreduce_gradients(const std::vector<ParamRef>& params) {
  if (dist::size() == 1) return;
  // A barrier first, so that the time of the sum itself is told apart from the wait for the ranks
  // that are behind (uneven shares, a slower machine): the logs report both.
  const auto t0 = std::chrono::steady_clock::now();
  dist::barrier();
  const auto t1 = std::chrono::steady_clock::now();
  constexpr int64_t kBucket = int64_t(8) << 20;  // floats: 32 MB
  std::vector<float> bucket;
  std::vector<Tensor*> members;
  auto flush = [&] {
    if (members.empty()) return;
    dist::allreduce_sum(bucket.data(), int64_t(bucket.size()));
    size_t at = 0;
    for (Tensor* g : members) {
      std::memcpy(g->f32(), bucket.data() + at, size_t(g->numel()) * sizeof(float));
      at += size_t(g->numel());
    }
    bucket.clear();
    members.clear();
  };
  for (const ParamRef& p : params) {
    Tensor* g = p.grad;
    MB_CHECK(g && g->defined() && g->dtype() == DType::F32, "allreduce_gradients: '" + p.name + "' has no f32 gradient");
    if (g->numel() >= kBucket) {
      dist::allreduce_sum(g->f32(), g->numel());
      continue;
    }
    if (int64_t(bucket.size()) + g->numel() > kBucket) flush();
    bucket.insert(bucket.end(), g->f32(), g->f32() + g->numel());
    members.push_back(g);
  }
  flush();
  ++g_traffic.calls;
  for (const ParamRef& p : params) g_traffic.bytes += int64_t(p.grad->nbytes());
  g_traffic.wait_seconds += std::chrono::duration<double>(t1 - t0).count();
  g_traffic.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
}

void broadcast_tensors(const std::vector<Tensor*>& tensors) {
  if (dist::size() == 1) return;
  for (Tensor* t : tensors) {
    t->make_owned();
    dist::broadcast(t->raw(), int64_t(t->nbytes()));
  }
}

void broadcast_parameters(const BertModel& model) {
  if (dist::size() == 1) return;
  std::vector<Tensor*> tensors;
  for (const auto& [name, v] : model.named_parameters()) tensors.push_back(&v.value());
  broadcast_tensors(tensors);
}

double sum_over_ranks(double value) {
  dist::allreduce_sum(&value, 1);
  return value;
}

Rng dropout_rng_for_step(uint64_t seed, int64_t step) {
  return Rng(Rng::mix(Rng::mix(seed ^ 0xd0c0ffee5eedull) + uint64_t(step) * Rng::kGamma));
}

}  // namespace mb
