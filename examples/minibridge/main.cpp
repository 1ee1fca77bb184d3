// minibridge: run, inspect and create BERT models from the command line.
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>

#include "commands.h"
#include "engine/cpu.h"
#include "engine/error.h"

int main(int argc, char** argv) {
  CLI::App app{"minibridge: a C++ engine for BERT-family encoders (run, train, compress)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::function<std::string()>(mbcli::version_text),
                       "the version, the CPU level the kernels run at, the GEMM back-end, the build");
  mbcli::add_infer_commands(app);
  mbcli::add_info_command(app);
  mbcli::add_init_command(app);
  mbcli::add_quantize_command(app);
  mbcli::add_train_commands(app);
  mbcli::add_pretrain_command(app);
  mbcli::add_bench_command(app);
  mbcli::add_compress_command(app);
  try {
    mb::cpu_level();  // MB_CPU checked first: a bad level is one clear error before any work
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mb::Error& e) {
    std::fflush(stdout);
    std::cerr << "minibridge: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "minibridge: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
