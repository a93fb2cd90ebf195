#pragma once

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/session/spec.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace berth::session {

/// One journal entry (DESIGN.md "Event envelope").
struct event {
  std::string session;
  std::int64_t n = 0;  ///< 1, 2, 3, ... without gaps
  std::string type;
  std::int64_t ts_ms = 0;
  json::value data;

  [[nodiscard]] json::value envelope() const;
  [[nodiscard]] static result<event> from_envelope(const json::value& v);
};

enum class step_status { pending, running, succeeded, failed, skipped };
[[nodiscard]] const char* to_string(step_status s);

struct step_state {
  std::string id;
  step_status status = step_status::pending;
  std::int64_t attempt = 0;   ///< attempts started so far (every loop and retry included)
  std::int64_t failures = 0;  ///< attempts of this round that failed or were interrupted
  std::int64_t loops = 0;     ///< times this step sent work back (on_reject)
  std::optional<std::int64_t> exit_code;
  std::string reason;
  /// skipped: "blocked" (a need failed or was blocked), "bypassed" (its `when` did not hold, or
  /// nothing it needs ran), "reused" (done in the session this one retries), "cancelled".
  std::string skip;
  std::int64_t retry_due_ms = 0;
  std::int64_t turn_due_ms = 0;  ///< external agent: when its turn times out (0: paused)
  std::int64_t started_ms = 0;
  std::int64_t finished_ms = 0;

  bool operator==(const step_state&) const = default;
  /// Not started, nothing recorded: left out of snapshots (rebuilt from the spec).
  [[nodiscard]] bool pristine() const;
  /// Snapshot form of one step (only the fields that are not zero).
  [[nodiscard]] json::value to_json() const;
};

/// Session states (DESIGN.md).
inline constexpr const char* terminal_states[] = {"succeeded", "failed", "cancelled", "timed_out"};
[[nodiscard]] bool is_terminal(const std::string& status);

/// The folded state of one session.
struct session_state {
  std::string id;
  session_spec spec;
  json::value spec_json;
  std::string status;  ///< "" before session.accepted
  std::int64_t n = 0;
  std::uint64_t accepted_seq = 0;
  std::uint64_t last_input_seq = 0;
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
  std::int64_t timeout_ms = 0;  ///< effective session timeout
  bool cancel_requested = false;
  std::string reason;
  std::string node;
  std::uint64_t epoch = 0;
  std::vector<step_state> steps;
  /// Tool calls by call_id: "running" (tool.call journaled, no result yet), "done",
  /// "interrupted" (the node stopped while it ran; never run again).
  std::map<std::string, std::string> tool_calls;
  /// The arguments of running tool calls (what the owner runs once tool.call is committed).
  std::map<std::string, json::value> tool_args;
  /// What the journal says of the workspace and its credentials (folded from workspace.*,
  /// lease.*, git.* and pr.* events): "ready", "commit" (checked out), "branch", "base",
  /// "checkpoint", "head" (last git.committed), "pushed", "pr_url", "removed", and "leases"
  /// (lease id -> metadata, live ones only).
  json::value ws = json::value::make_object();

  [[nodiscard]] bool has_repo() const { return !spec.repo.empty(); }
  [[nodiscard]] bool workspace_ready() const { return ws.get_bool("ready"); }
  [[nodiscard]] std::vector<std::string> live_leases() const;

  /// The step that made the session fail (the dead-letter view), if one did.
  std::string failed_step;

  [[nodiscard]] std::int64_t deadline_ms() const { return created_ms + timeout_ms; }
  [[nodiscard]] step_state* step(const std::string& id);
  [[nodiscard]] const step_state* step(const std::string& id) const;
  [[nodiscard]] std::vector<const step_state*> running_steps() const;
  /// Where the session is, for queue statistics: its status, or for a running session
  /// "waiting" (only external agents are at work, waiting for their input) or "retrying" (only
  /// steps waiting out a retry delay).
  [[nodiscard]] std::string phase() const;
  /// How each step `sp` needs stands: [{step, status, reason}] (agent.waiting, $BERTH_CONTEXT).
  [[nodiscard]] json::value needs_of(const step_spec& sp) const;
  /// The session's entry in the berth-sessions bucket: status (its phase), priority, reason,
  /// failed_step, retry_of, created_at, updated_at. What `session list` and `stats` read.
  [[nodiscard]] json::value queue_entry() const;
  /// `berth session show` summary.
  [[nodiscard]] json::value summary() const;
  /// Snapshot form (RocksDB) and back. Without the spec or the steps (`with_spec`,
  /// `with_steps` false), from_json needs them passed as `spec` and `steps`: the session actor
  /// serializes the spec once and each step only when it changed.
  [[nodiscard]] json::value to_json(bool with_spec = true, bool with_steps = true) const;
  [[nodiscard]] static result<session_state> from_json(const json::value& v,
                                                       const json::value* spec = nullptr,
                                                       const json::value* steps = nullptr);
};

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

/// What the owner should do after `advance`.
struct action {
  /// launch: start the step's command (or git job). kill: stop the step's command, if it runs.
  /// wait_until: call advance() again at until_ms at the latest. prepare: clone the session's
  /// workspace (and lease its credential); report with workspace_ready() or fail().
  enum class kind { idle, launch, kill, wait_until, prepare } what = kind::idle;
  std::string step;
  std::int64_t attempt = 0;
  std::int64_t until_ms = 0;
  std::string kill_reason;
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

}  // namespace berth::session
