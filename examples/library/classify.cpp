// Text classification with minibridge as a library: one input per stdin line (a TAB separates
// a sentence pair), prints the label and its probability.
//   classify MODEL_DIR < sentences.txt
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include "engine/error.h"
#include "io/tokenizer.h"
#include "models/bert.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR < lines\n", argv[0]);
    return 2;
  }
  try {
    const mb::BertModel model = mb::BertModel::load(argv[1]);
    const mb::Tokenizer tok = mb::Tokenizer::from_model_dir(argv[1]);
    for (std::string line; std::getline(std::cin, line);) {
      if (line.empty()) continue;
      const size_t tab = line.find('\t');
      const mb::Encoding e = tab == std::string::npos ? tok.encode(line, 128)
                                                      : tok.encode_pair(line.substr(0, tab), line.substr(tab + 1), 128);
      mb::Batch batch;
      batch.add(e.input_ids, e.token_type_ids);
      const mb::Tensor logits = model.classify(model.pool(batch, model.encode(batch)));
      const int64_t C = logits.dim(1);
      int64_t best = 0;
      double sum = 0;
      for (int64_t k = 0; k < C; ++k)
        if (logits.f32()[k] > logits.f32()[best]) best = k;
      for (int64_t k = 0; k < C; ++k) sum += std::exp(double(logits.f32()[k] - logits.f32()[best]));
      std::printf("%s\t%.4f\t%s\n", model.config.id2label[size_t(best)].c_str(), 1.0 / sum, line.c_str());
    }
  } catch (const mb::Error& e) {
    std::fprintf(stderr, "classify: %s\n", e.what());
    return 1;
  }
  return 0;
}
