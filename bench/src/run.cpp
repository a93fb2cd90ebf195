// berth bench: pick the scenario, arm its time limit, run it.
#include "harness.hpp"
#include "scenarios.hpp"

#include "berth/base/time.hpp"

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <thread>

namespace berth::bench {

namespace {

const std::map<std::string, std::function<int(const options&, int)>>& table() {
  static const std::map<std::string, std::function<int(const options&, int)>> t = {
      {"step", bench_step},     {"graph", bench_graph},     {"sessions", bench_sessions},
      {"resume", bench_resume}, {"sandbox", bench_sandbox}, {"workspace", bench_workspace},
      {"setup", bench_setup},   {"gateway", bench_gateway}};
  return t;
}

// How long each scenario may take at its default size (a smaller -n finishes sooner).
millis default_time_limit(const std::string& scenario) {
  using std::chrono::minutes;
  if (scenario == "step" || scenario == "sandbox") return minutes(10);
  return minutes(20);
}

}  // namespace

const std::vector<std::string>& scenarios() {
  static const std::vector<std::string> names = {"step",    "graph",     "sessions", "resume",
                                                 "sandbox", "workspace", "setup",    "gateway"};
  return names;
}

int run(const options& o, const std::string& scenario, int n, const std::string& limit) {
  auto it = table().find(scenario);
  if (it == table().end()) {
    std::string known;
    for (const auto& s : scenarios()) known += (known.empty() ? "" : ", ") + s;
    return report(error{errc::invalid_argument,
                        "bench: unknown scenario \"" + scenario + "\" (" + known + ")"});
  }
  millis lim = default_time_limit(scenario);
  if (!limit.empty()) {
    auto l = parse_duration(limit, "--time-limit");
    if (!l) return report(l.err());
    if (l->count() <= 0)
      return report(error{errc::invalid_argument, "--time-limit: must be more than 0"});
    lim = *l;
  }
  set_berth_binary(o.berth);
  // A watchdog: a scenario that overruns its limit is stopped with a message, never left hanging.
  std::thread([scenario, lim, limit] {
    std::this_thread::sleep_for(lim);
    std::fprintf(stderr,
                 "berth: bench %s did not finish within its time limit of %s%s; stopped it and "
                 "everything it started\n",
                 scenario.c_str(), format_duration(lim).c_str(),
                 limit.empty() ? " (--time-limit changes it)" : "");
    std::fflush(stderr);
    kill_descendants();
    std::_Exit(timed_out);
  }).detach();
  return it->second(o, n);
}

}  // namespace berth::bench
