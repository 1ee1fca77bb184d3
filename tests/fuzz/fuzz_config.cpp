// config.json: the BERT fields, id2label/label2id, and the "minibridge" key (per-layer structure of
// pruned, bridged and shared models, quantization record), then the model's size computed from it
// (parameters and FLOPs, no tensor allocated).
#include "io/config.h"
#include "models/counting.h"
#include "models/layer_structure.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    fuzz::write_file(dir + "/tiny", fuzz::tiny_config_json());
    BertConfig c = bert_config_from_json(nlohmann::json::parse(fuzz::tiny_config_json()), "seed");
    write_layer_structure(c, {LayerStructure::encoder(1, 0), LayerStructure::bridge(3, BridgeForm::Linear)});
    fuzz::write_file(dir + "/structured", bert_config_to_json(c).dump(2));
    write_layer_structure(c, {LayerStructure::encoder(2, 12), LayerStructure::shared(0, true)});
    fuzz::write_file(dir + "/shared", bert_config_to_json(c).dump(2));
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_dir() + "/config.json";
  fuzz::write_file(path, fuzz::bytes(data, size));
  try {
    const BertConfig c = read_bert_config(path);
    const auto layers = read_layer_structure(c, path);
    const ModelCounts counts = count_config(c, 128);
    volatile double sink = counts.flops() + double(counts.total_params()) + double(layers.size());
    (void)sink;
    (void)bert_config_to_json(c).dump();
  } catch (const Error&) {
  }
  return 0;
}
