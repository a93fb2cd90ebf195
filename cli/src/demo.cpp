#include "cli.hpp"
#include "commands.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/ids.hpp"
#include "berth/base/process.hpp"
#include "berth/fixtures/node_process.hpp"
#include "berth/fixtures/scratch_dir.hpp"
#include "berth/gateway/tokens.hpp"
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
    R"(# The demo session, a small graph: two steps at once, a flaky one retried, a failing test
# handed to an external agent (examples/agents/scripted-agent.mjs) that fixes it over NATS, then
# a commit pushed to the session branch of the sample repository.
[session]
goal = "make the failing test pass"
max_parallel = 4

[[steps]]
id = "hello"
run = ["sh", "-c", "echo hello from session $BERTH_SESSION, step $BERTH_STEP"]
needs = []

[[steps]]
id = "build"
run = ["sh", "-c", "for part in parser compiler runtime; do echo compiling $part; sleep 0.3; done"]
needs = []
timeout = "1m"

[[steps]]
id = "flaky-test"
run = ["sh", "-c", "if [ ! -f .tried ]; then touch .tried; echo 'first attempt: connection reset' >&2; exit 1; fi; echo 'second attempt: 42 tests passed'"]
needs = ["build"]
retry = { max_attempts = 3, backoff = "500ms", max_backoff = "5s", jitter = true }

[[steps]]
id = "test"
run = ["sh", "test.sh"]
needs = ["hello", "build"]

[[steps]]
id = "fix"
kind = "agent"
needs = ["test"]
when = "failure"
agent = { mode = "external", turn_timeout = "1m" }

[[steps]]
id = "verify"
run = ["sh", "test.sh"]
needs = ["fix"]

[[steps]]
id = "package"
run = ["sh", "-c", "echo packaging; ls; echo built by $BERTH_SESSION > BUILD_INFO"]
needs = ["flaky-test", "verify"]

[[steps]]
id = "commit"
kind = "commit"
message = "Fix add() and add BUILD_INFO"

[[steps]]
id = "push"
kind = "push"
)";

// Where examples/agents is: $BERTH_EXAMPLES_DIR, else the source tree this binary was built from.
std::string examples_dir() {
  if (const char* d = std::getenv("BERTH_EXAMPLES_DIR")) return d;
  return BERTH_EXAMPLES_DIR;
}

}  // namespace

int run_demo(const globals& g, bool keep) {
  // Under $TMPDIR, 0711: the sandbox user walks through to the workspaces. Kept unless the
  // session succeeded (and the node stopped), for a look at what happened.
  fixtures::scratch_dir scratch;
  if (auto st = scratch.make("berth-demo"); !st) return report(st.err());
  scratch.keep();
  const std::string dir = scratch.path();
  std::string data_dir = dir + "/node";
  // The sample repository the session clones (file:// remotes need the node's allowlist).
  if (auto st = workspace::create_repository(
          dir + "/app.git", {{"README.md", "# app\n\nThe Berth demo's sample repository.\n"},
                             {"src/parser.c", "int parse(void) { return 0; }\n"},
                             {"Makefile", "all:\n\t@echo nothing to build\n"},
                             {"calc.sh", "add() { echo $(($1 - $2)); }\n"},
                             {"test.sh",
                              ". ./calc.sh\n[ \"$(add 2 3)\" = 5 ] || { echo \"FAIL: add 2 3 = "
                              "$(add 2 3), expected 5\"; exit 1; }\necho 'test passed'\n"}});
      !st)
    return report(st.err());
  std::string wf = dir + "/demo.toml";
  if (auto st = fs::write_file_atomic(wf, demo_workflow); !st) return report(st.err());
  std::printf("berth demo: starting a local node (data dir %s, embedded nats-server)\n",
              data_dir.c_str());
  std::fflush(stdout);
  fixtures::node_process node(
      {self_exe(), data_dir, {}, {{"BERTH_WORKSPACE_FILE_ALLOWLIST", dir}}});
  if (auto st = node.start(); !st) return report(st.err());  // the error carries the log's tail
  // The external agent: the scripted one of examples/agents, on the node's NATS.
  auto agent_js = examples_dir() + "/agents/scripted-agent.mjs";
  auto node_js = process::find_executable("node");
  if (!node_js || !fs::read_file(examples_dir() + "/agents/node_modules/nats/package.json")) {
    node.stop();
    return report(error{errc::not_found,
                        "the demo's agent needs node.js and the npm `nats` client: run `npm ci "
                        "--prefix " +
                            examples_dir() + "/agents` (scripts/quickstart does)"});
  }
  auto node_json = fs::read_file(data_dir + "/node.json");
  auto info = json::parse(node_json ? *node_json : std::string("{}"));
  std::string url = info ? info->get_string("nats_url") : std::string();
  globals dg = g;
  dg.data_dir = data_dir;
  dg.server.clear();
  start_args sa;
  sa.id = "demo-" + new_ulid();
  process::spawn_options po;
  po.stdout_fd = 1;
  po.stderr_fd = 2;
  const std::vector<std::string> agent_argv = {
      *node_js,     agent_js, "--server", url,        "--session",    sa.id,       "--test",
      "sh test.sh", "--file", "calc.sh",  "--search", "$(($1 - $2))", "--replace", "$(($1 + $2))"};
  auto agent = process::spawn(agent_argv, po);
  if (!agent) {
    node.stop();
    return report(agent.err());
  }
  sa.workflow = wf;
  sa.repo = "file://" + dir + "/app.git";
  sa.follow = true;
  std::printf("berth demo: berth session start --workflow demo.toml --repo %s --follow\n\n",
              sa.repo.c_str());
  std::fflush(stdout);
  int rc = cmd_session_start(dg, sa);
  // The agent ends once its step has; a session that ended otherwise leaves it waiting.
  for (int i = 0; i < 50 && process::alive(*agent); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  process::kill_group(*agent, SIGKILL);
  int ignored = 0;
  (void)::waitpid(*agent, &ignored, 0);  // reaped only: its exit status says nothing new
  if (keep) {
    // The node stays up; the console shows the session that just ran.
    auto code = gateway::token_store(info ? info->get_string("tokens_file") : std::string())
                    .create_login("demo", gateway::scope::admin, std::chrono::minutes(10));
    auto console = info ? info->get_string("console_url") : std::string();
    std::printf("\nberth demo: the node keeps running (pid %d, data dir %s)\n",
                static_cast<int>(node.pid()), data_dir.c_str());
    if (code && !console.empty())
      std::printf(
          "berth demo: open the console (the link works once, within 10 minutes; `berth "
          "--data-dir %s console` makes another):\n\n    %s/#login=%s\n\n",
          data_dir.c_str(), console.c_str(), code->c_str());
    std::printf("berth demo: stop the node with `kill %d`\n", static_cast<int>(node.pid()));
    std::fflush(stdout);
    node.release();
    return rc;
  }
  std::printf("\nberth demo: stopping the node\n");
  std::fflush(stdout);
  node.stop();
  if (rc == ok) {
    std::printf("berth demo: the session pushed its branch to the sample repository %s/app.git\n",
                dir.c_str());
    node.kill_embedded_server();
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
