#include "models/counting.h"

namespace mb {

double flops_per_head(double s, int64_t d, int64_t dh) { return 8.0 * s * double(d) * double(dh) + 4.0 * s * s * double(dh); }
double flops_per_neuron(double s, int64_t d) { return 4.0 * s * double(d); }

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
  for (const LayerCounts& l : layers) f += l.mha_flops + l.ffn_flops;
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
                            &L.attn_ln_b, &L.ffn_in_w, &L.ffn_in_b, &L.ffn_out_w, &L.ffn_out_b, &L.ffn_ln_w, &L.ffn_ln_b})
      lc.params += t->numel();
    lc.heads = L.num_heads;
    lc.neurons = L.ffn_in_w.numel() ? L.ffn_in_w.dim(0) : 0;
    lc.mha_flops = double(lc.heads) * flops_per_head(seq_len, H, dh);
    lc.ffn_flops = double(lc.neurons) * flops_per_neuron(seq_len, H);
    c.layers.push_back(lc);
  }
  return c;
}

}  // namespace mb
