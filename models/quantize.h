// Quantized model directories: a model whose encoder weights are stored in int8 or bfloat16, so
// that it is small on disk and loads with no f32 copy of them (`minibridge quantize`).
//
// The format is minibridge's own (Hugging Face does not read it); an ordinary f32 directory is
// untouched by any of this. In model.safetensors:
//   - each encoder layer's six linear weights (attention.self.{query,key,value}.weight,
//     attention.output.dense.weight, intermediate.dense.weight, output.dense.weight; a Pea-KD
//     shared layer's are stored once, under its source layer) are
//       BF16 [N, K]: f32_to_bf16 of the f32 weight (round to nearest even), or
//       I8 [N, K] with NAME_scale F32 [N] beside it: W[j, :] ≈ scale[j] · q[j, :],
//         scale[j] = max|W[j, :]| / 127 (1 for an all-zero row), q = W / scale rounded to nearest
//         even (engine/gemm.h: quantize_weight_rows);
//   - with int8 embeddings, embeddings.word_embeddings.weight likewise as I8 with _scale (per row
//     of the table, i.e. per token);
//   - everything else f32 as in the source model: biases, LayerNorms, position and token-type
//     embeddings, MB-BERT's bridges (which the --bf16/--int8 paths run in f32 as well), the pooler,
//     the classifier and any cls.* head.
// Tensors are ordered F32, then BF16, then I8, so that each is aligned to its element size.
// config.json records it under "minibridge":
//   "quantization": {"dtype": "int8" | "bf16", "embeddings": "int8" | "f32",
//                    "scheme": "symmetric per output row", "scale_suffix": "_scale"}
// These are exactly the values the --int8 / --bf16 paths derive from the f32 model when they pack
// it, so a quantized model computes, bit for bit, what its f32 source computes with that flag.
#pragma once
#include <string>

#include "io/config.h"
#include "models/bert.h"

namespace mb {

// config.json's record (an ordinary model: none). Errors name `source` and the bad field.
Quantization read_quantization(const BertConfig& c, const std::string& source);
// Records q in c.raw under "minibridge" (removes the record when q is not quantized).
void write_quantization(BertConfig& c, const Quantization& q);

// The suffix of an int8 tensor's scale tensor.
inline constexpr const char* kScaleSuffix = "_scale";

// How q stores the tensor of this name (Hugging Face's, without the "bert." prefix): F32, BF16 or I8.
DType stored_dtype(const Quantization& q, const std::string& name);

// The model with its weights in q's form: new owned tensors for the quantized ones, the others
// shared with m. m must be an ordinary (f32) model.
BertModel quantize_weights(const BertModel& m, const Quantization& q);

struct QuantizeOptions {
  std::string model_dir;  // an ordinary model directory
  std::string out_dir;    // created; its parent must exist, and it must not exist or be empty
  Quantization quantization;
};

// Writes the quantized model directory (config.json, model.safetensors, the tokenizer files)
// atomically: it is built in a staging directory beside out_dir and renamed into place, so that
// out_dir either does not appear or holds the whole model. Errors name the directory and what is
// wrong: an already quantized input, a missing parent, an output that is not empty.
void quantize_model(const QuantizeOptions& o);

}  // namespace mb
