// A whole model directory: config.json and model.safetensors together, as BertModel::load reads
// them (tensor names and shapes against the config, pruned/bridged/shared/quantized structures,
// dtypes), then one sequence through the encoder, the pooler and the classifier when it loads.
#include "models/bert.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    const BertConfig c = bert_config_from_json(nlohmann::json::parse(fuzz::tiny_config_json()), "seed");
    const std::string model = fuzz::scratch_dir() + "/seed_model";
    BertModel::init_random(c, 1).save(model);
    fuzz::write_file(dir + "/tiny",
                     fuzz::join_files({fuzz::read_file(model + "/config.json"), fuzz::read_file(model + "/model.safetensors")}));
    std::filesystem::remove_all(model);
    BertModel::init_random(c, 2).save(model, DType::BF16);
    fuzz::write_file(dir + "/tiny_bf16",
                     fuzz::join_files({fuzz::read_file(model + "/config.json"), fuzz::read_file(model + "/model.safetensors")}));
  });
  return 0;
}

// Input: config.json, separator, model.safetensors.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = fuzz::split_files(data, size, 2);
  const std::string dir = fuzz::fresh_dir("model");
  fuzz::write_file(dir + "/config.json", parts[0]);
  fuzz::write_file(dir + "/model.safetensors", parts[1]);
  try {
    BertModel m = BertModel::load(dir);
    Batch b;
    const int32_t vocab = int32_t(m.config.vocab_size);
    b.add({0, vocab > 1 ? 1 : 0, vocab - 1}, {0, 0, int32_t(m.config.type_vocab_size) - 1});
    m.validate(b);
    const Tensor hidden = m.encode(b);
    if (m.has_pooler()) {
      const Tensor pooled = m.pool(b, hidden);
      if (m.has_classifier()) (void)m.classify(pooled);
    }
  } catch (const Error&) {
  }
  return 0;
}
