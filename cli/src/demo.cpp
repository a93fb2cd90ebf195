#include "cli.hpp"
#include "commands.hpp"
#include "local_node.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/process.hpp"
#include "berth/workspace/git.hpp"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

namespace berth::cli {

namespace {

constexpr const char* demo_workflow =
    R"(# The demo session: steps in the sandbox (one fails once and is retried), then a commit
# pushed to the session branch of the sample repository.
[session]
goal = "show what a Berth session looks like"

[[steps]]
id = "hello"
run = ["sh", "-c", "echo hello from session $BERTH_SESSION, step $BERTH_STEP"]

[[steps]]
id = "build"
run = ["sh", "-c", "for part in parser compiler runtime; do echo compiling $part; sleep 0.3; done"]
timeout = "1m"

[[steps]]
id = "flaky-test"
run = ["sh", "-c", "if [ ! -f .tried ]; then touch .tried; echo 'first attempt: connection reset' >&2; exit 1; fi; echo 'second attempt: 42 tests passed'"]
retry = { max_attempts = 3, backoff = "500ms", max_backoff = "5s" }

[[steps]]
id = "package"
run = ["sh", "-c", "echo packaging; ls; echo built by $BERTH_SESSION > BUILD_INFO"]

[[steps]]
id = "commit"
kind = "commit"
message = "Add BUILD_INFO"

[[steps]]
id = "push"
kind = "push"
)";

}  // namespace

int run_demo(const globals& g) {
  char tmpl[] = "/tmp/berth-demo-XXXXXX";
  const char* base = ::mkdtemp(tmpl);
  if (!base)
    return report(error{errc::io_error, "cannot create a temporary directory for the demo"});
  std::string dir = base;
  ::chmod(dir.c_str(), 0711);  // the sandbox user walks through to the workspaces
  std::string data_dir = dir + "/node";
  // The sample repository the session clones (file:// remotes need the node's allowlist).
  if (auto st = workspace::create_repository(
          dir + "/app.git", {{"README.md", "# app\n\nThe Berth demo's sample repository.\n"},
                             {"src/parser.c", "int parse(void) { return 0; }\n"},
                             {"Makefile", "all:\n\t@echo nothing to build\n"}});
      !st)
    return report(st.err());
  std::string wf = dir + "/demo.toml";
  if (auto st = fs::write_file_atomic(wf, demo_workflow); !st) return report(st.err());
  std::printf("berth demo: starting a local node (data dir %s, embedded nats-server)\n",
              data_dir.c_str());
  std::fflush(stdout);
  local_node node(data_dir, {{"BERTH_WORKSPACE_FILE_ALLOWLIST", dir}});
  if (auto st = node.start(); !st) {
    auto text = fs::read_file(node.log_path());
    std::fprintf(stderr, "%s", text ? text->c_str() : "");
    return report(st.err());
  }
  globals dg = g;
  dg.data_dir = data_dir;
  dg.server.clear();
  start_args sa;
  sa.workflow = wf;
  sa.repo = "file://" + dir + "/app.git";
  sa.follow = true;
  std::printf("berth demo: berth session start --workflow demo.toml --repo %s --follow\n\n",
              sa.repo.c_str());
  std::fflush(stdout);
  int rc = cmd_session_start(dg, sa);
  std::printf("\nberth demo: stopping the node\n");
  std::fflush(stdout);
  node.stop();
  if (rc == ok) {
    std::printf("berth demo: the session pushed its branch to the sample repository %s/app.git\n",
                dir.c_str());
    fs::remove_tree(dir);
    std::printf(
        "berth demo: done. Next: `berth node --data-dir /var/lib/berth/a &` and `berth session "
        "start "
        "--help`.\n");
  } else {
    std::printf("berth demo: the session did not succeed; node log: %s\n", node.log_path().c_str());
  }
  return rc;
}

}  // namespace berth::cli
