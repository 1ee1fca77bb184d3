// WordPiece tokenizer: every case of tests/data/tokenizer_strings.txt against Hugging Face's
// tokenizers (fixtures written by tests/reference/hf_tokenize.js), then loading errors and
// tokenizer_config.json handling.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/error.h"
#include "io/tokenizer.h"
#include "tests/test_util.h"

namespace {

std::string uncased_dir() { return mbtest::data_dir() + "/vocab/bert-base-uncased"; }

// A vocabulary with the special tokens and then `tokens`, one a line.
std::string small_vocab(const std::string& dir, const std::string& tokens) {
  const std::string path = dir + "/vocab.txt";
  mbtest::write_file(path, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n" + tokens);
  return path;
}

void append_utf8(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += char(c);
  } else if (c < 0x800) {
    out += char(0xC0 | (c >> 6));
    out += char(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += char(0xE0 | (c >> 12));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  } else {
    out += char(0xF0 | (c >> 18));
    out += char(0x80 | ((c >> 12) & 0x3F));
    out += char(0x80 | ((c >> 6) & 0x3F));
    out += char(0x80 | (c & 0x3F));
  }
}

// The strings file's escapes, decoded exactly as hf_tokenize.js does: \u{HEX} \t \n \r \\ and
// \e (nothing).
std::string unescape_case(const std::string& s, const std::string& where) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out += s[i];
      continue;
    }
    const char c = ++i < s.size() ? s[i] : '\0';
    if (c == 't') {
      out += '\t';
    } else if (c == 'n') {
      out += '\n';
    } else if (c == 'r') {
      out += '\r';
    } else if (c == '\\') {
      out += '\\';
    } else if (c == 'e') {
    } else if (c == 'u' && i + 1 < s.size() && s[i + 1] == '{') {
      const size_t close = s.find('}', i);
      const std::string hex = close == std::string::npos ? "" : s.substr(i + 2, close - i - 2);
      const bool ok = !hex.empty() && hex.size() <= 6 &&
                      hex.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
      const uint32_t cp = ok ? uint32_t(std::stoul(hex, nullptr, 16)) : 0xFFFFFFFFu;
      if (cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
        throw std::runtime_error(where + ": bad \\u{...} escape");
      append_utf8(out, cp);
      i = close;
    } else {
      throw std::runtime_error(where + ": unknown escape \\" + std::string(1, c));
    }
  }
  return out;
}

struct Case {
  std::string source, a, b;
  bool pair = false;
};

// Cases by 1-based line number; same rules as hf_tokenize.js.
std::map<int, Case> read_cases(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in, "cannot open " << path);
  std::map<int, Case> cases;
  int lineno = 0;
  for (std::string line; std::getline(in, line);) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    const std::string where = path + ":" + std::to_string(lineno);
    Case c;
    c.source = line;
    const size_t tab = line.find('\t');
    c.pair = tab != std::string::npos;
    c.a = unescape_case(line.substr(0, tab), where);
    if (c.pair) c.b = unescape_case(line.substr(tab + 1), where);
    cases[lineno] = c;
  }
  return cases;
}

std::string show(const mb::Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : " ") + tok.id_to_token(id);
  return s;
}

std::string show(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t x : v) {
    if (!s.empty()) s += ',';
    s += std::to_string(x);
  }
  return s;
}

}  // namespace

TEST_CASE("tokenizer matches Hugging Face tokenizers on every test string") {
  const std::string fixtures = mbtest::fixtures_dir() + "/tokenizer";
  std::ifstream variants_in(fixtures + "/variants.json");
  REQUIRE_MESSAGE(variants_in, "no oracle fixtures in "
                                   << fixtures
                                   << " (run the fixture_tokenizer test, which needs node and "
                                      "npm install --no-package-lock --prefix tests/reference)");
  const auto cases = read_cases(std::string(MB_SOURCE_DIR) + "/tests/data/tokenizer_strings.txt");
  REQUIRE(cases.size() >= 300);

  const std::string vocab = uncased_dir() + "/vocab.txt";
  std::map<std::string, mb::Tokenizer> tokenizers;
  for (const auto& v : nlohmann::json::parse(variants_in)) {
    mb::TokenizerOptions opt;
    opt.lowercase = v.at("lowercase");
    opt.strip_accents =
        v.at("strip_accents").is_null() ? opt.lowercase : bool(v.at("strip_accents"));
    opt.tokenize_chinese_chars = v.at("tokenize_chinese_chars");
    opt.clean_text = v.at("clean_text");
    tokenizers.emplace(v.at("name"), v.at("name") == "uncased"
                                         ? mb::Tokenizer::from_model_dir(uncased_dir())
                                         : mb::Tokenizer::from_vocab_file(vocab, opt));
  }
  REQUIRE(tokenizers.count("uncased") == 1);

  std::ifstream expected(fixtures + "/expected.jsonl");
  REQUIRE(expected);
  std::set<std::pair<std::string, int>> seen;
  int checked = 0, failed = 0;
  for (std::string line; std::getline(expected, line);) {
    const auto rec = nlohmann::json::parse(line);
    const std::string variant = rec.at("variant");
    const int lineno = rec.at("line");
    const int max_len = rec.at("max_len");
    const auto c = cases.find(lineno);
    REQUIRE_MESSAGE((c != cases.end() && c->second.source == rec.at("source")),
                    "fixtures are stale: regenerate them (line " << lineno << ")");
    const mb::Tokenizer& tok = tokenizers.at(variant);
    const auto want_ids = rec.at("ids").get<std::vector<int32_t>>();
    const auto want_types = rec.at("type_ids").get<std::vector<int32_t>>();
    const mb::Encoding got = c->second.pair ? tok.encode_pair(c->second.a, c->second.b, max_len)
                                            : tok.encode(c->second.a, max_len);
    ++checked;
    seen.emplace(variant, lineno);
    if (got.input_ids == want_ids && got.token_type_ids == want_types) continue;
    if (++failed <= 20) {
      FAIL_CHECK("tokenizer_strings.txt:" << lineno << " [" << variant << ", max_len " << max_len
                                          << "] " << c->second.source
                                          << "\n  expected: " << show(tok, want_ids)
                                          << "\n       got: " << show(tok, got.input_ids)
                                          << "\n  expected type ids: " << show(want_types)
                                          << "\n       got type ids: " << show(got.token_type_ids));
    }
  }
  MESSAGE(checked << " oracle encodings checked (" << cases.size() << " strings, "
                  << tokenizers.size() << " normaliser variants)");
  CHECK(failed == 0);
  CHECK(seen.size() == cases.size() * tokenizers.size());
}

TEST_CASE("tokenizer: WordPiece on a small vocabulary") {
  const std::string dir = mbtest::scratch_dir("tokenizer_small");
  const auto tok =
      mb::Tokenizer::from_vocab_file(small_vocab(dir, "un\n##aff\n##able\naff\n##a\n,\nhello\n"));
  CHECK(tok.tokenize_to_strings("unaffable") == std::vector<std::string>{"un", "##aff", "##able"});
  CHECK(tok.tokenize_to_strings("Hello, unaffablex") ==
        std::vector<std::string>{"hello", ",", "[UNK]"});
  CHECK(tok.tokenize_to_strings("hello[MASK]aff") ==
        std::vector<std::string>{"hello", "[MASK]", "aff"});
  CHECK(tok.id_to_token(tok.mask_id()) == "[MASK]");
  CHECK(tok.token_to_id("##able") == 7);
  CHECK(tok.token_to_id("absent") == -1);
  CHECK(tok.vocab_size() == 12);
}

TEST_CASE("tokenizer: truncation lengths") {
  const auto tok = mb::Tokenizer::from_model_dir(uncased_dir());
  const std::string a = "a b c d e f g h i j", b = "k l m n o p q r s t";
  CHECK(tok.encode(a, 0).input_ids.size() == 12);
  CHECK(tok.encode(a, -1).input_ids.size() == 12);
  CHECK(tok.encode(a, 5).input_ids.size() == 5);
  CHECK(tok.encode(a, 2).input_ids.size() == 2);
  CHECK(tok.encode_pair(a, b, 0).input_ids.size() == 23);
  CHECK(tok.encode_pair(a, b, 3).input_ids.size() == 3);
  CHECK(mbtest::error_of([&] { tok.encode(a, 1); }).find("max_len 1") != std::string::npos);
  CHECK(mbtest::error_of([&] { tok.encode_pair(a, b, 2); }).find("max_len 2") != std::string::npos);
}

TEST_CASE("tokenizer: bad input") {
  const std::string dir = mbtest::scratch_dir("tokenizer_bad");

  SUBCASE("missing vocabulary file") {
    const std::string path = dir + "/nope/vocab.txt";
    const std::string err = mbtest::error_of([&] { mb::Tokenizer::from_vocab_file(path); });
    CHECK(err.find(path) != std::string::npos);
    CHECK(mbtest::error_of([&] { mb::Tokenizer::from_model_dir(dir + "/nope"); }).find(path) !=
          std::string::npos);
  }
  SUBCASE("empty vocabulary file") {
    mbtest::write_file(dir + "/vocab.txt", "");
    const std::string err = mbtest::error_of([&] { mb::Tokenizer::from_vocab_file(dir + "/vocab.txt"); });
    CHECK(err.find(dir + "/vocab.txt") != std::string::npos);
    CHECK(err.find("empty") != std::string::npos);
  }
  SUBCASE("vocabulary without the special tokens") {
    mbtest::write_file(dir + "/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n[mask]\n");
    const std::string err = mbtest::error_of([&] { mb::Tokenizer::from_vocab_file(dir + "/vocab.txt"); });
    CHECK(err.find(dir + "/vocab.txt") != std::string::npos);
    CHECK(err.find("[MASK]") != std::string::npos);
    CHECK(err.find("[PAD]") == std::string::npos);
  }
  SUBCASE("CRLF vocabulary") {
    mbtest::write_file(dir + "/vocab.txt", "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nhello\r\n");
    const auto tok = mb::Tokenizer::from_vocab_file(dir + "/vocab.txt");
    CHECK(tok.token_to_id("hello") == 5);
    CHECK(tok.vocab_size() == 6);
  }
  SUBCASE("invalid UTF-8 text") {
    const auto tok = mb::Tokenizer::from_vocab_file(small_vocab(dir, "hello\n"));
    CHECK(mbtest::error_of([&] { tok.tokenize("hello \xC3( world"); }).find("UTF-8") != std::string::npos);
    CHECK(mbtest::error_of([&] { tok.tokenize("\xED\xA0\x80"); }).find("UTF-8") != std::string::npos);
  }
  SUBCASE("token id out of range") {
    const auto tok = mb::Tokenizer::from_vocab_file(small_vocab(dir, ""));
    CHECK(mbtest::error_of([&] { tok.id_to_token(5); }).find("token id 5") != std::string::npos);
    CHECK_FALSE(mbtest::error_of([&] { tok.id_to_token(-1); }).empty());
  }
}

TEST_CASE("tokenizer: tokenizer_config.json") {
  const std::string dir = mbtest::scratch_dir("tokenizer_config");
  small_vocab(dir, "hello\n");
  const std::string config = dir + "/tokenizer_config.json";
  auto options_for = [&](const std::string& json) {
    mbtest::write_file(config, json);
    return mb::Tokenizer::from_model_dir(dir).options();
  };

  SUBCASE("absent: BertTokenizer defaults") {
    const auto opt = mb::Tokenizer::from_model_dir(dir).options();
    CHECK(opt.lowercase);
    CHECK(opt.strip_accents);
    CHECK(opt.tokenize_chinese_chars);
  }
  SUBCASE("the published bert-base-uncased config") {
    const auto opt = mb::Tokenizer::from_model_dir(uncased_dir()).options();
    CHECK(opt.lowercase);
    CHECK(opt.strip_accents);
    CHECK(opt.tokenize_chinese_chars);
  }
  SUBCASE("strip_accents null or absent follows do_lower_case") {
    auto opt = options_for(R"({"do_lower_case": false, "strip_accents": null})");
    CHECK_FALSE(opt.lowercase);
    CHECK_FALSE(opt.strip_accents);
    opt = options_for(R"({"do_lower_case": false, "model_max_length": 512})");
    CHECK_FALSE(opt.strip_accents);
    opt = options_for(R"({"do_lower_case": true})");
    CHECK(opt.strip_accents);
  }
  SUBCASE("explicit values") {
    auto opt = options_for(
        R"({"do_lower_case": true, "strip_accents": false, "tokenize_chinese_chars": false})");
    CHECK(opt.lowercase);
    CHECK_FALSE(opt.strip_accents);
    CHECK_FALSE(opt.tokenize_chinese_chars);
    opt = options_for(R"({"do_lower_case": false, "strip_accents": true})");
    CHECK_FALSE(opt.lowercase);
    CHECK(opt.strip_accents);
  }
  SUBCASE("options change the tokens") {
    mbtest::write_file(config, R"({"do_lower_case": false})");
    const auto cased = mb::Tokenizer::from_model_dir(dir);
    CHECK(cased.tokenize_to_strings("HELLO hello") == std::vector<std::string>{"[UNK]", "hello"});
    std::filesystem::remove(config);
    const auto uncased = mb::Tokenizer::from_model_dir(dir);
    CHECK(uncased.tokenize_to_strings("HELLO hello") == std::vector<std::string>{"hello", "hello"});
  }
  SUBCASE("invalid files name the file and the problem") {
    std::string err = mbtest::error_of([&] { options_for(R"({"do_lower_case": tru)"); });
    CHECK(err.find(config) != std::string::npos);
    CHECK(err.find("invalid JSON") != std::string::npos);
    err = mbtest::error_of([&] { options_for("[true]"); });
    CHECK(err.find(config) != std::string::npos);
    CHECK(err.find("object") != std::string::npos);
    err = mbtest::error_of([&] { options_for(R"({"do_lower_case": "yes"})"); });
    CHECK(err.find(config) != std::string::npos);
    CHECK(err.find("do_lower_case") != std::string::npos);
    err = mbtest::error_of([&] { options_for(R"({"strip_accents": 1})"); });
    CHECK(err.find("strip_accents") != std::string::npos);
  }
}
