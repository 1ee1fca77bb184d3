// A K-prune checkpoint as `compress kprune` resumes from it (compress/kprune.cpp, kprune()):
// state.json (the next sublayer, the FLOPs budget left, the steps' records, the pruned model's
// config with its per-layer structure, which tensors it holds and which it shares with the
// teacher) and tensors.safetensors, restored against the teacher, then the pruning carried on to
// the last sublayer.
#include "compress/kprune.h"
#include "io/config.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

namespace {
struct Setup {
  BertModel teacher;
  std::vector<Batch> batches;
  Setup() : teacher(BertModel::init_random(bert_config_from_json(nlohmann::json::parse(fuzz::tiny_config_json()), "tiny"), 5)) {
    batches.resize(2);
    batches[0].add({2, 5, 6, 7, 8, 3}, {0, 0, 0, 0, 0, 0});
    batches[0].add({2, 9, 19, 3}, {0, 0, 0, 0});
    batches[1].add({2, 21, 8, 14, 3, 6, 3}, {0, 0, 0, 0, 0, 1, 1});
  }
};
Setup& setup() {
  static Setup s;
  return s;
}

KpruneOptions options(const std::string& checkpoint_dir) {
  KpruneOptions o;
  o.progress = false;
  o.checkpoint_dir = checkpoint_dir;
  return o;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    // A whole run leaves the checkpoint taken before its last sublayer; one at c = 0.2 keeps more.
    Setup& s = setup();
    for (double c : {0.5, 0.2}) {
      const std::string ck = fuzz::fresh_dir("seed_kprune");
      KpruneOptions o = options(ck);
      o.constraint = c;
      (void)kprune(s.teacher, s.batches, o);
      fuzz::write_file(dir + "/kprune_" + std::to_string(int(c * 10)), fuzz::checkpoint_input(ck));
    }
  });
  return 0;
}

// Input: state.json, separator, tensors.safetensors.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Setup& s = setup();
  const std::string dir = fuzz::checkpoint_dir(data, size, "kprune_checkpoint");
  try {
    const BertModel pruned = kprune(s.teacher, s.batches, options(dir));
    fuzz::read_every_byte(pruned.named_tensors());
  } catch (const Error&) {
  }
  return 0;
}
