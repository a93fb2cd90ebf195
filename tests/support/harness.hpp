#pragma once

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/fixtures/git_server.hpp"
#include "berth/fixtures/node_process.hpp"
#include "berth/fixtures/npm_registry.hpp"
#include "berth/fixtures/scratch_dir.hpp"

#include <sys/types.h>

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace berth::test {

/// Throw std::runtime_error with the message of a failed status (test set-up fails loudly).
void check(const status& st);

/// A fresh directory under $TMPDIR (or /tmp) for one test, removed by the destructor.
class temp_dir : public fixtures::scratch_dir {
 public:
  temp_dir() { check(make("berth-test")); }
};

/// A real `nats-server -js` on a random loopback port with its own store dir.
class nats_server {
 public:
  explicit nats_server(const std::string& dir);
  ~nats_server();
  void start(int port = -1);
  void kill(int sig = 9);
  /// SIGSTOP / SIGCONT: the server keeps its connections but answers nothing meanwhile.
  void pause(bool paused);
  [[nodiscard]] const std::string& url() const { return url_; }
  [[nodiscard]] int port() const { return port_; }

 private:
  std::string dir_;
  pid_t pid_ = -1;
  std::string url_;
  int port_ = -1;
};

/// The fixtures' git server (lighttpd + git http-backend, see berth/fixtures/git_server.hpp);
/// set-up failures throw.
class git_server : public fixtures::git_server {
 public:
  using fixtures::git_server::git_server;
  void start(const std::string& token = {}) { check(fixtures::git_server::start(token)); }
  void start_with_grants() { check(fixtures::git_server::start_with_grants()); }
  void grant(const std::string& token, const std::string& name, std::int64_t expires_unix = 0) {
    check(fixtures::git_server::grant(token, name, expires_unix));
  }
  void revoke(const std::string& token) { check(fixtures::git_server::revoke(token)); }
  void repo(const std::string& name, const std::map<std::string, std::string>& files) {
    check(fixtures::git_server::repo(name, files));
  }
};

/// The fixtures' npm registry (berth/fixtures/npm_registry.hpp); set-up failures throw.
class npm_registry : public fixtures::npm_registry {
 public:
  using fixtures::npm_registry::npm_registry;
  void start() { check(fixtures::npm_registry::start()); }
  void lock(const std::string& project) const { check(fixtures::npm_registry::lock(project)); }
};

/// Write the module zip of example.com/lib v1.0.0 (its go.mod `go_mod` and a lib.go whose
/// Answer() returns 42) to `path`, as a Go module proxy serves it (python3's zipfile).
void write_go_module_zip(const std::string& path, const std::string& go_mod);

/// Run a command to completion (test set-up: git, ...); throws with its output on failure.
std::string run_checked(const std::vector<std::string>& argv, const std::string& cwd = {});

/// What a finished command printed.
struct run_result {
  int code = -1;
  std::string out;
  std::string err;
  [[nodiscard]] std::optional<json::value> json() const;
};

/// Run the berth binary with `args`, capture its output. `env` adds to the environment.
run_result run_berth(const std::vector<std::string>& args,
                     const std::map<std::string, std::string>& env = {},
                     std::chrono::seconds timeout = std::chrono::seconds(120));

/// Write a file.
void write_file(const std::string& path, const std::string& content);

/// A real `berth node` process (berth/fixtures/node_process.hpp) of the berth binary under
/// test; a failed start throws with every log the node wrote.
class node_process : public fixtures::node_process {
 public:
  node_process(std::string data_dir, std::vector<std::string> extra_args = {},
               std::map<std::string, std::string> env = {})
      : fixtures::node_process(
            {BERTH_BINARY, std::move(data_dir), std::move(extra_args), std::move(env)}) {}
  void start() {
    if (auto st = fixtures::node_process::start(); !st)
      throw std::runtime_error(st.err().message + "\n--- every start's log:\n" + log());
  }
  /// CLI arguments that point at this node.
  [[nodiscard]] std::vector<std::string> target() const { return {"--data-dir", data_dir()}; }
};

/// Poll `pred` until it holds or `timeout` passes.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

/// The berth CLI pointed at `node` (its data dir).
run_result cli(const node_process& node, const std::vector<std::string>& args);

/// Start a session from a workflow file with `berth session start`; returns its id, or "" with
/// the CLI's stderr in `*error` when it was refused.
std::string start_session(const node_process& node, const std::string& workflow_file,
                          const std::vector<std::string>& extra = {}, std::string* error = nullptr);

/// A field of `berth session show ID -o json` ("status", "reason", ...); "?" when there is no
/// answer.
std::string session_field(const node_process& node, const std::string& id,
                          const std::string& field);

/// The journal of a session as parsed envelopes (via `berth session events -o jsonl`).
std::vector<json::value> journal(const node_process& node, const std::string& id);

}  // namespace berth::test

namespace berth::test {
/// A workspace with a failing test (calc.sh subtracts), an external agent step to fix it, and a
/// step that checks: what the e2e and browser tests hand to examples/agents/scripted-agent.mjs.
extern const char* const agent_fix_workflow;
/// The scripted agent's arguments that fix it (after --server and --session).
[[nodiscard]] std::vector<std::string> agent_fix_args();

/// Check a session's journal: numbers 1..N without gaps or repeats, at most one result
/// (finished / failed / interrupted) per step attempt, every interrupted attempt followed by a
/// new attempt of that step (unless the session then ended without success), and (if `must_end`) a
/// terminal session event last. Returns the problems found, empty when the journal is sound.
std::string journal_problems(const std::vector<json::value>& events, bool must_end = true);
}  // namespace berth::test
