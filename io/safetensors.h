// safetensors: read (memory-mapped, zero-copy, validated) and write (atomic).
//
// Format: 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data buffer; offsets are relative to the start of the data buffer.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace mb {

// An open, validated safetensors file. Its tensors are views into the mapping; the mapping
// stays alive while any of them does.
struct SafeTensorsFile {
  std::string path;
  std::map<std::string, Tensor> tensors;        // name -> view (F32/F16/BF16/I32/I64/I8)
  std::map<std::string, std::string> metadata;  // "__metadata__" (string -> string)
};

// Maps and validates `path`. Throws mb::Error naming the file and the problem: header length past
// EOF, invalid JSON, unknown dtype, shape/byte-size mismatch, offsets out of range, overlapping,
// or leaving holes in the data buffer.
SafeTensorsFile read_safetensors(const std::string& path);

// Writes tensors (in the given order) to `path` atomically: a temp file beside it, fsync, rename.
// Header is padded with spaces to a multiple of 8 bytes so data stays aligned.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// All tensors of a model directory: DIR/model.safetensors, or the shards listed in
// DIR/model.safetensors.index.json ("weight_map": name -> shard file). Names are as stored.
// Throws if neither exists (and says so if only pytorch_model.bin is present), if a shard is
// missing, or if the index names a tensor its shard lacks.
std::map<std::string, Tensor> read_model_weights(const std::string& dir);

}  // namespace mb
