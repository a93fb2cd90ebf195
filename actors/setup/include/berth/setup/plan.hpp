#pragma once

// What a `setup` step does: which ecosystems a workspace declares, the commands that fetch
// their dependencies, the script that runs them one by one in the sandbox, and the journal
// entry that says what ran and for how long.

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace berth::setup {

/// One command of a setup plan.
struct planned {
  std::string ecosystem;  ///< "node", "python", "rust", "go", "explicit"
  std::string manager;    ///< the program that must exist in the sandbox ("npm", "pip", ...)
  std::string command;    ///< a shell command, run in the workspace ("" : nothing to fetch)
  std::string why;        ///< the file that decided it ("package-lock.json", ...)
  std::string restored;   ///< what the node did instead (a restored tree): the script skips it
};

/// A workspace's setup: what it declares and what runs, in order.
struct plan {
  std::vector<std::string> detected;  ///< ecosystems, in detection order; may be empty
  std::vector<planned> steps;         ///< one per detected ecosystem (command may be empty)
};

/// Detect the ecosystems of the workspace at host path `dir` from its files (lockfiles
/// first). `tool_dirs`: host directories that are the sandbox's PATH (to prefer `uv` when the
/// sandbox has it). Reads only; never runs anything.
[[nodiscard]] plan detect(const std::string& dir, const std::vector<std::string>& tool_dirs);

/// The plan of a setup step with an explicit `run`: detection is journaled, the command runs.
[[nodiscard]] plan explicit_plan(const std::string& dir, const std::vector<std::string>& tool_dirs,
                                 const std::vector<std::string>& run);

/// The name, relative to $HOME, of the file the setup script reports each command's exit code
/// and duration into (read by the node after the step; never part of the workspace).
inline constexpr const char* report_file = ".berth-setup-report";

/// `sh -c` argv that runs every command of `p` in order, stops at the first failure, and
/// appends "<index> <exit code> <milliseconds>" per command to $HOME/<report_file>. A command
/// whose manager is missing in the sandbox fails with exit code 127 and says so. `run`: the
/// explicit command of an explicit_plan (passed as the script's arguments).
[[nodiscard]] std::vector<std::string> script(const plan& p,
                                              const std::vector<std::string>& run = {});

/// How each command ended, from the report in the home directory at host path `home` (opened
/// without following symlinks; lines that do not parse are ignored).
struct ran {
  std::size_t index = 0;
  int exit_code = -1;
  std::int64_t duration_ms = 0;
};
[[nodiscard]] std::vector<ran> read_report(const std::string& home);

/// Remove an earlier attempt's report before the step starts.
void clear_report(const std::string& home);

/// The `step.finished` details: detected, plan [{ecosystem, manager, command, why}], ran
/// [{ecosystem, command, exit_code, duration_ms}].
[[nodiscard]] json::value details(const plan& p, const std::vector<ran>& r);

/// The reason a failed setup gives: the command that failed and its exit code, with a hint
/// when the sandbox had no network. nullopt: no planned command failed (the report is empty).
[[nodiscard]] std::optional<std::string> failure_reason(const plan& p, const std::vector<ran>& r,
                                                        bool network);

/// Lines added to the workspace's .git/info/exclude so that what setup creates (.venv/,
/// node_modules/, target/, ...) stays out of commits and checkpoints. Idempotent.
[[nodiscard]] status exclude_setup_outputs(const std::string& dir);

}  // namespace berth::setup
