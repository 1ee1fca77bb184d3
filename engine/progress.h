// Progress of a long job (pretrain, finetune, compress, eval):
//   step 120/1000 | loss 3.214 | lr 1.2e-05 | 5,432 tok/s | ETA 12m03s
// On a terminal: one line rewritten in place, at most `tty_interval_s` apart. Otherwise (CI logs,
// files): a plain line every `interval_s` seconds and/or every `every_steps` steps. Rates and the
// ETA come from a moving window over the last steps, so a slow first step fades out quickly.
#pragma once
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace mb {

struct ProgressOptions {
  std::string unit = "step";      // first word of the line ("batch" for evaluation...)
  FILE* out = nullptr;            // nullptr: stderr
  int tty = -1;                   // -1: isatty(out); 0/1 force plain/terminal output
  double tty_interval_s = 0.25;   // terminal refresh throttle
  double interval_s = 30.0;       // plain output: a line at least this often (0: never by time)
  int64_t every_steps = 0;        // plain output: a line every this many steps (0: never by count)
  int64_t start_step = 0;         // steps already done before this run (resuming a checkpoint)
  // Relative cost of each step (total entries), when steps differ in cost (K-prune's sublayer
  // steps shrink towards the output): the ETA is the remaining cost at the window's time per cost.
  // Empty: every step costs the same.
  std::vector<double> step_cost{};
  std::function<double()> clock;  // seconds; default steady_clock (tests inject a fake one)
};

// Caller-defined fields, printed "key value" in order, e.g. {"loss", fmt_num(loss)}.
using ProgressFields = std::vector<std::pair<std::string, std::string>>;

class Progress {
 public:
  explicit Progress(int64_t total, ProgressOptions opt = {});
  ~Progress();  // ends an unfinished terminal line (e.g. unwinding from an error)

  // `done` steps are complete; `tokens` were processed by the steps since the previous call
  // (0 throughout: no tok/s shown). Cheap when nothing is printed.
  void update(int64_t done, const ProgressFields& fields = {}, int64_t tokens = 0);
  // Prints the final line (with the total time) and ends the terminal line.
  void finish();

 private:
  std::string render(double now, bool final) const;
  void emit(const std::string& text);

  int64_t total_, done_ = 0, tokens_ = 0;
  ProgressOptions opt_;
  bool tty_, finished_ = false, printed_ = false;
  double start_, last_print_;
  int64_t last_print_step_;
  ProgressFields last_fields_;
  struct Sample { double t; int64_t done, tokens; };
  std::deque<Sample> window_;
};

// Formatting helpers for fields: 4 significant digits ("3.214", "1.2e-05"), thousands
// separators ("5,432"), durations ("45s", "12m03s", "2h05m").
std::string fmt_num(double v, int digits = 4);
std::string fmt_count(double v);
std::string fmt_duration(double seconds);

}  // namespace mb
