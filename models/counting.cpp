#include "models/counting.h"

namespace mb {

double flops_per_head(double s, int64_t d, int64_t dh) { return 8.0 * s * double(d) * double(dh) + 4.0 * s * s * double(dh); }
double flops_per_neuron(double s, int64_t d) { return 4.0 * s * double(d); }
double flops_per_bridge(double s, int64_t d, int64_t r) { return 4.0 * s * double(d) * double(r); }

int64_t ModelCounts::encoder_params() const {
  int64_t n = 0;
  for (const LayerCounts& l : layers) n += l.params;
  return n;
}

int64_t ModelCounts::total_params() const {
  return embedding_params + encoder_params() + pooler_params + classifier_params + extra_params;
}

double ModelCounts::flops() const {
  double f = 0;
  for (const LayerCounts& l : layers) f += l.mha_flops + l.ffn_flops + l.bridge_flops;
  return f;
}

ModelCounts count_model(const BertModel& m, double seq_len) {
  ModelCounts c;
  c.seq_len = seq_len;
  const int64_t H = m.config.hidden_size, dh = m.head_dim();
  c.embedding_params = m.word_emb.numel() + m.pos_emb.numel() + m.type_emb.numel() + m.emb_ln_w.numel() + m.emb_ln_b.numel();
  c.pooler_params = m.pooler_w.numel() + m.pooler_b.numel();
  c.classifier_params = m.classifier_w.numel() + m.classifier_b.numel();
  for (const auto& [name, t] : m.extra) c.extra_params += t.numel();
  for (const BertLayer& L : m.layers) {
    LayerCounts lc;
    for (const Var* t : {&L.q_w, &L.q_b, &L.k_w, &L.k_b, &L.v_w, &L.v_b, &L.attn_out_w, &L.attn_out_b, &L.attn_ln_w,
                            &L.attn_ln_b, &L.ffn_in_w, &L.ffn_in_b, &L.ffn_out_w, &L.ffn_out_b, &L.ffn_ln_w, &L.ffn_ln_b,
                            &L.bridge_down_w, &L.bridge_up_w, &L.bridge_up_b, &L.bridge_ln_w, &L.bridge_ln_b})
      lc.params += t->numel();
    if (L.kind == LayerKind::Shared) lc.params = 0;  // its tensors are its source layer's, counted there
    lc.heads = L.kind == LayerKind::Bridge ? 0 : L.num_heads;  // a shared layer runs its source's heads
    lc.neurons = L.ffn_in_w.numel() ? L.ffn_in_w.dim(0) : 0;
    lc.bridge_rank = L.bridge_down_w.numel() ? L.bridge_down_w.dim(0) : 0;
    lc.mha_flops = double(lc.heads) * flops_per_head(seq_len, H, dh);
    lc.ffn_flops = double(lc.neurons) * flops_per_neuron(seq_len, H);
    lc.bridge_flops = lc.bridge_rank ? flops_per_bridge(seq_len, H, lc.bridge_rank) : 0.0;
    c.layers.push_back(lc);
  }
  return c;
}

ModelCounts count_config(const BertConfig& cfg, double seq_len) {
  ModelCounts c;
  c.seq_len = seq_len;
  const int64_t H = cfg.hidden_size, dh = cfg.head_dim();
  c.embedding_params = (cfg.vocab_size + cfg.max_position_embeddings + cfg.type_vocab_size) * H + 2 * H;
  c.pooler_params = H * H + H;
  c.classifier_params = cfg.num_labels() * H + cfg.num_labels();
  const std::vector<LayerStructure> structure = read_layer_structure(cfg, "config");
  for (const LayerStructure& layer : structure) {
    LayerCounts lc;
    // A shared layer computes what its source does, with no tensors of its own.
    const LayerStructure& ls = layer.kind == LayerKind::Shared ? structure[size_t(layer.source)] : layer;
    if (ls.kind == LayerKind::Bridge) {
      // A [H, r], B [r, H], b [H], LayerNorm 2H (residual_layernorm only).
      lc.params = 2 * H * ls.rank + H + (ls.form == BridgeForm::ResidualLayerNorm ? 2 * H : 0);
      lc.bridge_rank = ls.rank;
      lc.bridge_flops = flops_per_bridge(seq_len, H, ls.rank);
    } else {
      const int64_t W = ls.num_heads * dh, I = ls.intermediate_size;
      // Q, K, V (weights + biases), attention output + LayerNorm, FFN in and out + LayerNorm.
      lc.params = 3 * (W * H + W) + (H * W + H) + 2 * H + (I * H + I) + (H * I + H) + 2 * H;
      lc.heads = ls.num_heads;
      lc.neurons = I;
      lc.mha_flops = double(lc.heads) * flops_per_head(seq_len, H, dh);
      lc.ffn_flops = double(lc.neurons) * flops_per_neuron(seq_len, H);
    }
    if (layer.kind == LayerKind::Shared) lc.params = 0;
    c.layers.push_back(lc);
  }
  return c;
}

}  // namespace mb
