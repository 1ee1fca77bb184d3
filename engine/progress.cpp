#include "engine/progress.h"

#include "engine/error.h"

#include <unistd.h>

#include <chrono>
#include <cmath>

namespace mb {

namespace {

constexpr size_t kWindow = 64;  // steps in the moving average behind rates and the ETA

double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string fmt_num(double v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::string fmt_count(double v) {
  if (!std::isfinite(v)) return fmt_num(v);
  std::string s = std::to_string(std::llround(std::fabs(v))), out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return (v <= -0.5 ? "-" : "") + out;
}

std::string fmt_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long s = std::llround(seconds);
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s / 60 % 60);
  return buf;
}

Progress::Progress(int64_t total, ProgressOptions opt) : total_(total), opt_(std::move(opt)) {
  if (!opt_.out) opt_.out = stderr;
  if (!opt_.clock) opt_.clock = steady_seconds;
  MB_CHECK(opt_.step_cost.empty() || int64_t(opt_.step_cost.size()) == total_, "Progress: one step_cost per step expected");
  tty_ = opt_.tty < 0 ? ::isatty(::fileno(opt_.out)) : opt_.tty;
  start_ = last_print_ = opt_.clock();
  done_ = last_print_step_ = opt_.start_step;
  window_.push_back({start_, done_, 0});
}

Progress::~Progress() {
  if (tty_ && printed_ && !finished_) emit("\n");
}

void Progress::update(int64_t done, const ProgressFields& fields, int64_t tokens) {
  const double now = opt_.clock();
  done_ = done;
  tokens_ += tokens;
  window_.push_back({now, done_, tokens_});
  if (window_.size() > kWindow) window_.pop_front();
  last_fields_ = fields;

  bool due;
  if (tty_) {
    due = now - last_print_ >= opt_.tty_interval_s || done == total_;
  } else {
    due = (opt_.interval_s > 0 && now - last_print_ >= opt_.interval_s) ||
          (opt_.every_steps > 0 && done / opt_.every_steps > last_print_step_ / opt_.every_steps);
  }
  if (!due) return;
  last_print_ = now;
  last_print_step_ = done;
  // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on "literal" + string&&.
  std::string line = tty_ ? "\r" : "";
  line += render(now, false);
  line += tty_ ? "\x1b[K" : "\n";
  emit(line);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  const std::string text = render(opt_.clock(), true);
  emit(tty_ ? "\r" + text + "\x1b[K\n" : text + "\n");
}

std::string Progress::render(double now, bool final) const {
  std::string s = opt_.unit + " " + std::to_string(done_);
  if (total_ > 0) {
    s += '/';
    s += std::to_string(total_);
  }
  for (const auto& [key, value] : last_fields_) {
    s += " | ";
    s += key.empty() ? value : key + " " + value;
  }
  // Final line: averages over the whole run; otherwise over the moving window.
  const Sample& a = final ? Sample{start_, opt_.start_step, 0} : window_.front();
  const double dt = now - a.t;
  if (tokens_ > 0 && dt > 0) s += " | " + fmt_count(double(tokens_ - a.tokens) / dt) + " tok/s";
  if (final) {
    s += " | done in " + fmt_duration(now - start_);
  } else if (total_ > 0 && done_ < total_ && done_ > a.done && dt > 0) {
    // Cost of steps [from, to): their number, or the sum of their step_cost.
    auto cost = [&](int64_t from, int64_t to) {
      if (opt_.step_cost.empty()) return double(to - from);
      double c = 0;
      for (int64_t i = from; i < to; ++i) c += opt_.step_cost[size_t(i)];
      return c;
    };
    const double spent = cost(a.done, done_);
    if (spent > 0) s += " | ETA " + fmt_duration(cost(done_, total_) * dt / spent);
  }
  return s;
}

void Progress::emit(const std::string& text) {
  std::fputs(text.c_str(), opt_.out);
  std::fflush(opt_.out);
  printed_ = true;
}

}  // namespace mb
