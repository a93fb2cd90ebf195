#pragma once

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/base/time.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace berth::core {

/// How a failed step is tried again.
struct retry_policy {
  std::int64_t max_attempts =
      1;                 ///< attempts allowed in all, interrupted ones included (1: no retry)
  millis backoff{1000};  ///< delay before the 2nd attempt; doubles each time
  millis max_backoff{60'000};
  bool jitter = false;  ///< draw each delay from [delay/2, delay] (spreads a thundering herd)
};

/// When a step runs, given how the steps it needs ended (docs/workflows.md).
/// success: every need succeeded; failure: at least one failed; always: all ended, any way.
enum class run_when { success, failure, always };
[[nodiscard]] const char* to_string(run_when w);

/// What a step does. `run`: a command in the sandbox. `setup`: detect the project's toolchains
/// and fetch its dependencies, in the sandbox. `commit`, `push`, `pull_request`: git and forge
/// operations the node performs on the session's workspace (docs/workflows.md).
/// `agent`: an agent works on the goal, either an external program driving the session over NATS
/// with tool calls (`agent.mode = "external"`) or an agent CLI run in the sandbox (`"command"`).
enum class step_kind { run, setup, commit, push, pull_request, agent };
[[nodiscard]] const char* to_string(step_kind k);

struct step_spec {
  std::string id;
  step_kind kind = step_kind::run;
  std::vector<std::string> run;  ///< argv; argv[0] looked up in PATH (run; setup: optional,
                                 ///< instead of detection)
  std::optional<millis> timeout;
  retry_policy retry;
  std::map<std::string, std::string> env;
  std::string network;  ///< "none" | "host"; empty: the session's
  std::string message;  ///< commit: the commit message
  std::string title;    ///< pull_request
  std::string body;     ///< pull_request
  std::string forge;    ///< pull_request: "github" | "gitlab" | "none"
  /// The steps this one waits for. Absent in the spec: the step before it in the file (so a plain
  /// list runs in order); `needs = []`: none, a root. Resolved at parse time.
  std::vector<std::string> needs;
  bool needs_given = false;  ///< `needs` was written in the spec
  run_when when = run_when::success;
  bool continue_on_error = false;  ///< a failure counts as success for the steps that need it
  std::string on_reject_goto;      ///< agent steps: on "reject", run this step again (a back edge)
  std::int64_t max_loops = 0;      ///< how many times on_reject may send work back
  std::string agent_mode;          ///< agent steps: "external" | "command"
  std::vector<std::string> agent_run;  ///< agent.mode = "command": argv, {goal}... substituted
  millis turn_timeout{std::chrono::minutes(10)};  ///< external: the agent's time per turn
};

/// Whether `sp` is an agent step driven over NATS by an external program (agent.mode =
/// "external"): nothing of it runs on the node. False for null.
[[nodiscard]] bool is_external(const step_spec* sp);

/// A validated session spec: what a client asked for.
struct session_spec {
  std::string id;
  std::string repo;         ///< clone URL (https://, http://, file://); empty: a scratch workspace
  std::string ref;          ///< branch, tag or commit; empty: the remote's default branch
  std::string branch;       ///< the session's branch; empty: berth/<short session id>
  bool submodules = false;  ///< initialise and clone the repo's submodules (one level)
  std::string goal;
  std::optional<millis> timeout;  ///< nullopt: the node's session.default_timeout
  std::int64_t priority = 5;      ///< 0..9, higher placed first
  std::string network;            ///< "none" | "host"; empty: "none" (sandbox network policy)
  std::int64_t max_parallel = 4;  ///< steps running at once
  std::string retry_of;           ///< `berth session retry`: the session this one runs again
  std::string start_at;           ///< with retry_of: the steps this one needs count as done there
  std::vector<step_spec> steps;
  /// id -> index into `steps`, built by parse_spec (a 1,000-step graph is looked up often).
  std::unordered_map<std::string, int> step_index;

  /// The step with this id, or null.
  [[nodiscard]] const step_spec* step(const std::string& id) const;
  /// Index of the step with this id, or -1.
  [[nodiscard]] int index_of(const std::string& id) const;
};

/// The keys a spec and a step accept (the workflow loader's line:column errors use them).
[[nodiscard]] const std::vector<std::string>& session_keys();
[[nodiscard]] const std::vector<std::string>& step_keys();

/// Limits applied at validation.
struct spec_limits {
  std::int64_t max_spec_bytes = std::int64_t{256} << 10;
  std::size_t max_steps = 1000;
  std::size_t max_argv = 4096;
  std::int64_t max_loops = 100;
};

/// Every step `from` needs, directly or not (not `from` itself), as indexes into spec.steps.
[[nodiscard]] std::vector<int> ancestors(const session_spec& spec, int from);
/// Every step that needs `from`, directly or not, and `from` itself.
[[nodiscard]] std::vector<int> descendants(const session_spec& spec, int from);

/// Whether `url` names a remote Berth can clone: https://, http:// or file:// with a host part
/// and a path, no credentials in it, no white space. The error names `field`.
[[nodiscard]] status validate_repo_url(const std::string& url, const std::string& field);

/// Whether `name` is a safe branch name (git's check-ref-format rules, stricter). The error
/// names `field`.
[[nodiscard]] status validate_branch(const std::string& name, const std::string& field);

/// The session branch: `spec.branch`, else berth/<the session id's last 10 characters>.
[[nodiscard]] std::string session_branch(const session_spec& spec, const std::string& session);

/// Validate a spec given as JSON. Every error names the field ("steps[2].run: must not be
/// empty"). Unknown fields are errors.
[[nodiscard]] result<session_spec> parse_spec(const json::value& v, const spec_limits& limits = {});

/// The canonical JSON form of a spec (what is stored in the journal).
[[nodiscard]] json::value to_json(const session_spec& s);

}  // namespace berth::core
