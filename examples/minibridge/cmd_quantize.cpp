// quantize: a model directory whose encoder weights are stored in int8 or bf16 (models/quantize.h).
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "engine/error.h"
#include "models/quantize.h"

namespace mbcli {

namespace {

struct QuantizeCliOptions {
  std::string model, out, dtype, embeddings = "f32";
};

uintmax_t directory_bytes(const std::filesystem::path& dir) {
  uintmax_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

void run_quantize(const QuantizeCliOptions& o) {
  mb::QuantizeOptions q;
  q.model_dir = o.model;
  q.out_dir = o.out;
  q.quantization.weights = o.dtype == "int8" ? mb::Precision::Int8 : mb::Precision::BF16;
  q.quantization.int8_embeddings = o.embeddings == "int8";
  mb::quantize_model(q);
  std::cerr << "minibridge: wrote " << o.out << " (" << o.dtype << " encoder weights, " << o.embeddings
            << " word embeddings): " << directory_bytes(o.out) / 1000 << " kB, from " << directory_bytes(o.model) / 1000
            << " kB\n";
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto o = std::make_shared<QuantizeCliOptions>();
  CLI::App* cmd = app.add_subcommand(
      "quantize", "write a copy of a model with its encoder weights stored in int8 or bf16 (smaller, loads faster)");
  cmd->add_option("--model", o->model, "the f32 model directory")->required();
  cmd->add_option("--out", o->out, "the new model directory (its parent must exist)")->required();
  cmd->add_option("--dtype", o->dtype,
                  "int8: one scale per output row, runs as --int8 does; bf16: runs as --bf16 does")
      ->required()
      ->check(CLI::IsMember({"int8", "bf16"}));
  cmd->add_option("--embeddings", o->embeddings, "word embeddings: f32 (default) or int8 (one scale per token)")
      ->check(CLI::IsMember({"f32", "int8"}));
  cmd->callback([o] { run_quantize(*o); });
}

}  // namespace mbcli
