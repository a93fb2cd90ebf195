#pragma once

// The journal's vocabulary: the event envelope, every event type, and the session states.
// Everything that reads or writes a journal (the machine, the CLI, the gateway, the bench)
// names them through these constants, never through string literals of its own.

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace berth::core {

/// One journal entry (docs/events.md): `{"session", "n", "type", "ts", "data"}`.
struct event {
  std::string session;
  std::int64_t n = 0;  ///< 1, 2, 3, ... without gaps
  std::string type;    ///< one of ev::
  std::int64_t ts_ms = 0;
  json::value data;

  [[nodiscard]] json::value envelope() const;
  [[nodiscard]] static result<event> from_envelope(const json::value& v);
};

/// Event types, as journaled. Adding one is a format change: readers of an older release
/// record an unknown type and fold nothing from it.
namespace ev {
// The session's life.
inline constexpr char session_accepted[] = "session.accepted";  ///< event 1: the spec
inline constexpr char session_started[] = "session.started";    ///< node, epoch
inline constexpr char session_waiting[] = "session.waiting";
inline constexpr char session_succeeded[] = "session.succeeded";
inline constexpr char session_failed[] = "session.failed";  ///< reason, step
inline constexpr char session_cancelled[] = "session.cancelled";
inline constexpr char session_timed_out[] = "session.timed_out";
// Steps.
inline constexpr char step_started[] = "step.started";
inline constexpr char step_finished[] = "step.finished";
inline constexpr char step_failed[] = "step.failed";
inline constexpr char step_retrying[] = "step.retrying";
inline constexpr char step_interrupted[] = "step.interrupted";
inline constexpr char step_skipped[] = "step.skipped";
inline constexpr char step_rejected[] = "step.rejected";  ///< an agent sent work back
inline constexpr char agent_waiting[] = "agent.waiting";  ///< an external agent's turn
// Inputs and tool calls.
inline constexpr char input_applied[] = "input.applied";
inline constexpr char tool_call[] = "tool.call";
inline constexpr char tool_result[] = "tool.result";
inline constexpr char tool_interrupted[] = "tool.interrupted";
// The workspace, its credentials, and what left the node.
inline constexpr char workspace_ready[] = "workspace.ready";
inline constexpr char workspace_checkpointed[] = "workspace.checkpointed";
inline constexpr char workspace_restored[] = "workspace.restored";
inline constexpr char workspace_removed[] = "workspace.removed";
inline constexpr char lease_granted[] = "lease.granted";
inline constexpr char lease_renewed[] = "lease.renewed";
inline constexpr char lease_revoked[] = "lease.revoked";
inline constexpr char git_committed[] = "git.committed";
inline constexpr char git_pushed[] = "git.pushed";
inline constexpr char pr_opened[] = "pr.opened";
}  // namespace ev

/// Session states (`session_state::status`, `session show`, the sessions bucket). "" means not
/// accepted yet. `retrying` is a phase only (session_state::phase), never a status.
namespace states {
inline constexpr char pending[] = "pending";
inline constexpr char running[] = "running";
inline constexpr char waiting[] = "waiting";
inline constexpr char retrying[] = "retrying";
inline constexpr char succeeded[] = "succeeded";
inline constexpr char failed[] = "failed";
inline constexpr char cancelled[] = "cancelled";
inline constexpr char timed_out[] = "timed_out";
}  // namespace states

/// The terminal states, in the order docs list them.
inline constexpr const char* terminal_states[] = {states::succeeded, states::failed,
                                                  states::cancelled, states::timed_out};
/// Whether `status` is one of terminal_states.
[[nodiscard]] bool is_terminal(std::string_view status);
/// The event type that ends a session in terminal state `status` ("failed" -> session.failed).
[[nodiscard]] std::string terminal_event(std::string_view status);
/// Whether `type` is a terminal session event (session.succeeded|failed|cancelled|timed_out).
[[nodiscard]] bool is_terminal_event(std::string_view type);

}  // namespace berth::core
