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

namespace {
bool is_external(const step_spec* sp) {
  return sp && sp->kind == step_kind::agent && sp->agent_mode == "external";
}
}  // namespace

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
  if (status != "running") return status;
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
    if (st == "running") process = true;
  if (process) return "running";
  if (external) return "waiting";
  if (retrying) return "retrying";
  return "running";
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
    st->skip.clear();
    st->retry_due_ms = 0;
    st->turn_due_ms = 0;
  } else if (e.type == "agent.waiting") {
    if (st) st->turn_due_ms = e.ts_ms + d.get_int("turn_timeout_ms");
  } else if (e.type == "step.finished") {
    st->status = step_status::succeeded;
    if (const auto* ec = d.find("exit_code"); ec && ec->is_int()) st->exit_code = ec->as_int();
    st->finished_ms = e.ts_ms;
    st->reason.clear();
    st->turn_due_ms = 0;
  } else if (e.type == "step.failed") {
    st->status = step_status::failed;
    if (const auto* ec = d.find("exit_code"); ec && ec->is_int()) st->exit_code = ec->as_int();
    st->reason = d.get_string("reason");
    st->finished_ms = e.ts_ms;
    st->turn_due_ms = 0;
    st->failures += 1;
  } else if (e.type == "step.retrying") {
    st->status = step_status::pending;
    st->retry_due_ms = e.ts_ms + d.get_int("delay_ms");
  } else if (e.type == "step.interrupted") {
    st->status = step_status::pending;
    st->reason = d.get_string("reason");
    st->retry_due_ms = 0;
    st->turn_due_ms = 0;
    st->failures += 1;
  } else if (e.type == "step.skipped") {
    st->status = step_status::skipped;
    st->reason = d.get_string("reason");
    st->skip = d.get_string("skip", "blocked");
  } else if (e.type == "step.rejected") {
    // Work goes back to `goto`: it and every step that needs it (this one included) run again,
    // each with a fresh retry budget.
    st->loops += 1;
    auto from = s.spec.index_of(d.get_string("goto"));
    if (from < 0)
      return error{errc::corrupt, "session " + s.id + ": step.rejected names unknown step " +
                                      d.get_string("goto")};
    auto why = "sent back by " + step_id + " (loop " + std::to_string(st->loops) + ")";
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
  } else if (e.type == "tool.call") {
    auto id = d.get_string("call_id");
    s.tool_calls[id] = "running";
    json::value a = json::value::make_object();
    a.set("n", e.n);  // calls run one at a time, in the order they were journaled
    a.set("tool", d.get_string("tool"));
    if (const auto* args = d.find("args")) a.set("args", *args);
    s.tool_args[id] = std::move(a);
    // The agent acted: its turn clock stops while the call runs.
    for (auto& r : s.steps)
      if (r.status == step_status::running && r.turn_due_ms) r.turn_due_ms = 0;
  } else if (e.type == "tool.result" || e.type == "tool.interrupted") {
    auto id = d.get_string("call_id");
    s.tool_calls[id] = e.type == "tool.result" ? "done" : "interrupted";
    s.tool_args.erase(id);
    // The agent's turn again: its clock restarts once no call of its runs.
    bool busy = false;
    for (const auto& [_, cs] : s.tool_calls) busy = busy || cs == "running";
    if (!busy)
      for (std::size_t i = 0; i < s.steps.size() && i < s.spec.steps.size(); ++i)
        if (s.steps[i].status == step_status::running && is_external(&s.spec.steps[i]))
          s.steps[i].turn_due_ms = e.ts_ms + s.spec.steps[i].turn_timeout.count();
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
    if (status == "failed") s.failed_step = d.get_string("step");
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

void machine::finish(const std::string& status, const std::string& reason, std::int64_t now_ms,
                     const std::string& step) {
  json::value d = json::value::make_object();
  if (!reason.empty()) d.set("reason", reason);
  if (!step.empty()) d.set("step", step);
  emit("session." + status, std::move(d), now_ms);
}

namespace {

json::value step_data(const step_state& st) {
  json::value d = json::value::make_object();
  d.set("step", st.id);
  d.set("attempt", st.attempt);
  return d;
}

// A deterministic draw in [0, 1) per session, step and attempt: a resumed session decides the
// same delay (which the journal records anyway).
double jitter_draw(const std::string& session, const std::string& step, std::int64_t attempt) {
  std::uint64_t h = 1469598103934665603ULL;
  auto mix = [&](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
  };
  mix(session);
  mix(step);
  mix(std::to_string(attempt));
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return static_cast<double>(h >> 11) / static_cast<double>(1ULL << 53);
}

}  // namespace

void machine::attempt_failed(step_state& st, json::value d, const std::string& reason,
                             std::int64_t now_ms, bool retryable) {
  d.set("reason", reason);
  emit("step.failed", std::move(d), now_ms);
  if (state_.cancel_requested || now_ms >= state_.deadline_ms()) return;  // advance() ends it
  const auto* sp = state_.spec.step(st.id);
  if (!retryable || !sp || st.failures >= sp->retry.max_attempts) return;
  auto delay = sp->retry.backoff.count();
  for (std::int64_t i = 1; i < st.failures && delay < sp->retry.max_backoff.count(); ++i)
    delay *= 2;
  delay = std::min(delay, static_cast<std::int64_t>(sp->retry.max_backoff.count()));
  if (sp->retry.jitter)
    delay = delay / 2 + static_cast<std::int64_t>(static_cast<double>(delay - delay / 2) *
                                                  jitter_draw(state_.id, st.id, st.attempt));
  json::value rd = json::value::make_object();
  rd.set("step", st.id);
  rd.set("attempt", st.attempt + 1);
  rd.set("delay_ms", delay);
  rd.set("reason", reason);
  emit("step.retrying", std::move(rd), now_ms);
}

void machine::rejected(step_state& st, json::value d, const std::string& summary,
                       std::int64_t now_ms) {
  const auto* sp = state_.spec.step(st.id);
  d.set("outcome", "reject");
  if (!summary.empty()) d.set("summary", summary);
  if (!sp || sp->on_reject_goto.empty()) {
    d.set("reason", "rejected by the agent" + (summary.empty() ? "" : ": " + summary));
    emit("step.failed", std::move(d), now_ms);
    return;
  }
  if (st.loops >= sp->max_loops) {
    d.set("reason", "rejected again after " + std::to_string(st.loops) + " loop(s) back to " +
                        sp->on_reject_goto +
                        "; on_reject.max_loops = " + std::to_string(sp->max_loops) + " reached" +
                        (summary.empty() ? "" : ": " + summary));
    emit("step.failed", std::move(d), now_ms);
    return;
  }
  d.set("goto", sp->on_reject_goto);
  d.set("loop", st.loops + 1);
  d.set("max_loops", sp->max_loops);
  emit("step.rejected", std::move(d), now_ms);
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
  for (auto& st : state_.steps) {
    if (st.status != step_status::running) continue;
    const auto* sp = state_.spec.step(st.id);
    if (is_external(sp)) {
      // Nothing of an external agent ran here: it keeps its step, with a fresh turn.
      auto d = step_data(st);
      d.set("turn_timeout_ms", static_cast<std::int64_t>(sp->turn_timeout.count()));
      d.set("resumed", true);
      emit("agent.waiting", std::move(d), now_ms);
      continue;
    }
    auto d = step_data(st);
    d.set("reason", why);
    interrupt(std::move(d), now_ms);
  }
}

void machine::interrupt(json::value d, std::int64_t now_ms) {
  // The attempt counts against max_attempts (fewer retries are left for real failures), but a
  // node stop alone never fails a step: it starts again at once, here or on the next owner.
  emit("step.interrupted", std::move(d), now_ms);
}

void machine::start_step(step_state& st, const step_spec& sp, std::int64_t now_ms) {
  auto d = json::value::make_object();
  d.set("step", st.id);
  d.set("attempt", st.attempt + 1);
  auto sent_back = st.reason;  // "sent back by ..." after a loop
  emit("step.started", std::move(d), now_ms);
  if (!is_external(&sp)) return;
  // What the agent needs to know: the goal, how the steps before it ended, why it runs again.
  auto w = step_data(st);
  w.set("turn_timeout_ms", static_cast<std::int64_t>(sp.turn_timeout.count()));
  if (!state_.spec.goal.empty()) w.set("goal", state_.spec.goal);
  w.set("needs", state_.needs_of(sp));
  if (!sent_back.empty()) w.set("sent_back", sent_back);
  if (st.loops) w.set("loops", st.loops);
  emit("agent.waiting", std::move(w), now_ms);
}

std::vector<action> machine::schedule(std::int64_t now_ms, std::int64_t& wake_ms) {
  auto& s = state_;
  std::vector<action> out;
  std::int64_t running = 0;
  for (const auto& st : s.steps) running += st.status == step_status::running;
  // Skipping a step can decide the steps after it, wherever they are in the file: repeat until
  // nothing changes (the graph is acyclic, so this ends).
  for (bool changed = true; changed;) {
    changed = false;
    for (std::size_t i = 0; i < s.steps.size(); ++i) {
      auto& st = s.steps[i];
      if (st.status != step_status::pending) continue;
      const auto& sp = s.spec.steps[i];
      if (st.retry_due_ms > now_ms) {
        wake_ms = std::min(wake_ms, st.retry_due_ms);
        continue;
      }
      bool done = true, failed = false, blocked = false, all_bypassed = !sp.needs.empty();
      std::string culprit, culprit_how;
      for (const auto& n : sp.needs) {
        const auto* ns = s.step(n);
        if (!ns || ns->status == step_status::pending || ns->status == step_status::running) {
          done = false;
          break;
        }
        const auto* nsp = s.spec.step(n);
        bool ok = ns->status == step_status::succeeded || ns->skip == "reused" ||
                  (ns->status == step_status::failed && nsp && nsp->continue_on_error);
        bool bypassed = ns->status == step_status::skipped && ns->skip == "bypassed";
        if (!bypassed) all_bypassed = false;
        if (ok || bypassed) continue;
        if (ns->status == step_status::failed) {
          if (!failed) culprit = n, culprit_how = "failed";
          failed = true;
        } else {
          if (culprit.empty()) culprit = n, culprit_how = "was skipped";
          blocked = true;
        }
      }
      if (!done) continue;
      std::string skip, why;
      // An attempt after a failure or an interruption was decided when its need ended.
      if (st.failures == 0) {
        switch (sp.when) {
          case run_when::success:
            if (failed || blocked)
              skip = "blocked", why = "needs " + culprit + ", which " + culprit_how;
            else if (all_bypassed)
              skip = "bypassed", why = "nothing it needs ran";
            break;
          case run_when::failure:
            if (failed) break;
            if (blocked)
              skip = "blocked", why = "needs " + culprit + ", which " + culprit_how;
            else
              skip = "bypassed", why = "when = \"failure\": every step it needs succeeded";
            break;
          case run_when::always:
            break;
        }
      }
      if (!skip.empty()) {
        json::value d = json::value::make_object();
        d.set("step", st.id);
        d.set("skip", skip);
        d.set("reason", why);
        emit("step.skipped", std::move(d), now_ms);
        changed = true;
        continue;
      }
      if (running >= s.spec.max_parallel) continue;  // an ending step pumps again
      start_step(st, sp, now_ms);
      ++running;
      if (!is_external(&sp))
        out.push_back(action{.what = action::kind::launch, .step = st.id, .attempt = st.attempt});
    }
  }
  return out;
}

std::string machine::unhandled_failure(std::string* step) const {
  const auto& s = state_;
  for (std::size_t i = 0; i < s.steps.size(); ++i) {
    const auto& st = s.steps[i];
    if (st.status != step_status::failed || s.spec.steps[i].continue_on_error) continue;
    // Handled: a step that runs on its failure (when = "failure") did run.
    bool handled = false;
    for (std::size_t j = 0; j < s.steps.size() && !handled; ++j) {
      const auto& h = s.spec.steps[j];
      if (h.when != run_when::failure ||
          std::find(h.needs.begin(), h.needs.end(), st.id) == h.needs.end())
        continue;
      handled =
          s.steps[j].status == step_status::succeeded || s.steps[j].status == step_status::failed;
    }
    if (handled) continue;
    if (step) *step = st.id;
    std::string why = "step " + st.id + " failed";
    if (st.attempt > 1 && st.failures > 1)
      why += " after " + std::to_string(st.failures) + " attempts";
    return why + ": " + st.reason;
  }
  return {};
}

std::vector<action> machine::advance(std::int64_t now_ms) {
  auto& s = state_;
  if (s.status.empty() || is_terminal(s.status)) return {};
  if (s.status == "pending") {
    json::value d = json::value::make_object();
    d.set("node", owner_node_);
    d.set("epoch", owner_epoch_);
    emit("session.started", std::move(d), now_ms);
    if (!s.spec.start_at.empty()) {
      // `berth session retry --from`: what the step needs was done by the earlier run.
      for (int i : ancestors(s.spec, s.spec.index_of(s.spec.start_at))) {
        json::value r = json::value::make_object();
        r.set("step", s.steps[static_cast<std::size_t>(i)].id);
        r.set("skip", "reused");
        r.set("reason", "done in session " + s.spec.retry_of);
        emit("step.skipped", std::move(r), now_ms);
      }
    }
  }
  std::vector<action> out;
  bool cancel = s.cancel_requested;
  if (cancel || now_ms >= s.deadline_ms()) {
    const std::string why = cancel ? "cancelled" : "session timeout";
    for (auto& st : s.steps) {
      if (st.status != step_status::running) continue;
      if (is_external(s.spec.step(st.id))) {
        attempt_failed(st, step_data(st), why, now_ms, false);
        continue;
      }
      out.push_back(action{
          .what = action::kind::kill, .step = st.id, .attempt = st.attempt, .kill_reason = why});
    }
    if (!out.empty()) return out;  // their ends pump again
    for (auto& st : s.steps) {
      if (st.status != step_status::pending) continue;
      json::value d = json::value::make_object();
      d.set("step", st.id);
      d.set("skip", "cancelled");
      d.set("reason", cancel ? "session cancelled" : "session timed out");
      emit("step.skipped", std::move(d), now_ms);
    }
    if (cancel) {
      finish("cancelled", "cancelled by request", now_ms);
    } else {
      auto why = "session timeout of " + format_duration(millis(s.timeout_ms)) + " reached";
      // A retry whose delay reached past the deadline waited for it: say so.
      for (const auto& st : s.steps)
        if (st.retry_due_ms > s.deadline_ms()) {
          why += " while step " + st.id + " waited for its retry (due " +
                 format_duration(millis(st.retry_due_ms - s.deadline_ms())) +
                 " after the deadline)";
          break;
        }
      finish("timed_out", why, now_ms);
    }
    return {};
  }
  if (s.has_repo() && !s.workspace_ready()) return {action{.what = action::kind::prepare}};
  std::int64_t wake = s.deadline_ms();
  // External agents: the step's own timeout and the agent's turn.
  for (std::size_t i = 0; i < s.steps.size(); ++i) {
    auto& st = s.steps[i];
    const auto& sp = s.spec.steps[i];
    if (st.status != step_status::running || !is_external(&sp)) continue;
    if (sp.timeout && st.started_ms + sp.timeout->count() <= now_ms) {
      attempt_failed(st, step_data(st), "timed out after " + format_duration(*sp.timeout), now_ms,
                     true);
    } else if (st.turn_due_ms && st.turn_due_ms <= now_ms) {
      attempt_failed(st, step_data(st),
                     "agent turn timeout: no tool call or agent_done within " +
                         format_duration(sp.turn_timeout),
                     now_ms, true);
    } else {
      if (sp.timeout) wake = std::min(wake, st.started_ms + sp.timeout->count());
      if (st.turn_due_ms) wake = std::min(wake, st.turn_due_ms);
    }
  }
  auto launches = schedule(now_ms, wake);
  bool active = false, open = false, retry_wait = false;
  for (const auto& st : s.steps) {
    active = active || st.status == step_status::running;
    open = open || st.status == step_status::pending;
    // A retry due at or after the deadline: the session waits for the deadline and times out.
    retry_wait = retry_wait || (st.status == step_status::pending && st.retry_due_ms > now_ms);
  }
  if (!active && !open) {
    std::string step;
    auto why = unhandled_failure(&step);
    if (why.empty())
      finish("succeeded", "", now_ms);
    else
      finish("failed", why, now_ms, step);
    return {};
  }
  if (!active && launches.empty() && !retry_wait) {
    // Pending steps that nothing can start: a scheduler bug, never the user's spec (it was
    // checked for cycles). End the session with the reason rather than hang it.
    finish("failed", "internal error: steps are pending but none can start; please report it",
           now_ms);
    return {};
  }
  out = std::move(launches);
  out.push_back(action{.what = action::kind::wait_until, .until_ms = wake});
  return out;
}

void machine::step_exited(const std::string& step, std::int64_t attempt, const exit_result& r,
                          std::int64_t now_ms) {
  auto* st = state_.step(step);
  if (!st || st->status != step_status::running || st->attempt != attempt) return;  // stale
  json::value d = json::value::make_object();
  d.set("step", step);
  d.set("attempt", attempt);
  d.set("duration_ms", r.duration_ms);
  if (r.duration_us > 0) d.set("duration_us", r.duration_us);
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
    interrupt(std::move(d), now_ms);
    return;
  }
  const auto* sp = state_.spec.step(step);
  // A command agent answers "reject" with exit code 3.
  if (sp && sp->kind == step_kind::agent && !r.start_failed && !r.timed_out && !r.signal &&
      r.exit_code == 3 && r.error.empty()) {
    rejected(*st, std::move(d), "", now_ms);
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
  attempt_failed(*st, std::move(d), reason, now_ms, true);
}

void machine::agent_outcome(step_state& st, const std::string& outcome, const std::string& summary,
                            std::int64_t now_ms) {
  auto d = step_data(st);
  d.set("duration_ms", now_ms - st.started_ms);
  if (outcome == "success") {
    d.set("outcome", "success");
    if (!summary.empty()) d.set("summary", summary);
    emit("step.finished", std::move(d), now_ms);
  } else if (outcome == "reject") {
    rejected(st, std::move(d), summary, now_ms);
  } else {
    d.set("outcome", "failure");
    attempt_failed(st, std::move(d),
                   "the agent reported failure" + (summary.empty() ? "" : ": " + summary), now_ms,
                   true);
  }
}

void machine::input(std::uint64_t seq, const json::value& msg, std::int64_t now_ms) {
  if (seq <= state_.last_input_seq) return;  // already applied
  json::value d = json::value::make_object();
  d.set("input_seq", seq);
  // Who sent it, as the gateway that passed it on vouches (a token's name).
  if (auto caller = msg.get_string("caller"); !caller.empty()) d.set("caller", caller);
  std::string type = msg.get_string("type");
  if (type == "cancel") {
    d.set("kind", "cancel");
  } else if (type == "input") {
    d.set("kind", "input");
    if (const auto* data = msg.find("data")) d.set("data", *data);
  } else if (type == "start") {
    // A repeated start (idempotent retry) landing on the same subject: nothing to do.
    d.set("kind", "duplicate_start");
  } else if (type == "agent_done") {
    d.set("kind", "agent_done");
    auto outcome = msg.get_string("outcome");
    auto want = msg.get_string("step");
    const auto* summary = msg.find("summary");
    std::string why;
    step_state* target = nullptr;
    std::vector<std::string> waiting;
    for (std::size_t i = 0; i < state_.steps.size(); ++i)
      if (state_.steps[i].status == step_status::running && is_external(&state_.spec.steps[i]))
        waiting.push_back(state_.steps[i].id);
    if (outcome != "success" && outcome != "failure" && outcome != "reject") {
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
      emit("input.applied", std::move(d), now_ms);
      agent_outcome(*target, outcome, sum, now_ms);
      return;
    }
    if (!why.empty()) {
      d.set("kind", "rejected");
      d.set("reason", why);
    }
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
