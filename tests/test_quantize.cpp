// Quantized model directories (models/quantize.h): written atomically, loaded without an f32 copy
// of the quantized weights, and computing bit for bit what the f32 model computes with --int8 /
// --bf16, for every block kind; bad files and bad requests give one clear error.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <csignal>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <tuple>
#include <nlohmann/json.hpp>

#include "engine/gemm.h"
#include "engine/threads.h"
#include "io/safetensors.h"
#include "models/bert.h"
#include "models/layer_structure.h"
#include "models/quantize.h"
#include "models/shipped_configs.h"
#include "models/training.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace {

// Every block kind: full and K-pruned encoder layers (non-uniform widths, a layer without attention,
// one without FFN), a Pea-KD shared layer with Q/K swapped, and an MB-BERT bridge; with a classifier.
std::string every_kind_model(const std::string& name) {
  mb::BertConfig c = mb::bert_config_from_json(nlohmann::json::parse(mb::shipped_configs().at("tiny")), "tiny");
  c.num_hidden_layers = 6;
  c.id2label = {"a", "b", "c"};
  mb::write_layer_structure(c, {mb::LayerStructure::encoder(2, 512), mb::LayerStructure::encoder(1, 200),
                                mb::LayerStructure::shared(0, true), mb::LayerStructure::encoder(0, 64),
                                mb::LayerStructure::encoder(2, 0), mb::LayerStructure::bridge(8, mb::BridgeForm::ResidualLayerNorm)});
  const std::string dir = mbtest::scratch_dir(name);
  mb::BertModel::init_random(c, 21).save(dir, mb::DType::F32, mbtest::data_dir() + "/vocab/bert-base-uncased");
  return dir;
}

mb::Batch random_batch(int64_t vocab, uint64_t seed) {
  mb::Rng rng(seed);
  mb::Batch b;
  for (int64_t n : {1, 37, 128, 9, 60}) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& id : ids) id = int32_t(1 + rng.below(uint64_t(vocab - 1)));
    b.add(ids, {});
  }
  return b;
}

// Hidden states and logits of a packed model.
std::pair<mb::Tensor, mb::Tensor> outputs(const mb::BertModel& m, const mb::Batch& b) {
  const mb::Tensor h = m.encode(b);
  return {h, m.classify(m.pool(b, h))};
}

bool same_bits(const mb::Tensor& a, const mb::Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

std::string quantize(const std::string& in, const std::string& out, mb::Precision p, bool int8_embeddings = false) {
  mb::QuantizeOptions o;
  o.model_dir = in;
  o.out_dir = out;
  o.quantization.weights = p;
  o.quantization.int8_embeddings = int8_embeddings;
  mb::quantize_model(o);
  return out;
}

// Rewrites DIR/model.safetensors with `change` applied to its tensors.
template <class Fn>
void rewrite_weights(const std::string& dir, Fn change) {
  std::map<std::string, mb::Tensor> t;
  for (const auto& [name, v] : mb::read_safetensors(dir + "/model.safetensors").tensors) t[name] = v.clone();
  change(t);
  std::vector<std::pair<std::string, mb::Tensor>> list(t.begin(), t.end());
  std::stable_sort(list.begin(), list.end(), [](const auto& a, const auto& b) {
    return mb::dtype_size(a.second.dtype()) > mb::dtype_size(b.second.dtype());
  });
  mb::write_safetensors(dir + "/model.safetensors", list);
}

int leftovers(const std::string& parent) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(parent)) n += e.path().filename().string().find(".quantize-") != std::string::npos;
  return n;
}

}  // namespace

TEST_CASE("a quantized model computes bit for bit what its f32 model computes with --int8 / --bf16") {
  const std::string f32_dir = every_kind_model("quantize_every_kind");
  const std::string root = mbtest::scratch_dir("quantize_out");
  const mb::Batch b = random_batch(1000, 4);
  const mb::GemmBackend saved = mb::gemm_backend();
  for (mb::GemmBackend backend : mb::available_gemm_backends()) {
    mb::set_gemm_backend(backend);
    for (mb::Precision p : {mb::Precision::Int8, mb::Precision::BF16}) {
      CAPTURE(mb::gemm_backend_name(backend));
      CAPTURE(mb::precision_name(p));
      const std::string dir = root + "/" + mb::gemm_backend_name(backend) + "_" + mb::precision_name(p);
      quantize(f32_dir, dir, p);
      CHECK(leftovers(root) == 0);
      if (!mb::packed_gemm_available(p)) {  // Arm without the dot product: the load says so
        const std::string e = mbtest::error_of([&] { mb::BertModel::load(dir); });
        CHECK_MESSAGE(e.find("no kernel on this CPU") != std::string::npos, e);
        continue;
      }
      mb::BertModel reference = mb::BertModel::load(f32_dir);
      reference.pack_for_inference(p);
      REQUIRE(reference.packed_precision() == p);
      const mb::BertModel q = mb::BertModel::load(dir);
      CHECK(q.quantization.weights == p);
      CHECK(q.packed_precision() == p);
      CHECK(q.packed_bytes() == reference.packed_bytes());

      // The stored weights are views of the file, in their stored type: no f32 copy of them.
      const mb::DType stored = p == mb::Precision::Int8 ? mb::DType::I8 : mb::DType::BF16;
      for (const mb::BertLayer* L : {&q.layers[0], &q.layers[1], &q.layers[2]})
        for (const mb::Var* w : {&L->q_w, &L->k_w, &L->v_w, &L->attn_out_w, &L->ffn_in_w, &L->ffn_out_w}) {
          CHECK(w->value().dtype() == stored);
          CHECK(w->value().is_view());
          CHECK((q.weight_scale(*w) != nullptr) == (p == mb::Precision::Int8));
        }
      CHECK(q.layers[2].q_w.value().raw() == q.layers[0].q_w.value().raw());  // shared: one copy
      CHECK(q.layers[5].bridge_down_w.value().dtype() == mb::DType::F32);     // bridges stay f32
      CHECK(q.word_emb.value().dtype() == mb::DType::F32);

      // One thread (the batch whole) and two (a share of the sequences each).
      for (int threads : {1, 2}) {
        mb::set_num_threads(threads);
        const auto [h_want, z_want] = outputs(reference, b);
        const auto [h_got, z_got] = outputs(q, b);
        CHECK(same_bits(h_got, h_want));
        CHECK(same_bits(z_got, z_want));
      }
      mb::set_num_threads(0);

      // Saved again as it is, it loads to the same model.
      const std::string again = root + "/again";
      fs::remove_all(again);
      q.save(again);
      const mb::BertModel q2 = mb::BertModel::load(again);
      CHECK(q2.quantization.weights == p);
      CHECK(same_bits(outputs(q2, b).second, outputs(q, b).second));
    }
  }
  mb::set_gemm_backend(saved);
}

TEST_CASE("the quantized file: stored types, scales, the config record, and its size") {
  const std::string f32_dir = every_kind_model("quantize_file");
  const std::string dir = quantize(f32_dir, mbtest::scratch_dir("quantize_file_out") + "/int8", mb::Precision::Int8, true);
  const mb::SafeTensorsFile f = mb::read_safetensors(dir + "/model.safetensors");
  auto dtype = [&](const std::string& name) {
    REQUIRE_MESSAGE(f.tensors.count(name), name);
    return f.tensors.at(name).dtype();
  };
  const std::string l0 = "bert.encoder.layer.0.";
  for (const char* w : {"attention.self.query.weight", "attention.self.key.weight", "attention.self.value.weight",
                        "attention.output.dense.weight", "intermediate.dense.weight", "output.dense.weight"}) {
    CHECK(dtype(l0 + w) == mb::DType::I8);
    CHECK(dtype(l0 + w + "_scale") == mb::DType::F32);
    CHECK(f.tensors.at(l0 + w + "_scale").dim(0) == f.tensors.at(l0 + w).dim(0));
  }
  CHECK(dtype(l0 + "attention.self.query.bias") == mb::DType::F32);
  CHECK(dtype(l0 + "output.LayerNorm.weight") == mb::DType::F32);
  CHECK(dtype("bert.embeddings.word_embeddings.weight") == mb::DType::I8);
  CHECK(dtype("bert.embeddings.word_embeddings.weight_scale") == mb::DType::F32);
  CHECK(dtype("bert.embeddings.position_embeddings.weight") == mb::DType::F32);
  CHECK(dtype("bert.encoder.layer.5.bridge.down.weight") == mb::DType::F32);
  CHECK(dtype("classifier.weight") == mb::DType::F32);
  CHECK(dtype("bert.pooler.dense.weight") == mb::DType::F32);
  CHECK(!f.tensors.count("bert.encoder.layer.2.attention.self.query.weight"));  // shared: stored once
  CHECK(!f.tensors.count("bert.encoder.layer.3.attention.self.query.weight"));  // no attention left
  // Every tensor aligned to its element size in the mapping.
  for (const auto& entry : f.tensors)
    CHECK_MESSAGE(uintptr_t(entry.second.raw()) % mb::dtype_size(entry.second.dtype()) == 0, entry.first);

  // The scales are quantize_weight_rows' and the values too.
  const mb::BertModel m = mb::BertModel::load(f32_dir);
  const mb::Tensor& w = m.layers[1].ffn_in_w.value();
  std::vector<float> scale(static_cast<size_t>(w.dim(0)));
  std::vector<int8_t> values(static_cast<size_t>(w.numel()));
  mb::quantize_weight_rows(w.f32(), w.dim(0), w.dim(1), scale.data(), values.data());
  const mb::Tensor& stored = f.tensors.at("bert.encoder.layer.1.intermediate.dense.weight");
  CHECK(std::memcmp(stored.raw(), values.data(), values.size()) == 0);
  CHECK(std::memcmp(f.tensors.at("bert.encoder.layer.1.intermediate.dense.weight_scale").raw(), scale.data(),
                    scale.size() * 4) == 0);

  const nlohmann::json config = nlohmann::json::parse(mbtest::read_file(dir + "/config.json"));
  CHECK(config["minibridge"]["quantization"] ==
        nlohmann::json({{"dtype", "int8"}, {"embeddings", "int8"}, {"scheme", "symmetric per output row"},
                        {"scale_suffix", "_scale"}}));
  CHECK(config["minibridge"]["layers"].size() == 6);
  CHECK(fs::exists(dir + "/vocab.txt"));
  // int8 weights and embeddings: close to a quarter of the f32 file.
  const double ratio = double(fs::file_size(dir + "/model.safetensors")) / double(fs::file_size(f32_dir + "/model.safetensors"));
  MESSAGE("int8 file / f32 file: " << ratio);
  CHECK(ratio < 0.3);
}

TEST_CASE("int8 word embeddings: the rows dequantised, otherwise the --int8 path bit for bit") {
  if (!mb::packed_gemm_available(mb::Precision::Int8)) return;
  const std::string f32_dir = every_kind_model("quantize_embeddings");
  const std::string dir =
      quantize(f32_dir, mbtest::scratch_dir("quantize_embeddings_out") + "/q", mb::Precision::Int8, true);
  const mb::BertModel q = mb::BertModel::load(dir);
  CHECK(q.quantization.int8_embeddings);
  REQUIRE(q.word_emb.value().dtype() == mb::DType::I8);
  // The reference: the f32 model with its word embeddings replaced by the dequantised table.
  mb::BertModel reference = mb::BertModel::load(f32_dir);
  const mb::Tensor& table = reference.word_emb.value();
  mb::Tensor dequantised = mb::Tensor::empty(table.shape());
  std::vector<float> scale(static_cast<size_t>(table.dim(0)));
  std::vector<int8_t> values(static_cast<size_t>(table.numel()));
  mb::quantize_weight_rows(table.f32(), table.dim(0), table.dim(1), scale.data(), values.data());
  double worst = 0;
  for (int64_t i = 0; i < table.numel(); ++i) {
    dequantised.f32()[i] = scale[size_t(i / table.dim(1))] * float(values[size_t(i)]);
    worst = std::max(worst, double(std::fabs(dequantised.f32()[i] - table.f32()[i])) / double(scale[size_t(i / table.dim(1))]));
  }
  CHECK(worst <= 0.5 + 1e-5);  // within half a step (and the rounding of W · (1 / scale))
  reference.word_emb = mb::Var(dequantised);
  reference.pack_for_inference(mb::Precision::Int8);
  const mb::Batch b = random_batch(1000, 9);
  CHECK(same_bits(outputs(q, b).first, outputs(reference, b).first));
}

TEST_CASE("quantize: bad requests give one clear error and write nothing") {
  const std::string f32_dir = every_kind_model("quantize_bad");
  const std::string root = mbtest::scratch_dir("quantize_bad_out");
  auto error = [&](const std::string& in, const std::string& out) {
    return mbtest::error_of([&] { quantize(in, out, mb::Precision::Int8); });
  };
  std::string e = error(f32_dir, root + "/missing/parent/out");
  CHECK_MESSAGE(e.find("does not exist") != std::string::npos, e);
  CHECK(!fs::exists(root + "/missing"));
  mbtest::write_file(root + "/busy/file", "x");
  e = error(f32_dir, root + "/busy");
  CHECK_MESSAGE(e.find("not an empty directory") != std::string::npos, e);
  CHECK(mbtest::read_file(root + "/busy/file") == "x");
  const std::string q = quantize(f32_dir, root + "/q", mb::Precision::Int8);
  e = error(q, root + "/qq");
  CHECK_MESSAGE(e.find("already quantized (int8)") != std::string::npos, e);
  CHECK(!fs::exists(root + "/qq"));
  e = error(root + "/nope", root + "/out");
  CHECK_MESSAGE(e.find("not a model directory") != std::string::npos, e);
  CHECK(!fs::exists(root + "/out"));
  CHECK(leftovers(root) == 0);
  // Out of space part way through the weights (a file-size limit: EFBIG, as ENOSPC on a full disk;
  // docs/RELIABILITY.md "Full disks"): one error naming the file, no target, no staging directory.
  {
    struct rlimit old;
    getrlimit(RLIMIT_FSIZE, &old);
    auto old_handler = signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = old;
    small.rlim_cur = rlim_t(fs::file_size(q + "/model.safetensors") / 2);
    setrlimit(RLIMIT_FSIZE, &small);
    e = error(f32_dir, root + "/full");
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    CHECK_MESSAGE(e.rfind(root + "/full: cannot write the quantized model: ", 0) == 0, e);
    CHECK_MESSAGE(e.find("/model.safetensors: write failed: File too large") != std::string::npos, e);
    CHECK(!fs::exists(root + "/full"));
    CHECK(leftovers(root) == 0);
  }
  // An empty directory is filled.
  fs::create_directories(root + "/empty");
  quantize(f32_dir, root + "/empty", mb::Precision::BF16);
  CHECK(fs::exists(root + "/empty/model.safetensors"));

  // A quantized model is for inference: training, another precision and re-quantizing refuse.
  if (!mb::packed_gemm_available(mb::Precision::Int8)) return;
  mb::BertModel m = mb::BertModel::load(q);
  e = mbtest::error_of([&] { (void)mb::trainable_params(m); });
  CHECK_MESSAGE(e.find("quantized") != std::string::npos, e);
  e = mbtest::error_of([&] { m.pack_for_inference(mb::Precision::BF16); });
  CHECK_MESSAGE(e.find("stored in int8") != std::string::npos, e);
  e = mbtest::error_of([&] { (void)mb::quantize_weights(m, {mb::Precision::BF16, false}); });
  CHECK_MESSAGE(e.find("quantized") != std::string::npos, e);
  m.unpack();  // keeps its packed weights: they are its only runnable form
  CHECK(m.packed_precision() == mb::Precision::Int8);
}

TEST_CASE("a corrupt or mismatched quantized file: one error naming the tensor or field") {
  const std::string f32_dir = every_kind_model("quantize_corrupt");
  const std::string root = mbtest::scratch_dir("quantize_corrupt_out");
  const std::string q = quantize(f32_dir, root + "/q", mb::Precision::Int8);
  const std::string name = "bert.encoder.layer.1.attention.output.dense.weight";
  struct Case {
    const char* what;
    std::function<void(std::map<std::string, mb::Tensor>&)> change;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"scale missing", [&](auto& t) { t.erase(name + "_scale"); },
       "'encoder.layer.1.attention.output.dense.weight_scale' (the int8 scales of"},
      {"scale of the wrong length", [&](auto& t) { t[name + "_scale"] = mb::Tensor::from_vector({1, 2, 3}, {3}); },
       "'encoder.layer.1.attention.output.dense.weight_scale' has dtype F32 and shape [3], expected F32 [128]"},
      {"scale in bf16", [&](auto& t) { t[name + "_scale"] = t[name + "_scale"].to_dtype(mb::DType::BF16); },
       "has dtype BF16 and shape [128], expected F32 [128]"},
      {"a negative scale", [&](auto& t) { t[name + "_scale"].f32()[7] = -1.0f; },
       "'encoder.layer.1.attention.output.dense.weight_scale' has scale -1.000000 at row 7"},
      {"a NaN scale", [&](auto& t) { t[name + "_scale"].f32()[0] = std::nanf(""); }, "at row 0"},
      {"the weight in f32", [&](auto& t) { t[name] = mb::Tensor::zeros(t[name].shape()); },
       "'encoder.layer.1.attention.output.dense.weight' has dtype F32, expected I8"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    const std::string dir = root + "/case";
    fs::remove_all(dir);
    fs::copy(q, dir);
    rewrite_weights(dir, c.change);
    const std::string e = mbtest::error_of([&] { mb::BertModel::load(dir); });
    CHECK_MESSAGE(e.find(dir) == 0, e);
    CHECK_MESSAGE(e.find(c.expect) != std::string::npos, e);
  }
  // The config record.
  for (const auto& [field, value, expect] :
       std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
           {"dtype", "int4", "\"minibridge\".\"quantization\".\"dtype\" must be \"int8\" or \"bf16\", not \"int4\""},
           {"embeddings", "f16", "\"embeddings\" must be \"int8\" or \"f32\", not \"f16\""},
           {"scheme", "asymmetric", "\"scheme\" is \"asymmetric\""},
           {"dtype", 8, "\"dtype\" must be a string"}}) {
    const auto& field_ = field;  // clang 14 cannot capture a structured binding in CAPTURE's lambda
    CAPTURE(field_);
    const std::string dir = root + "/case";
    fs::remove_all(dir);
    fs::copy(q, dir);
    nlohmann::json config = nlohmann::json::parse(mbtest::read_file(dir + "/config.json"));
    config["minibridge"]["quantization"][field] = value;
    mbtest::write_file(dir + "/config.json", config.dump());
    const std::string e = mbtest::error_of([&] { mb::BertModel::load(dir); });
    CHECK_MESSAGE(e.find(dir + "/config.json") == 0, e);
    CHECK_MESSAGE(e.find(expect) != std::string::npos, e);
  }
}
