#pragma once

// The blocking work behind a session's workspace and credentials: cloning, checkpoints, git
// steps, setup detection, lease minting, renewal and revocation. Plain functions run on the
// node's I/O pool; the session actor journals what they report. No CAF here.

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/core/machine.hpp"
#include "berth/lease/provider.hpp"
#include "berth/session/runtime.hpp"
#include "berth/setup/cache.hpp"
#include "berth/setup/plan.hpp"

#include <atomic>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace berth::session::wsops {

/// A fact for the journal: (event type, data).
using note = std::pair<std::string, json::value>;

struct outcome {
  std::vector<note> notes;              ///< in order
  std::vector<lease::grant> grants;     ///< the live grants afterwards
  std::optional<error> failure;         ///< the session fails with this
  core::exit_result exit;               ///< git steps: how the step ended
  std::optional<json::value> ready;     ///< prepare: the workspace.ready data
  std::vector<std::string> still_live;  ///< revoke_all: leases whose revocation failed
};

/// Where session `id` keeps its workspace (the sandbox's /work).
[[nodiscard]] std::string workdir(const runtime& rt, const std::string& id);

/// Where session `id` keeps its home (the sandbox's /home/berth): tool state and dependency
/// caches, outside the workspace, removed with the session.
[[nodiscard]] std::string homedir(const runtime& rt, const std::string& id);

/// Whether `url` may be cloned by this node: file:// only inside workspace.file_allowlist.
[[nodiscard]] status check_remote(const runtime& rt, const std::string& url);

/// A credential for `url` from the provider whose url_prefix matches it (none: the remote is
/// used without one), unless `grants` holds a live one for it. A new grant goes to the vault
/// first, and is noted as lease.granted.
[[nodiscard]] outcome acquire(runtime& rt, const std::string& session, const std::string& url,
                              std::vector<lease::grant> grants);

/// Update the mirror (with the lease in `grants`, if any), clone the workspace on the session
/// branch, hand it to the sandbox user. With `restore`, the workspace existed on another node:
/// it is rebuilt at the journaled commit, then the journaled branch head and the last
/// checkpoint's files are put back.
[[nodiscard]] outcome prepare(runtime& rt, const core::session_state& st,
                              std::vector<lease::grant> grants, bool restore,
                              const std::atomic<bool>* cancel = nullptr);

/// The disk quota: an error naming workspace.quota_bytes when session `id`'s workspace and home
/// use more (files seeded from the dependency cache not counted). Walks both trees: call it off
/// the actor threads.
[[nodiscard]] status check_quota(const runtime& rt, const std::string& id);

/// After a step or tool call that may have changed files: enforce the disk quota, then record a
/// checkpoint (and push it when a lease allows) of session `id`, and its changes since `base`
/// (the commit the workspace started from) in the berth-diffs bucket; `repo` empty: a scratch
/// workspace, quota only. (Not the whole state: this runs after every step of a graph.)
[[nodiscard]] outcome after_change(runtime& rt, const std::string& id, const std::string& repo,
                                   const std::string& base, std::vector<lease::grant> grants,
                                   const std::string& step,
                                   const std::atomic<bool>* cancel = nullptr);

/// The changes of session `id`'s workspace from `base` to `commit` as the berth-diffs bucket
/// and `session.diff` hold them: {session, base, commit, step, at, files, additions,
/// deletions, patch, truncated}.
[[nodiscard]] result<json::value> describe_changes(const std::string& dir, const std::string& id,
                                                   const std::string& base,
                                                   const std::string& commit,
                                                   const std::string& step);

/// Run a commit, push or pull_request step.
[[nodiscard]] outcome git_step(runtime& rt, const core::session_state& st,
                               std::vector<lease::grant> grants, const core::step_spec& spec,
                               const std::atomic<bool>* cancel = nullptr);

/// The setup step: what the workspace holds, and the command that sets it up in the sandbox
/// (sh -c with the detected tool chains' commands). details: {"detected": [...], "ran": [...]}.
/// A setup step in flight: its plan, and what the dependency cache did for it.
struct setup_job {
  setup::plan plan;
  std::vector<std::string> run;   ///< the step's explicit command (empty: detected)
  std::vector<std::string> argv;  ///< the script that runs the plan in the sandbox
  std::string workspace, home;    ///< host paths
  bool network = false;
  std::vector<std::string> npm_config;  ///< npm settings in effect ("name=value", env and config)
  json::value cache;              ///< the cache report (seed, then promote); null without a cache
  std::vector<setup::ran> ran;    ///< how each planned command ended (the script's report)
  int npm_step = -1;              ///< the plan's `npm ci`, when it has one
  setup::npm_tree tree;           ///< the installed tree that npm ci makes, when the node can
  setup::tree_use tree_use;       ///< what the store's trees did for this step
  int pip_step = -1;              ///< the plan's pip install of a requirements.txt, when it has one
  setup::pip_pins pip;            ///< what that requirements.txt pins
  std::vector<setup::go_pin> go;  ///< what go.sum pins, when the plan runs go mod download
  std::vector<setup::crate_pin> crates;  ///< what Cargo.lock pins, when the plan runs cargo fetch
};

/// Plan a setup step of session `id` (`run`: its explicit command, or empty to detect; `env`:
/// the step's own environment) and keep what it creates out of commits. Reads a few files:
/// cheap enough for the actor.
[[nodiscard]] setup_job plan_setup(const runtime& rt, const std::string& id,
                                   const std::vector<std::string>& run,
                                   const std::map<std::string, std::string>& env, bool network);

/// Before the setup command starts (a blocking thread): seed the session's package-manager
/// caches from the node's store, restore the installed npm tree when the store has it (then
/// `argv` no longer runs npm ci), and clear an earlier attempt's report.
void begin_setup(const runtime& rt, setup_job& job);

/// After it ended (a blocking thread): add what it fetched to the store, read its report, and
/// after a successful npm ci build the installed tree for the next session.
void end_setup(const runtime& rt, setup_job& job);

/// The journal's details of the ended step in `x` (detected, plan, ran, cache) and, when a
/// planned command failed, the reason naming it.
void describe_setup(const setup_job& job, core::exit_result& x);

/// Replace grants that expire within `renew_before` with fresh ones (old ones revoked).
[[nodiscard]] outcome renew(runtime& rt, const std::string& session,
                            std::vector<lease::grant> grants);

/// When the next grant should be renewed (unix ms); 0: none expires.
[[nodiscard]] std::int64_t renew_due_ms(const runtime& rt, const std::vector<lease::grant>& grants);

/// The session is over: revoke every grant (removed from the vault once revoked). Leases the
/// journal holds live (`journal_live`: id -> metadata) whose token this node does not hold are
/// noted as not revocable here. Grants that could not be revoked stay in `grants` and
/// `still_live` (retried later).
[[nodiscard]] outcome revoke_all(runtime& rt, const std::string& session,
                                 std::vector<lease::grant> grants, const json::value& journal_live);

/// The session is over: release its sandbox, remove its workspace (workspace.removed) and its
/// home.
[[nodiscard]] outcome remove_workspace(runtime& rt, const core::session_state& st);

/// At node start: remove workspaces and homes of sessions this node does not run (terminal or
/// unknown), given the ids it does run.
void sweep_workspaces(runtime& rt, const std::vector<std::string>& live_sessions);

}  // namespace berth::session::wsops
