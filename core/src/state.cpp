#include "berth/core/state.hpp"

#include "berth/base/time.hpp"

namespace berth::core {

const char* to_string(step_status s) {
  switch (s) {
    case step_status::pending:
      return "pending";
    case step_status::running:
      return "running";
    case step_status::succeeded:
      return "succeeded";
    case step_status::failed:
      return "failed";
    case step_status::skipped:
      return "skipped";
  }
  return "?";
}

namespace {
result<step_status> step_status_from(const std::string& s) {
  for (auto st : {step_status::pending, step_status::running, step_status::succeeded,
                  step_status::failed, step_status::skipped})
    if (s == to_string(st)) return st;
  return error{errc::corrupt, "unknown step status \"" + s + "\""};
}
}  // namespace

// steps and spec.steps are in the same order: the spec's index serves both.
step_state* session_state::step(const std::string& sid) {
  auto i = spec.index_of(sid);
  if (i >= 0 && static_cast<std::size_t>(i) < steps.size() &&
      steps[static_cast<std::size_t>(i)].id == sid)
    return &steps[static_cast<std::size_t>(i)];
  for (auto& s : steps)
    if (s.id == sid) return &s;
  return nullptr;
}

const step_state* session_state::step(const std::string& sid) const {
  return const_cast<session_state*>(this)->step(sid);
}

std::vector<const step_state*> session_state::running_steps() const {
  std::vector<const step_state*> out;
  for (const auto& s : steps)
    if (s.status == step_status::running) out.push_back(&s);
  return out;
}

json::value session_state::needs_of(const step_spec& sp) const {
  json::value needs = json::value::make_array();
  for (const auto& n : sp.needs) {
    const auto* ns = step(n);
    json::value j = json::value::make_object();
    j.set("step", n);
    j.set("status", ns ? to_string(ns->status) : "?");
    if (ns && !ns->reason.empty()) j.set("reason", ns->reason);
    needs.push(std::move(j));
  }
  return needs;
}

std::string session_state::phase() const {
  if (status != states::running) return status;
  bool external = false, process = false, retrying = false;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const auto& st = steps[i];
    if (st.status == step_status::running) {
      if (i < spec.steps.size() && is_external(&spec.steps[i]))
        external = true;
      else
        process = true;
    } else if (st.status == step_status::pending && st.retry_due_ms > 0) {
      retrying = true;
    }
  }
  for (const auto& [_, st] : tool_calls)
    if (st == tool_states::running) process = true;
  if (process) return states::running;
  if (external) return states::waiting;
  if (retrying) return states::retrying;
  return states::running;
}

json::value session_state::summary() const {
  json::value v = json::value::make_object();
  v.set("id", id);
  v.set("status", status);
  v.set("repo", spec.repo);
  if (!spec.ref.empty()) v.set("ref", spec.ref);
  if (!spec.goal.empty()) v.set("goal", spec.goal);
  v.set("priority", spec.priority);
  if (!spec.repo.empty()) v.set("repo", spec.repo);
  if (auto b = ws.get_string("branch"); !b.empty()) v.set("branch", b);
  if (auto pr = ws.get_string("pr_url"); !pr.empty()) v.set("pr_url", pr);
  if (!node.empty()) v.set("node", node);
  if (!reason.empty()) v.set("reason", reason);
  v.set("created_at", format_timestamp(created_ms));
  v.set("updated_at", format_timestamp(updated_ms));
  if (!node.empty()) v.set("node", node);
  v.set("events", n);
  v.set("accepted_seq", accepted_seq);
  json::value arr = json::value::make_array();
  for (const auto& s : steps) {
    json::value j = json::value::make_object();
    j.set("id", s.id);
    j.set("status", to_string(s.status));
    j.set("attempt", s.attempt);
    if (s.exit_code) j.set("exit_code", *s.exit_code);
    if (!s.reason.empty()) j.set("reason", s.reason);
    if (!s.skip.empty()) j.set("skip", s.skip);
    if (s.loops > 0) j.set("loops", s.loops);
    if (const auto* sp = spec.step(s.id); sp && !sp->needs.empty()) {
      json::value n = json::value::make_array();
      for (const auto& x : sp->needs) n.push(x);
      j.set("needs", std::move(n));
    }
    arr.push(std::move(j));
  }
  v.set("steps", std::move(arr));
  v.set("phase", phase());
  if (!failed_step.empty()) v.set("failed_step", failed_step);
  if (!spec.retry_of.empty()) v.set("retry_of", spec.retry_of);
  if (!tool_calls.empty()) {
    json::value tc = json::value::make_object();
    for (const auto& [k, st] : tool_calls) tc.set(k, st);
    v.set("tool_calls", std::move(tc));
  }
  if (has_repo()) {
    json::value w = ws;
    if (!w.find("branch")) w.set("branch", session_branch(spec, id));
    v.set("workspace", std::move(w));
  }
  return v;
}

json::value session_state::queue_entry() const {
  json::value v = json::value::make_object();
  v.set("status", phase());
  v.set("priority", spec.priority);
  if (!spec.repo.empty()) v.set("repo", spec.repo);
  if (auto b = ws.get_string("branch"); !b.empty()) v.set("branch", b);
  if (auto pr = ws.get_string("pr_url"); !pr.empty()) v.set("pr_url", pr);
  if (!node.empty()) v.set("node", node);
  if (!reason.empty()) v.set("reason", reason);
  if (!failed_step.empty()) v.set("failed_step", failed_step);
  if (!spec.retry_of.empty()) v.set("retry_of", spec.retry_of);
  if (!spec.goal.empty()) v.set("goal", spec.goal.substr(0, 200));
  v.set("created_at", format_timestamp(created_ms));
  v.set("updated_at", format_timestamp(updated_ms));
  return v;
}

std::vector<std::string> session_state::live_leases() const {
  std::vector<std::string> out;
  if (const auto* l = ws.find("leases"); l && l->is_object())
    for (const auto& [k, _] : l->as_object()) out.push_back(k);
  return out;
}

bool step_state::pristine() const {
  return status == step_status::pending && attempt == 0 && failures == 0 && loops == 0 &&
         reason.empty() && retry_due_ms == 0 && turn_due_ms == 0;
}

json::value step_state::to_json() const {
  json::value j = json::value::make_object();
  j.set("id", id);
  j.set("status", to_string(status));
  j.set("attempt", attempt);
  if (failures) j.set("failures", failures);
  if (loops) j.set("loops", loops);
  if (exit_code) j.set("exit_code", *exit_code);
  if (!reason.empty()) j.set("reason", reason);
  if (!skip.empty()) j.set("skip", skip);
  if (retry_due_ms) j.set("retry_due_ms", retry_due_ms);
  if (turn_due_ms) j.set("turn_due_ms", turn_due_ms);
  if (started_ms) j.set("started_ms", started_ms);
  if (finished_ms) j.set("finished_ms", finished_ms);
  return j;
}

json::value session_state::to_json(bool with_spec, bool with_steps) const {
  json::value v = json::value::make_object();
  v.set("id", id);
  if (with_spec) v.set("spec", spec_json);
  v.set("status", status);
  v.set("n", n);
  v.set("accepted_seq", accepted_seq);
  v.set("last_input_seq", last_input_seq);
  v.set("created_ms", created_ms);
  v.set("updated_ms", updated_ms);
  v.set("timeout_ms", timeout_ms);
  v.set("cancel_requested", cancel_requested);
  v.set("reason", reason);
  v.set("node", node);
  v.set("epoch", epoch);
  if (!failed_step.empty()) v.set("failed_step", failed_step);
  json::value arr = json::value::make_array();
  // Only steps that have moved, and only fields that are not zero: a snapshot is written at
  // every transition, and a 1,000-step graph is mostly steps not started yet.
  if (with_steps) {
    for (const auto& s : steps)
      if (!s.pristine()) arr.push(s.to_json());
  }
  if (with_steps) v.set("steps", std::move(arr));
  if (!tool_calls.empty()) {
    json::value tc = json::value::make_object();
    for (const auto& [k, st] : tool_calls) tc.set(k, st);
    v.set("tool_calls", std::move(tc));
    json::value ta = json::value::make_object();
    for (const auto& [k, a] : tool_args) ta.set(k, a);
    v.set("tool_args", std::move(ta));
  }
  v.set("ws", ws);
  return v;
}

result<session_state> session_state::from_json(const json::value& v, const json::value* spec,
                                               const json::value* steps_json) {
  session_state s;
  s.id = v.get_string("id");
  if (const auto* sp = spec ? spec : v.find("spec"); sp && sp->is_object()) {
    auto parsed = parse_spec(*sp, spec_limits{.max_spec_bytes = 1LL << 40});
    if (!parsed)
      return error{errc::corrupt, "snapshot of " + s.id + ": stored spec: " + parsed.err().message};
    s.spec = std::move(*parsed);
    s.spec_json = *sp;
  }
  s.status = v.get_string("status");
  s.n = v.get_int("n");
  s.accepted_seq = static_cast<std::uint64_t>(v.get_int("accepted_seq"));
  s.last_input_seq = static_cast<std::uint64_t>(v.get_int("last_input_seq"));
  s.created_ms = v.get_int("created_ms");
  s.updated_ms = v.get_int("updated_ms");
  s.timeout_ms = v.get_int("timeout_ms");
  s.cancel_requested = v.get_bool("cancel_requested");
  s.reason = v.get_string("reason");
  s.node = v.get_string("node");
  s.epoch = static_cast<std::uint64_t>(v.get_int("epoch"));
  s.failed_step = v.get_string("failed_step");
  for (const auto& sp : s.spec.steps) s.steps.push_back(step_state{.id = sp.id});
  if (const auto* arr = steps_json ? steps_json : v.find("steps"); arr && arr->is_array()) {
    for (const auto& j : arr->as_array()) {
      auto* st = s.step(j.get_string("id"));
      if (!st)
        return error{errc::corrupt,
                     "snapshot of " + s.id + ": unknown step \"" + j.get_string("id") + "\""};
      auto status = step_status_from(j.get_string("status"));
      if (!status) return status.err();
      st->status = *status;
      st->attempt = j.get_int("attempt");
      st->failures = j.get_int("failures");
      st->loops = j.get_int("loops");
      if (const auto* ec = j.find("exit_code"); ec && ec->is_int()) st->exit_code = ec->as_int();
      st->reason = j.get_string("reason");
      st->skip = j.get_string("skip");
      st->retry_due_ms = j.get_int("retry_due_ms");
      st->turn_due_ms = j.get_int("turn_due_ms");
      st->started_ms = j.get_int("started_ms");
      st->finished_ms = j.get_int("finished_ms");
    }
  }
  if (const auto* tc = v.find("tool_calls"); tc && tc->is_object())
    for (const auto& [k, st] : tc->as_object())
      if (st.is_string()) s.tool_calls[k] = st.as_string();
  if (const auto* ta = v.find("tool_args"); ta && ta->is_object())
    for (const auto& [k, a] : ta->as_object()) s.tool_args[k] = a;
  if (const auto* w = v.find("ws"); w && w->is_object()) s.ws = *w;
  return s;
}

// --- machine -----------------------------------------------------------------------------------

}  // namespace berth::core
