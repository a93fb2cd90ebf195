#include "berth/core/inputs.hpp"
#include "berth/core/machine.hpp"

#include <algorithm>

namespace berth::core {

machine::machine(std::string id, std::int64_t default_timeout_ms)
    : default_timeout_ms_(default_timeout_ms) {
  state_.id = std::move(id);
}

machine::machine(session_state s, std::int64_t default_timeout_ms)
    : state_(std::move(s)), default_timeout_ms_(default_timeout_ms) {}

std::vector<event> machine::take_emitted() {
  return std::exchange(emitted_, {});
}

void machine::set_owner(const std::string& node, std::uint64_t epoch) {
  owner_node_ = node;
  owner_epoch_ = epoch;
}

void machine::emit(const std::string& type, json::value data, std::int64_t now_ms) {
  event e;
  e.session = state_.id;
  e.n = state_.n + 1;
  e.type = type;
  e.ts_ms = now_ms;
  e.data = std::move(data);
  auto st = apply(e);
  BERTH_ASSERT(st.ok(),
               "emitted event does not fold: " + (st.ok() ? std::string() : st.err().message));
  emitted_.push_back(std::move(e));
}

status machine::apply(const event& e) {
  auto& s = state_;
  if (e.n != s.n + 1)
    return error{errc::corrupt, "session " + s.id + ": event n=" + std::to_string(e.n) +
                                    " does not follow n=" + std::to_string(s.n)};
  const auto& d = e.data;
  const std::string step_id = d.get_string("step");
  step_state* st = step_id.empty() ? nullptr : s.step(step_id);
  if (!st && e.type.rfind("step.", 0) == 0)
    return error{
        errc::corrupt,
        "session " + s.id + ": event " + std::to_string(e.n) + " (" + e.type + ") " +
            (step_id.empty() ? std::string("names no step") : "names unknown step " + step_id)};

  // A step.* event has its step from here on (refused above otherwise).
  auto step = [&]() -> step_state& {
    BERTH_ASSERT(st, "step event " + e.type + " without its step");
    return *st;
  };

  if (e.type == ev::session_accepted) {
    const auto* spec = d.find("spec");
    if (!spec) return error{errc::corrupt, "session.accepted without spec"};
    auto parsed = parse_spec(*spec, spec_limits{.max_spec_bytes = 1LL << 40});
    if (!parsed)
      return error{errc::corrupt, "session " + s.id + ": accepted spec: " + parsed.err().message};
    s.spec = std::move(*parsed);
    s.spec_json = *spec;
    s.status = states::pending;
    s.accepted_seq = static_cast<std::uint64_t>(d.get_int("accepted_seq"));
    s.last_input_seq = std::max(s.last_input_seq, s.accepted_seq);
    s.created_ms = e.ts_ms;
    s.timeout_ms =
        s.spec.timeout ? s.spec.timeout->count() : d.get_int("timeout_ms", default_timeout_ms_);
    s.steps.clear();
    for (const auto& sp : s.spec.steps) s.steps.push_back(step_state{.id = sp.id});
  } else if (e.type == ev::session_started) {
    s.status = states::running;
    s.node = d.get_string("node");
    s.epoch = static_cast<std::uint64_t>(d.get_int("epoch"));
  } else if (e.type == ev::step_started) {
    step().status = step_status::running;
    step().attempt = d.get_int("attempt");
    step().started_ms = e.ts_ms;
    step().exit_code.reset();
    step().reason.clear();
    step().skip.clear();
    step().retry_due_ms = 0;
    step().turn_due_ms = 0;
  } else if (e.type == ev::agent_waiting) {
    if (st) st->turn_due_ms = e.ts_ms + d.get_int("turn_timeout_ms");
  } else if (e.type == ev::step_finished) {
    step().status = step_status::succeeded;
    if (const auto* ec = d.find("exit_code"); ec && ec->is_int()) step().exit_code = ec->as_int();
    step().finished_ms = e.ts_ms;
    step().reason.clear();
    step().turn_due_ms = 0;
  } else if (e.type == ev::step_failed) {
    step().status = step_status::failed;
    if (const auto* ec = d.find("exit_code"); ec && ec->is_int()) step().exit_code = ec->as_int();
    step().reason = d.get_string("reason");
    step().finished_ms = e.ts_ms;
    step().turn_due_ms = 0;
    step().failures += 1;
  } else if (e.type == ev::step_retrying) {
    step().status = step_status::pending;
    step().retry_due_ms = e.ts_ms + d.get_int("delay_ms");
  } else if (e.type == ev::step_interrupted) {
    step().status = step_status::pending;
    step().reason = d.get_string("reason");
    step().retry_due_ms = 0;
    step().turn_due_ms = 0;
    step().failures += 1;
  } else if (e.type == ev::step_skipped) {
    step().status = step_status::skipped;
    step().reason = d.get_string("reason");
    step().skip = d.get_string("skip", skips::blocked);
  } else if (e.type == ev::step_rejected) {
    // Work goes back to `goto`: it and every step that needs it (this one included) run again,
    // each with a fresh retry budget.
    step().loops += 1;
    auto from = s.spec.index_of(d.get_string("goto"));
    if (from < 0)
      return error{errc::corrupt, "session " + s.id + ": step.rejected names unknown step " +
                                      d.get_string("goto")};
    auto why = "sent back by " + step_id + " (loop " + std::to_string(step().loops) + ")";
    for (int i : descendants(s.spec, from)) {
      auto& r = s.steps[static_cast<std::size_t>(i)];
      r.status = step_status::pending;
      r.failures = 0;
      r.exit_code.reset();
      r.reason = why;
      r.skip.clear();
      r.retry_due_ms = 0;
      r.turn_due_ms = 0;
    }
  } else if (e.type == ev::tool_call) {
    auto id = d.get_string("call_id");
    s.tool_calls[id] = tool_states::running;
    json::value a = json::value::make_object();
    a.set("n", e.n);  // calls run one at a time, in the order they were journaled
    a.set("tool", d.get_string("tool"));
    if (const auto* args = d.find("args")) a.set("args", *args);
    s.tool_args[id] = std::move(a);
    // The agent acted: its turn clock stops while the call runs.
    for (auto& r : s.steps)
      if (r.status == step_status::running && r.turn_due_ms) r.turn_due_ms = 0;
  } else if (e.type == ev::tool_result || e.type == ev::tool_interrupted) {
    auto id = d.get_string("call_id");
    s.tool_calls[id] = e.type == ev::tool_result ? tool_states::done : tool_states::interrupted;
    s.tool_args.erase(id);
    // The agent's turn again: its clock restarts once no call of its runs.
    bool busy = false;
    for (const auto& [_, cs] : s.tool_calls) busy = busy || cs == tool_states::running;
    if (!busy)
      for (std::size_t i = 0; i < s.steps.size() && i < s.spec.steps.size(); ++i)
        if (s.steps[i].status == step_status::running && is_external(&s.spec.steps[i]))
          s.steps[i].turn_due_ms = e.ts_ms + s.spec.steps[i].turn_timeout.count();
  } else if (e.type == ev::input_applied) {
    s.last_input_seq =
        std::max(s.last_input_seq, static_cast<std::uint64_t>(d.get_int("input_seq")));
    if (d.get_string("kind") == input_kinds::cancel) s.cancel_requested = true;
  } else if (e.type.rfind("session.", 0) == 0) {
    auto status = e.type.substr(8);
    if (!is_terminal(status) && status != states::waiting)
      return error{errc::corrupt, "session " + s.id + ": unknown event type " + e.type};
    s.status = status;
    s.reason = d.get_string("reason");
    if (status == states::failed) s.failed_step = d.get_string("step");
  } else if (e.type == ev::workspace_ready) {
    for (const char* k : {"commit", "branch", "base"}) s.ws.set(k, d.get_string(k));
    s.ws.set("ready", true);
  } else if (e.type == ev::workspace_checkpointed) {
    s.ws.set("checkpoint", d.get_string("commit"));
  } else if (e.type == ev::workspace_removed) {
    s.ws.set("removed", true);
  } else if (e.type == ev::git_committed) {
    s.ws.set("head", d.get_string("commit"));
  } else if (e.type == ev::git_pushed) {
    s.ws.set("pushed", d.get_string("commit"));
  } else if (e.type == ev::pr_opened) {
    s.ws.set("pr_url", d.get_string("url"));
  } else if (e.type == ev::lease_granted || e.type == ev::lease_renewed ||
             e.type == ev::lease_revoked) {
    json::value leases = s.ws.find("leases") && s.ws.find("leases")->is_object()
                             ? *s.ws.find("leases")
                             : json::value::make_object();
    json::value kept = json::value::make_object();
    // A renewal leaves the replaced lease live (retired) until its lease.revoked.
    auto gone = e.type == ev::lease_revoked ? d.get_string("lease") : std::string();
    for (const auto& [k, m] : leases.as_object())
      if (k != gone) kept.set(k, m);
    if (e.type != ev::lease_revoked) kept.set(d.get_string("lease"), d);
    s.ws.set("leases", std::move(kept));
  }
  // Other types are recorded but change nothing here.
  s.n = e.n;
  s.updated_ms = e.ts_ms;
  return {};
}

}  // namespace berth::core
