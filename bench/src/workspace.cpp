// workspace: a session's clone vs git's own, same repository, same run.
#include "harness.hpp"
#include "scenarios.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/process.hpp"
#include "berth/fixtures/git_server.hpp"
#include "berth/workspace/git.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

namespace berth::bench {

namespace {

// A bare repository of about `files + commits * per_commit * 2 + commits` objects, built with
// git fast-import: `files` files in directories of 50, then `commits` commits changing
// `per_commit` files each.
status make_repo(const std::string& path, int files, int commits, int per_commit,
                 const std::map<std::string, std::string>& env) {
  std::string stream;
  std::uint64_t seed = 42;
  auto rnd = [&] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return seed >> 33;
  };
  auto content = [&](int f, int version) {
    std::string c = "// file " + std::to_string(f) + " version " + std::to_string(version) + "\n";
    for (int l = 0; l < 6; ++l)
      c += "int v" + std::to_string(l) + " = " + std::to_string(rnd()) + ";\n";
    return c;
  };
  auto name = [](int f) {
    return "src/d" + std::to_string(f / 50) + "/f" + std::to_string(f) + ".c";
  };
  auto commit = [&](int n, const std::vector<std::pair<std::string, std::string>>& changes) {
    std::string msg = "commit " + std::to_string(n) + "\n";
    stream += "commit refs/heads/main\ncommitter Bench <bench@localhost> " +
              std::to_string(1700000000 + n) + " +0000\ndata " + std::to_string(msg.size()) + "\n" +
              msg;
    for (const auto& [path, data] : changes)
      stream +=
          "M 100644 inline " + path + "\ndata " + std::to_string(data.size()) + "\n" + data + "\n";
  };
  std::vector<std::pair<std::string, std::string>> first;
  first.reserve(static_cast<std::size_t>(files));
  for (int f = 0; f < files; ++f) first.emplace_back(name(f), content(f, 0));
  commit(0, first);
  for (int c = 1; c <= commits; ++c) {
    std::vector<std::pair<std::string, std::string>> changes;
    for (int k = 0; k < per_commit; ++k) {
      int f = static_cast<int>(rnd() % static_cast<std::uint64_t>(files));
      changes.emplace_back(name(f), content(f, c));
    }
    commit(c, changes);
  }
  process::spawn_options so;
  so.env = env;
  auto init = process::run_capture({"git", "init", "-q", "--bare", "-b", "main", path}, {},
                                   std::chrono::minutes(1), 1 << 20, so);
  if (!init || init->exit_code != 0) return error{errc::internal, "git init " + path + " failed"};
  so.cwd = path;
  auto imp = process::run_capture({"git", "fast-import", "--quiet"}, stream,
                                  std::chrono::minutes(10), 1 << 20, so);
  if (!imp || imp->exit_code != 0)
    return error{errc::internal, "git fast-import failed: " + (imp ? imp->err : imp.err().message)};
  auto gc = process::run_capture({"git", "gc", "-q", "--aggressive"}, {}, std::chrono::minutes(10),
                                 1 << 20, so);
  if (!gc || gc->exit_code != 0) return error{errc::internal, "git gc failed"};
  return process::run_capture({"git", "config", "http.receivepack", "true"}, {},
                              std::chrono::minutes(1), 1 << 20, so)
                 .ok()
             ? status{}
             : status{error{errc::internal, "git config failed"}};
}

std::int64_t count_objects(const std::string& path, const std::map<std::string, std::string>& env) {
  process::spawn_options so;
  so.env = env;
  so.cwd = path;
  auto r = process::run_capture({"git", "rev-list", "--objects", "--all"}, {},
                                std::chrono::minutes(2), 64 << 20, so);
  if (!r) return 0;
  return static_cast<std::int64_t>(std::count(r->out.begin(), r->out.end(), '\n'));
}

}  // namespace

int bench_workspace(const options& g, int n) {
  int rounds = n > 0 ? n : 5;
  // Under $TMPDIR: TMPDIR=/dev/shm takes the disk's noise out of the comparison.
  scratch sc;
  if (auto st = sc.make(); !st) return report(st.err());
  const auto& dir = sc.dir;
  auto& env = sc.env;
  fixtures::git_server server(dir);
  if (auto st = server.start(); !st) return report(st.err());
  auto url_of = [&](const std::string& name) { return server.url(name); };
  auto git = [&](const std::vector<std::string>& args) -> result<double> {
    std::vector<std::string> argv = {"git"};
    argv.insert(argv.end(), args.begin(), args.end());
    process::spawn_options so;
    so.env = env;
    auto t0 = clock::now();
    auto r = process::run_capture(argv, {}, std::chrono::minutes(30), 1 << 20, so);
    auto us = us_since(t0);
    if (!r) return r.err();
    if (r->exit_code != 0) return error{errc::internal, argv[1] + " failed: " + r->err};
    return us;
  };
  struct repo_size {
    const char* name;
    int files, commits, per_commit, rounds;
  };
  std::vector<json::value> rows;
  json::value extra = json::value::make_object();
  int serial = 0;
  for (const auto& size : {repo_size{"small", 2000, 800, 4, rounds},
                           repo_size{"large", 16000, 5000, 4, std::max(1, rounds / 2)}}) {
    std::string name = size.name;
    if (auto st = make_repo(dir + "/repos/" + name + ".git", size.files, size.commits,
                            size.per_commit, env);
        !st)
      return report(st.err());
    auto objects = count_objects(dir + "/repos/" + name + ".git", env);
    extra.set(name + "_objects", objects);
    auto url = url_of(name);
    row first{"first clone over HTTP (" + name + ", " + std::to_string(objects) + " objects)",
              "git clone over HTTP",
              {},
              {}};
    row warm{
        "workspace from warm mirror (" + name + ")", "git clone --local of the mirror", {}, {}};
    row prep{
        "workspace incl. mirror fetch (" + name + ")", "git clone --local of the mirror", {}, {}};
    for (int i = 0; i < size.rounds; ++i) {
      // Alternating, so that drift of the machine hits both sides alike.
      auto tag = std::to_string(serial++);
      auto peer = git({"clone", "-q", url, dir + "/peer-" + tag});
      if (!peer) return report(peer.err());
      first.peer_us.push_back(*peer);
      workspace::mirror_cache mirrors(dir + "/mirrors-" + tag);
      workspace::clone_options co;
      co.branch = "berth/bench";
      auto t0 = clock::now();
      auto mirror = mirrors.update(url);
      if (!mirror) return report(mirror.err());
      auto ws = workspace::clone_workspace(*mirror, url, dir + "/ws-" + tag, co);
      if (!ws) return report(ws.err());
      first.berth_us.push_back(us_since(t0));
      for (int w = 0; w < 3; ++w) {
        auto wtag = tag + "-" + std::to_string(w);
        auto local = git({"clone", "-q", "--local", *mirror, dir + "/local-" + wtag});
        if (!local) return report(local.err());
        warm.peer_us.push_back(*local);
        prep.peer_us.push_back(*local);
        t0 = clock::now();
        auto c = workspace::clone_workspace(*mirror, url, dir + "/warm-" + wtag, co);
        if (!c) return report(c.err());
        warm.berth_us.push_back(us_since(t0));
        t0 = clock::now();
        auto up = mirrors.update(url);
        if (!up) return report(up.err());
        c = workspace::clone_workspace(*up, url, dir + "/prep-" + wtag, co);
        if (!c) return report(c.err());
        prep.berth_us.push_back(us_since(t0));
        for (const char* x : {"/local-", "/warm-", "/prep-"}) fs::remove_tree(dir + x + wtag);
      }
      for (const char* x : {"/peer-", "/ws-", "/mirrors-"}) fs::remove_tree(dir + x + tag);
    }
    rows.push_back(row_json(first));
    rows.push_back(row_json(warm));
    rows.push_back(row_json(prep));
  }
  extra.set("dir", dir.substr(0, dir.rfind('/')));
  return emit(g, "workspace", rows, std::move(extra));
}

}  // namespace berth::bench
