// minibridge: run, inspect and create BERT models from the command line.
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "engine/cpu.h"
#include "engine/distributed.h"
#include "engine/error.h"

namespace {

// --help tells the project's story: the commands grouped by the pipeline, in its order (CLI11 lists
// groups in the order their first command was registered, so registration follows the story too).
const char* kAbout =
    "minibridge: make a BERT smaller and faster while keeping what it knows, and run it on any CPU\n"
    "(x86-64 from SSE4.2 to AVX-512, 64-bit Arm) with no Python and no framework.";
const char* kPipeline =
    "The pipeline (each step writes a model directory the next one takes; any Hugging Face BERT\n"
    "directory can enter at any step):\n"
    "  minibridge init --config base --out bert\n"
    "  minibridge pretrain --model bert --corpus $MINIBRIDGE_DATA/corpus --out pretrained --max-steps 10000\n"
    "  minibridge finetune --model pretrained --task SST-2 --out teacher\n"
    "  minibridge compress kprune --teacher teacher --task SST-2 --constraint 0.5 --out pruned\n"
    "  minibridge quantize --model pruned --out pruned-int8 --dtype int8\n"
    "  echo \"a charming, moving film\" | minibridge classify --model pruned-int8\n"
    "Every command takes --help. README.md and docs/ describe each step.";

// The commands that train data-parallel when started by mpirun or srun (models/data_parallel.h).
// Any other command there would run once per rank, every rank writing the same output.
bool runs_data_parallel(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "", sub = argc > 2 ? argv[2] : "";
  return cmd == "pretrain" || cmd == "finetune" || (cmd == "compress" && (sub == "mbbert" || sub == "peakd"));
}

int fail(const char* what) {
  std::fflush(stdout);
  std::cerr << "minibridge: " << mb::dist::rank_prefix() << "error: " << what << "\n";
  // Under MPI the other ranks may be waiting for this one in a collective: end the whole job.
  if (mb::dist::size() > 1) mb::dist::abort_job(1);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    mb::dist::init(&argc, &argv);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  CLI::App app{kAbout};
  app.footer(kPipeline);
  app.require_subcommand(1);
  app.set_version_flag("--version", std::function<std::string()>(mbcli::version_text),
                       "the version, the CPU level the kernels run at, the GEMM back-end, the build");
  mbcli::add_init_command(app);
  mbcli::add_pretrain_command(app);
  mbcli::add_train_commands(app);
  mbcli::add_compress_command(app);
  mbcli::add_quantize_command(app);
  mbcli::add_infer_commands(app);
  mbcli::add_bench_command(app);
  mbcli::add_info_command(app);
  const std::vector<std::pair<const char*, std::vector<const char*>>> story = {
      {"1. Make a BERT", {"init", "pretrain"}},
      {"2. Teach it a task", {"finetune", "eval"}},
      {"3. Make it smaller and faster", {"compress", "quantize"}},
      {"4. Run it (on the device)", {"classify", "encode", "tokenize", "bench"}},
      {"Inspect", {"info"}},
  };
  for (const auto& [group, commands] : story)
    for (const char* c : commands) app.get_subcommand(c)->group(group);
  try {
    mb::cpu_level();  // MB_CPU checked first: a bad level is one clear error before any work
    MB_CHECK(mb::dist::size() == 1 || runs_data_parallel(argc, argv),
             std::string(argc > 1 ? argv[1] : "this command") + " runs on one process: start it without mpirun/srun "
             "(pretrain, finetune, compress mbbert and compress peakd train data-parallel on several)");
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Every rank parsed the same arguments: rank 0 alone prints the help or the usage error.
    const int code = mb::dist::is_root() ? app.exit(e) : e.get_exit_code();
    mb::dist::finalize();
    return code;
  } catch (const std::exception& e) {  // mb::Error and the standard library's
    return fail(e.what());
  }
  mb::dist::finalize();
  return 0;
}
