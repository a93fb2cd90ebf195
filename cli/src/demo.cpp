#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "berth/base/fs.hpp"
#include "berth/base/process.hpp"
#include "cli.hpp"
#include "commands.hpp"

namespace berth::cli {

namespace {

constexpr const char* demo_workflow = R"(# The demo session: four steps, one of which fails once and is retried.
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
run = ["sh", "-c", "echo packaging; ls -a"]
)";

}  // namespace

int run_demo(const globals& g) {
  char tmpl[] = "/tmp/berth-demo-XXXXXX";
  const char* base = ::mkdtemp(tmpl);
  if (!base) return report(error{errc::io_error, "cannot create a temporary directory for the demo"});
  std::string dir = base;
  std::string data_dir = dir + "/node";
  std::string wf = dir + "/demo.toml";
  if (auto st = fs::write_file_atomic(wf, demo_workflow); !st) return report(st.err());
  std::printf("berth demo: starting a local node (data dir %s, embedded nats-server)\n", data_dir.c_str());
  std::fflush(stdout);
  auto log_path = dir + "/node.log";
  FILE* log = std::fopen(log_path.c_str(), "w");
  process::spawn_options so;
  so.stdout_fd = log ? ::fileno(log) : -1;
  so.stderr_fd = log ? ::fileno(log) : -1;
  so.search_path = false;
  auto pid = process::spawn({self_exe(), "node", "--data-dir", data_dir}, so);
  if (log) std::fclose(log);
  if (!pid) return report(pid.err());

  auto stop_node = [&] {
    ::kill(*pid, SIGTERM);
    int st = 0;
    for (int i = 0; i < 300; ++i) {
      if (::waitpid(*pid, &st, WNOHANG) == *pid) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(*pid, SIGKILL);
    ::waitpid(*pid, &st, 0);
  };

  bool ready = false;
  for (int i = 0; i < 300 && !ready; ++i) {
    ready = fs::read_file(data_dir + "/node.json").ok();
    int st = 0;
    if (!ready && ::waitpid(*pid, &st, WNOHANG) == *pid) break;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!ready) {
    stop_node();
    auto text = fs::read_file(log_path);
    std::fprintf(stderr, "%s", text ? text->c_str() : "");
    return report(error{errc::unavailable, "the demo node did not start; its log is " + log_path});
  }
  globals dg = g;
  dg.data_dir = data_dir;
  dg.server.clear();
  start_args sa;
  sa.workflow = wf;
  sa.repo = "file://" + dir + "/app.git";
  sa.follow = true;
  std::printf("berth demo: berth session start --workflow demo.toml --repo %s --follow\n\n", sa.repo.c_str());
  std::fflush(stdout);
  int rc = cmd_session_start(dg, sa);
  std::printf("\nberth demo: stopping the node\n");
  std::fflush(stdout);
  stop_node();
  if (rc == ok) {
    fs::remove_tree(dir);
    std::printf("berth demo: done. Next: `berth node --data-dir ./node-a &` and `berth session start --help`.\n");
  } else {
    std::printf("berth demo: the session did not succeed; node log: %s\n", log_path.c_str());
  }
  return rc;
}

}  // namespace berth::cli
