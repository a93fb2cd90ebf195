// Real repositories in the sandbox: a command's environment holds only sandbox paths, tool state
// lives in a home outside the workspace, setup detects each ecosystem and runs its package
// manager in the sandbox, and dependency caches are shared between sessions without one
// session being able to poison another's. A real `berth node` (bubblewrap), a smart-HTTP git
// server, and a local npm registry (tests/support/npm_registry.mjs).

#include "harness.hpp"

#include "berth/base/fs.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <sstream>

using namespace berth;
namespace sfs = std::filesystem;

namespace {

std::vector<json::value> of_type(const std::vector<json::value>& evs, const std::string& type,
                                 const std::string& step = {}) {
  std::vector<json::value> out;
  for (const auto& e : evs)
    if (e.get_string("type") == type &&
        (step.empty() || e.find("data")->get_string("step") == step))
      out.push_back(*e.find("data"));
  return out;
}

struct setup_fixture : ::testing::Test {
  test::temp_dir dir;
  test::git_server git{dir / "git"};
  std::unique_ptr<test::node_process> node;
  int counter = 0;

  void SetUp() override { git.start(); }

  void start_node(const std::string& config = {}, std::map<std::string, std::string> env = {}) {
    std::vector<std::string> args;
    if (!config.empty()) {
      test::write_file(dir / "berth.toml", config);
      args = {"--config", dir / "berth.toml"};
    }
    node = std::make_unique<test::node_process>(dir / "node", args, std::move(env));
    node->start();
  }

  test::run_result cli(const std::vector<std::string>& args) { return test::cli(*node, args); }

  std::string start(const std::string& repo, const std::string& wf) {
    auto path = dir / ("wf-" + std::to_string(counter++) + ".toml");
    test::write_file(path, wf);
    std::string err;
    auto id = test::start_session(*node, path, {"--repo", repo}, &err);
    EXPECT_FALSE(id.empty()) << err;
    return id;
  }

  std::string status(const std::string& id) { return test::session_field(*node, id, "status"); }
  bool ends(const std::string& id, const std::string& want,
            std::chrono::seconds t = std::chrono::seconds(120)) {
    return test::eventually(
               [&] {
                 auto s = status(id);
                 return s == want || s == "failed" || s == "succeeded" || s == "cancelled" ||
                        s == "timed_out";
               },
               t) &&
           status(id) == want;
  }
  std::string logs(const std::string& id, const std::string& step) {
    return cli({"session", "logs", id, "--step", step}).out;
  }
};

// Problems with one command's environment (`env` output plus a CWD= line): a value that names a
// path of the node's, or an absolute path outside the sandbox's own directories.
std::vector<std::string> host_paths(const std::string& output,
                                    const std::vector<std::string>& node_paths) {
  static const std::vector<std::string> sandbox_roots = {"/work", "/home/berth", "/tmp", "/usr",
                                                         "/bin",  "/sbin",       "/lib", "/lib64",
                                                         "/etc",  "/proc",       "/dev"};
  std::vector<std::string> found;
  std::istringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    auto name = line.substr(0, eq), value = line.substr(eq + 1);
    for (const auto& p : node_paths)
      if (value.find(p) != std::string::npos) found.push_back(name + " names " + p + ": " + value);
    std::stringstream parts(value);
    std::string part;
    while (std::getline(parts, part, ':')) {
      // Absolute paths only; "//host" is the rest of a URL.
      if (part.empty() || part[0] != '/' || part.rfind("//", 0) == 0) continue;
      bool inside = false;
      for (const auto& r : sandbox_roots)
        inside = inside || part == r || part.rfind(r + "/", 0) == 0;
      if (!inside) found.push_back(name + " holds " + part + ", not a sandbox path");
    }
  }
  return found;
}

std::map<std::string, std::string> vars(const std::string& output) {
  std::map<std::string, std::string> out;
  std::istringstream in(output);
  std::string line;
  while (std::getline(in, line))
    if (auto eq = line.find('='); eq != std::string::npos)
      out[line.substr(0, eq)] = line.substr(eq + 1);
  return out;
}

}  // namespace

TEST_F(setup_fixture, every_command_sees_only_sandbox_paths_in_its_environment) {
  // Tool settings the node adds, and the operator's own registry mirror from the config.
  start_node("[sandbox]\nenv = [\"npm_config_registry=http://127.0.0.1:9/\"]\n");
  git.repo("app", {{"README.md", "hello\n"}});
  const std::string show = R"x(["sh", "-c", "env; echo CWD=$(pwd)"])x";
  auto id = start(git.url("app"),
                  "[[steps]]\nid = \"run\"\nrun = " + show +
                      "\n\n[[steps]]\nid = \"setup\"\nkind = \"setup\"\nrun = " + show +
                      "\n\n[[steps]]\nid = \"agent\"\nkind = \"agent\"\nagent = "
                      "{ mode = \"command\", run = " +
                      show + " }\n\n[[steps]]\nid = \"hold\"\nrun = [\"sleep\", \"120\"]\n");
  ASSERT_TRUE(test::eventually(
      [&] { return of_type(test::journal(*node, id), "step.started", "hold").size() == 1; },
      std::chrono::seconds(60)))
      << status(id) << " " << test::session_field(*node, id, "reason");
  auto tool = cli({"session", "tool", id, "exec", "--args",
                   R"x({"argv": ["sh", "-c", "env; echo CWD=$(pwd)"]})x"});
  ASSERT_EQ(tool.code, 0) << tool.err;
  EXPECT_EQ(cli({"session", "cancel", id}).code, 0);

  std::vector<std::string> node_paths = {node->data_dir(), dir.path(), "/root"};
  std::map<std::string, std::string> outputs = {{"run step", logs(id, "run")},
                                                {"setup step", logs(id, "setup")},
                                                {"command agent", logs(id, "agent")},
                                                {"exec tool call", tool.out}};
  for (const auto& [what, out] : outputs) {
    SCOPED_TRACE(what);
    auto v = vars(out);
    ASSERT_FALSE(v.empty()) << out;
    EXPECT_EQ(v["HOME"], "/home/berth");
    EXPECT_EQ(v["TMPDIR"], "/tmp");
    EXPECT_EQ(v["CWD"], "/work");
    EXPECT_EQ(v["BERTH_WORKSPACE"], "/work");
    EXPECT_EQ(v["npm_config_cache"], "/home/berth/.npm");
    EXPECT_EQ(v["CARGO_HOME"], "/home/berth/.cargo");
    EXPECT_EQ(v["npm_config_registry"], "http://127.0.0.1:9/");
    for (const auto& p : host_paths(out, node_paths)) ADD_FAILURE() << p;
  }
  // The scan itself catches a host path.
  EXPECT_FALSE(host_paths("X=" + node->data_dir() + "/work/s\n", node_paths).empty());
  EXPECT_FALSE(host_paths("PATH=/usr/bin:/root/.cargo/bin\n", {}).empty());
}

TEST_F(setup_fixture, the_branch_holds_the_agents_change_and_no_tool_state_or_ignored_files) {
  start_node();
  git.repo("app", {{"README.md", "hello\n"},
                   {".gitignore", "*.log\ndist/\n"},
                   {"src/app.js", "console.log('app')\n"}});
  auto id = start(git.url("app"), R"x(
[session]
branch = "agent/work"

[[steps]]
id = "work"
run = ["sh", "-c", """
set -e
echo "console.log('fixed')" > src/app.js
echo noise > debug.log
mkdir -p dist && echo built > dist/app.min.js
echo 'registry=http://x/' > "$HOME/.npmrc"
mkdir -p "$HOME/.cache/tool" "$HOME/.config/tool" && echo state > "$HOME/.cache/tool/s"
echo 'ls' > "$HOME/.bash_history"
npm config get cache > /dev/null
"""]

[[steps]]
id = "commit"
kind = "commit"
message = "Fix the app"

[[steps]]
id = "push"
kind = "push"
)x");
  ASSERT_TRUE(ends(id, "succeeded")) << test::session_field(*node, id, "reason") << "\n"
                                     << logs(id, "work");
  auto tree = test::run_checked(
      {"git", "-C", git.repo_dir("app"), "ls-tree", "-r", "--name-only", "agent/work"});
  EXPECT_EQ(tree, ".gitignore\nREADME.md\nsrc/app.js\n");
  auto changed = test::run_checked(
      {"git", "-C", git.repo_dir("app"), "show", "--name-only", "--format=", "agent/work"});
  EXPECT_EQ(changed, "src/app.js\n");
  // The home went with the session.
  EXPECT_TRUE(test::eventually([&] { return !sfs::exists(node->data_dir() + "/home/" + id); }));
}
