// This process's memory as the system counts it: what the long commands log per step
// (compress kprune) and `minibridge bench` reports.
#pragma once

namespace mb {

// Peak resident set size of this process so far, MiB. Linux: VmHWM of /proc/self/status, the
// high-water mark of this program's own address space. getrusage's ru_maxrss is the fallback
// only: across execve Linux carries over the RSS of the parent's forked copy, so a command started
// from a large process (a Python driver that imported torch) would report the parent's size.
double peak_rss_mib();

}  // namespace mb
