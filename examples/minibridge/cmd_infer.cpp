// tokenize / encode / classify: one input per stdin line (a TAB splits a sentence pair),
// one JSON object per output line.
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "engine/error.h"
#include "engine/gemm.h"
#include "engine/threads.h"
#include "io/tokenizer.h"
#include "json_out.h"
#include "models/bert.h"
#include <nlohmann/json.hpp>

namespace mbcli {

namespace {

struct InferOptions {
  std::string model;
  int max_len = 0;  // 0: the model's max_position_embeddings (at most 512)
  int batch = 8;
  int threads = 0;
  std::string gemm;
  std::string pooling = "cls";
  PrecisionFlags precision;
};

void add_common(CLI::App* cmd, InferOptions& o, bool batched) {
  cmd->add_option("--model", o.model, "Hugging Face BERT model directory")->required();
  cmd->add_option("--max-len", o.max_len, "truncate inputs to this many tokens (default: model limit, <= 512)")
      ->check(CLI::Range(2, 1 << 20));
  if (batched) {
    cmd->add_option("--batch", o.batch, "sequences run together")->check(CLI::Range(1, 1 << 16));
    cmd->add_option("--threads", o.threads, "threads for OpenMP, OpenBLAS and oneDNN (default: MB_NUM_THREADS or all)");
    cmd->add_option("--gemm", o.gemm, "GEMM back-end: onednn, openblas or eigen (default: MB_GEMM or fastest)");
    add_precision_flags(cmd, o.precision);
  }
}

void apply_runtime(const InferOptions& o) {
  mb::set_num_threads(o.threads);
  if (!o.gemm.empty()) mb::set_gemm_backend(mb::parse_gemm_backend(o.gemm));
}

// One stdin line: text, or a pair split at the first TAB. Line numbers count from 1.
struct Input {
  size_t line_no;
  std::string a, b;
  bool pair;
};

bool read_input(std::istream& in, size_t& line_no, Input& out) {
  std::string line;
  if (!std::getline(in, line)) return false;
  ++line_no;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  MB_CHECK(!line.empty(), "stdin line " + std::to_string(line_no) + ": empty input");
  out.line_no = line_no;
  const size_t tab = line.find('\t');
  out.pair = tab != std::string::npos;
  out.a = out.pair ? line.substr(0, tab) : line;
  out.b = out.pair ? line.substr(tab + 1) : std::string();
  return true;
}

mb::Encoding encode_input(const mb::Tokenizer& tok, const Input& in, int max_len) {
  try {
    return in.pair ? tok.encode_pair(in.a, in.b, max_len) : tok.encode(in.a, max_len);
  } catch (const mb::Error& e) {
    throw mb::Error("stdin line " + std::to_string(in.line_no) + ": " + e.what());
  }
}

int resolve_max_len(const InferOptions& o, const mb::BertModel* m) {
  int limit = m ? int(std::min<int64_t>(512, m->config.max_position_embeddings)) : 512;
  if (o.max_len == 0) return limit;
  MB_CHECK(!m || o.max_len <= m->config.max_position_embeddings,
           "--max-len " + std::to_string(o.max_len) + " exceeds the model's max_position_embeddings " +
               std::to_string(m->config.max_position_embeddings));
  return o.max_len;
}

struct LoadedModel {
  mb::BertModel model;
  mb::Tokenizer tokenizer;
};

LoadedModel load_model(const std::string& dir, mb::Precision precision) {
  LoadedModel lm{mb::BertModel::load(dir), mb::Tokenizer::from_model_dir(dir)};
  pack_model(lm.model, precision, dir);
  MB_CHECK(int64_t(lm.tokenizer.vocab_size()) <= lm.model.config.vocab_size,
           (std::filesystem::path(dir) / "vocab.txt").string() + " has " + std::to_string(lm.tokenizer.vocab_size()) +
               " entries, more than config.json's vocab_size " + std::to_string(lm.model.config.vocab_size));
  return lm;
}

void run_tokenize(const InferOptions& o) {
  const mb::Tokenizer tok = mb::Tokenizer::from_model_dir(o.model);
  const int max_len = resolve_max_len(o, nullptr);
  Input in;
  size_t line_no = 0;
  std::string out;
  while (read_input(std::cin, line_no, in)) {
    const mb::Encoding e = encode_input(tok, in, max_len);
    out.clear();
    out += "{\"input_ids\":";
    append_ints(out, e.input_ids);
    out += ",\"token_type_ids\":";
    append_ints(out, e.token_type_ids);
    out += "}\n";
    std::cout << out;
  }
}

// Reads stdin in groups of o.batch lines and hands each group, run through the encoder, to emit().
template <class Emit>
void run_batched(const InferOptions& o, const LoadedModel& lm, Emit emit) {
  const int max_len = resolve_max_len(o, &lm.model);
  size_t line_no = 0;
  bool more = true;
  while (more) {
    mb::Batch batch;
    Input in;
    while (batch.num_seqs() < o.batch && (more = read_input(std::cin, line_no, in))) {
      const mb::Encoding e = encode_input(lm.tokenizer, in, max_len);
      batch.add(e.input_ids, e.token_type_ids);
    }
    if (batch.num_seqs() == 0) break;
    emit(batch, lm.model.encode(batch));
    std::cout.flush();
  }
}

void run_encode(const InferOptions& o) {
  MB_CHECK(o.pooling == "cls" || o.pooling == "mean" || o.pooling == "pooler" || o.pooling == "none",
           "--pooling must be cls, mean, pooler or none, got '" + o.pooling + "'");
  apply_runtime(o);
  const LoadedModel lm = load_model(o.model, o.precision.precision());
  MB_CHECK(o.pooling != "pooler" || lm.model.has_pooler(),
           o.model + ": --pooling pooler needs pooler.dense.* tensors, which this model lacks");
  const int64_t H = lm.model.config.hidden_size;
  std::string out;
  std::vector<float> mean(static_cast<size_t>(H));
  run_batched(o, lm, [&](const mb::Batch& b, const mb::Tensor& hidden) {
    const float* h = hidden.f32();
    const mb::Tensor pooled = o.pooling == "pooler" ? lm.model.pool(b, hidden) : mb::Tensor();
    for (int64_t s = 0; s < b.num_seqs(); ++s) {
      out.clear();
      const float* first = h + int64_t(b.offsets[s]) * H;
      if (o.pooling == "none") {
        out += "{\"last_hidden_state\":[";
        for (int64_t t = 0; t < b.length(s); ++t) {
          if (t) out += ',';
          append_floats(out, first + t * H, H);
        }
        out += "]}\n";
      } else {
        const float* v = first;
        if (o.pooling == "mean") {
          // Every packed token is real (there is no padding to exclude).
          std::fill(mean.begin(), mean.end(), 0.0f);
          for (int64_t t = 0; t < b.length(s); ++t)
            for (int64_t c = 0; c < H; ++c) mean[size_t(c)] += first[t * H + c];
          for (float& x : mean) x /= float(b.length(s));
          v = mean.data();
        } else if (pooled.defined()) {
          v = pooled.f32() + s * H;
        }
        out += "{\"embedding\":";
        append_floats(out, v, H);
        out += "}\n";
      }
      std::cout << out;
    }
  });
}

void run_classify(const InferOptions& o) {
  apply_runtime(o);
  const LoadedModel lm = load_model(o.model, o.precision.precision());
  MB_CHECK(lm.model.has_pooler() && lm.model.has_classifier(),
           o.model + ": classify needs a sequence-classification model (pooler.dense.* and classifier.* tensors)");
  const mb::BertConfig& c = lm.model.config;
  const int64_t C = c.num_labels();
  std::string out;
  run_batched(o, lm, [&](const mb::Batch& b, const mb::Tensor& hidden) {
    const mb::Tensor logits = lm.model.classify(lm.model.pool(b, hidden));
    for (int64_t s = 0; s < b.num_seqs(); ++s) {
      const float* z = logits.f32() + s * C;
      int64_t best = 0;
      for (int64_t k = 1; k < C; ++k)
        if (z[k] > z[best]) best = k;
      // Regression heads report their value; classifiers the softmax probability of the label.
      float score = z[0];
      if (!c.is_regression()) {
        double sum = 0;
        for (int64_t k = 0; k < C; ++k) sum += std::exp(double(z[k]) - double(z[best]));
        score = float(1.0 / sum);
      }
      out.clear();
      out += "{\"logits\":";
      append_floats(out, z, C);
      out += ",\"label\":" + nlohmann::json(c.id2label[size_t(best)]).dump() + ",\"score\":";
      append_float(out, score);
      out += "}\n";
      std::cout << out;
    }
  });
}

}  // namespace

void add_infer_commands(CLI::App& app) {
  auto o = std::make_shared<InferOptions>();
  CLI::App* tok = app.add_subcommand("tokenize", "stdin lines -> {\"input_ids\",\"token_type_ids\"} per line");
  add_common(tok, *o, false);
  tok->callback([o] { run_tokenize(*o); });

  CLI::App* enc = app.add_subcommand("encode", "stdin lines -> {\"embedding\"} (or {\"last_hidden_state\"}) per line");
  add_common(enc, *o, true);
  enc->add_option("--pooling", o->pooling, "cls | mean | pooler | none")
      ->check(CLI::IsMember({"cls", "mean", "pooler", "none"}));
  enc->callback([o] { run_encode(*o); });

  CLI::App* cls = app.add_subcommand("classify", "stdin lines -> {\"logits\",\"label\",\"score\"} per line");
  add_common(cls, *o, true);
  cls->callback([o] { run_classify(*o); });
}

}  // namespace mbcli
