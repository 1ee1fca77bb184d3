// compress: the parent of the compression commands (mbbert, kprune, peakd). Each method registers
// its own subcommand from its own cmd_compress_<method>.cpp.
#include "commands.h"

namespace mbcli {

void add_compress_command(CLI::App& app) {
  CLI::App* compress = app.add_subcommand("compress", "make a smaller model from a fine-tuned teacher");
  compress->require_subcommand(1);
  // Methods register here: add_compress_<method>_command(*compress);
  add_compress_mbbert_command(*compress);
  add_compress_kprune_command(*compress);
}

}  // namespace mbcli
