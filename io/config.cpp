#include "io/config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/error.h"
#include "io/atomic_file.h"

namespace mb {

using nlohmann::json;

json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MB_CHECK(in, path + ": cannot open file");
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  MB_CHECK(ec || bytes <= uintmax_t(limits::kMaxJsonFileBytes),
           path + ": " + std::to_string(bytes) + " bytes, larger than the " +
               std::to_string(limits::kMaxJsonFileBytes / 1'000'000) + " MB limit for a JSON file");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number past double's range
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

namespace {

int64_t get_int(const json& j, const char* key, const std::string& src, bool required, int64_t fallback, int64_t min,
                int64_t max) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    MB_CHECK(!required, src + ": missing required key \"" + key + "\"");
    return fallback;
  }
  MB_CHECK(it->is_number_integer(), src + ": \"" + key + "\" must be an integer, got " + it->dump());
  MB_CHECK(!it->is_number_unsigned() || it->get<uint64_t>() <= uint64_t(max),
           src + ": \"" + key + "\" is " + it->dump() + ", more than the limit of " + std::to_string(max) +
               " (docs/RELIABILITY.md)");
  int64_t v = it->get<int64_t>();
  MB_CHECK(v >= min, src + ": \"" + key + "\" must be >= " + std::to_string(min) + ", got " + std::to_string(v));
  MB_CHECK(v <= max, src + ": \"" + key + "\" is " + std::to_string(v) + ", more than the limit of " +
                         std::to_string(max) + " (docs/RELIABILITY.md)");
  return v;
}

double get_double(const json& j, const char* key, const std::string& src, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  MB_CHECK(it->is_number(), src + ": \"" + key + "\" must be a number, got " + it->dump());
  return it->get<double>();
}

std::string get_string(const json& j, const char* key, const std::string& src, const std::string& fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  MB_CHECK(it->is_string(), src + ": \"" + key + "\" must be a string, got " + it->dump());
  return it->get<std::string>();
}

}  // namespace

BertConfig bert_config_from_json(const json& j, const std::string& src) {
  MB_CHECK(j.is_object(), src + ": config must be a JSON object");
  BertConfig c;
  c.raw = j;
  const std::string model_type = get_string(j, "model_type", src, "bert");
  MB_CHECK(model_type == "bert", src + ": model_type \"" + model_type + "\" is not supported (only \"bert\")");
  c.vocab_size = get_int(j, "vocab_size", src, true, 0, 1, limits::kMaxVocabSize);
  c.hidden_size = get_int(j, "hidden_size", src, true, 0, 1, limits::kMaxHiddenSize);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", src, true, 0, 0, limits::kMaxLayers);
  c.num_attention_heads = get_int(j, "num_attention_heads", src, true, 0, 1, limits::kMaxHiddenSize);
  c.intermediate_size = get_int(j, "intermediate_size", src, true, 0, 1, limits::kMaxIntermediateSize);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", src, false, 512, 1, limits::kMaxPositionEmbeddings);
  c.type_vocab_size = get_int(j, "type_vocab_size", src, false, 2, 1, limits::kMaxTypeVocabSize);
  c.pad_token_id = get_int(j, "pad_token_id", src, false, 0, 0, limits::kMaxVocabSize - 1);
  c.layer_norm_eps = get_double(j, "layer_norm_eps", src, 1e-12);
  c.initializer_range = get_double(j, "initializer_range", src, 0.02);
  c.hidden_dropout_prob = get_double(j, "hidden_dropout_prob", src, 0.1);
  c.attention_probs_dropout_prob = get_double(j, "attention_probs_dropout_prob", src, 0.1);
  c.classifier_dropout = get_double(j, "classifier_dropout", src, c.hidden_dropout_prob);
  MB_CHECK(c.layer_norm_eps >= 0.0, src + ": \"layer_norm_eps\" must be >= 0");
  MB_CHECK(c.initializer_range >= 0.0, src + ": \"initializer_range\" must be >= 0");
  for (double p : {c.hidden_dropout_prob, c.attention_probs_dropout_prob, c.classifier_dropout})
    MB_CHECK(p >= 0.0 && p < 1.0, src + ": dropout probabilities must be in [0, 1)");
  c.hidden_act = get_string(j, "hidden_act", src, "gelu");
  c.problem_type = get_string(j, "problem_type", src, "");
  const std::string pos = get_string(j, "position_embedding_type", src, "absolute");

  MB_CHECK(c.hidden_size % c.num_attention_heads == 0,
           src + ": hidden_size " + std::to_string(c.hidden_size) + " is not a multiple of num_attention_heads " +
               std::to_string(c.num_attention_heads));
  MB_CHECK(c.hidden_act == "gelu" || c.hidden_act == "gelu_new" || c.hidden_act == "gelu_pytorch_tanh",
           src + ": hidden_act \"" + c.hidden_act + "\" is not supported (gelu, gelu_new, gelu_pytorch_tanh)");
  MB_CHECK(pos == "absolute", src + ": position_embedding_type \"" + pos + "\" is not supported (only absolute)");
  MB_CHECK(c.pad_token_id < c.vocab_size, src + ": pad_token_id is outside the vocabulary");
  MB_CHECK(c.problem_type.empty() || c.problem_type == "regression" || c.problem_type == "single_label_classification",
           src + ": problem_type \"" + c.problem_type + "\" is not supported");

  // Labels: id2label ({"0": "NEG", ...}) wins; else num_labels; else HF's default of 2.
  if (auto it = j.find("id2label"); it != j.end() && !it->is_null()) {
    MB_CHECK(it->is_object() && !it->empty(), src + ": \"id2label\" must be a non-empty object");
    MB_CHECK(int64_t(it->size()) <= limits::kMaxLabels, src + ": \"id2label\" has " + std::to_string(it->size()) +
                                                            " labels, more than the limit of " +
                                                            std::to_string(limits::kMaxLabels) + " (docs/RELIABILITY.md)");
    std::vector<std::string> labels(it->size());
    std::vector<bool> seen(it->size(), false);
    for (const auto& [k, v] : it->items()) {
      size_t idx = 0;
      bool ok = !k.empty() && k.find_first_not_of("0123456789") == std::string::npos && k.size() < 9;
      if (ok) idx = std::stoul(k);
      MB_CHECK(ok && idx < labels.size() && !seen[idx],
               src + ": \"id2label\" keys must be the ids 0.." + std::to_string(labels.size() - 1) + ", got \"" + k + "\"");
      MB_CHECK(v.is_string(), src + ": \"id2label\"[\"" + k + "\"] must be a string");
      labels[idx] = v.get<std::string>();
      seen[idx] = true;
    }
    c.id2label = labels;
  } else {
    int64_t n = get_int(j, "num_labels", src, false, 2, 1, limits::kMaxLabels);
    c.id2label.clear();
    for (int64_t i = 0; i < n; ++i) c.id2label.push_back("LABEL_" + std::to_string(i));
  }
  if (auto it = j.find("num_labels"); it != j.end() && it->is_number_integer())
    MB_CHECK(it->get<int64_t>() == c.num_labels(), src + ": \"num_labels\" disagrees with \"id2label\"");
  return c;
}

BertConfig read_bert_config(const std::string& path) { return bert_config_from_json(read_json_file(path), path); }

json bert_config_to_json(const BertConfig& c) {
  json j = c.raw.is_object() ? c.raw : json::object();
  j["model_type"] = "bert";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["intermediate_size"] = c.intermediate_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["type_vocab_size"] = c.type_vocab_size;
  j["pad_token_id"] = c.pad_token_id;
  j["layer_norm_eps"] = c.layer_norm_eps;
  j["initializer_range"] = c.initializer_range;
  j["hidden_dropout_prob"] = c.hidden_dropout_prob;
  j["attention_probs_dropout_prob"] = c.attention_probs_dropout_prob;
  if (c.classifier_dropout != c.hidden_dropout_prob) j["classifier_dropout"] = c.classifier_dropout;
  j["hidden_act"] = c.hidden_act;
  if (!j.contains("position_embedding_type")) j["position_embedding_type"] = "absolute";
  if (!c.problem_type.empty()) j["problem_type"] = c.problem_type;
  json id2label = json::object(), label2id = json::object();
  for (size_t i = 0; i < c.id2label.size(); ++i) {
    id2label[std::to_string(i)] = c.id2label[i];
    label2id[c.id2label[i]] = int64_t(i);
  }
  j["id2label"] = id2label;
  j["label2id"] = label2id;
  j.erase("num_labels");  // implied by id2label, as HF writes it
  return j;
}

void write_bert_config(const std::string& path, const BertConfig& c) {
  write_file_atomic(path, bert_config_to_json(c).dump(2) + "\n");
}

}  // namespace mb
