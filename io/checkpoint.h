// Training checkpoints: a directory DIR holding tensors.safetensors (model parameters, optimizer
// state, any named tensors) and state.json (step, RNG states, data cursor, config: anything).
//
// Saving is atomic at the directory level: the new checkpoint is built and fsynced in a staging
// directory beside DIR, then swapped in with one rename, so whenever the process is killed, DIR
// (or, in one short window on filesystems without RENAME_EXCHANGE, DIR.old) holds a complete
// checkpoint: the old one until the new one is entirely in place. One writer per DIR at a time.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/rng.h"
#include "engine/tensor.h"

namespace mb {

struct Checkpoint {
  std::string dir;                         // where it was actually read from (DIR or DIR.old)
  std::map<std::string, Tensor> tensors;   // views into the mapped file (read-only; clone to modify)
  nlohmann::json state;
};

// Replaces DIR with a new checkpoint (creating parent directories). Leftovers of a save that was
// killed (staging directories, DIR.old) are removed first. Throws mb::Error naming the path.
void save_checkpoint(const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
                     const nlohmann::json& state);

// True when DIR (or the DIR.old left by a killed save) holds a checkpoint.
bool checkpoint_exists(const std::string& dir);

// Reads and validates the checkpoint; errors name the directory or file and what is wrong.
Checkpoint load_checkpoint(const std::string& dir);

namespace detail {
// Tests only: install with two renames, the path taken where RENAME_EXCHANGE is not supported.
inline bool checkpoint_without_exchange = false;
}  // namespace detail

// Rng state <-> JSON, for state.json.
nlohmann::json rng_to_json(const Rng& rng);
void rng_from_json(Rng& rng, const nlohmann::json& j);

}  // namespace mb
