// Where datasets and the shared vocabulary live: $MINIBRIDGE_DATA, else ../shared/data beside a
// checkout (found from the working directory or from the executable's location).
#pragma once
#include <string>

namespace mb {

// "" when no data directory can be found.
std::string find_data_dir();
// The bert-base-uncased tokenizer files (vocab.txt, tokenizer_config.json) under the data dir;
// throws mb::Error saying how to point at it when absent.
std::string default_vocab_dir();

}  // namespace mb
