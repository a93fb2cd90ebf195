#pragma once

#include "berth/base/json.hpp"

#include <sys/types.h>

#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace berth::test {

/// A fresh directory under $TMPDIR (or /tmp) for one test, removed by the destructor.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
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

/// A smart-HTTP git server like a forge's: lighttpd running `git http-backend` (both from
/// Debian) on a free loopback port, serving the bare repositories under `<dir>/repos`, with
/// push enabled. `repo(name)` creates one with an initial commit on `main`.
class git_server {
 public:
  explicit git_server(const std::string& dir);
  ~git_server();  ///< stops lighttpd
  /// `token` non-empty: every request needs HTTP basic auth as x-access-token:<token>, as a
  /// forge's installation token (the token is granted for every repository).
  void start(const std::string& token = {});
  /// Start with per-repository tokens: a request needs a token grant()ed for its repository.
  void start_with_grants();
  /// Allow `token` for repository `name` ("acme/app"; "*" for all) until `expires_unix` (0:
  /// no expiry). The server reads the grants at every request.
  void grant(const std::string& token, const std::string& name, std::int64_t expires_unix = 0);
  /// Make `token` invalid from the next request on.
  void revoke(const std::string& token);
  /// Create `<name>.git` with one commit on main holding `files` (path -> content).
  void repo(const std::string& name, const std::map<std::string, std::string>& files);
  /// The clone URL of `<name>.git`.
  [[nodiscard]] std::string url(const std::string& name) const;
  [[nodiscard]] std::string repo_dir(const std::string& name) const;
  /// Requests the server has answered (its access log), e.g. to prove nothing reached it.
  [[nodiscard]] std::size_t requests() const;

 private:
  void launch(bool grants);
  void write_grants_locked();
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = -1;
  std::mutex mu_;
  std::map<std::string, std::pair<std::string, std::int64_t>> grants_;
};

/// A local npm registry (tests/support/npm_registry.mjs under Debian's node) on a loopback
/// port the kernel picks, serving the packages of `packages` (the script's JSON spec), each
/// packed in npm's format. Every request is logged, so a test can count tarball downloads.
class npm_registry {
 public:
  npm_registry(const std::string& dir, const json::value& packages);
  ~npm_registry();
  void start();
  /// "http://127.0.0.1:<port>/"
  [[nodiscard]] std::string url() const;
  /// Tarballs served so far (GET .../-/<file>.tgz answered 200).
  [[nodiscard]] std::size_t tarballs() const;
  /// Write a package-lock.json for the package.json in `project` (host npm, this registry,
  /// `resolved` URLs recorded as npm records them by default).
  void lock(const std::string& project) const;

 private:
  std::string dir_;
  pid_t pid_ = -1;
  int port_ = -1;
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

/// A real `berth node` process.
class node_process {
 public:
  node_process(std::string data_dir, std::vector<std::string> extra_args = {},
               std::map<std::string, std::string> env = {});
  ~node_process();  ///< SIGKILL if still running, and its embedded nats-server too
  /// Start and wait until node.json appears (the node is ready).
  void start();
  /// Send a signal; with SIGKILL the embedded nats-server keeps running (as after a crash).
  void signal(int sig);
  /// Wait for exit; returns the exit status as from waitpid, or -1 on timeout.
  int wait_exit(std::chrono::seconds timeout = std::chrono::seconds(60));
  [[nodiscard]] bool running();
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] const std::string& data_dir() const { return data_dir_; }
  [[nodiscard]] std::string log() const;
  /// Kill the embedded nats-server this node left behind (after a SIGKILL of the node).
  void kill_embedded_server();
  /// CLI arguments that point at this node.
  [[nodiscard]] std::vector<std::string> target() const { return {"--data-dir", data_dir_}; }

 private:
  std::string data_dir_;
  std::vector<std::string> extra_;
  std::map<std::string, std::string> env_;
  pid_t pid_ = -1;
  int log_no_ = 0;
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
