// Shared by the libFuzzer targets (tests/fuzz/fuzz_*.cpp, scripts/fuzz.sh).
//
// Each target feeds the fuzzer's bytes to one of minibridge's readers of outside input through the
// same path a user's file takes: written to a file in a scratch directory, then read. The promise
// it checks: any input either works or throws mb::Error (one clear message naming the file); a
// crash, a sanitizer report, another exception type, a hang, or an allocation past libFuzzer's
// -malloc_limit_mb (scripts/fuzz.sh: 512 MB) is a finding.
//
// Inputs made of several files are the files' bytes joined by kFileSeparator, so that seeds are
// plain files one can read and write by hand.
//
// Seeds: run a target with MB_FUZZ_WRITE_SEEDS=DIR and it writes its seed inputs there (made with
// minibridge's own writers: a tiny model, a checkpoint, a log) and exits; scripts/fuzz.sh adds the
// text files of tests/data and tests/fuzz/seeds.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.h"

namespace mb::fuzz {

inline constexpr std::string_view kFileSeparator = "\n=====minibridge-fuzz-file=====\n";

// A directory of this process's own (removed at exit), for the files each input becomes.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "mb_fuzz_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    static std::string to_remove;
    to_remove = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(to_remove, ec);
    });
    return tmpl;
  }();
  return dir;
}

// Empties DIR (created when missing) so that files of an earlier input do not leak into this one.
inline std::string fresh_dir(const std::string& name) {
  const std::string dir = scratch_dir() + "/" + name;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::filesystem::create_directories(dir);
  return dir;
}

// The fuzzer's input as text.
inline std::string_view bytes(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Reads every byte of every tensor: a view reaching past its mapping faults here.
template <class TensorMap>
void read_every_byte(const TensorMap& tensors) {
  unsigned sum = 0;
  for (const auto& entry : tensors)
    for (size_t i = 0; i < entry.second.nbytes(); ++i) sum += static_cast<const unsigned char*>(entry.second.raw())[i];
  volatile unsigned sink = sum;
  (void)sink;
}

inline void write_file(const std::string& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) {
    std::perror(path.c_str());
    std::abort();
  }
}

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// The input cut at each separator into at most `n` parts (the last one takes the rest); missing
// parts are empty.
inline std::vector<std::string_view> split_files(const uint8_t* data, size_t size, size_t n) {
  std::string_view rest = bytes(data, size);
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < n) {
    const size_t at = rest.find(kFileSeparator);
    if (at == std::string_view::npos) break;
    parts.push_back(rest.substr(0, at));
    rest.remove_prefix(at + kFileSeparator.size());
  }
  parts.push_back(rest);
  parts.resize(n);
  return parts;
}

inline std::string join_files(const std::vector<std::string>& files) {
  std::string out;
  for (size_t i = 0; i < files.size(); ++i) out += (i ? std::string(kFileSeparator) : "") + files[i];
  return out;
}

// A checkpoint directory (io/checkpoint.h: state.json and tensors.safetensors) as one input:
// state.json, separator, tensors.safetensors. checkpoint_input joins a directory's two files;
// checkpoint_dir writes an input's two parts into the fresh directory NAME and returns it.
inline std::string checkpoint_input(const std::string& dir) {
  return join_files({read_file(dir + "/state.json"), read_file(dir + "/tensors.safetensors")});
}
inline std::string checkpoint_dir(const uint8_t* data, size_t size, const std::string& name) {
  const auto parts = split_files(data, size, 2);
  const std::string dir = fresh_dir(name);
  write_file(dir + "/state.json", parts[0]);
  write_file(dir + "/tensors.safetensors", parts[1]);
  return dir;
}

// MB_FUZZ_WRITE_SEEDS=DIR: calls write(DIR) and exits (from LLVMFuzzerInitialize).
template <class F>
void write_seeds_if_asked(F&& write) {
  const char* dir = std::getenv("MB_FUZZ_WRITE_SEEDS");
  if (!dir) return;
  std::filesystem::create_directories(dir);
  write(std::string(dir));
  std::exit(0);
}

// The smallest model that still has every part: 2 layers, 2 heads, a pooler and a classifier.
inline const char* tiny_config_json() {
  return R"({"model_type": "bert", "vocab_size": 24, "hidden_size": 8, "num_hidden_layers": 2,
  "num_attention_heads": 2, "intermediate_size": 12, "max_position_embeddings": 16,
  "type_vocab_size": 2, "id2label": {"0": "negative", "1": "positive"}})";
}

// A vocabulary with the special tokens, some words and WordPiece continuations.
inline const char* tiny_vocab() {
  return "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nfilm\nis\ngood\nbad\nun\n##believ\n##able\n"
         "##s\n.\n,\n!\n'\na\nmovie\n##ly\nnot\n\xe4\xb8\xad\ncafe\n";
}

}  // namespace mb::fuzz
