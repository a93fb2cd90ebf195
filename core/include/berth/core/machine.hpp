#pragma once

// The deciding machine: folds journal events into a session_state (fold.cpp), decides the next
// events and what the owner must do (decide.cpp), and validates inputs (inputs.cpp). Pure: no
// I/O, no clock of its own.

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/core/events.hpp"
#include "berth/core/spec.hpp"
#include "berth/core/state.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace berth::core {

/// How a step's command ended.
struct exit_result {
  int exit_code = -1;
  int signal = 0;
  bool start_failed = false;  ///< could not be started (e.g. no such binary)
  bool timed_out = false;
  bool interrupted = false;  ///< stopped by a node shutdown
  std::string error;
  std::int64_t duration_ms = 0;
  std::int64_t duration_us = 0;  ///< 0: not measured (git steps)
  bool truncated = false;
  bool oom_killed = false;  ///< the sandbox's memory limit was hit
  std::int64_t peak_memory_bytes = 0;
  json::value details;  ///< an object: merged into step.finished / step.failed (git steps, setup)
  [[nodiscard]] bool success() const {
    return !start_failed && !timed_out && !interrupted && signal == 0 && exit_code == 0;
  }
};

/// Why the owner stops a step's command before it ends by itself. The machine decides the
/// first two (kill actions); the owner stops a step whose own timeout passed, one a loop sent
/// back, and every step when its node stops.
enum class stop_cause { none, cancelled, session_timeout, step_timeout, sent_back, node_stop };
/// The words journaled for it (step.failed's reason): "cancelled", "session timeout", ...
[[nodiscard]] const char* to_string(stop_cause c);

/// What the owner should do after `advance`.
struct action {
  /// launch: start the step's command (or git job). kill: stop the step's command, if it runs.
  /// wait_until: call advance() again at until_ms at the latest. prepare: clone the session's
  /// workspace (and lease its credential); report with workspace_ready() or fail().
  enum class kind { idle, launch, kill, wait_until, prepare } what = kind::idle;
  std::string step;
  std::int64_t attempt = 0;
  std::int64_t until_ms = 0;
  stop_cause cause = stop_cause::none;  ///< kill: why
};

/// The session's logic as a pure state machine: it folds events into state and decides the
/// next events. No I/O, no clocks of its own (callers pass `now_ms`), so a resumed session
/// decides exactly what the original would have.
class machine {
 public:
  explicit machine(std::string id, std::int64_t default_timeout_ms = 3'600'000);
  explicit machine(session_state s, std::int64_t default_timeout_ms = 3'600'000);

  [[nodiscard]] const session_state& state() const { return state_; }

  /// Fold one journal event; it must be number n+1 (contiguity is checked).
  [[nodiscard]] status apply(const event& e);

  /// Events emitted since the last call (in order), for the outbox.
  [[nodiscard]] std::vector<event> take_emitted();
  /// Whether events were emitted since the last take_emitted().
  [[nodiscard]] bool has_emitted() const { return !emitted_.empty(); }

  /// After a restart or takeover: a step that was running is recorded as interrupted.
  void resume(std::int64_t now_ms, const std::string& why);
  /// Decide what happens next; may emit events (session.started, step.started, step.skipped,
  /// terminal). Every step the graph allows starts, up to max_parallel at once; the actions say
  /// what the owner must do (at most one wait_until, the earliest).
  [[nodiscard]] std::vector<action> advance(std::int64_t now_ms);
  /// A step's command ended.
  void step_exited(const std::string& step, std::int64_t attempt, const exit_result& r,
                   std::int64_t now_ms);
  /// An input message from berth.in.<id> (stream sequence `seq`). Bad inputs are journaled
  /// as rejected, never dropped silently.
  void input(std::uint64_t seq, const json::value& msg, std::int64_t now_ms);
  /// A tool call ended: `result` is the tool's answer ({"ok": true, ...} or {"ok": false,
  /// "error", "code"}). Ignored unless the call is running.
  void tool_finished(const std::string& call_id, json::value result, std::int64_t now_ms);
  /// The workspace is cloned and checked out (workspace.ready with `data`): steps may run.
  void workspace_ready(json::value data, std::int64_t now_ms);
  /// Record a fact about the workspace or its credentials: workspace.checkpointed|removed,
  /// lease.granted|renewed|revoked, git.committed|pushed, pr.opened. Allowed after the session
  /// ended too (a lease is revoked and the workspace removed after the terminal event).
  void note(const std::string& type, json::value data, std::int64_t now_ms);
  /// Escalation from the supervisor: fail the session with `reason`.
  void fail(const std::string& reason, std::int64_t now_ms);
  /// Record ownership (session.started carries it).
  void set_owner(const std::string& node, std::uint64_t epoch);

 private:
  void emit(const std::string& type, json::value data, std::int64_t now_ms);
  void finish(const std::string& status, const std::string& reason, std::int64_t now_ms,
              const std::string& step = {});
  /// An attempt of `st` ended badly: retry it under its policy, or leave it failed.
  void attempt_failed(step_state& st, json::value d, const std::string& reason, std::int64_t now_ms,
                      bool retryable);
  /// An attempt was cut short by a node stop (`d`: step, attempt, reason): journaled, and the
  /// step started again.
  void interrupt(json::value d, std::int64_t now_ms);
  /// The agent of `st` rejected the work: send it back (on_reject) or fail the step.
  void rejected(step_state& st, json::value d, const std::string& summary, std::int64_t now_ms);
  /// An agent step's outcome from agent_done.
  void agent_outcome(step_state& st, const std::string& outcome, const std::string& summary,
                     std::int64_t now_ms);
  /// Start the steps the graph allows; skip the ones it rules out. Returns launches.
  std::vector<action> schedule(std::int64_t now_ms, std::int64_t& wake_ms);
  void start_step(step_state& st, const step_spec& sp, std::int64_t now_ms);
  [[nodiscard]] std::string unhandled_failure(std::string* step) const;

  session_state state_;
  std::int64_t default_timeout_ms_;
  std::vector<event> emitted_;
  std::string owner_node_;
  std::uint64_t owner_epoch_ = 0;
};

}  // namespace berth::core
