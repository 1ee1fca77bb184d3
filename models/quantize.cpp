#include "models/quantize.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <system_error>

#include "engine/error.h"
#include "engine/gemm.h"
#include "models/layer_structure.h"

namespace mb {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kScheme = "symmetric per output row";

// "encoder.layer.<digits>.REST" -> REST, or "" for any other name.
std::string encoder_layer_rest(const std::string& name) {
  const std::string prefix = "encoder.layer.";
  if (!name.starts_with(prefix)) return "";
  size_t i = prefix.size();
  const size_t digits = i;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
  if (i == digits || i >= name.size() || name[i] != '.') return "";
  return name.substr(i + 1);
}

}  // namespace

Quantization read_quantization(const BertConfig& c, const std::string& source) {
  Quantization q;
  auto mbk = c.raw.find("minibridge");
  if (mbk == c.raw.end() || !mbk->is_object() || !mbk->contains("quantization")) return q;
  const json& j = (*mbk)["quantization"];
  const std::string where = source + ": \"minibridge\".\"quantization\"";
  MB_CHECK(j.is_object(), where + " must be an object");
  auto text = [&](const char* key, const std::string& fallback) -> std::string {
    if (!j.contains(key)) return fallback;
    MB_CHECK(j[key].is_string(), where + ".\"" + key + "\" must be a string");
    return j[key].get<std::string>();
  };
  const std::string dtype = text("dtype", "");
  MB_CHECK(dtype == "int8" || dtype == "bf16", where + ".\"dtype\" must be \"int8\" or \"bf16\", not \"" + dtype + "\"");
  q.weights = dtype == "int8" ? Precision::Int8 : Precision::BF16;
  const std::string embeddings = text("embeddings", "f32");
  MB_CHECK(embeddings == "int8" || embeddings == "f32",
           where + ".\"embeddings\" must be \"int8\" or \"f32\", not \"" + embeddings + "\"");
  q.int8_embeddings = embeddings == "int8";
  const std::string scheme = text("scheme", kScheme), suffix = text("scale_suffix", kScaleSuffix);
  MB_CHECK(scheme == kScheme, where + ".\"scheme\" is \"" + scheme + "\"; this build reads \"" + kScheme + "\"");
  MB_CHECK(suffix == kScaleSuffix, where + ".\"scale_suffix\" is \"" + suffix + "\"; this build reads \"" + kScaleSuffix + "\"");
  return q;
}

void write_quantization(BertConfig& c, const Quantization& q) {
  json& raw = c.raw;
  if (!raw.is_object()) raw = json::object();
  if (!q.quantized()) {
    if (raw.contains("minibridge") && raw["minibridge"].is_object()) {
      raw["minibridge"].erase("quantization");
      if (raw["minibridge"].empty()) raw.erase("minibridge");
    }
    return;
  }
  if (!raw.contains("minibridge") || !raw["minibridge"].is_object()) raw["minibridge"] = json::object();
  raw["minibridge"]["quantization"] = {{"dtype", precision_name(q.weights)},
                                       {"embeddings", q.int8_embeddings ? "int8" : "f32"},
                                       {"scheme", kScheme},
                                       {"scale_suffix", kScaleSuffix}};
}

DType stored_dtype(const Quantization& q, const std::string& name) {
  if (!q.quantized()) return DType::F32;
  if (name == "embeddings.word_embeddings.weight") return q.int8_embeddings ? DType::I8 : DType::F32;
  const std::string rest = encoder_layer_rest(name);
  for (const char* linear : {"attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight",
                             "attention.output.dense.weight", "intermediate.dense.weight", "output.dense.weight"})
    if (rest == linear) return q.weights == Precision::Int8 ? DType::I8 : DType::BF16;
  return DType::F32;
}

BertModel quantize_weights(const BertModel& m, const Quantization& q) {
  m.require_f32_weights("model", "quantizing");
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, t] : m.named_tensors()) {
    const DType dtype = stored_dtype(q, name.starts_with("bert.") ? name.substr(5) : name);
    if (dtype == DType::F32) {
      tensors[name] = t;
    } else if (dtype == DType::BF16) {
      tensors[name] = t.to_dtype(DType::BF16);  // rounded as the --bf16 path rounds (convert_f32_to_bf16)
    } else {
      const int64_t N = t.dim(0), K = t.dim(1);
      Tensor values = Tensor::empty({N, K}, DType::I8), scale = Tensor::empty({N});
      quantize_weight_rows(t.f32(), N, K, scale.f32(), values.data<int8_t>());
      tensors[name] = values;
      tensors[name + kScaleSuffix] = scale;
    }
  }
  BertConfig c = m.config;
  write_layer_structure(c, m.layer_structure());
  write_quantization(c, q);
  return BertModel::from_tensors(c, tensors, "quantized model");
}

void quantize_model(const QuantizeOptions& o) {
  MB_CHECK(o.quantization.quantized(), "quantize: the dtype must be int8 or bf16");
  MB_CHECK(!o.out_dir.empty(), "quantize: no output directory given");
  // The output: a new (or empty) directory in an existing parent.
  const fs::path out = fs::path(o.out_dir).lexically_normal();
  const fs::path target = out.filename().empty() ? out.parent_path() : out;  // "dir/" names dir
  fs::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  MB_CHECK(fs::is_directory(parent, ec), o.out_dir + ": the parent directory " + parent.string() + " does not exist");
  if (fs::exists(target, ec)) {
    MB_CHECK(fs::is_directory(target, ec) && fs::is_empty(target, ec),
             o.out_dir + ": already exists and is not an empty directory (quantize writes a new model directory)");
  }
  MB_CHECK(fs::absolute(target, ec) != fs::absolute(fs::path(o.model_dir).lexically_normal(), ec),
           o.out_dir + ": the output must differ from --model");

  // The input: an ordinary model (an already quantized one is refused before its weights load).
  MB_CHECK(fs::is_directory(o.model_dir), o.model_dir + ": not a model directory");
  const BertConfig config = read_bert_config((fs::path(o.model_dir) / "config.json").string());
  const Quantization before = read_quantization(config, o.model_dir + "/config.json");
  MB_CHECK(!before.quantized(), o.model_dir + ": already quantized (" + precision_name(before.weights) +
                                    "); quantize the f32 model it came from");
  const BertModel m = BertModel::load(o.model_dir);
  const BertModel q = quantize_weights(m, o.quantization);

  // Built beside the target, then renamed into place: the target never holds part of a model.
  std::string staging_name = ".";  // appended, not "." + string: a GCC 12 -Wrestrict false alarm
  staging_name.append(target.filename().string()).append(".quantize-").append(std::to_string(::getpid()));
  const fs::path staging = parent / staging_name;
  fs::remove_all(staging, ec);
  try {
    const bool has_vocab = fs::exists(fs::path(o.model_dir) / "vocab.txt");
    q.save(staging.string(), DType::F32, has_vocab ? o.model_dir : "");
    fs::rename(staging, target);  // replaces an empty target directory
    const int dir = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY);  // the rename, durable
    if (dir >= 0) {
      ::fsync(dir);
      ::close(dir);
    }
  } catch (const std::exception& e) {
    fs::remove_all(staging, ec);  // a full disk, say: nothing half-written stays behind
    throw Error(o.out_dir + ": cannot write the quantized model: " + e.what());
  }
}

}  // namespace mb
