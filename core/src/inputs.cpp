#include "berth/core/inputs.hpp"

#include "berth/base/ids.hpp"
#include "berth/core/machine.hpp"

#include <algorithm>

namespace berth::core {

void machine::input(std::uint64_t seq, const json::value& msg, std::int64_t now_ms) {
  if (seq <= state_.last_input_seq) return;  // already applied
  json::value d = json::value::make_object();
  d.set("input_seq", seq);
  // Who sent it, as the gateway that passed it on vouches (a token's name).
  if (auto caller = msg.get_string("caller"); !caller.empty()) d.set("caller", caller);
  std::string type = msg.get_string("type");
  if (type == input_types::cancel) {
    d.set("kind", input_kinds::cancel);
  } else if (type == input_types::input) {
    d.set("kind", input_kinds::input);
    if (const auto* data = msg.find("data")) d.set("data", *data);
  } else if (type == input_types::start) {
    // A repeated start (idempotent retry) landing on the same subject: nothing to do.
    d.set("kind", input_kinds::duplicate_start);
  } else if (type == input_types::agent_done) {
    d.set("kind", input_kinds::agent_done);
    auto outcome = msg.get_string("outcome");
    auto want = msg.get_string("step");
    const auto* summary = msg.find("summary");
    std::string why;
    step_state* target = nullptr;
    std::vector<std::string> waiting;
    for (std::size_t i = 0; i < state_.steps.size(); ++i)
      if (state_.steps[i].status == step_status::running && is_external(&state_.spec.steps[i]))
        waiting.push_back(state_.steps[i].id);
    if (outcome != outcomes::success && outcome != outcomes::failure &&
        outcome != outcomes::reject) {
      why = "outcome: must be \"success\", \"failure\" or \"reject\", not \"" + outcome + "\"";
    } else if (summary && !summary->is_null() && !summary->is_string()) {
      why = "summary: expected a string";
    } else if (const auto* sv = msg.find("step"); sv && !sv->is_string()) {
      why = "step: expected a string";
    } else if (!want.empty()) {
      if (std::find(waiting.begin(), waiting.end(), want) == waiting.end())
        why = "step: \"" + want + "\" is not an agent step waiting for its agent";
      else
        target = state_.step(want);
    } else if (waiting.empty()) {
      why = "no agent step is waiting for its agent";
    } else if (waiting.size() > 1) {
      why = "step: required when several agent steps wait (" + std::to_string(waiting.size()) + ")";
    } else {
      target = state_.step(waiting.front());
    }
    if (target && !is_terminal(state_.status)) {
      auto sum = summary && summary->is_string() ? summary->as_string() : std::string();
      d.set("step", target->id);
      d.set("outcome", outcome);
      if (!sum.empty()) d.set("summary", sum);
      emit(ev::input_applied, std::move(d), now_ms);
      agent_outcome(*target, outcome, sum, now_ms);
      return;
    }
    if (!why.empty()) {
      d.set("kind", input_kinds::rejected);
      d.set("reason", why);
    }
  } else if (type == input_types::tool_call) {
    d.set("kind", input_kinds::tool_call);
    auto call_id = msg.get_string("call_id");
    auto tool = msg.get_string("tool");
    d.set("call_id", call_id);
    bool known = false;
    for (const char* t : tools::all) known = known || tool == t;
    const auto* args = msg.find("args");
    std::string why;
    if (auto ok = validate_id(call_id, "call_id"); !ok)
      why = ok.err().message;
    else if (!known)
      why = "tool: unknown tool \"" + tool +
            "\" (exec, read_file, write_file, edit, list_dir, search)";
    else if (args && !args->is_object())
      why = "args: expected an object";
    else if (state_.tool_calls.count(call_id))
      d.set("duplicate", true);  // its tool.result (or tool.interrupted) is already journaled
    if (!why.empty()) {
      d.set("kind", input_kinds::rejected);
      d.set("reason", why);
    } else if (!d.get_bool("duplicate") && !is_terminal(state_.status) && !state_.status.empty()) {
      emit(ev::input_applied, std::move(d), now_ms);
      json::value c = json::value::make_object();
      c.set("call_id", call_id);
      c.set("tool", tool);
      c.set("args", args ? *args : json::value::make_object());
      emit(ev::tool_call, std::move(c), now_ms);
      return;
    }
  } else {
    d.set("kind", input_kinds::rejected);
    d.set("reason", "unknown input type \"" + type + "\"");
  }
  if (is_terminal(state_.status)) d.set("ignored", "session already " + state_.status);
  emit(ev::input_applied, std::move(d), now_ms);
}

void machine::tool_finished(const std::string& call_id, json::value result, std::int64_t now_ms) {
  auto it = state_.tool_calls.find(call_id);
  if (it == state_.tool_calls.end() || it->second != tool_states::running) return;
  json::value d = json::value::make_object();
  d.set("call_id", call_id);
  auto args = state_.tool_args.find(call_id);
  if (args != state_.tool_args.end()) d.set("tool", args->second.get_string("tool"));
  d.set("ok", result.get_bool("ok"));
  d.set("result", std::move(result));
  emit(ev::tool_result, std::move(d), now_ms);
}

}  // namespace berth::core
