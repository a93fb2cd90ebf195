// setup: a Node project's first setup vs host `npm ci`, and the warm cache vs the first.
#include "harness.hpp"
#include "scenarios.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/process.hpp"
#include "berth/fixtures/git_server.hpp"
#include "berth/fixtures/npm_registry.hpp"
#include "berth/setup/cache.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>

namespace berth::bench {

namespace {

// ~50 generated packages: 10 the project needs, each needing 4 more, with some code in each.
json::value bench_packages() {
  json::value all = json::value::make_array();
  for (int k = 0; k < 50; ++k) {
    json::value p = json::value::make_object();
    char name[32];
    std::snprintf(name, sizeof name, "bench-pkg-%02d", k);
    p.set("name", name);
    p.set("version", "1." + std::to_string(k) + ".0");
    json::value deps = json::value::make_object();
    if (k < 10)
      for (int d = 10 + 4 * k; d < 14 + 4 * k; ++d) {
        char dn[32];
        std::snprintf(dn, sizeof dn, "bench-pkg-%02d", d);
        deps.set(dn, "^1." + std::to_string(d) + ".0");
      }
    p.set("dependencies", std::move(deps));
    std::string code = "// " + std::string(name) + "\n";
    for (int f = 0; f < 60; ++f)
      code += "exports.f" + std::to_string(f) + " = (x) => x * " + std::to_string(k + f) + " + " +
              std::to_string(f) + "; // generated for the bench\n";
    json::value files = json::value::make_object();
    files.set("index.js", code);
    files.set("README.md", "# " + std::string(name) + "\n\nA package of `berth bench setup`.\n");
    p.set("files", std::move(files));
    all.push(std::move(p));
  }
  return all;
}

}  // namespace

int bench_setup(const options& g, int n) {
  int rounds = n > 0 ? n : 3;
  bench_env env;
  scratch sc;
  if (auto st = sc.make(); !st) return report(st.err());
  const auto& dir = sc.dir;
  auto& penv = sc.env;
  auto run = [&](const std::vector<std::string>& argv, const std::string& cwd) -> result<double> {
    process::spawn_options so;
    so.env = penv;
    so.cwd = cwd;
    auto t0 = clock::now();
    auto r = process::run_capture(argv, {}, std::chrono::minutes(10), 1 << 20, so);
    auto us = us_since(t0);
    if (!r) return r.err();
    if (r->exit_code != 0)
      return error{errc::internal, argv[0] + " " + argv[1] + " failed: " + r->err + r->out};
    return us;
  };

  // The registry (fixtures/npm_registry.mjs) on a port of its own.
  fixtures::npm_registry reg(dir + "/registry", bench_packages());
  if (auto st = reg.start(); !st) return report(st.err());
  std::string registry = reg.url();

  // The project: its package.json needs the 10 top packages; the host's npm writes the lockfile.
  auto proj = dir + "/project";
  std::filesystem::create_directories(proj);
  std::string deps;
  for (int k = 0; k < 10; ++k) {
    char dn[64];
    std::snprintf(dn, sizeof dn, "%s\"bench-pkg-%02d\": \"^1.%d.0\"", k ? ", " : "", k, k);
    deps += dn;
  }
  for (const auto& [file, text] : std::map<std::string, std::string>{
           {"package.json",
            "{\"name\": \"bench-app\", \"version\": \"1.0.0\", \"private\": "
            "true, \"dependencies\": {" +
                deps + "}}\n"},
           {".gitignore", "node_modules/\n"}})
    if (auto st = fs::write_file_atomic(proj + "/" + file, text); !st) return report(st.err());
  const auto npm_opts = reg.npm_options();
  auto with = [&](std::vector<std::string> argv, const std::string& cache) {
    argv.insert(argv.end(), npm_opts.begin(), npm_opts.end());
    argv.push_back("--cache");
    argv.push_back(cache);
    return argv;
  };
  if (auto r = run(with({"npm", "install", "--package-lock-only"}, dir + "/lock-cache"), proj); !r)
    return report(r.err());
  std::filesystem::create_directories(dir + "/repos");
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {"git", "init", "-q", "-b", "main"},
           {"git", "add", "-A"},
           {"git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q",
            "-m", "bench app"},
           {"git", "clone", "-q", "--bare", ".", dir + "/repos/app.git"}})
    if (auto r = run(argv, proj); !r) return report(r.err());
  fixtures::git_server server(dir);
  if (auto st = server.start(); !st) return report(st.err());
  auto url = server.url("app");

  // The sandbox gets the CPUs the host's npm ci gets (no quota): the same work, the same
  // machine; the default quota of one core is a policy, not the runtime's cost.
  if (auto st = env.start({{"BERTH_SANDBOX_ENV", "npm_config_registry=" + registry},
                           {"BERTH_SANDBOX_CPU_PERCENT", "0"}});
      !st)
    return report(st.err());
  event_feed feed;
  if (auto st = feed.follow(*env.client, env.names, 0); !st) return report(st.err());
  auto spec = *json::parse(R"({"repo":")" + url +
                           R"(","steps":[{"id":"setup","kind":"setup","network":"host"}]})");
  setup::cache_store store(env.dir + "/node/cache", 0, -1, -1);
  // One setup session: wall time from step.started to step.finished on the server's clock
  // (seeding, the sandboxed npm ci, promotion), and what its cache report said.
  auto one_setup = [&](json::value* cache) -> result<double> {
    auto id = env.start_session(spec);
    if (!id) return id.err();
    std::int64_t started = 0, finished = 0;
    std::string failed;
    bool done = feed.wait(
        [&](auto& evs) {
          for (std::size_t i = 0; i < evs.size(); ++i) {
            const auto& e = evs[i];
            if (e.get_string("session") != *id) continue;
            auto t = e.get_string("type");
            if (t == ev::step_started) started = feed.stored_ns[i];
            if (t == ev::step_finished) {
              finished = feed.stored_ns[i];
              if (cache && e.find("data")->find("cache")) {
                *cache = *e.find("data")->find("cache");
                // What ran in the sandbox, and for how long, beside what the cache did.
                if (const auto* ran = e.find("data")->find("ran")) cache->set("ran", *ran);
              }
            }
            if (t == ev::session_failed) failed = e.find("data")->get_string("reason");
          }
          return (started && finished) || !failed.empty();
        },
        std::chrono::minutes(5));
    if (!failed.empty()) return error{errc::internal, "bench setup session failed: " + failed};
    if (!done) return error{errc::timeout, "the bench's setup session did not finish in 5m"};
    return static_cast<double>(finished - started) / 1000.0;
  };

  row first{"first setup (50 packages, cold cache)", "npm ci on the host (cold cache)", {}, {}};
  row warm{"second setup (warm cache)", "first setup (cold cache)", {}, {}};
  row floor{"host npm ci, warm cache (npm's floor)", "host npm ci, cold cache", {}, {}};
  json::value last_first, last_warm;
  for (int r = -1; r < rounds; ++r) {  // one warm-up round of each
    auto copy = dir + "/host-" + std::to_string(r + 1);
    std::filesystem::copy(proj, copy, std::filesystem::copy_options::recursive);
    std::filesystem::remove_all(copy + "/.git");
    auto host = run(with({"npm", "ci"}, copy + "-cache"), copy);
    if (!host) return report(host.err());
    // The package manager's own floor: npm ci again on the host, its cache now warm.
    fs::remove_tree(copy + "/node_modules");
    auto host_warm = run(with({"npm", "ci"}, copy + "-cache"), copy);
    if (!host_warm) return report(host_warm.err());
    fs::remove_tree(copy);
    fs::remove_tree(copy + "-cache");
    if (auto p = store.prune(0); !p) return report(p.err());
    auto cold = one_setup(&last_first);
    if (!cold) return report(cold.err());
    auto hot = one_setup(&last_warm);
    if (!hot) return report(hot.err());
    if (r < 0) continue;
    first.peer_us.push_back(*host);
    first.berth_us.push_back(*cold);
    warm.peer_us.push_back(*cold);
    warm.berth_us.push_back(*hot);
    floor.peer_us.push_back(*host);
    floor.berth_us.push_back(*host_warm);
  }
  json::value extra = json::value::make_object();
  extra.set("first_cache", last_first);
  extra.set("warm_cache", last_warm);
  extra.set("note",
            "berth: step.started -> step.finished of a setup step (seed from the node's cache, "
            "npm ci in the sandbox without a CPU quota, verify and promote; warm: the node "
            "restores the installed tree it built from verified tarballs), local registry over "
            "loopback; goals: "
            "first setup <= 1.3x host npm ci, warm <= 0.3x first; the third row is what a warm "
            "cache saves npm itself on this machine, the floor of the second");
  return emit(g, "setup", {row_json(first), row_json(warm), row_json(floor)}, std::move(extra));
}

}  // namespace berth::bench
