#pragma once

// The folded state of one session: what its journal says, as the machine (machine.hpp) and
// every reader of a journal (session show, the gateway's feed) see it, and its snapshot form.

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/core/events.hpp"
#include "berth/core/spec.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace berth::core {

/// A tool call's state in session_state::tool_calls (and in snapshots).
namespace tool_states {
inline constexpr char running[] = "running";
inline constexpr char done[] = "done";
inline constexpr char interrupted[] = "interrupted";
}  // namespace tool_states

/// Why a step was skipped (step_state::skip, step.skipped's "skip").
namespace skips {
inline constexpr char blocked[] = "blocked";  ///< a need failed or was blocked
inline constexpr char bypassed[] =
    "bypassed";                             ///< its `when` did not hold, or nothing it needs ran
inline constexpr char reused[] = "reused";  ///< done in the session this one retries
inline constexpr char cancelled[] = "cancelled";
}  // namespace skips

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

/// The folded state of one session.
struct session_state {
  std::string id;
  session_spec spec;
  json::value spec_json;
  std::string status;  ///< one of states::, "" before session.accepted
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
  /// Tool calls by call_id: tool_states::running (tool.call journaled, no result yet), done,
  /// interrupted (the node stopped while it ran; never run again).
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

}  // namespace berth::core
