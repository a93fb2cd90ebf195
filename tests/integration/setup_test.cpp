// Real repositories in the sandbox: a command's environment holds only sandbox paths, tool state
// lives in a home outside the workspace, setup detects each ecosystem and runs its package
// manager in the sandbox, and dependency caches are shared between sessions without one
// session being able to poison another's. A real `berth node` (bubblewrap), a smart-HTTP git
// server, and a local npm registry (tests/support/npm_registry.mjs).

#include "harness.hpp"

#include "berth/base/fs.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

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

  // The local registry serving the two packages, and a node whose config points npm at it
  // (never the repository).
  std::unique_ptr<test::npm_registry> registry;
  test::npm_registry& with_registry();

  std::string start(const std::string& repo, const std::string& wf) {
    auto path = dir / ("wf-" + std::to_string(counter++) + ".toml");
    test::write_file(path, wf);
    std::string err;
    auto id = test::start_session(*node, path, {"--repo", repo}, &err);
    EXPECT_FALSE(id.empty()) << err;
    return id;
  }

  std::string status(const std::string& id) { return test::session_field(*node, id, "status"); }
  // Whether the node's background builder has finished the installed npm trees (waits).
  bool trees_built(std::size_t n) {
    return test::eventually([&] {
      std::size_t done = 0;
      std::error_code ec;
      for (const auto& e : sfs::directory_iterator(node->data_dir() + "/cache/npm-tree", ec))
        if (sfs::exists(e.path() / ".complete")) done++;
      return done >= n;
    });
  }
  // The setup step's end (finished or failed): its details; null when it has not ended.
  json::value setup_end(const std::string& id) {
    auto evs = test::journal(*node, id);
    auto f = of_type(evs, "step.finished", "setup");
    if (f.empty()) f = of_type(evs, "step.failed", "setup");
    return f.empty() ? json::value() : f.back();
  }
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

namespace {

// Two small packages in the local registry: tiny-pad needs tiny-math.
json::value two_packages() {
  auto v = json::parse(R"x([
    {"name": "tiny-math", "version": "1.0.0", "bin": {"tiny-add": "cli.js"},
     "files": {"index.js": "exports.add = (a, b) => a + b;\n",
               "cli.js": "#!/usr/bin/env node\nconsole.log('sum', require('./index.js').add(+process.argv[2], +process.argv[3]));\n"}},
    {"name": "tiny-pad", "version": "2.1.0", "dependencies": {"tiny-math": "^1.0.0"},
     "files": {"index.js": "const m = require('tiny-math');\nexports.pad = (s, n) => String(s).padStart(m.add(n, 0));\n"}}
  ])x");
  return *v;
}

// A Node project using both, with its own test suite; `extra` adds to package.json's top level.
std::map<std::string, std::string> node_project(const std::string& extra = {}) {
  return {{"package.json",
           "{\"name\": \"app\", \"version\": \"1.0.0\", \"private\": true,\n"
           " \"scripts\": {\"test\": \"node test.js\"" +
               extra +
               "},\n"
               " \"dependencies\": {\"tiny-pad\": \"^2.0.0\"},\n"
               " \"devDependencies\": {\"tiny-math\": \"^1.0.0\"}}\n"},
          {"test.js",
           "const p = require('tiny-pad'), m = require('tiny-math');\n"
           "if (p.pad('x', 3) !== '  x' || m.add(1, 2) !== 3) process.exit(1);\n"
           "console.log('2 tests passed');\n"},
          {".gitignore", "node_modules/\n"}};
}

// A repository holding `files` plus the lockfile the registry resolves for its package.json.
void locked_repo(test::git_server& git, const test::npm_registry& reg, const test::temp_dir& dir,
                 const std::string& name, const std::map<std::string, std::string>& files) {
  auto work = dir / ("src-" + name);
  sfs::create_directories(work);
  for (const auto& [f, text] : files) test::write_file(work + "/" + f, text);
  reg.lock(work);
  auto all = files;
  all["package-lock.json"] = *fs::read_file(work + "/package-lock.json");
  git.repo(name, all);
}

// "<sha512 hex> <path>" of every file in the store, and whether each file hashes to its name.
std::string store_digests(const std::string& root, bool* all_match) {
  auto out = test::run_checked(
      {"sh", "-c",
       "cd '" + root + "' && find . -type f ! -name .lock -exec sha512sum {} + | sort"});
  *all_match = true;
  std::istringstream in(out);
  std::string hex, path;
  while (in >> hex >> path)
    if (path.find("/sha512/") != std::string::npos && sfs::path(path).filename().string() != hex)
      *all_match = false;
  return out;
}

}  // namespace

test::npm_registry& setup_fixture::with_registry() {
  registry = std::make_unique<test::npm_registry>(dir / "registry", two_packages());
  registry->start();
  start_node("[sandbox]\nenv = [\"npm_config_registry=" + registry->url() + "\"]\n");
  return *registry;
}

namespace {

const char* install_and_test = R"x(
[[steps]]
id = "setup"
kind = "setup"
network = "host"

[[steps]]
id = "test"
run = ["npm", "test"]

[[steps]]
id = "change"
run = ["sh", "-c", "echo 'tested with tiny-pad' >> NOTES.md"]

[[steps]]
id = "commit"
kind = "commit"
message = "Add notes"

[[steps]]
id = "push"
kind = "push"
)x";

}  // namespace

TEST_F(setup_fixture, a_node_project_installs_from_the_registry_then_from_the_cache) {
  auto& reg = with_registry();
  locked_repo(git, reg, dir, "app", node_project());

  auto first = start(git.url("app"), install_and_test);
  ASSERT_TRUE(ends(first, "succeeded")) << test::session_field(*node, first, "reason") << "\n"
                                        << logs(first, "setup");
  EXPECT_EQ(reg.tarballs(), 2u);
  EXPECT_NE(logs(first, "test").find("2 tests passed"), std::string::npos);
  auto done = of_type(test::journal(*node, first), "step.finished", "setup");
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].find("detected")->dump(), R"(["node"])");
  const auto& plan = done[0].find("plan")->as_array();
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].get_string("command"), "npm ci --no-audit --no-fund");
  EXPECT_EQ(plan[0].get_string("why"), "package-lock.json");
  const auto& ran = done[0].find("ran")->as_array();
  ASSERT_EQ(ran.size(), 1u);
  EXPECT_EQ(ran[0].get_int("exit_code", -1), 0);
  EXPECT_GE(ran[0].get_int("duration_ms", -1), 0);
  const auto* cache = done[0].find("cache");
  ASSERT_NE(cache, nullptr);
  EXPECT_EQ(cache->find("npm")->get_int("pinned"), 2);
  EXPECT_EQ(cache->find("npm")->get_int("seeded"), 0);
  EXPECT_EQ(cache->find("npm")->get_int("added"), 2);
  // After npm ci, the node builds the installed tree from the two tarballs it verified (in
  // the background: the next session's restore waits for it).
  const auto* tree = cache->find("npm")->find("tree");
  ASSERT_NE(tree, nullptr) << cache->dump();
  EXPECT_EQ(tree->get_string("state"), "building") << cache->dump();
  EXPECT_EQ(tree->get_int("packages"), 2);

  // Only the agent's change is on the branch: no node_modules, no npm state, no lockfile churn.
  auto branch = test::run_checked({"git", "-C", git.repo_dir("app"), "for-each-ref",
                                   "--format=%(refname:short)", "refs/heads/berth/"});
  ASSERT_FALSE(branch.empty());
  branch.pop_back();
  auto changed =
      test::run_checked({"git", "-C", git.repo_dir("app"), "diff", "--name-only", "main", branch});
  EXPECT_EQ(changed, "NOTES.md\n");

  // The second session on the same repository is served from the cache: no tarball download.
  auto second = start(git.url("app"), install_and_test);
  ASSERT_TRUE(ends(second, "succeeded")) << test::session_field(*node, second, "reason") << "\n"
                                         << logs(second, "setup");
  EXPECT_EQ(reg.tarballs(), 2u) << "the second setup downloaded tarballs again";
  EXPECT_NE(logs(second, "test").find("2 tests passed"), std::string::npos);
  auto again = of_type(test::journal(*node, second), "step.finished", "setup");
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].find("cache")->find("npm")->get_int("seeded"), 2);
  EXPECT_EQ(again[0].find("cache")->find("npm")->get_int("added"), 0);
  // ... and npm did not run at all: the node restored the tree it built.
  const auto* reused = again[0].find("cache")->find("npm")->find("tree");
  ASSERT_NE(reused, nullptr);
  EXPECT_EQ(reused->get_string("state"), "restored") << again[0].dump();
  EXPECT_EQ(reused->get_string("key"), tree->get_string("key"));
  const auto& ran2 = again[0].find("ran")->as_array();
  ASSERT_EQ(ran2.size(), 1u);
  EXPECT_EQ(ran2[0].get_int("exit_code", -1), 0);
  EXPECT_NE(ran2[0].get_string("command").find("restored node_modules"), std::string::npos)
      << again[0].dump();
  EXPECT_EQ(logs(second, "setup").find("+ npm ci"), std::string::npos) << logs(second, "setup");

  bool match = false;
  store_digests(node->data_dir() + "/cache", &match);
  EXPECT_TRUE(match);
  auto list = cli({"cache", "list", "-o", "json"});
  ASSERT_EQ(list.code, 0) << list.err;
  auto v = list.json();
  ASSERT_TRUE(v) << list.out;
  EXPECT_NE(list.out.find("\"npm\""), std::string::npos) << list.out;
  const auto* eco = v->find("ecosystems");
  ASSERT_NE(eco, nullptr) << list.out;
  EXPECT_EQ(eco->find("npm")->get_int("entries"), 2) << list.out;
  EXPECT_EQ(eco->find("npm-tree")->get_int("entries"), 1) << list.out;
  auto text = cli({"cache", "list"});
  ASSERT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("npm-tree"), std::string::npos) << text.out;

  // Pruning by hand while the node runs: bad input is refused and names the flag; keeping 0
  // bytes empties the store, and the next session fetches again and succeeds.
  auto bad = cli({"cache", "prune", "--keep-bytes", "-1"});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.err.find("--keep-bytes"), std::string::npos) << bad.err;
  auto missing = cli({"cache", "list", "--dir", dir / "no-such-store"});
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(missing.err.find("no-such-store"), std::string::npos) << missing.err;
  auto pruned = cli({"cache", "prune", "--keep-bytes", "0", "-o", "json"});
  ASSERT_EQ(pruned.code, 0) << pruned.err;
  auto pv = pruned.json();
  ASSERT_TRUE(pv) << pruned.out;
  EXPECT_EQ(pv->get_int("entries"), 3) << pruned.out;  // two tarballs and the tree
  auto empty = cli({"cache", "list", "-o", "json"}).json();
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->find("ecosystems")->find("npm")->get_int("entries", -1), 0);
  EXPECT_EQ(empty->find("ecosystems")->find("npm-tree")->get_int("entries", -1), 0);
  auto third = start(git.url("app"), install_and_test);
  ASSERT_TRUE(ends(third, "succeeded")) << test::session_field(*node, third, "reason");
  EXPECT_EQ(reg.tarballs(), 4u) << "after the prune, the tarballs are fetched again";
}

TEST_F(setup_fixture, a_restored_tree_is_the_sessions_to_use_and_never_to_change) {
  auto& reg = with_registry();
  locked_repo(git, reg, dir, "app", node_project());
  const std::string use =
      std::string(install_and_test)
          .substr(0, std::string(install_and_test).find("[[steps]]\nid = \"change\"")) +
      "[[steps]]\nid = \"bin\"\nrun = [\"node_modules/.bin/tiny-add\", \"2\", \"3\"]\n";
  auto first = start(git.url("app"), use);
  ASSERT_TRUE(ends(first, "succeeded")) << test::session_field(*node, first, "reason");
  EXPECT_NE(logs(first, "bin").find("sum 5"), std::string::npos) << logs(first, "bin");
  bool match = false;
  auto cache_root = node->data_dir() + "/cache";
  ASSERT_TRUE(trees_built(1));
  auto before = store_digests(cache_root, &match);
  ASSERT_NE(before.find("/npm-tree/"), std::string::npos) << before;

  // The restored tree works as npm's (bins included), and cannot be changed through its links:
  // writing, chmod and touch are refused; the session may replace its own copy.
  auto tamper = start(git.url("app"), use + R"x(
[[steps]]
id = "tamper"
needs = ["bin", "test"]
run = ["sh", "-c", """
f=node_modules/tiny-math/index.js
(echo 'exports.add = () => 42;' > $f) 2>/dev/null && echo WROTE-TREE
chmod 666 $f 2>/dev/null && echo CHMOD-TREE
touch -d 2000-01-01 $f 2>/dev/null && echo TOUCHED-TREE
ln -f $f node_modules/.bin/x 2>/dev/null && (echo evil >> node_modules/.bin/x) 2>/dev/null && echo WROTE-LINK
rm -f $f && echo 'exports.add = () => 42;' > $f && echo REPLACED-OWN
"""]
)x");
  ASSERT_TRUE(ends(tamper, "succeeded")) << test::session_field(*node, tamper, "reason");
  auto restored = of_type(test::journal(*node, tamper), "step.finished", "setup");
  ASSERT_EQ(restored.size(), 1u);
  EXPECT_EQ(restored[0].find("cache")->find("npm")->find("tree")->get_string("state"), "restored")
      << restored[0].dump();
  EXPECT_NE(logs(tamper, "bin").find("sum 5"), std::string::npos) << logs(tamper, "bin");
  EXPECT_NE(logs(tamper, "test").find("2 tests passed"), std::string::npos);
  auto out = logs(tamper, "tamper");
  for (const char* bad : {"WROTE-TREE", "CHMOD-TREE", "TOUCHED-TREE", "WROTE-LINK"})
    EXPECT_EQ(out.find(bad), std::string::npos) << out;
  EXPECT_NE(out.find("REPLACED-OWN"), std::string::npos) << out;
  EXPECT_EQ(store_digests(cache_root, &match), before);

  // The next session gets the tree as it was built.
  auto next = start(git.url("app"), use);
  ASSERT_TRUE(ends(next, "succeeded")) << test::session_field(*node, next, "reason");
  EXPECT_NE(logs(next, "bin").find("sum 5"), std::string::npos) << logs(next, "bin");
  EXPECT_EQ(reg.tarballs(), 2u);
}

namespace {

// A pure-Python wheel tinylib 1.0 whose answer() returns `answer`: its bytes.
std::string tiny_wheel(const std::string& dir, int answer) {
  sfs::create_directories(dir);
  test::run_checked(
      {"python3", "-c",
       "import zipfile, sys\n"
       "z = zipfile.ZipFile(sys.argv[1] + '/tinylib-1.0-py3-none-any.whl', 'w')\n"
       "z.writestr('tinylib/__init__.py', 'def answer():\\n    return ' + sys.argv[2] + '\\n')\n"
       "z.writestr('tinylib-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: tinylib\\n"
       "Version: 1.0\\n')\n"
       "z.writestr('tinylib-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\n"
       "Root-Is-Purelib: true\\nTag: py3-none-any\\n')\n"
       "z.writestr('tinylib-1.0.dist-info/RECORD', '')\n"
       "z.close()\n",
       dir, std::to_string(answer)});
  return *fs::read_file(dir + "/tinylib-1.0-py3-none-any.whl");
}

std::string sha256_of(const std::string& path) {
  auto out = test::run_checked({"sha256sum", path});
  return out.substr(0, 64);
}

}  // namespace

TEST_F(setup_fixture, a_hash_pinned_python_project_is_served_from_the_store) {
  start_node();
  auto whl = tiny_wheel(dir / "wheel", 42);
  auto hash = sha256_of(dir / "wheel/tinylib-1.0-py3-none-any.whl");
  const std::string pinned = "tinylib==1.0 \\\n    --hash=sha256:" + hash + "\n";
  // The first project brings the wheel (as an index would); the second only pins its hash.
  git.repo("first", {{"requirements.txt", "--no-index\n--find-links wheels\n" + pinned},
                     {"wheels/tinylib-1.0-py3-none-any.whl", whl}});
  git.repo("second", {{"requirements.txt", "--no-index\n" + pinned}});
  const std::string use = std::string("[[steps]]\nid = \"setup\"\nkind = \"setup\"\n") +
                          "\n[[steps]]\nid = \"use\"\nrun = [\".venv/bin/python\", \"-c\", "
                          "\"import tinylib; print('answer', tinylib.answer())\"]\n";
  auto first = start(git.url("first"), use);
  ASSERT_TRUE(ends(first, "succeeded")) << test::session_field(*node, first, "reason") << "\n"
                                        << logs(first, "setup");
  EXPECT_NE(logs(first, "use").find("answer 42"), std::string::npos);
  auto f = setup_end(first);
  auto cmd = f.find("plan")->as_array()[0].get_string("command");
  EXPECT_NE(cmd.find("pip download --dest"), std::string::npos) << cmd;
  const auto* pip = f.find("cache")->find("pip");
  ASSERT_NE(pip, nullptr) << f.dump();
  EXPECT_EQ(pip->get_int("pinned"), 1);
  EXPECT_EQ(pip->get_int("seeded"), 0);
  EXPECT_FALSE(pip->get_bool("complete", true));
  EXPECT_EQ(pip->get_int("added"), 1) << pip->dump();

  // The second has no wheel and no index: the store serves it, pip installs offline.
  auto second = start(git.url("second"), use);
  ASSERT_TRUE(ends(second, "succeeded")) << test::session_field(*node, second, "reason") << "\n"
                                         << logs(second, "setup");
  EXPECT_NE(logs(second, "use").find("answer 42"), std::string::npos);
  auto s2 = setup_end(second);
  auto cmd2 = s2.find("plan")->as_array()[0].get_string("command");
  EXPECT_EQ(cmd2.find("pip download"), std::string::npos) << cmd2;
  EXPECT_NE(cmd2.find("--no-index --find-links"), std::string::npos) << cmd2;
  EXPECT_EQ(s2.find("cache")->find("pip")->get_int("seeded"), 1);
  EXPECT_TRUE(s2.find("cache")->find("pip")->get_bool("complete"));

  // Hostile: a step plants another wheel under the same name where the store's would go; pip
  // refuses it (hash mismatch), the store refuses it too, and the next session is unharmed.
  auto evil = tiny_wheel(dir / "evil", 666);
  std::string b64;
  {
    auto enc = test::run_checked({"base64", "-w0", dir / "evil/tinylib-1.0-py3-none-any.whl"});
    b64 = enc;
  }
  auto planted =
      start(git.url("second"),
            R"x(
[[steps]]
id = "plant"
run = ["sh", "-c", "mkdir -p $HOME/.cache/berth/wheels && echo )x" +
                b64 +
                R"x( | base64 -d > $HOME/.cache/berth/wheels/tinylib-1.0-py3-none-any.whl"]

[[steps]]
id = "setup"
kind = "setup"
needs = ["plant"]
)x");
  ASSERT_TRUE(ends(planted, "failed")) << status(planted) << logs(planted, "setup");
  EXPECT_NE(test::session_field(*node, planted, "reason").find("exited with code"),
            std::string::npos)
      << test::session_field(*node, planted, "reason");
  auto p3 = setup_end(planted);
  EXPECT_EQ(p3.find("cache")->find("pip")->get_int("added"), 0) << p3.dump();
  EXPECT_EQ(p3.find("cache")->find("pip")->get_int("refused"), 1) << p3.dump();
  auto stored = test::run_checked(
      {"sh", "-c", "cat " + node->data_dir() + "/cache/pip/sha256/*/* | sha256sum"});
  EXPECT_EQ(stored.substr(0, 64), hash);
  auto again = start(git.url("second"), use);
  ASSERT_TRUE(ends(again, "succeeded")) << test::session_field(*node, again, "reason");
  EXPECT_NE(logs(again, "use").find("answer 42"), std::string::npos);
  (void)evil;
}

TEST_F(setup_fixture, go_modules_pinned_by_go_sum_are_served_from_the_store) {
  if (::access("/usr/bin/go", X_OK) != 0) GTEST_SKIP() << "golang-go is not installed";
  // A module proxy (the GOPROXY protocol is static files) served by the test's lighttpd.
  git.repo("placeholder", {{"README.md", "x\n"}});
  auto proxy = sfs::path(git.repo_dir("placeholder")).parent_path().string() + "/goproxy";
  auto v = proxy + "/example.com/lib/@v";
  sfs::create_directories(v);
  const std::string lib_mod = "module example.com/lib\n\ngo 1.19\n";
  test::write_file(v + "/v1.0.0.mod", lib_mod);
  test::write_file(v + "/v1.0.0.info", R"({"Version":"v1.0.0"})");
  test::write_file(v + "/list", "v1.0.0\n");
  test::write_go_module_zip(v + "/v1.0.0.zip", lib_mod);
  // go.sum as the go command writes it (from the proxy directory, no network).
  auto app = dir / "goapp";
  sfs::create_directories(app);
  std::map<std::string, std::string> files = {
      {"go.mod", "module example.com/app\n\ngo 1.19\n\nrequire example.com/lib v1.0.0\n"},
      {"main.go",
       "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/lib\"\n)\n\n"
       "func main() { fmt.Println(\"answer\", lib.Answer()) }\n"}};
  for (const auto& [f, text] : files) test::write_file(app + "/" + f, text);
  test::run_checked({"env", "GOPROXY=file://" + proxy, "GOSUMDB=off", "GOFLAGS=-mod=mod",
                     "HOME=" + dir / "gohome", "GOPATH=" + dir / "gohome/go",
                     "GOCACHE=" + dir / "gohome/cache", "go", "mod", "tidy"},
                    app);
  files["go.sum"] = *fs::read_file(app + "/go.sum");
  ASSERT_NE(files["go.sum"].find("example.com/lib v1.0.0 h1:"), std::string::npos);
  git.repo("goapp", files);

  auto base = git.url("goapp").substr(0, git.url("goapp").find("/git/"));
  start_node("[sandbox]\nenv = [\"GOPROXY=" + base + "/goproxy\", \"GOSUMDB=off\"]\n");
  auto run_with = [](const std::string& network) {
    return "[[steps]]\nid = \"setup\"\nkind = \"setup\"\nnetwork = \"" + network +
           "\"\n\n[[steps]]\nid = \"run\"\nneeds = [\"setup\"]\nrun = [\"go\", \"run\", \".\"]\n";
  };
  auto first = start(git.url("goapp"), run_with("host"));
  ASSERT_TRUE(ends(first, "succeeded")) << test::session_field(*node, first, "reason") << "\n"
                                        << logs(first, "setup");
  EXPECT_NE(logs(first, "run").find("answer 42"), std::string::npos) << logs(first, "run");
  auto f = setup_end(first);
  EXPECT_EQ(f.find("plan")->as_array()[0].get_string("command"), "go mod download");
  const auto* go = f.find("cache")->find("go");
  ASSERT_NE(go, nullptr) << f.dump();
  EXPECT_EQ(go->get_int("pinned"), 1);
  EXPECT_EQ(go->get_int("seeded"), 0);
  // The zip and the go.mod: the node's h1 hashes are the ones the go command wrote in go.sum.
  EXPECT_EQ(go->get_int("added"), 2) << go->dump();
  EXPECT_EQ(go->get_int("refused"), 0) << go->dump();

  // Without any network the next session's modules come from the store.
  auto second = start(git.url("goapp"), run_with("none"));
  ASSERT_TRUE(ends(second, "succeeded")) << test::session_field(*node, second, "reason") << "\n"
                                         << logs(second, "setup");
  EXPECT_NE(logs(second, "run").find("answer 42"), std::string::npos) << logs(second, "run");
  auto s2 = setup_end(second);
  EXPECT_EQ(s2.find("cache")->find("go")->get_int("seeded"), 1) << s2.dump();
  EXPECT_TRUE(s2.find("cache")->find("go")->get_bool("complete"));

  // Hostile: a zip planted in the session's module cache: go refuses it, nothing of it reaches
  // the store (a zip the store lacks is hashed and refused: unit tests).
  auto store_before = test::run_checked(
      {"sh", "-c",
       "cd " + node->data_dir() + "/cache/go && find . -type f | sort | xargs sha256sum"});
  auto planted = start(git.url("goapp"), R"x(
[[steps]]
id = "plant"
run = ["sh", "-c", "d=$HOME/go/pkg/mod/cache/download/example.com/lib/@v; mkdir -p $d && echo 'not a zip' > $d/v1.0.0.zip"]

[[steps]]
id = "setup"
kind = "setup"
needs = ["plant"]
)x");
  EXPECT_TRUE(
      test::eventually([&] { return !setup_end(planted).is_null(); }, std::chrono::seconds(120)));
  auto p3 = setup_end(planted);
  EXPECT_EQ(p3.find("cache")->find("go")->get_int("added"), 0) << p3.dump();
  EXPECT_EQ(p3.get_int("exit_code", 0), 1) << p3.dump();  // go refused the planted zip too
  EXPECT_EQ(test::run_checked({"sh", "-c",
                               "cd " + node->data_dir() +
                                   "/cache/go && find . -type f | sort | xargs sha256sum"}),
            store_before);
  auto again = start(git.url("goapp"), run_with("none"));
  ASSERT_TRUE(ends(again, "succeeded")) << test::session_field(*node, again, "reason");
  EXPECT_NE(logs(again, "run").find("answer 42"), std::string::npos);
}

TEST_F(setup_fixture, crates_pinned_by_cargo_lock_are_served_from_the_store) {
  if (::access("/usr/bin/cargo", X_OK) != 0) GTEST_SKIP() << "cargo is not installed";
  // A cargo registry: its index a git repository on the test's git server, its crates static
  // files beside it (`dl` in the index's config.json).
  auto crate_src = dir / "tinycrate";
  sfs::create_directories(crate_src + "/src");
  test::write_file(crate_src + "/Cargo.toml",
                   "[package]\nname = \"tinycrate\"\nversion = \"1.0.0\"\nedition = \"2018\"\n"
                   "license = \"MIT\"\ndescription = \"a crate of the tests\"\n");
  test::write_file(crate_src + "/src/lib.rs", "pub fn answer() -> i32 { 42 }\n");
  const std::string cargo_home = "CARGO_HOME=" + dir / "cargo-home";
  test::run_checked(
      {"env", cargo_home, "/usr/bin/cargo", "package", "--no-verify", "--allow-dirty", "-q"},
      crate_src);
  auto crate = *fs::read_file(crate_src + "/target/package/tinycrate-1.0.0.crate");
  git.repo("placeholder", {{"README.md", "x\n"}});
  auto docroot = sfs::path(git.repo_dir("placeholder")).parent_path().string();
  sfs::create_directories(docroot + "/crates/tinycrate/1.0.0");
  test::write_file(docroot + "/crates/tinycrate/1.0.0/download", crate);
  auto base = git.url("placeholder").substr(0, git.url("placeholder").find("/git/"));
  auto sum = sha256_of(crate_src + "/target/package/tinycrate-1.0.0.crate");
  git.repo("cargo-index",
           {{"config.json", "{\"dl\": \"" + base + "/crates/{crate}/{version}/download\"}"},
            {"ti/ny/tinycrate",
             "{\"name\":\"tinycrate\",\"vers\":\"1.0.0\",\"deps\":[],"
             "\"cksum\":\"" +
                 sum + "\",\"features\":{},\"yanked\":false}\n"}});
  // The project uses the registry in place of crates.io; the host's cargo writes Cargo.lock.
  auto app = dir / "rustapp";
  std::map<std::string, std::string> files = {
      {"Cargo.toml",
       "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2018\"\n\n"
       "[dependencies]\ntinycrate = \"1\"\n"},
      {"src/main.rs", "fn main() { println!(\"answer {}\", tinycrate::answer()); }\n"},
      {".cargo/config.toml",
       "[source.crates-io]\nreplace-with = \"tests\"\n\n[source.tests]\n"
       "registry = \"" +
           git.url("cargo-index") + "\"\n"},
      {".gitignore", "target/\n"}};
  for (const auto& [f, text] : files) {
    sfs::create_directories(sfs::path(app + "/" + f).parent_path());
    test::write_file(app + "/" + f, text);
  }
  test::run_checked({"env", cargo_home, "/usr/bin/cargo", "generate-lockfile"}, app);
  files["Cargo.lock"] = *fs::read_file(app + "/Cargo.lock");
  ASSERT_NE(files["Cargo.lock"].find("checksum = \"" + sum + "\""), std::string::npos);
  git.repo("rustapp", files);
  start_node();
  const std::string wf =
      "[[steps]]\nid = \"setup\"\nkind = \"setup\"\nnetwork = \"host\"\n\n"
      "[[steps]]\nid = \"run\"\nneeds = [\"setup\"]\nrun = [\"cargo\", \"run\", \"-q\", "
      "\"--locked\", \"--offline\"]\n";
  auto first = start(git.url("rustapp"), wf);
  ASSERT_TRUE(ends(first, "succeeded", std::chrono::seconds(240)))
      << test::session_field(*node, first, "reason") << "\n"
      << logs(first, "setup");
  EXPECT_NE(logs(first, "run").find("answer 42"), std::string::npos) << logs(first, "run");
  auto f = setup_end(first);
  EXPECT_EQ(f.find("plan")->as_array()[0].get_string("command"), "cargo fetch --locked");
  const auto* c = f.find("cache")->find("cargo");
  ASSERT_NE(c, nullptr) << f.dump();
  EXPECT_EQ(c->get_int("pinned"), 1);
  EXPECT_EQ(c->get_int("seeded"), 0);
  EXPECT_EQ(c->get_int("added"), 1) << c->dump();

  // The second session still reads the registry's index, but gets the crate from the store:
  // the registry no longer has it.
  sfs::remove(docroot + "/crates/tinycrate/1.0.0/download");
  auto second = start(git.url("rustapp"), wf);
  ASSERT_TRUE(ends(second, "succeeded", std::chrono::seconds(240)))
      << test::session_field(*node, second, "reason") << "\n"
      << logs(second, "setup");
  EXPECT_NE(logs(second, "run").find("answer 42"), std::string::npos);
  auto s2 = setup_end(second);
  EXPECT_EQ(s2.find("cache")->find("cargo")->get_int("seeded"), 1) << s2.dump();

  // Hostile: a crate planted in another registry directory is refused and not remembered.
  auto planted = start(git.url("rustapp"), R"x(
[[steps]]
id = "plant"
run = ["sh", "-c", "d=$HOME/.cargo/registry/cache/evil-0123456789abcdef; mkdir -p $d && echo evil > $d/tinycrate-1.0.0.crate"]

[[steps]]
id = "setup"
kind = "setup"
network = "host"
needs = ["plant"]
)x");
  ASSERT_TRUE(ends(planted, "succeeded", std::chrono::seconds(240)))
      << test::session_field(*node, planted, "reason");
  auto p3 = setup_end(planted);
  EXPECT_EQ(p3.find("cache")->find("cargo")->get_int("refused"), 1) << p3.dump();
  EXPECT_EQ(p3.find("cache")->find("cargo")->get_int("added"), 0) << p3.dump();
  auto learned = fs::read_file(node->data_dir() + "/cache/cargo/registries");
  ASSERT_TRUE(learned);
  EXPECT_EQ(learned->find("evil"), std::string::npos) << *learned;
  // The store holds the one genuine crate.
  auto stored = test::run_checked(
      {"sh", "-c", "cat " + node->data_dir() + "/cache/cargo/sha256/*/* | sha256sum"});
  EXPECT_EQ(stored.substr(0, 64), sum);
}

TEST_F(setup_fixture, setup_detects_each_ecosystem_and_says_what_it_ran) {
  start_node();
  // Python with a local wheel directory: pip installs without an index.
  auto whl = tiny_wheel(dir / "wheel", 42);
  git.repo("py", {{"requirements.txt", "--no-index\n--find-links wheels\ntinylib==1.0\n"},
                  {"wheels/tinylib-1.0-py3-none-any.whl", whl}});
  git.repo("go",
           {{"go.mod", "module example.com/app\n\ngo 1.19\n\nrequire example.com/lib v1.0.0\n"},
            {"main.go", "package main\n\nfunc main() {}\n"},
            {"vendor/modules.txt", "# example.com/lib v1.0.0\n## explicit\nexample.com/lib\n"},
            {"vendor/example.com/lib/lib.go", "package lib\n"}});
  git.repo("rust", {{"Cargo.toml",
                     "[package]\nname = \"app\"\nversion = \"0.1.0\"\n\n"
                     "[dependencies]\ntinycrate = \"1\"\n"},
                    {"Cargo.lock",
                     "version = 3\n\n[[package]]\nname = \"app\"\nversion = "
                     "\"0.1.0\"\ndependencies = [\n \"tinycrate\",\n]\n\n"
                     "[[package]]\nname = \"tinycrate\"\nversion = \"1.0.0\"\n"
                     "source = \"registry+https://github.com/rust-lang/"
                     "crates.io-index\"\nchecksum = \"" +
                         std::string(64, 'a') + "\"\n"},
                    {".cargo/config.toml",
                     "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n"
                     "[source.vendored-sources]\ndirectory = \"vendor\"\n"},
                    {"vendor/tinycrate/Cargo.toml",
                     "[package]\nname = \"tinycrate\"\nversion = \"1.0.0\"\n"},
                    {"vendor/tinycrate/src/lib.rs", "pub fn answer() -> i32 { 42 }\n"},
                    {"vendor/tinycrate/.cargo-checksum.json",
                     "{\"files\": {}, \"package\": \"" + std::string(64, 'a') + "\"}\n"},
                    {"src/main.rs", "fn main() {}\n"}});
  git.repo("native", {{"CMakeLists.txt", "project(x)\n"}, {"Makefile", "all:\n"}});
  git.repo("plain", {{"README.md", "nothing to install\n"}});

  const char* setup_only = "[[steps]]\nid = \"setup\"\nkind = \"setup\"\n";
  auto py = start(git.url("py"), std::string(setup_only) +
                                     "\n[[steps]]\nid = \"use\"\nrun = [\".venv/bin/python\", "
                                     "\"-c\", \"import tinylib; print(tinylib.answer())\"]\n");
  auto go = start(git.url("go"), setup_only);
  auto rust = start(git.url("rust"), setup_only);
  auto native = start(git.url("native"), setup_only);
  auto plain = start(git.url("plain"), setup_only);

  ASSERT_TRUE(ends(py, "succeeded")) << test::session_field(*node, py, "reason") << "\n"
                                     << logs(py, "setup");
  EXPECT_NE(logs(py, "use").find("42"), std::string::npos);
  auto p = setup_end(py);
  EXPECT_EQ(p.find("detected")->dump(), R"(["python"])");
  auto pcmd = p.find("plan")->as_array()[0].get_string("command");
  EXPECT_TRUE(pcmd == "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" ||
              pcmd.rfind("uv venv .venv", 0) == 0)
      << pcmd;
  ASSERT_EQ(p.find("ran")->as_array().size(), 1u);
  EXPECT_EQ(p.find("ran")->as_array()[0].get_int("exit_code", -1), 0);

  ASSERT_TRUE(ends(go, "succeeded")) << test::session_field(*node, go, "reason");
  auto g = setup_end(go);
  EXPECT_EQ(g.find("detected")->dump(), R"(["go"])");
  EXPECT_EQ(g.find("plan")->as_array()[0].get_string("command"), "");
  EXPECT_EQ(g.find("plan")->as_array()[0].get_string("why"), "vendor/modules.txt");
  EXPECT_TRUE(g.find("ran")->as_array().empty());

  // Rust: the vendored crate is fetched offline; without cargo in the sandbox the step says so.
  bool has_cargo = ::access("/usr/bin/cargo", X_OK) == 0;
  ASSERT_TRUE(ends(rust, has_cargo ? "succeeded" : "failed"))
      << status(rust) << " " << test::session_field(*node, rust, "reason");
  auto r = setup_end(rust);
  EXPECT_EQ(r.find("detected")->dump(), R"(["rust"])");
  EXPECT_EQ(r.find("plan")->as_array()[0].get_string("command"), "cargo fetch --locked --offline");
  if (status(rust) == "failed") {
    auto why = test::session_field(*node, rust, "reason");
    EXPECT_NE(why.find("`cargo fetch --locked --offline` (rust) could not run: cargo is not "
                       "installed in the sandbox"),
              std::string::npos)
        << why;
  }

  ASSERT_TRUE(ends(native, "succeeded")) << test::session_field(*node, native, "reason");
  auto n = setup_end(native);
  EXPECT_EQ(n.find("detected")->dump(), R"(["cmake","make"])");
  EXPECT_TRUE(n.find("ran")->as_array().empty());

  ASSERT_TRUE(ends(plain, "succeeded")) << test::session_field(*node, plain, "reason");
  auto e = setup_end(plain);
  EXPECT_EQ(e.find("detected")->dump(), "[]");
  EXPECT_NE(logs(plain, "setup").find("nothing to set up"), std::string::npos);
}

TEST_F(setup_fixture, hostile_install_scripts_are_refused_and_the_cache_is_unharmed) {
  auto& reg = with_registry();
  locked_repo(git, reg, dir, "good", node_project());
  auto warm = start(git.url("good"), install_and_test);
  ASSERT_TRUE(ends(warm, "succeeded")) << test::session_field(*node, warm, "reason");
  auto cache_root = node->data_dir() + "/cache";
  bool match = false;
  ASSERT_TRUE(trees_built(1));  // built in the background after the warm-up session
  auto before = store_digests(cache_root, &match);
  ASSERT_TRUE(match);
  ASSERT_NE(before.find("/sha512/"), std::string::npos) << before;

  // Each preinstall script tries one thing; setup runs without network, from the warm cache.
  auto other_home = node->data_dir() + "/home/" + warm;
  std::map<std::string, std::string> attacks = {
      {"outside", "echo pwned > /etc/berth-pwned && echo WROTE-OUTSIDE"},
      {"neighbour", "cat " + other_home + "/.npm/_cacache/content-v2/sha512/*/*/* " + cache_root +
                        "/npm/sha512/*/* > /dev/null && echo READ-OTHERS"},
      {"loopback", "node -e \"require('http').get('" + reg.url() +
                       "tiny-math', r => { console.log('REACHED-HOST'); process.exit(0) })"
                       ".on('error', e => { console.error(e.code); process.exit(1) })\""},
      // Replace the linked cache entries by other bytes: the session's own copy changes, the
      // store must not.
      {"poison",
       "set -e; for f in $HOME/.npm/_cacache/content-v2/sha512/*/*/*; do "
       "(echo x >> \"$f\") 2>/dev/null && echo WROTE-LINK; rm -f \"$f\"; echo evil > \"$f\"; done; "
       // and offer a new entry whose content is not what its name says
       "d=$HOME/.npm/_cacache/content-v2/sha512/00/00; mkdir -p $d; "
       "echo evil > $d/" +
           std::string(124, '0') + "; exit 1"}};
  std::map<std::string, std::string> ids;
  for (const auto& [name, script] : attacks) {
    std::string escaped;
    for (char c : script) {
      if (c == '"' || c == '\\') escaped += '\\';
      escaped += c;
    }
    locked_repo(git, reg, dir, name, node_project(", \"preinstall\": \"" + escaped + "\""));
    ids[name] = start(git.url(name), "[[steps]]\nid = \"setup\"\nkind = \"setup\"\n");
  }
  for (const auto& [name, id] : ids) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(ends(id, "failed")) << status(id) << "\n" << logs(id, "setup");
    auto why = test::session_field(*node, id, "reason");
    EXPECT_NE(why.find("setup: `npm ci --no-audit --no-fund` (node) exited with code"),
              std::string::npos)
        << why;
    EXPECT_NE(why.find("network = \"none\""), std::string::npos) << why;
    auto out = logs(id, "setup");
    // A marker on a line of its own: the act succeeded (npm echoes the script itself too).
    for (const char* bad : {"WROTE-OUTSIDE", "READ-OTHERS", "REACHED-HOST", "WROTE-LINK"})
      EXPECT_EQ(("\n" + out).find("\n" + std::string(bad) + "\n"), std::string::npos) << out;
  }
  // The poisoner's replacement files were offered to the store and refused: they do not hash
  // to their names.
  auto failed = of_type(test::journal(*node, ids["poison"]), "step.failed", "setup");
  ASSERT_FALSE(failed.empty());
  const auto* rep = failed.back().find("cache");
  ASSERT_NE(rep, nullptr) << failed.back().dump();
  EXPECT_EQ(rep->find("npm")->get_int("seeded"), 2) << rep->dump();
  EXPECT_EQ(rep->find("npm")->get_int("added"), 0) << rep->dump();
  EXPECT_EQ(rep->find("npm")->get_int("refused"), 1) << rep->dump();
  EXPECT_FALSE(sfs::exists("/etc/berth-pwned"));
  auto after = store_digests(cache_root, &match);
  EXPECT_TRUE(match);
  EXPECT_EQ(before, after);
  EXPECT_EQ(reg.tarballs(), 2u);
}
