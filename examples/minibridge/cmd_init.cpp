// init: a randomly initialised model directory (BERT's own initialisation) from a config.
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "engine/error.h"
#include "io/config.h"
#include "io/data_dir.h"
#include "io/tokenizer.h"
#include "models/bert.h"
#include "models/counting.h"
#include "models/shipped_configs.h"

namespace mbcli {

namespace {

struct InitOptions {
  std::string config;
  std::string out;
  uint64_t seed = 0;
  std::string vocab_dir;
  std::string dtype = "f32";
  int num_labels = 0;
};

void run_init(const InitOptions& o) {
  mb::BertConfig config;
  const auto& shipped = mb::shipped_configs();
  if (auto it = shipped.find(o.config); it != shipped.end() && !std::filesystem::exists(o.config)) {
    config = mb::bert_config_from_json(nlohmann::json::parse(it->second), "shipped config '" + o.config + "'");
  } else {
    MB_CHECK(std::filesystem::exists(o.config),
             o.config + ": no such config file (shipped names: tiny, mini, small, medium, base)");
    config = mb::read_bert_config(o.config);
  }
  if (o.num_labels > 0) {
    config.id2label.clear();
    for (int i = 0; i < o.num_labels; ++i) config.id2label.push_back("LABEL_" + std::to_string(i));
  }
  const std::string vocab_dir = o.vocab_dir.empty() ? mb::default_vocab_dir() : o.vocab_dir;
  const mb::Tokenizer tok = mb::Tokenizer::from_model_dir(vocab_dir);  // validates the vocabulary
  MB_CHECK(int64_t(tok.vocab_size()) <= config.vocab_size,
           vocab_dir + "/vocab.txt has " + std::to_string(tok.vocab_size()) + " entries, more than vocab_size " +
               std::to_string(config.vocab_size));
  const mb::DType dt = o.dtype == "f32" ? mb::DType::F32 : o.dtype == "bf16" ? mb::DType::BF16 : mb::DType::F16;

  const mb::BertModel m = mb::BertModel::init_random(config, o.seed, o.config);
  m.save(o.out, dt, vocab_dir);
  const mb::ModelCounts c = mb::count_model(m, 128);
  std::cerr << "minibridge: wrote " << o.out << " (" << c.total_params() << " parameters, seed " << o.seed << ")\n";
}

}  // namespace

void add_init_command(CLI::App& app) {
  auto o = std::make_shared<InitOptions>();
  CLI::App* cmd = app.add_subcommand("init", "write a randomly initialised model directory");
  cmd->add_option("--config", o->config, "config.json path, or a shipped shape: tiny, mini, small, medium, base")
      ->required();
  cmd->add_option("--out", o->out, "output model directory")->required();
  cmd->add_option("--seed", o->seed, "random seed");
  cmd->add_option("--vocab", o->vocab_dir,
                  "directory with vocab.txt (+ tokenizer_config.json); default: $MINIBRIDGE_DATA/vocab/bert-base-uncased");
  cmd->add_option("--dtype", o->dtype, "stored weight type")->check(CLI::IsMember({"f32", "bf16", "f16"}));
  cmd->add_option("--num-labels", o->num_labels, "classifier outputs (default: from the config)")
      ->check(CLI::Range(1, 100000));
  cmd->callback([o] { run_init(*o); });
}

}  // namespace mbcli
