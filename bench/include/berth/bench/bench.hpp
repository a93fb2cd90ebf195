#pragma once

#include <string>
#include <vector>

namespace berth::bench {

/// How `berth bench` was asked to run.
struct options {
  std::string output = "text";  ///< text | json | jsonl (one JSON object either way)
  std::string berth;            ///< the berth executable the scenarios start as their node
};

/// The scenarios, in the order `berth bench --help` lists them.
[[nodiscard]] const std::vector<std::string>& scenarios();

/// Run `scenario` at size `n` (0: its default) and print its rows: Berth and its peer measured
/// in the same run, with the ratios. A scenario that overruns `time_limit` ("90s", "20m"; empty:
/// the scenario's default) is stopped with exit code 4 and everything it started is killed.
/// Returns the CLI's exit code (0 ok, 1 failure, 2 usage, 4 timed out).
int run(const options& o, const std::string& scenario, int n, const std::string& time_limit);

}  // namespace berth::bench
