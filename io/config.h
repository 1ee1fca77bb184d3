// config.json of a BERT model directory: the fields the engine uses, validated, plus the raw JSON
// so that keys we do not interpret survive a load/save round trip unchanged.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mb {

// What a config.json may ask for. Far above any BERT-family model (the largest vocabulary in use is
// XLM-R's 250,002, the widest layers BERT-xlarge's 2,048 / 8,192); they exist so that a hostile or
// corrupt file is refused with a message before anything is sized from it (docs/RELIABILITY.md).
// The bytes the parameters need are checked separately, against the machine's memory, before a
// model is allocated from a config (BertModel::init_random).
namespace limits {
inline constexpr int64_t kMaxVocabSize = int64_t(1) << 22;              // 4,194,304
inline constexpr int64_t kMaxHiddenSize = int64_t(1) << 16;             // 65,536
inline constexpr int64_t kMaxLayers = int64_t(1) << 10;                 // 1,024
inline constexpr int64_t kMaxIntermediateSize = int64_t(1) << 18;       // 262,144
inline constexpr int64_t kMaxPositionEmbeddings = int64_t(1) << 17;     // 131,072
inline constexpr int64_t kMaxTypeVocabSize = int64_t(1) << 16;          // 65,536
inline constexpr int64_t kMaxLabels = int64_t(1) << 16;                 // 65,536
// JSON files (config.json, tokenizer_config.json, the shard index, a checkpoint's state.json) are
// read whole; a larger one is refused before it is read. Same cap as a safetensors header.
inline constexpr int64_t kMaxJsonFileBytes = 100'000'000;
}  // namespace limits

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  int64_t pad_token_id = 0;
  double layer_norm_eps = 1e-12;
  double initializer_range = 0.02;
  double hidden_dropout_prob = 0.1;
  double attention_probs_dropout_prob = 0.1;
  double classifier_dropout = 0.1;                 // HF: null means hidden_dropout_prob
  std::string hidden_act = "gelu";                 // gelu | gelu_new | gelu_pytorch_tanh
  std::string problem_type;                        // "", single_label_classification, regression
  std::vector<std::string> id2label{"LABEL_0", "LABEL_1"};
  nlohmann::json raw = nlohmann::json::object();   // everything as read

  int64_t num_labels() const { return int64_t(id2label.size()); }
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  bool is_regression() const { return problem_type == "regression" || num_labels() == 1; }
};

// Parses and validates; `source` (a file name) prefixes every error message.
// Required keys: vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size.
BertConfig bert_config_from_json(const nlohmann::json& j, const std::string& source);
BertConfig read_bert_config(const std::string& path);
// raw, updated with the typed fields (id2label/label2id written the HF way: string keys).
nlohmann::json bert_config_to_json(const BertConfig& c);
void write_bert_config(const std::string& path, const BertConfig& c);

// Reads a JSON file; errors name the file (missing, unreadable, larger than
// limits::kMaxJsonFileBytes, invalid JSON with line/column).
nlohmann::json read_json_file(const std::string& path);

}  // namespace mb
