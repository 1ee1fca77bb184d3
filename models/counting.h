// Parameter and FLOPs counting, from the tensors a model actually holds (so pruned and bridged
// models count right). FLOPs follow the K-prune model in docs/METHODS.md: LayerNorm, biases,
// activations, embeddings, pooler and classifier are ignored;
//   f_head(s) = 8·s·d·d_h + 4·s²·d_h,   f_neuron(s) = 4·s·d,
//   F = Σ_layers heads·f_head(s) + neurons·f_neuron(s)   (for one sequence of length s).
// A Low-Rank Bridge of rank r counts its two matrix products the same way (2 FLOPs per
// multiply-add, bias and LayerNorm ignored): f_bridge(s) = 4·s·d·r.
#pragma once
#include <cstdint>
#include <vector>

#include "models/bert.h"

namespace mb {

double flops_per_head(double seq_len, int64_t hidden, int64_t head_dim);
double flops_per_neuron(double seq_len, int64_t hidden);
double flops_per_bridge(double seq_len, int64_t hidden, int64_t rank);

struct LayerCounts {
  int64_t params = 0;
  int64_t heads = 0, neurons = 0;
  int64_t bridge_rank = 0;  // > 0 for a Low-Rank Bridge
  double mha_flops = 0, ffn_flops = 0, bridge_flops = 0;
};

struct ModelCounts {
  double seq_len = 0;
  int64_t embedding_params = 0, pooler_params = 0, classifier_params = 0, extra_params = 0;
  std::vector<LayerCounts> layers;
  int64_t encoder_params() const;
  int64_t total_params() const;   // everything the model directory stores
  double flops() const;           // per sequence of length seq_len
};

ModelCounts count_model(const BertModel& m, double seq_len);

// The same counts from a config alone (its "minibridge" layer structure), without allocating
// weights: for a model with a pooler and a classifier of config.num_labels() outputs, and no other
// heads. Agrees with count_model on such a model (tested).
ModelCounts count_config(const BertConfig& config, double seq_len);

}  // namespace mb
