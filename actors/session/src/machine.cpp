#include "berth/session/machine.hpp"

#include "berth/base/ids.hpp"
#include "berth/base/time.hpp"

#include <algorithm>

namespace berth::session {

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

bool is_terminal(const std::string& status) {
  for (const char* t : terminal_states)
    if (status == t) return true;
  return false;
}

// --- event -------------------------------------------------------------------------------------

json::value event::envelope() const {
  json::value v = json::value::make_object();
  v.set("session", session);
  v.set("n", n);
  v.set("type", type);
  v.set("ts", format_timestamp(ts_ms));
  v.set("data", data.is_null() ? json::value::make_object() : data);
  return v;
}

result<event> event::from_envelope(const json::value& v) {
  if (!v.is_object()) return error{errc::corrupt, "event: not a JSON object"};
  event e;
  e.session = v.get_string("session");
  e.n = v.get_int("n", 0);
  e.type = v.get_string("type");
  e.ts_ms = parse_timestamp(v.get_string("ts"));
  if (const auto* d = v.find("data")) e.data = *d;
  if (e.n <= 0 || e.type.empty()) return error{errc::corrupt, "event: missing n or type"};
  return e;
}

// --- state -------------------------------------------------------------------------------------

step_state* session_state::step(const std::string& sid) {
  for (auto& s : steps)
    if (s.id == sid) return &s;
  return nullptr;
}

step_state* session_state::running_step() {
  for (auto& s : steps)
    if (s.status == step_status::running) return &s;
  return nullptr;
}

json::value session_state::summary() const {
  json::value v = json::value::make_object();
  v.set("id", id);
  v.set("status", status);
  v.set("repo", spec.repo);
  if (!spec.ref.empty()) v.set("ref", spec.ref);
  if (!spec.goal.empty()) v.set("goal", spec.goal);
  v.set("priority", spec.priority);
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
    arr.push(std::move(j));
  }
  v.set("steps", std::move(arr));
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

std::vector<std::string> session_state::live_leases() const {
  std::vector<std::string> out;
  if (const auto* l = ws.find("leases"); l && l->is_object())
    for (const auto& [k, _] : l->as_object()) out.push_back(k);
  return out;
}

json::value session_state::to_json() const {
  json::value v = json::value::make_object();
  v.set("id", id);
  v.set("spec", spec_json);
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
  json::value arr = json::value::make_array();
  for (const auto& s : steps) {
    json::value j = json::value::make_object();
    j.set("id", s.id);
    j.set("status", to_string(s.status));
    j.set("attempt", s.attempt);
    j.set("failures", s.failures);
    if (s.exit_code) j.set("exit_code", *s.exit_code);
    j.set("reason", s.reason);
    j.set("retry_due_ms", s.retry_due_ms);
    j.set("started_ms", s.started_ms);
    j.set("finished_ms", s.finished_ms);
    arr.push(std::move(j));
  }
  v.set("steps", std::move(arr));
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

result<session_state> session_state::from_json(const json::value& v) {
  session_state s;
  s.id = v.get_string("id");
  if (const auto* sp = v.find("spec"); sp && sp->is_object()) {
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
  if (const auto* arr = v.find("steps"); arr && arr->is_array()) {
    for (const auto& j : arr->as_array()) {
      step_state st;
      st.id = j.get_string("id");
      auto status = step_status_from(j.get_string("status"));
      if (!status) return status.err();
      st.status = *status;
      st.attempt = j.get_int("attempt");
      st.failures = j.get_int("failures");
      if (const auto* ec = j.find("exit_code"); ec && ec->is_int()) st.exit_code = ec->as_int();
      st.reason = j.get_string("reason");
      st.retry_due_ms = j.get_int("retry_due_ms");
      st.started_ms = j.get_int("started_ms");
      st.finished_ms = j.get_int("finished_ms");
      s.steps.push_back(std::move(st));
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
  if (!step_id.empty() && !st && e.type.rfind("step.", 0) == 0)
    return error{errc::corrupt, "session " + s.id + ": event " + std::to_string(e.n) +
                                    " names unknown step " + step_id};

  if (e.type == "session.accepted") {
    const auto* spec = d.find("spec");
    if (!spec) return error{errc::corrupt, "session.accepted without spec"};
    auto parsed = parse_spec(*spec, spec_limits{.max_spec_bytes = 1LL << 40});
    if (!parsed)
      return error{errc::corrupt, "session " + s.id + ": accepted spec: " + parsed.err().message};
    s.spec = std::move(*parsed);
    s.spec_json = *spec;
    s.status = "pending";
    s.accepted_seq = static_cast<std::uint64_t>(d.get_int("accepted_seq"));
    s.last_input_seq = std::max(s.last_input_seq, s.accepted_seq);
    s.created_ms = e.ts_ms;
    s.timeout_ms =
        s.spec.timeout ? s.spec.timeout->count() : d.get_int("timeout_ms", default_timeout_ms_);
    s.steps.clear();
    for (const auto& sp : s.spec.steps) s.steps.push_back(step_state{.id = sp.id});
  } else if (e.type == "session.started") {
    s.status = "running";
    s.node = d.get_string("node");
    s.epoch = static_cast<std::uint64_t>(d.get_int("epoch"));
  } else if (e.type == "step.started") {
    st->status = step_status::running;
    st->attempt = d.get_int("attempt");
    st->started_ms = e.ts_ms;
    st->exit_code.reset();
    st->reason.clear();
  } else if (e.type == "step.finished") {
    st->status = step_status::succeeded;
    st->exit_code = d.get_int("exit_code");
    st->finished_ms = e.ts_ms;
    st->reason.clear();
  } else if (e.type == "step.failed") {
    st->status = step_status::failed;
    if (const auto* ec = d.find("exit_code"); ec && ec->is_int()) st->exit_code = ec->as_int();
    st->reason = d.get_string("reason");
    st->finished_ms = e.ts_ms;
    st->failures += 1;
  } else if (e.type == "step.retrying") {
    st->status = step_status::pending;
    st->retry_due_ms = e.ts_ms + d.get_int("delay_ms");
  } else if (e.type == "step.interrupted") {
    st->status = step_status::pending;
    st->reason = d.get_string("reason");
    st->retry_due_ms = 0;
  } else if (e.type == "step.skipped") {
    st->status = step_status::skipped;
    st->reason = d.get_string("reason");
  } else if (e.type == "tool.call") {
    auto id = d.get_string("call_id");
    s.tool_calls[id] = "running";
    json::value a = json::value::make_object();
    a.set("n", e.n);  // calls run one at a time, in the order they were journaled
    a.set("tool", d.get_string("tool"));
    if (const auto* args = d.find("args")) a.set("args", *args);
    s.tool_args[id] = std::move(a);
  } else if (e.type == "tool.result" || e.type == "tool.interrupted") {
    auto id = d.get_string("call_id");
    s.tool_calls[id] = e.type == "tool.result" ? "done" : "interrupted";
    s.tool_args.erase(id);
  } else if (e.type == "input.applied") {
    s.last_input_seq =
        std::max(s.last_input_seq, static_cast<std::uint64_t>(d.get_int("input_seq")));
    if (d.get_string("kind") == "cancel") s.cancel_requested = true;
  } else if (e.type.rfind("session.", 0) == 0) {
    auto status = e.type.substr(8);
    if (!is_terminal(status) && status != "waiting")
      return error{errc::corrupt, "session " + s.id + ": unknown event type " + e.type};
    s.status = status;
    s.reason = d.get_string("reason");
  } else if (e.type == "workspace.ready") {
    for (const char* k : {"commit", "branch", "base"}) s.ws.set(k, d.get_string(k));
    s.ws.set("ready", true);
  } else if (e.type == "workspace.checkpointed") {
    s.ws.set("checkpoint", d.get_string("commit"));
  } else if (e.type == "workspace.removed") {
    s.ws.set("removed", true);
  } else if (e.type == "git.committed") {
    s.ws.set("head", d.get_string("commit"));
  } else if (e.type == "git.pushed") {
    s.ws.set("pushed", d.get_string("commit"));
  } else if (e.type == "pr.opened") {
    s.ws.set("pr_url", d.get_string("url"));
  } else if (e.type == "lease.granted" || e.type == "lease.renewed" || e.type == "lease.revoked") {
    json::value leases = s.ws.find("leases") && s.ws.find("leases")->is_object()
                             ? *s.ws.find("leases")
                             : json::value::make_object();
    json::value kept = json::value::make_object();
    // A renewal leaves the replaced lease live (retired) until its lease.revoked.
    auto gone = e.type == "lease.revoked" ? d.get_string("lease") : std::string();
    for (const auto& [k, m] : leases.as_object())
      if (k != gone) kept.set(k, m);
    if (e.type != "lease.revoked") kept.set(d.get_string("lease"), d);
    s.ws.set("leases", std::move(kept));
  }
  // Other types are recorded but change nothing here.
  s.n = e.n;
  s.updated_ms = e.ts_ms;
  return {};
}

void machine::finish(const std::string& status, const std::string& reason, std::int64_t now_ms) {
  json::value d = json::value::make_object();
  if (!reason.empty()) d.set("reason", reason);
  emit("session." + status, std::move(d), now_ms);
}

void machine::resume(std::int64_t now_ms, const std::string& why) {
  // A tool call that was running when the node stopped is reported, never run again: its
  // effects (a command, a write) may or may not have happened.
  std::vector<std::string> running_tools;
  for (const auto& [id, st] : state_.tool_calls)
    if (st == "running") running_tools.push_back(id);
  for (const auto& id : running_tools) {
    json::value d = json::value::make_object();
    d.set("call_id", id);
    d.set("reason", why);
    emit("tool.interrupted", std::move(d), now_ms);
  }
  if (is_terminal(state_.status)) return;
  if (auto* st = state_.running_step()) {
    json::value d = json::value::make_object();
    d.set("step", st->id);
    d.set("attempt", st->attempt);
    d.set("reason", why);
    emit("step.interrupted", std::move(d), now_ms);
  }
}

action machine::advance(std::int64_t now_ms) {
  auto& s = state_;
  if (s.status.empty() || is_terminal(s.status)) return {};
  if (s.status == "pending") {
    json::value d = json::value::make_object();
    d.set("node", owner_node_);
    d.set("epoch", owner_epoch_);
    emit("session.started", std::move(d), now_ms);
  }
  auto* running = s.running_step();
  if (s.cancel_requested) {
    if (running)
      return action{.what = action::kind::kill,
                    .step = running->id,
                    .attempt = running->attempt,
                    .kill_reason = "cancelled"};
    finish("cancelled", "cancelled by request", now_ms);
    return {};
  }
  if (now_ms >= s.deadline_ms()) {
    if (running)
      return action{.what = action::kind::kill,
                    .step = running->id,
                    .attempt = running->attempt,
                    .kill_reason = "session timeout"};
    finish("timed_out", "session timeout of " + format_duration(millis(s.timeout_ms)) + " reached",
           now_ms);
    return {};
  }
  if (running) return action{.what = action::kind::wait_until, .until_ms = s.deadline_ms()};
  if (s.has_repo() && !s.workspace_ready()) return action{.what = action::kind::prepare};
  for (auto& st : s.steps) {
    if (st.status == step_status::succeeded || st.status == step_status::skipped) continue;
    if (st.status == step_status::failed) {
      // A failed step that was not retried ends the session (step_exited decided it).
      return {};
    }
    if (st.retry_due_ms > now_ms)
      return action{.what = action::kind::wait_until,
                    .until_ms = std::min(st.retry_due_ms, s.deadline_ms())};
    json::value d = json::value::make_object();
    d.set("step", st.id);
    d.set("attempt", st.attempt + 1);
    emit("step.started", std::move(d), now_ms);
    return action{.what = action::kind::launch, .step = st.id, .attempt = st.attempt};
  }
  finish("succeeded", "", now_ms);
  return {};
}

void machine::step_exited(const std::string& step, std::int64_t attempt, const exit_result& r,
                          std::int64_t now_ms) {
  auto* st = state_.step(step);
  if (!st || st->status != step_status::running || st->attempt != attempt) return;  // stale
  json::value d = json::value::make_object();
  d.set("step", step);
  d.set("attempt", attempt);
  d.set("duration_ms", r.duration_ms);
  if (!r.start_failed && !r.interrupted) {
    if (r.signal)
      d.set("signal", r.signal);
    else
      d.set("exit_code", r.exit_code);
  }
  if (r.truncated) d.set("output_truncated", true);
  if (r.peak_memory_bytes > 0) d.set("peak_memory_bytes", r.peak_memory_bytes);
  if (r.oom_killed) d.set("oom_killed", true);
  if (r.details.is_object())
    for (const auto& [k, v] : r.details.as_object()) d.set(k, v);
  if (r.success()) {
    emit("step.finished", std::move(d), now_ms);
    return;
  }
  if (r.interrupted) {
    d.set("reason", r.error.empty() ? std::string("node shutting down") : r.error);
    emit("step.interrupted", std::move(d), now_ms);
    return;
  }
  std::string reason;
  if (r.start_failed)
    reason = "could not start: " + r.error;
  else if (r.timed_out)
    reason = r.error.empty() ? "timed out" : r.error;
  else if (r.oom_killed)
    reason = "killed by the out-of-memory killer: the sandbox's memory limit was reached";
  else if (r.signal)
    reason = "killed by signal " + std::to_string(r.signal);
  else
    reason = "exited with code " + std::to_string(r.exit_code);
  if (!r.error.empty() && !r.start_failed && !r.timed_out) reason = r.error;
  d.set("reason", reason);
  emit("step.failed", std::move(d), now_ms);
  bool stopping = state_.cancel_requested || now_ms >= state_.deadline_ms();
  if (stopping) return;  // advance() records cancelled / timed_out
  const step_spec* spec = nullptr;
  for (const auto& sp : state_.spec.steps)
    if (sp.id == step) spec = &sp;
  auto failures = st->failures;
  if (spec && failures < spec->retry.max_attempts) {
    auto delay = spec->retry.backoff.count();
    for (std::int64_t i = 1; i < failures && delay < spec->retry.max_backoff.count(); ++i)
      delay *= 2;
    delay = std::min(delay, static_cast<std::int64_t>(spec->retry.max_backoff.count()));
    json::value rd = json::value::make_object();
    rd.set("step", step);
    rd.set("attempt", attempt + 1);
    rd.set("delay_ms", delay);
    rd.set("reason", reason);
    emit("step.retrying", std::move(rd), now_ms);
    return;
  }
  std::string why = "step " + step + " failed";
  if (failures > 1) why += " after " + std::to_string(failures) + " attempts";
  finish("failed", why + ": " + reason, now_ms);
}

void machine::input(std::uint64_t seq, const json::value& msg, std::int64_t now_ms) {
  if (seq <= state_.last_input_seq) return;  // already applied
  json::value d = json::value::make_object();
  d.set("input_seq", seq);
  std::string type = msg.get_string("type");
  if (type == "cancel") {
    d.set("kind", "cancel");
  } else if (type == "input") {
    d.set("kind", "input");
    if (const auto* data = msg.find("data")) d.set("data", *data);
  } else if (type == "start") {
    // A repeated start (idempotent retry) landing on the same subject: nothing to do.
    d.set("kind", "duplicate_start");
  } else if (type == "tool_call") {
    d.set("kind", "tool_call");
    auto call_id = msg.get_string("call_id");
    auto tool = msg.get_string("tool");
    d.set("call_id", call_id);
    static const char* tools[] = {"exec", "read_file", "write_file", "edit", "list_dir", "search"};
    bool known = false;
    for (const char* t : tools) known = known || tool == t;
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
      d.set("kind", "rejected");
      d.set("reason", why);
    } else if (!d.get_bool("duplicate") && !is_terminal(state_.status) && !state_.status.empty()) {
      emit("input.applied", std::move(d), now_ms);
      json::value c = json::value::make_object();
      c.set("call_id", call_id);
      c.set("tool", tool);
      c.set("args", args ? *args : json::value::make_object());
      emit("tool.call", std::move(c), now_ms);
      return;
    }
  } else {
    d.set("kind", "rejected");
    d.set("reason", "unknown input type \"" + type + "\"");
  }
  if (is_terminal(state_.status)) d.set("ignored", "session already " + state_.status);
  emit("input.applied", std::move(d), now_ms);
}

void machine::tool_finished(const std::string& call_id, json::value result, std::int64_t now_ms) {
  auto it = state_.tool_calls.find(call_id);
  if (it == state_.tool_calls.end() || it->second != "running") return;
  json::value d = json::value::make_object();
  d.set("call_id", call_id);
  auto args = state_.tool_args.find(call_id);
  if (args != state_.tool_args.end()) d.set("tool", args->second.get_string("tool"));
  d.set("ok", result.get_bool("ok"));
  d.set("result", std::move(result));
  emit("tool.result", std::move(d), now_ms);
}

void machine::workspace_ready(json::value data, std::int64_t now_ms) {
  if (is_terminal(state_.status) || state_.workspace_ready()) return;
  emit("workspace.ready", std::move(data), now_ms);
}

void machine::note(const std::string& type, json::value data, std::int64_t now_ms) {
  emit(type, std::move(data), now_ms);
}

void machine::fail(const std::string& reason, std::int64_t now_ms) {
  if (is_terminal(state_.status) || state_.status.empty()) return;
  finish("failed", reason, now_ms);
}

}  // namespace berth::session
