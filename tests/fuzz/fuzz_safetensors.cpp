// model.safetensors: header length, JSON header, dtypes, shapes, offsets, the data buffer.
// Every tensor a valid file yields is read to its last byte (fuzz::read_every_byte).
#include "io/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    const Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
    const Tensor b = Tensor::from_vector(std::vector<float>{-1, 0.5f}, {2});
    write_safetensors(dir + "/f32", {{"a", a}, {"b", b}}, {{"format", "pt"}});
    write_safetensors(dir + "/mixed", {{"a", a}, {"half", b.to_dtype(DType::BF16)}, {"f16", a.to_dtype(DType::F16)}});
    write_safetensors(dir + "/empty", {});
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_dir() + "/model.safetensors";
  fuzz::write_file(path, fuzz::bytes(data, size));
  try {
    fuzz::read_every_byte(read_safetensors(path).tensors);
  } catch (const Error&) {
  }
  return 0;
}
