// model.safetensors.index.json of a sharded model: its "weight_map" (tensor -> shard file), shard
// names that are absent, outside the directory, or lack the tensor named; a shard's own bytes.
#include "io/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

namespace {
const char* kIndex = R"({"metadata": {"total_size": 32}, "weight_map": {"a": "model-00001-of-00002.safetensors",
  "b": "model-00002-of-00002.safetensors"}})";
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    const std::string shard = fuzz::scratch_dir() + "/seed.safetensors";
    write_safetensors(shard, {{"b", Tensor::from_vector(std::vector<float>{1, 2}, {2})}});
    fuzz::write_file(dir + "/two_shards", fuzz::join_files({kIndex, fuzz::read_file(shard)}));
    fuzz::write_file(dir + "/index_only", kIndex);
  });
  return 0;
}

// Input: the index, then (after the separator) the second shard's bytes. The first shard is a
// fixed valid file.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = fuzz::split_files(data, size, 2);
  const std::string dir = fuzz::fresh_dir("model");
  write_safetensors(dir + "/model-00001-of-00002.safetensors",
                    {{"a", Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2})}});
  fuzz::write_file(dir + "/model-00002-of-00002.safetensors", parts[1]);
  fuzz::write_file(dir + "/model.safetensors.index.json", parts[0]);
  try {
    fuzz::read_every_byte(read_model_weights(dir));
  } catch (const Error&) {
  }
  return 0;
}
