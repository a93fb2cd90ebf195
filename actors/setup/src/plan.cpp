#include "berth/setup/plan.hpp"

#include "berth/base/fs.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <sstream>

namespace berth::setup {
namespace sfs = std::filesystem;

namespace {

bool has(const std::string& dir, const char* f) {
  std::error_code ec;
  return sfs::exists(dir + "/" + f, ec);
}

bool contains(const std::string& dir, const char* f, std::string_view what) {
  auto text = fs::read_file(dir + "/" + f);
  return text && text->find(what) != std::string::npos;
}

bool on_path(const std::vector<std::string>& dirs, const char* tool) {
  for (const auto& d : dirs)
    if (::access((d + "/" + tool).c_str(), X_OK) == 0) return true;
  return false;
}

// A pyproject.toml that declares an optional dependency group named `dev`.
bool has_dev_extra(const std::string& dir) {
  auto text = fs::read_file(dir + "/pyproject.toml");
  if (!text) return false;
  auto at = text->find("[project.optional-dependencies]");
  if (at == std::string::npos) return false;
  std::istringstream in(text->substr(at));
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    auto s = line.find_first_not_of(" \t");
    if (s == std::string::npos) continue;
    if (line[s] == '[') break;  // the next table
    if (line.compare(s, 3, "dev") == 0) {
      auto rest = line.find_first_not_of(" \t", s + 3);
      if (rest != std::string::npos && line[rest] == '=') return true;
    }
  }
  return false;
}

std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

}  // namespace

plan detect(const std::string& dir, const std::vector<std::string>& tool_dirs) {
  plan p;
  auto add = [&](std::string eco, std::string manager, std::string cmd, std::string why) {
    p.detected.push_back(eco);
    p.steps.push_back({std::move(eco), std::move(manager), std::move(cmd), std::move(why)});
  };
  if (has(dir, "package.json")) {
    if (has(dir, "pnpm-lock.yaml"))
      add("node", "pnpm", "pnpm install --frozen-lockfile", "pnpm-lock.yaml");
    else if (has(dir, "yarn.lock") && has(dir, ".yarnrc.yml"))
      add("node", "yarn", "yarn install --immutable", "yarn.lock");
    else if (has(dir, "yarn.lock"))
      add("node", "yarn", "yarn install --frozen-lockfile", "yarn.lock");
    else if (has(dir, "package-lock.json"))
      add("node", "npm", "npm ci --no-audit --no-fund", "package-lock.json");
    else if (has(dir, "npm-shrinkwrap.json"))
      add("node", "npm", "npm ci --no-audit --no-fund", "npm-shrinkwrap.json");
    else
      add("node", "npm", "npm install --no-audit --no-fund", "package.json");
  }
  bool req = has(dir, "requirements.txt");
  if (req || has(dir, "pyproject.toml") || has(dir, "setup.py")) {
    std::string what =
        req ? "-r requirements.txt"
            : (has(dir, "pyproject.toml") && has_dev_extra(dir) ? "-e '.[dev]'" : "-e .");
    std::string why =
        req ? "requirements.txt" : (has(dir, "pyproject.toml") ? "pyproject.toml" : "setup.py");
    if (on_path(tool_dirs, "uv"))
      add("python", "uv", "uv venv .venv && uv pip install --python .venv/bin/python " + what, why);
    else
      add("python", "python3", "python3 -m venv .venv && .venv/bin/pip install " + what, why);
  }
  if (has(dir, "Cargo.toml")) {
    bool vendored = has(dir, "vendor") && (contains(dir, ".cargo/config.toml", "vendored") ||
                                           contains(dir, ".cargo/config", "vendored"));
    bool locked = has(dir, "Cargo.lock");
    std::string cmd =
        std::string("cargo fetch") + (locked ? " --locked" : "") + (vendored ? " --offline" : "");
    add("rust", "cargo", cmd, vendored ? "vendor/" : (locked ? "Cargo.lock" : "Cargo.toml"));
  }
  if (has(dir, "go.mod")) {
    if (has(dir, "vendor/modules.txt"))
      add("go", "go", "", "vendor/modules.txt");  // vendored: go builds with -mod=vendor
    else
      add("go", "go", "go mod download", has(dir, "go.sum") ? "go.sum" : "go.mod");
  }
  if (has(dir, "CMakeLists.txt")) add("cmake", "cmake", "", "CMakeLists.txt");
  for (const char* mk : {"GNUmakefile", "Makefile", "makefile"})
    if (has(dir, mk)) {
      add("make", "make", "", mk);
      break;
    }
  return p;
}

plan explicit_plan(const std::string& dir, const std::vector<std::string>& tool_dirs,
                   const std::vector<std::string>& run) {
  plan p;
  p.detected = detect(dir, tool_dirs).detected;
  std::string cmd;
  for (const auto& a : run) cmd += (cmd.empty() ? "" : " ") + a;
  p.steps.push_back({"explicit", run.empty() ? "" : run[0], cmd, "run"});
  return p;
}

std::vector<std::string> script(const plan& p, const std::vector<std::string>& run) {
  std::string s = "R=\"$HOME/" + std::string(report_file) + "\"\n: > \"$R\"\n";
  bool any = false;
  for (std::size_t i = 0; i < p.steps.size(); ++i) {
    const auto& st = p.steps[i];
    if (!st.restored.empty()) {
      any = true;
      s += "echo " + quoted("+ " + st.restored) + "\n";
      continue;
    }
    if (st.command.empty()) continue;
    any = true;
    bool expl = st.ecosystem == "explicit";
    auto idx = std::to_string(i);
    s += "echo " + quoted("+ " + st.command) + "\n";
    if (!expl)
      s += "command -v " + st.manager + " >/dev/null 2>&1 || { echo " +
           quoted("setup: " + st.ecosystem + " project (" + st.why + "), but " + st.manager +
                  " is not installed in the sandbox") +
           " >&2; echo '" + idx + " 127 0' >> \"$R\"; exit 127; }\n";
    s += "t0=$(date +%s%3N)\n";
    s += expl ? "\"$@\"\n" : "( " + st.command + " )\n";
    s += "rc=$?\nt1=$(date +%s%3N)\necho \"" + idx + " $rc $((t1 - t0))\" >> \"$R\"\n";
    s += "[ $rc -eq 0 ] || exit $rc\n";
  }
  if (!any) {
    std::string what;
    for (const auto& d : p.detected) what += (what.empty() ? "" : ", ") + d;
    s += what.empty() ? "echo 'setup: nothing to set up (no package.json, requirements.txt, "
                        "pyproject.toml, Cargo.toml, go.mod, CMakeLists.txt or Makefile)'\n"
                      : "echo " + quoted("setup: " + what + ": nothing to fetch") + "\n";
  }
  // An explicit command runs as "$@": the user's words are never re-quoted by a shell.
  std::vector<std::string> argv = {"sh", "-c", s, "berth-setup"};
  argv.insert(argv.end(), run.begin(), run.end());
  return argv;
}

std::vector<ran> read_report(const std::string& home) {
  std::vector<ran> out;
  int dfd = ::open(home.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) return out;
  int fd = ::openat(dfd, report_file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  ::close(dfd);
  if (fd < 0) return out;
  std::string text(4096, '\0');
  auto n = ::read(fd, text.data(), text.size());
  ::close(fd);
  if (n <= 0) return out;
  text.resize(static_cast<std::size_t>(n));
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    ran r;
    std::istringstream ls(line);
    long long idx = -1, ms = -1;
    int rc = -1;
    if (!(ls >> idx >> rc >> ms) || idx < 0 || ms < 0 || rc < 0 || rc > 255) continue;
    r.index = static_cast<std::size_t>(idx);
    r.exit_code = rc;
    r.duration_ms = ms;
    out.push_back(r);
  }
  return out;
}

void clear_report(const std::string& home) {
  std::error_code ec;
  sfs::remove(home + "/" + report_file, ec);
}

json::value details(const plan& p, const std::vector<ran>& r) {
  json::value d = json::value::make_object();
  json::value detected = json::value::make_array();
  for (const auto& e : p.detected) detected.push(e);
  json::value planned_v = json::value::make_array();
  for (const auto& st : p.steps) {
    json::value x = json::value::make_object();
    x.set("ecosystem", st.ecosystem);
    x.set("manager", st.manager);
    x.set("command", st.command);
    x.set("why", st.why);
    if (!st.restored.empty()) x.set("restored", st.restored);
    planned_v.push(std::move(x));
  }
  json::value ran_v = json::value::make_array();
  for (const auto& e : r) {
    if (e.index >= p.steps.size()) continue;
    json::value x = json::value::make_object();
    x.set("ecosystem", p.steps[e.index].ecosystem);
    const auto& st = p.steps[e.index];
    x.set("command", st.restored.empty() ? st.command : st.restored);
    x.set("exit_code", e.exit_code);
    x.set("duration_ms", e.duration_ms);
    ran_v.push(std::move(x));
  }
  d.set("detected", std::move(detected));
  d.set("plan", std::move(planned_v));
  d.set("ran", std::move(ran_v));
  return d;
}

std::optional<std::string> failure_reason(const plan& p, const std::vector<ran>& r, bool network) {
  for (const auto& e : r) {
    if (e.exit_code == 0 || e.index >= p.steps.size()) continue;
    const auto& st = p.steps[e.index];
    std::string why = "setup: `" + st.command + "` (" + st.ecosystem + ") ";
    if (e.exit_code == 127 && st.ecosystem != "explicit")
      why += "could not run: " + st.manager + " is not installed in the sandbox";
    else
      why += "exited with code " + std::to_string(e.exit_code);
    if (!network && st.ecosystem != "cmake" && st.ecosystem != "make")
      why +=
          "; the sandbox had no network (network = \"none\"): fetching dependencies needs "
          "network = \"host\" on the step or the session, unless the node's cache already "
          "holds them";
    return why;
  }
  return std::nullopt;
}

status exclude_setup_outputs(const std::string& dir) {
  std::error_code ec;
  if (!sfs::exists(dir + "/.git", ec)) return {};
  auto exclude = dir + "/.git/info/exclude";
  auto existing = fs::read_file(exclude);
  std::string text = existing ? *existing : std::string();
  if (text.find("# berth setup") != std::string::npos) return {};
  sfs::create_directories(dir + "/.git/info", ec);
  return fs::write_file_atomic(exclude, text +
                                            "\n# berth setup\n.venv/\nnode_modules/\n"
                                            ".cache/\n__pycache__/\ntarget/\nbuild/\n");
}

}  // namespace berth::setup
