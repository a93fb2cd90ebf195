#pragma once

#include "cli.hpp"

#include "berth/core/spec.hpp"

#include <string>
#include <vector>

namespace berth::cli {

struct start_args {
  std::string repo, ref, branch, goal, workflow, id, idempotency_key, timeout;
  std::int64_t priority = -1;
  std::vector<std::string> run;
  bool wait = false;
  bool follow = false;
  bool dry_run = false;  ///< validate and print the canonical spec; start nothing
};

int cmd_session_start(const globals& g, const start_args& a);
int cmd_session_events(const globals& g, const std::string& id, bool follow, std::uint64_t since);
int cmd_session_logs(const globals& g, const std::string& id, bool follow, const std::string& step);
int cmd_simple(const globals& g, const std::string& verb, const json::value& body);
/// Run a tool in a session's sandbox (a tool_call input) and print its result.
int cmd_session_tool(const globals& g, const std::string& id, const std::string& tool,
                     const std::string& args_json, std::string call_id);
int follow_session(const globals& g, api_client& api, const std::string& id, std::uint64_t since,
                   bool with_logs, bool quiet, std::string* final_status);
void print_summary(const globals& g, const json::value& v);

}  // namespace berth::cli
