// A training checkpoint as `--resume` reads it: state.json and tensors.safetensors, restored into a
// model and its AdamW optimizer (parameter and moment shapes, optimizer hyper-parameters and
// steps), the RNG state, and the masked-LM stream position pretraining keeps there.
#include "engine/optim.h"
#include "io/checkpoint.h"
#include "io/mlm_data.h"
#include "models/training.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

namespace {
struct Setup {
  BertModel model;
  std::vector<ParamRef> params;
  std::unique_ptr<AdamW> opt;
  std::unique_ptr<MlmStream> stream;
  Setup() : model(BertModel::init_random(bert_config_from_json(nlohmann::json::parse(fuzz::tiny_config_json()), "tiny"), 3)) {
    params = trainable_params(model);
    opt = std::make_unique<AdamW>(params);
    const std::string vocab = fuzz::scratch_dir() + "/vocab.txt", text = fuzz::scratch_dir() + "/text.txt";
    fuzz::write_file(vocab, fuzz::tiny_vocab());
    fuzz::write_file(text, "the film is good . not a bad movie !\n\nun ##believ\n");
    stream = std::make_unique<MlmStream>(std::vector<std::string>{text}, Tokenizer::from_vocab_file(vocab), 6, 5);
  }
};
Setup& setup() {
  static Setup s;
  return s;
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    Setup& s = setup();
    (void)s.stream->next_batch(1);
    Rng rng(9);
    const std::string ck = fuzz::scratch_dir() + "/seed_checkpoint";
    save_training_checkpoint(ck, s.model, *s.opt,
                             {{"step", 3}, {"dropout_rng", rng_to_json(rng)}, {"data", s.stream->state()}});
    fuzz::write_file(dir + "/checkpoint", fuzz::checkpoint_input(ck));
  });
  return 0;
}

// Input: state.json, separator, tensors.safetensors.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Setup& s = setup();
  const std::string dir = fuzz::checkpoint_dir(data, size, "checkpoint");
  try {
    const nlohmann::json state = load_training_checkpoint(dir, s.model, *s.opt);
    if (state.is_object() && state.contains("dropout_rng")) {
      Rng rng(0);
      rng_from_json(rng, state["dropout_rng"]);
    }
    if (state.is_object() && state.contains("data")) {
      MlmStream stream = *s.stream;
      stream.restore(state["data"]);
      (void)stream.next_batch(1);
    }
  } catch (const Error&) {
  }
  return 0;
}
