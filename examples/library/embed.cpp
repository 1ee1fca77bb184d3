// Sentence embeddings with minibridge as a library: mean of the last hidden states.
//   embed MODEL_DIR "first sentence" "second sentence" ...
// Prints one line per sentence: its embedding's dimension, norm and first values, then the
// cosine similarity of every pair.
#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/error.h"
#include "io/tokenizer.h"
#include "models/bert.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR SENTENCE...\n", argv[0]);
    return 2;
  }
  try {
    const mb::BertModel model = mb::BertModel::load(argv[1]);
    const mb::Tokenizer tok = mb::Tokenizer::from_model_dir(argv[1]);
    mb::Batch batch;  // sequences packed back to back: no padding
    for (int i = 2; i < argc; ++i) {
      const mb::Encoding e = tok.encode(argv[i], 128);
      batch.add(e.input_ids, e.token_type_ids);
    }
    const mb::Tensor hidden = model.encode(batch);  // [tokens, H]
    const int64_t H = hidden.dim(1);
    std::vector<std::vector<double>> emb;
    for (int64_t s = 0; s < batch.num_seqs(); ++s) {
      std::vector<double> v(static_cast<size_t>(H), 0.0);
      for (int64_t t = batch.offsets[s]; t < batch.offsets[s + 1]; ++t)
        for (int64_t c = 0; c < H; ++c) v[size_t(c)] += hidden.f32()[t * H + c] / double(batch.length(s));
      double norm = 0;
      for (double x : v) norm += x * x;
      std::printf("%-40.40s dim %lld  norm %.4f  [%.4f, %.4f, %.4f, ...]\n", argv[2 + s], (long long)H, std::sqrt(norm),
                  v[0], v[1], v[2]);
      emb.push_back(std::move(v));
    }
    for (size_t a = 0; a < emb.size(); ++a)
      for (size_t b = a + 1; b < emb.size(); ++b) {
        double dot = 0, na = 0, nb = 0;
        for (int64_t c = 0; c < H; ++c) {
          dot += emb[a][size_t(c)] * emb[b][size_t(c)];
          na += emb[a][size_t(c)] * emb[a][size_t(c)];
          nb += emb[b][size_t(c)] * emb[b][size_t(c)];
        }
        std::printf("cosine(%zu, %zu) = %.4f\n", a, b, dot / std::sqrt(na * nb));
      }
  } catch (const mb::Error& e) {
    std::fprintf(stderr, "embed: %s\n", e.what());
    return 1;
  }
  return 0;
}
