// WordPiece tokenizer matching Hugging Face's BERT tokenizer (tokenizers' BertNormalizer +
// BertPreTokenizer + WordPiece + BERT post-processor) exactly.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mb {

struct TokenizerOptions {
  bool lowercase = true;
  bool strip_accents = true;          // HF default: follows lowercase when unset
  bool tokenize_chinese_chars = true;
  bool clean_text = true;
  int max_input_chars_per_word = 100;
};

struct Encoding {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> token_type_ids;
};

class Tokenizer {
 public:
  // Reads vocab.txt (one token per line; id = line number). Throws mb::Error naming the file if
  // it is missing, empty, or lacks [UNK]/[CLS]/[SEP]/[PAD]/[MASK].
  static Tokenizer from_vocab_file(const std::string& vocab_path, TokenizerOptions opt = {});
  // DIR/vocab.txt plus DIR/tokenizer_config.json when present (do_lower_case, strip_accents,
  // tokenize_chinese_chars).
  static Tokenizer from_model_dir(const std::string& dir);

  // Text -> wordpiece ids without special tokens. Special tokens written literally in the text
  // (e.g. "[MASK]") become those tokens. Text must be UTF-8 (mb::Error otherwise).
  std::vector<int32_t> tokenize(const std::string& text) const;
  std::vector<std::string> tokenize_to_strings(const std::string& text) const;

  // [CLS] a [SEP] (b [SEP]); truncation to max_len total tokens, longest-first for pairs
  // (exactly as the tokenizers library does it). max_len <= 0: no truncation; a max_len too
  // small for the special tokens themselves is an mb::Error.
  Encoding encode(const std::string& a, int max_len = 512) const;
  Encoding encode_pair(const std::string& a, const std::string& b, int max_len = 512) const;

  int32_t token_to_id(const std::string& tok) const;  // -1 if absent
  const std::string& id_to_token(int32_t id) const;
  size_t vocab_size() const { return vocab_.size(); }
  int32_t cls_id() const { return cls_; }
  int32_t sep_id() const { return sep_; }
  int32_t pad_id() const { return pad_; }
  int32_t unk_id() const { return unk_; }
  int32_t mask_id() const { return mask_; }
  const TokenizerOptions& options() const { return opt_; }

 private:
  // Lets ids_ be searched with a string_view (no temporary string per WordPiece candidate).
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  void wordpiece(std::string_view word, size_t n_chars, std::vector<int32_t>& out) const;

  TokenizerOptions opt_;
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> ids_;
  int32_t cls_ = -1, sep_ = -1, pad_ = -1, unk_ = -1, mask_ = -1;
  // The special tokens as text with their ids, longest first: matched in the raw input.
  std::vector<std::pair<std::string, int32_t>> specials_;
};

}  // namespace mb
