// BERT WordPiece tokenizer. Each step copies the Rust `tokenizers` crate (the implementation
// behind Hugging Face's fast BertTokenizer), which is the reference tests/reference/hf_tokenize.js
// checks us against:
//   1. added vocabulary: special tokens written literally are cut out of the raw text first;
//   2. BertNormalizer on each remaining piece: clean text, pad CJK ideographs, strip accents
//      (NFD, drop Mn), lowercase;
//   3. BertPreTokenizer: split on whitespace, isolate each punctuation character;
//   4. WordPiece: greedy longest-match-first with "##" continuations;
//   5. truncation, then the [CLS] A [SEP] (B [SEP]) template.
// Unicode data comes from utf8proc. Known difference: tokenizers classifies control, format,
// punctuation and nonspacing-mark characters with Unicode 8.0 tables (the unicode_categories
// crate), utf8proc with a newer Unicode. The ~570 code points that entered or left those
// categories after Unicode 8.0 (2015) are dropped/split here but kept inside words there.
#include "io/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "io/config.h"

namespace mb {
namespace {

using CodePoint = utf8proc_int32_t;

// ---- character classes, as the Rust code defines them

// Rust's char::is_whitespace, i.e. the Unicode White_Space property: the space separators plus
// the line/paragraph separators and the ASCII/C1 whitespace controls.
bool is_whitespace(CodePoint c) {
  if ((c >= 0x09 && c <= 0x0D) || c == 0x85) return true;
  const auto cat = utf8proc_category(c);
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

// BertNormalizer's is_control: unicode_categories' is_other() (Cc, Cf, Co, Cs; not unassigned
// code points), except TAB/LF/CR, which clean_text turns into spaces instead.
bool is_control(CodePoint c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  const auto cat = utf8proc_category(c);
  return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
         cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CS;
}

// BertPreTokenizer's is_bert_punc: ASCII punctuation (which includes symbols such as $ + < = >
// ^ ` | ~) or any Unicode punctuation category.
bool is_punctuation(CodePoint c) {
  if (c < 0x80) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
           (c >= 0x7B && c <= 0x7E);
  }
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// BertNormalizer's is_chinese_char: the CJK ideograph blocks exactly as tokenizers lists them
// (its extension range starts at U+2B920, not U+2B820 as in the original BERT code).
bool is_chinese_char(CodePoint c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// ---- UTF-8

void append_utf8(std::string& out, CodePoint c) {
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(c, buf);
  out.append(reinterpret_cast<const char*>(buf), size_t(n));
}

// ---- BertNormalizer

// Normalises one piece of raw text (no special tokens in it) into code points.
void normalize(std::string_view text, const TokenizerOptions& opt, std::vector<CodePoint>& out) {
  out.clear();
  bool ascii = true;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  for (size_t i = 0; i < text.size();) {
    CodePoint c;
    const auto n = utf8proc_iterate(p + i, utf8proc_ssize_t(text.size() - i), &c);
    if (n < 0) throw Error("tokenizer: input is not valid UTF-8 (byte " + std::to_string(i) + ")");
    i += size_t(n);
    if (opt.clean_text) {
      if (c == 0 || c == 0xFFFD || is_control(c)) continue;
      if (is_whitespace(c)) c = ' ';
    }
    ascii = ascii && c < 0x80;
    if (opt.tokenize_chinese_chars && is_chinese_char(c)) {
      out.insert(out.end(), {' ', c, ' '});
    } else {
      out.push_back(c);
    }
  }

  // Accents: canonical decomposition (with canonical reordering, hence on the whole piece), then
  // drop nonspacing marks. ASCII has nothing to decompose.
  if (opt.strip_accents && !ascii) {
    std::string utf8;
    for (CodePoint c : out) append_utf8(utf8, c);
    const auto* s = reinterpret_cast<const utf8proc_uint8_t*>(utf8.data());
    const auto len = utf8proc_ssize_t(utf8.size());
    const auto n = utf8proc_decompose(s, len, nullptr, 0, UTF8PROC_DECOMPOSE);
    if (n < 0) throw Error(std::string("tokenizer: NFD failed: ") + utf8proc_errmsg(n));
    out.resize(size_t(n));
    utf8proc_decompose(s, len, out.data(), n, UTF8PROC_DECOMPOSE);
    std::erase_if(out, [](CodePoint c) { return utf8proc_category(c) == UTF8PROC_CATEGORY_MN; });
  }

  // Rust's char::to_lowercase: utf8proc's simple mapping, except for the one unconditional
  // one-to-many lowercase mapping in Unicode (U+0130 -> "i" + combining dot above).
  if (opt.lowercase) {
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i] == 0x130) {
        out[i] = 'i';
        out.insert(out.begin() + std::ptrdiff_t(++i), 0x307);
      } else {
        out[i] = utf8proc_tolower(out[i]);
      }
    }
  }
}

// ---- truncation and the BERT template

void truncate_to(std::vector<int32_t>& ids, size_t n) {
  if (ids.size() > n) ids.resize(n);
}

// The number of sequence tokens left once the template's special tokens are placed.
size_t text_budget(int max_len, int n_special) {
  if (max_len < n_special) {
    // tokenizers' unsigned subtraction wraps here and it silently skips truncation; we refuse.
    throw Error("tokenizer: max_len " + std::to_string(max_len) + " leaves no room for the " +
                std::to_string(n_special) + " special tokens");
  }
  return size_t(max_len - n_special);
}

}  // namespace

// ---- loading

Tokenizer Tokenizer::from_vocab_file(const std::string& vocab_path, TokenizerOptions opt) {
  std::ifstream in(vocab_path, std::ios::binary);
  MB_CHECK(in, vocab_path + ": cannot open vocabulary file");
  Tokenizer t;
  t.opt_ = opt;
  // One token per line, id = line number; CRLF line ends are accepted. A repeated token keeps
  // its last id, like the Python and Rust readers' maps.
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    t.ids_[line] = int32_t(t.vocab_.size());
    t.vocab_.push_back(std::move(line));
  }
  MB_CHECK(!in.bad(), vocab_path + ": read error");
  MB_CHECK(!t.vocab_.empty(), vocab_path + ": vocabulary file is empty");

  std::string missing;
  auto special = [&](const char* tok, int32_t& id) {
    id = t.token_to_id(tok);
    if (id < 0) {
      missing += missing.empty() ? "" : ", ";
      missing += tok;
    } else {
      t.specials_.emplace_back(tok, id);
    }
  };
  special("[UNK]", t.unk_);
  special("[CLS]", t.cls_);
  special("[SEP]", t.sep_);
  special("[PAD]", t.pad_);
  special("[MASK]", t.mask_);
  MB_CHECK(missing.empty(), vocab_path + ": vocabulary lacks the special token(s) " + missing);
  // Where two special tokens could match at one place the longer wins, as in tokenizers'
  // leftmost-longest matcher.
  std::stable_sort(t.specials_.begin(), t.specials_.end(),
                   [](const auto& x, const auto& y) { return x.first.size() > y.first.size(); });
  return t;
}

Tokenizer Tokenizer::from_model_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string vocab_path = (fs::path(dir) / "vocab.txt").string();
  const std::string config_path = (fs::path(dir) / "tokenizer_config.json").string();
  TokenizerOptions opt;
  if (fs::exists(config_path)) {
    const nlohmann::json cfg = read_json_file(config_path);  // errors name the file; size capped
    MB_CHECK(cfg.is_object(), config_path + ": expected a JSON object");
    // Keys absent (or null) keep the BertTokenizer defaults; other keys are not ours to judge.
    auto flag = [&](const char* key, bool fallback) {
      const auto it = cfg.find(key);
      if (it == cfg.end() || it->is_null()) return fallback;
      MB_CHECK(it->is_boolean(), config_path + ": \"" + key + "\" must be true, false or null");
      return it->get<bool>();
    };
    opt.lowercase = flag("do_lower_case", true);
    opt.strip_accents = flag("strip_accents", opt.lowercase);  // null: follow lowercasing
    opt.tokenize_chinese_chars = flag("tokenize_chinese_chars", true);
  }
  return from_vocab_file(vocab_path, opt);
}

// ---- tokenizing

std::vector<int32_t> Tokenizer::tokenize(const std::string& text) const {
  std::vector<int32_t> ids;
  // Special tokens are matched in the raw text, case-sensitively, before any normalisation
  // (tokenizers' added tokens with normalized=false); the pieces between them are encoded alone.
  size_t piece = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto hit = std::find_if(specials_.begin(), specials_.end(), [&](const auto& s) {
      return text[i] == s.first[0] && text.compare(i, s.first.size(), s.first) == 0;
    });
    if (hit == specials_.end()) continue;
    encode_text(std::string_view(text).substr(piece, i - piece), ids);
    ids.push_back(hit->second);
    i += hit->first.size() - 1;
    piece = i + 1;
  }
  encode_text(std::string_view(text).substr(piece), ids);
  return ids;
}

// BertNormalizer, BertPreTokenizer and WordPiece on text free of special tokens.
void Tokenizer::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<CodePoint> chars;
  normalize(text, opt_, chars);

  std::string word;
  size_t word_chars = 0;
  auto flush = [&] {
    if (word_chars > 0) wordpiece(word, word_chars, out);
    word.clear();
    word_chars = 0;
  };
  for (CodePoint c : chars) {
    if (is_whitespace(c)) {
      flush();
    } else if (is_punctuation(c)) {
      flush();
      append_utf8(word, c);
      word_chars = 1;
      flush();
    } else {
      append_utf8(word, c);
      ++word_chars;
    }
  }
  flush();
}

// Greedy longest-match-first. A word longer than max_input_chars_per_word characters, or with a
// part that matches nothing, becomes a single [UNK].
void Tokenizer::wordpiece(std::string_view word, size_t n_chars, std::vector<int32_t>& out) const {
  if (n_chars > size_t(opt_.max_input_chars_per_word)) {
    out.push_back(unk_);
    return;
  }
  const size_t first = out.size();
  std::string candidate;
  for (size_t start = 0; start < word.size();) {
    // candidate = prefix + word[start:], shortened one character at a time from the right.
    candidate.assign(start > 0 ? "##" : "");
    const size_t prefix = candidate.size();
    candidate.append(word.substr(start));
    int32_t id = -1;
    size_t end = word.size();
    while (end > start) {
      const auto it = ids_.find(std::string_view(candidate).substr(0, prefix + end - start));
      if (it != ids_.end()) {
        id = it->second;
        break;
      }
      --end;  // and back over UTF-8 continuation bytes to the previous character's start
      while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80) --end;
    }
    if (id < 0) {
      out.resize(first);
      out.push_back(unk_);
      return;
    }
    out.push_back(id);
    start = end;
  }
}

std::vector<std::string> Tokenizer::tokenize_to_strings(const std::string& text) const {
  std::vector<std::string> tokens;
  for (int32_t id : tokenize(text)) tokens.push_back(vocab_[size_t(id)]);
  return tokens;
}

// ---- encoding with the BERT template

Encoding Tokenizer::encode(const std::string& a, int max_len) const {
  std::vector<int32_t> ids = tokenize(a);
  if (max_len > 0) truncate_to(ids, text_budget(max_len, 2));
  Encoding e;
  e.input_ids.reserve(ids.size() + 2);
  e.input_ids.push_back(cls_);
  e.input_ids.insert(e.input_ids.end(), ids.begin(), ids.end());
  e.input_ids.push_back(sep_);
  e.token_type_ids.assign(e.input_ids.size(), 0);
  return e;
}

Encoding Tokenizer::encode_pair(const std::string& a, const std::string& b, int max_len) const {
  std::vector<int32_t> ids_a = tokenize(a), ids_b = tokenize(b);
  if (max_len > 0) {
    // tokenizers' LongestFirst truncation (utils/truncation.rs). Not the slow tokenizer's
    // token-by-token loop: when both sides must shrink they get half the budget each, the
    // longer side taking the odd token, even if the shorter side was under half already.
    const size_t budget = text_budget(max_len, 3);
    if (ids_a.size() + ids_b.size() > budget) {
      size_t n_short = std::min(ids_a.size(), ids_b.size());
      size_t n_long = n_short > budget ? n_short : std::max(n_short, budget - n_short);
      if (n_short + n_long > budget) {
        n_short = budget / 2;
        n_long = n_short + budget % 2;
      }
      const bool a_longer = ids_a.size() > ids_b.size();
      truncate_to(ids_a, a_longer ? n_long : n_short);
      truncate_to(ids_b, a_longer ? n_short : n_long);
    }
  }
  Encoding e;
  e.input_ids.reserve(ids_a.size() + ids_b.size() + 3);
  e.input_ids.push_back(cls_);
  e.input_ids.insert(e.input_ids.end(), ids_a.begin(), ids_a.end());
  e.input_ids.push_back(sep_);
  e.token_type_ids.assign(e.input_ids.size(), 0);
  e.input_ids.insert(e.input_ids.end(), ids_b.begin(), ids_b.end());
  e.input_ids.push_back(sep_);
  e.token_type_ids.resize(e.input_ids.size(), 1);
  return e;
}

// ---- vocabulary

int32_t Tokenizer::token_to_id(const std::string& tok) const {
  const auto it = ids_.find(tok);
  return it == ids_.end() ? -1 : it->second;
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  MB_CHECK(id >= 0 && size_t(id) < vocab_.size(), "tokenizer: token id " + std::to_string(id) +
                                                      " is outside the vocabulary (size " +
                                                      std::to_string(vocab_.size()) + ")");
  return vocab_[size_t(id)];
}

}  // namespace mb
