#include "berth/base/time.hpp"
#include "berth/core/inputs.hpp"
#include "berth/core/machine.hpp"

#include <algorithm>

namespace berth::core {

const char* to_string(stop_cause c) {
  switch (c) {
    case stop_cause::none:
      return "";
    case stop_cause::cancelled:
      return "cancelled";
    case stop_cause::session_timeout:
      return "session timeout";
    case stop_cause::step_timeout:
      return "timed out";
    case stop_cause::sent_back:
      return "sent back by a loop";
    case stop_cause::node_stop:
      return "node shutting down";
  }
  return "?";
}

void machine::finish(const std::string& status, const std::string& reason, std::int64_t now_ms,
                     const std::string& step) {
  json::value d = json::value::make_object();
  if (!reason.empty()) d.set("reason", reason);
  if (!step.empty()) d.set("step", step);
  emit(terminal_event(status), std::move(d), now_ms);
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
  emit(ev::step_failed, std::move(d), now_ms);
  if (state_.cancel_requested || now_ms >= state_.deadline_ms()) return;  // advance() ends it
  const auto* sp = state_.spec.step(st.id);
  if (!retryable || !sp || st.failures >= sp->retry.max_attempts) return;
  auto delay = sp->retry.backoff.count();
  for (std::int64_t i = 1; i < st.failures && delay < sp->retry.max_backoff.count(); ++i)
    delay *= 2;
  delay = std::min(delay, static_cast<std::int64_t>(sp->retry.max_backoff.count()));
  if (sp->retry.jitter) {
    const auto half = delay / 2;  // at least half the delay, the rest drawn
    delay = half + static_cast<std::int64_t>(static_cast<double>(delay - half) *
                                             jitter_draw(state_.id, st.id, st.attempt));
  }
  json::value rd = json::value::make_object();
  rd.set("step", st.id);
  rd.set("attempt", st.attempt + 1);
  rd.set("delay_ms", delay);
  rd.set("reason", reason);
  emit(ev::step_retrying, std::move(rd), now_ms);
}

void machine::rejected(step_state& st, json::value d, const std::string& summary,
                       std::int64_t now_ms) {
  const auto* sp = state_.spec.step(st.id);
  d.set("outcome", "reject");
  if (!summary.empty()) d.set("summary", summary);
  if (!sp || sp->on_reject_goto.empty()) {
    d.set("reason", "rejected by the agent" + (summary.empty() ? "" : ": " + summary));
    emit(ev::step_failed, std::move(d), now_ms);
    return;
  }
  if (st.loops >= sp->max_loops) {
    d.set("reason", "rejected again after " + std::to_string(st.loops) + " loop(s) back to " +
                        sp->on_reject_goto +
                        "; on_reject.max_loops = " + std::to_string(sp->max_loops) + " reached" +
                        (summary.empty() ? "" : ": " + summary));
    emit(ev::step_failed, std::move(d), now_ms);
    return;
  }
  d.set("goto", sp->on_reject_goto);
  d.set("loop", st.loops + 1);
  d.set("max_loops", sp->max_loops);
  emit(ev::step_rejected, std::move(d), now_ms);
}

void machine::resume(std::int64_t now_ms, const std::string& why) {
  // A tool call that was running when the node stopped is reported, never run again: its
  // effects (a command, a write) may or may not have happened.
  std::vector<std::string> running_tools;
  for (const auto& [id, st] : state_.tool_calls)
    if (st == tool_states::running) running_tools.push_back(id);
  for (const auto& id : running_tools) {
    json::value d = json::value::make_object();
    d.set("call_id", id);
    d.set("reason", why);
    emit(ev::tool_interrupted, std::move(d), now_ms);
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
      emit(ev::agent_waiting, std::move(d), now_ms);
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
  emit(ev::step_interrupted, std::move(d), now_ms);
}

void machine::start_step(step_state& st, const step_spec& sp, std::int64_t now_ms) {
  auto d = json::value::make_object();
  d.set("step", st.id);
  d.set("attempt", st.attempt + 1);
  auto sent_back = st.reason;  // "sent back by ..." after a loop
  emit(ev::step_started, std::move(d), now_ms);
  if (!is_external(&sp)) return;
  // What the agent needs to know: the goal, how the steps before it ended, why it runs again.
  auto w = step_data(st);
  w.set("turn_timeout_ms", static_cast<std::int64_t>(sp.turn_timeout.count()));
  if (!state_.spec.goal.empty()) w.set("goal", state_.spec.goal);
  w.set("needs", state_.needs_of(sp));
  if (!sent_back.empty()) w.set("sent_back", sent_back);
  if (st.loops) w.set("loops", st.loops);
  emit(ev::agent_waiting, std::move(w), now_ms);
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
        bool ok = ns->status == step_status::succeeded || ns->skip == skips::reused ||
                  (ns->status == step_status::failed && nsp && nsp->continue_on_error);
        bool bypassed = ns->status == step_status::skipped && ns->skip == skips::bypassed;
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
              skip = skips::blocked, why = "needs " + culprit + ", which " + culprit_how;
            else if (all_bypassed)
              skip = skips::bypassed, why = "nothing it needs ran";
            break;
          case run_when::failure:
            if (failed) break;
            if (blocked)
              skip = skips::blocked, why = "needs " + culprit + ", which " + culprit_how;
            else
              skip = skips::bypassed, why = "when = \"failure\": every step it needs succeeded";
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
        emit(ev::step_skipped, std::move(d), now_ms);
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
  if (s.status == states::pending) {
    json::value d = json::value::make_object();
    d.set("node", owner_node_);
    d.set("epoch", owner_epoch_);
    emit(ev::session_started, std::move(d), now_ms);
    if (!s.spec.start_at.empty()) {
      // `berth session retry --from`: what the step needs was done by the earlier run.
      for (int i : ancestors(s.spec, s.spec.index_of(s.spec.start_at))) {
        json::value r = json::value::make_object();
        r.set("step", s.steps[static_cast<std::size_t>(i)].id);
        r.set("skip", skips::reused);
        r.set("reason", "done in session " + s.spec.retry_of);
        emit(ev::step_skipped, std::move(r), now_ms);
      }
    }
  }
  std::vector<action> out;
  bool cancel = s.cancel_requested;
  if (cancel || now_ms >= s.deadline_ms()) {
    auto cause = cancel ? stop_cause::cancelled : stop_cause::session_timeout;
    const std::string why = to_string(cause);
    for (auto& st : s.steps) {
      if (st.status != step_status::running) continue;
      if (is_external(s.spec.step(st.id))) {
        attempt_failed(st, step_data(st), why, now_ms, false);
        continue;
      }
      out.push_back(
          action{.what = action::kind::kill, .step = st.id, .attempt = st.attempt, .cause = cause});
    }
    if (!out.empty()) return out;  // their ends pump again
    for (auto& st : s.steps) {
      if (st.status != step_status::pending) continue;
      json::value d = json::value::make_object();
      d.set("step", st.id);
      d.set("skip", skips::cancelled);
      d.set("reason", cancel ? "session cancelled" : "session timed out");
      emit(ev::step_skipped, std::move(d), now_ms);
    }
    if (cancel) {
      finish(states::cancelled, "cancelled by request", now_ms);
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
      finish(states::timed_out, why, now_ms);
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
      finish(states::succeeded, "", now_ms);
    else
      finish(states::failed, why, now_ms, step);
    return {};
  }
  if (!active && launches.empty() && !retry_wait) {
    // Pending steps that nothing can start: a scheduler bug, never the user's spec (it was
    // checked for cycles). End the session with the reason rather than hang it.
    finish(states::failed, "internal error: steps are pending but none can start; please report it",
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
    emit(ev::step_finished, std::move(d), now_ms);
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
  if (outcome == outcomes::success) {
    d.set("outcome", "success");
    if (!summary.empty()) d.set("summary", summary);
    emit(ev::step_finished, std::move(d), now_ms);
  } else if (outcome == outcomes::reject) {
    rejected(st, std::move(d), summary, now_ms);
  } else {
    d.set("outcome", "failure");
    attempt_failed(st, std::move(d),
                   "the agent reported failure" + (summary.empty() ? "" : ": " + summary), now_ms,
                   true);
  }
}

void machine::workspace_ready(json::value data, std::int64_t now_ms) {
  if (is_terminal(state_.status) || state_.workspace_ready()) return;
  emit(ev::workspace_ready, std::move(data), now_ms);
}

void machine::note(const std::string& type, json::value data, std::int64_t now_ms) {
  emit(type, std::move(data), now_ms);
}

void machine::fail(const std::string& reason, std::int64_t now_ms) {
  if (is_terminal(state_.status) || state_.status.empty()) return;
  finish(states::failed, reason, now_ms);
}

}  // namespace berth::core
