#pragma once

// The session actor's state, grouped by concern, and what its files share. One file per
// concern: snapshot.cpp (encode, load, reconcile), commands.cpp (steps' and exec tool calls'
// processes), tools.cpp (tool calls), workspace_jobs.cpp (clone, checkpoint, git steps, the
// lease actor, wrap-up), inputs.cpp (reading and applying inputs), session_actor.cpp (the
// behaviour, the commit and pump()).
//
// The rule that keeps it acyclic: only message handlers (session_actor.cpp) call pump(). The
// helpers start work or record what happened in the machine; the handler that called them, or
// the one their answer arrives in, pumps.

#include "berth/base/log.hpp"
#include "berth/base/time.hpp"
#include "berth/core/machine.hpp"
#include "berth/lease/provider.hpp"
#include "berth/protocol/atoms.hpp"
#include "berth/protocol/blocking.hpp"
#include "berth/sandbox/runner.hpp"
#include "berth/session/journal_writer.hpp"
#include "berth/session/lease_actor.hpp"
#include "berth/session/runtime.hpp"
#include "berth/session/session_actor.hpp"
#include "berth/session/workspace_ops.hpp"

#include <caf/all.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace berth::session {

std::shared_ptr<spdlog::logger> session_logger();

// --- commands (commands.cpp) -------------------------------------------------------------------

/// A command's process — a step's or an exec tool call's — shared by the actor and the threads
/// that start it and wait for it: posix_spawn happens on the launcher pool, never on an actor
/// scheduler thread.
struct command_process {
  std::mutex mu;
  std::unique_ptr<sandbox::running_command> cmd;
  bool stop_requested = false;
  millis grace{0};
  std::optional<error> start_error;
  sandbox::outcome result;
  std::optional<error> over_quota;  // a scratch workspace's quota, checked when the command ended
  pid_t pid = -1;
  unsigned long long start_time = 0;
  std::shared_ptr<wsops::setup_job> setup;  // a setup step: seeded before, promoted after

  void stop(millis g);
};

/// A step whose command runs.
struct running_step {
  std::string step;
  std::int64_t attempt = 0;
  std::shared_ptr<command_process> proc;
  core::stop_cause cause = core::stop_cause::none;  // why we stopped it, if we did
  std::string stop_text;                            // the words for it (step.failed's reason)
  pid_t pid = -1;
  unsigned long long start_time = 0;
};

struct commands_state {
  std::map<std::string, running_step> steps;  // by step id
  /// Tool calls started (exec ones with their process, file tools null) until their result.
  std::map<std::string, std::shared_ptr<command_process>> tools;
  bool sandbox_preparing = false;  // the runner builds the new session's sandbox
  std::int64_t tick_ms = 0;        // when the pending tick fires
};

// --- inputs (inputs.cpp) -----------------------------------------------------------------------

struct inputs_state {
  bool reading = false;      // a catch-up read is in flight
  bool read_again = false;   // a wake arrived while it was
  bool caught_up = false;    // the first read is done: pushed inputs may apply at once
  std::uint64_t cursor = 0;  // highest input sequence applied
  std::map<std::uint64_t, std::string> pending;  // by stream sequence
};

// --- workspace and credentials (workspace_jobs.cpp) ----------------------------------------------

struct workspace_state {
  /// The session's lease actor owns its credentials; `grants` is the copy its git jobs use,
  /// updated from each of the lease actor's answers.
  lease_actor lease;
  std::vector<lease::grant> grants;
  /// One job at a time; while it runs nothing else starts, so a checkpoint sees the tree its
  /// step left. Jobs asked for meanwhile (parallel steps end together) start in order.
  bool busy = false;
  std::deque<std::function<void()>> queue;
  /// Set when the session is cancelled, times out or stops while a job runs: a clone, fetch or
  /// push under way is abandoned.
  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
  bool needs_restore = false;  // journaled ready, but the directory is not on this node
};

/// After the terminal event: leases revoked and the workspace removed, then finalize.
struct wrap_up_state {
  bool revoke_asked = false;    // the lease actor is revoking
  bool leases_gone = false;     // every lease revoked
  bool workspace_gone = false;  // workspace removed (workspace.removed noted)
  [[nodiscard]] bool done() const { return leases_gone && workspace_gone; }
};

// --- snapshot (snapshot.cpp) -------------------------------------------------------------------

/// The snapshot's expensive parts, serialized and redacted once: the spec, and each step when
/// it last changed.
struct snapshot_cache {
  std::string spec_text;
  std::vector<std::pair<core::step_state, std::string>> step_texts;
  bool pid_dirty = false;  // a started step's pid is not in RocksDB yet
};

/// What loading a session found (snapshot.cpp, on the I/O pool).
struct load_result {
  std::optional<core::machine> m;
  std::vector<core::event> outbox;
  std::uint64_t journal_seq = 0;
  std::uint64_t epoch = 0;
  std::optional<error> failure;
};

// --- the actor ---------------------------------------------------------------------------------

struct session_state_actor {
  std::shared_ptr<runtime> rt;
  std::string id;
  claim owner;              // placement's claim: the epoch this actor writes under
  std::string fail_reason;  // escalated: record session.failed with it and finish
  std::optional<core::machine> m;
  journal_writer journal;
  // The commit in flight (one at a time) and what to do once it is durable.
  bool committing = false;
  std::vector<core::action> after_commit;
  int publish_failures = 0;
  // Lifecycle.
  bool stopping = false;    // the node stops: no new work, quit once commands ended
  bool finalizing = false;  // ownership released, snapshot and workdir going
  commands_state cmds;
  inputs_state in;
  workspace_state ws;
  wrap_up_state wrap;
  snapshot_cache snap;
  // The session's entry in the berth-sessions bucket (list, stats) as last written, and
  // whether a write is in flight (one at a time, so they land in order).
  std::string indexed_key;
  bool index_busy = false;
  static inline const char* name = "berth.session";
};

using actor_t = caf::stateful_actor<session_state_actor>;

// session_actor.cpp
/// Commit what the machine decided, then act. Called only by message handlers (response
/// handlers included), never by the helpers below.
void pump(actor_t* self);
/// One pending tick at a time: the earliest one wanted.
void schedule_tick(actor_t* self, std::int64_t until_ms);

/// The session's working directory on the node.
[[nodiscard]] std::string workdir(const runtime& rt, const std::string& id);

// snapshot.cpp
/// The snapshot as RocksDB stores it, redacted (the spec spliced in from the cache).
[[nodiscard]] std::string snapshot_text(session_state_actor& s);
/// Load the snapshot (or fold the journal) and reconcile it with the journal tail (I/O pool).
/// `escalated`: rebuild from the journal, whatever the snapshot says.
[[nodiscard]] load_result load_session(runtime& rt, const std::string& id, const claim& owner,
                                       bool escalated);
/// Write a started step's pid (unsynced), unless a commit is in flight.
void record_pid(actor_t* self);

// commands.cpp
/// Start what a launch action asks for: a step's command in the sandbox, or a git step's job.
void launch_step(actor_t* self, const core::action& a);
/// Start an exec tool call's command.
void start_exec_tool(actor_t* self, const std::string& call_id, const json::value& args);
/// Stop a step's command (cancel, timeout, loop, node stop); `text` defaults to the cause's.
void kill_step(actor_t* self, const std::string& step, core::stop_cause cause,
               std::string text = {});
/// A step's command ended (exited_atom): how, for the machine. Removes it from cmds.steps.
struct step_end {
  core::exit_result exit;
  std::optional<error> over_quota;
};
[[nodiscard]] std::optional<step_end> take_step_end(actor_t* self, const std::string& step,
                                                    std::int64_t attempt);

// tools.cpp
/// Run the next tool call journaled as running, if none runs.
void dispatch_tools(actor_t* self);
/// A tool's error answer ({"ok": false, "code", "error"}).
[[nodiscard]] json::value tool_error(const error& e);
/// A result too large for the journal goes to the call's BERTH_LOG subject (a blocking
/// publish: call on a pool thread).
[[nodiscard]] json::value offload(runtime& rt, const std::string& session,
                                  const std::string& call_id, json::value result);
/// Whether a finished call of `tool` may have changed the workspace.
[[nodiscard]] bool tool_changes_files(const std::string& tool);

// workspace_jobs.cpp
/// Clone (or restore) the workspace, its credential first.
void start_prepare(actor_t* self, bool restore);
/// After a step or tool call that may have changed files: quota, then checkpoint. `exit`: the
/// step's end, reported to the machine when the checkpoint is done.
void start_after_change(actor_t* self, const std::string& what,
                        std::optional<std::pair<std::string, core::exit_result>> exit,
                        std::int64_t attempt);
/// A git step (commit, push, pull_request) as a workspace job.
void start_git_step(actor_t* self, const core::action& a, const core::step_spec& spec);
/// The session is over: revoke its leases and remove its workspace.
void start_wrap_up(actor_t* self);
/// Journal what the lease actor reports and keep its grants.
void take_lease_answer(actor_t* self, const lease_answer& a);

// inputs.cpp
/// Read the inputs after the cursor (catch-up after load or a wake).
void read_inputs(actor_t* self);
/// Apply buffered inputs in stream order when nothing older can still be unseen. Returns
/// whether any reached the machine (the caller's handler pumps).
bool drain_inputs(actor_t* self);

}  // namespace berth::session
