// The standard BERT shapes shipped in configs/ (tiny, mini, small, medium, base), compiled into
// the library so that `minibridge init --config mini` works without the source tree.
#pragma once
#include <map>
#include <string>

namespace mb {

// name ("tiny", ...) -> config.json text. Generated at build time from configs/bert-*.json.
const std::map<std::string, std::string>& shipped_configs();

}  // namespace mb
