// berth bench: Berth measured against its peer in the same run, on the same machine.
#include "cli.hpp"
#include "local_node.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/ids.hpp"
#include "berth/base/net.hpp"
#include "berth/base/process.hpp"
#include "berth/core/events.hpp"
#include "berth/gateway/loadgen.hpp"
#include "berth/gateway/tokens.hpp"
#include "berth/persistence/snapshot_store.hpp"
#include "berth/sandbox/sandbox.hpp"
#include "berth/setup/cache.hpp"
#include "berth/workspace/git.hpp"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace berth::cli {

namespace ev = core::ev;

namespace {

using clock = std::chrono::steady_clock;

double us_since(clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(clock::now() - t0).count();
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto idx = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(idx, v.size() - 1)];
}

// User + system CPU of a process so far, in milliseconds.
double cpu_ms(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> f; ++i)
    if (i == 14 || i == 15) ticks += std::stod(f);
  return ticks * 1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::int64_t rss_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

struct row {
  std::string name;
  std::string peer;
  std::vector<double> berth_us;
  std::vector<double> peer_us;
};

json::value row_json(const row& r) {
  json::value v = json::value::make_object();
  auto b50 = percentile(r.berth_us, 0.5), b99 = percentile(r.berth_us, 0.99);
  auto p50 = percentile(r.peer_us, 0.5), p99 = percentile(r.peer_us, 0.99);
  v.set("name", r.name);
  v.set("peer", r.peer);
  v.set("berth_p50_us", b50);
  v.set("berth_p99_us", b99);
  v.set("peer_p50_us", p50);
  v.set("peer_p99_us", p99);
  v.set("ratio_p50", p50 > 0 ? b50 / p50 : 0.0);
  v.set("ratio_p99", p99 > 0 ? b99 / p99 : 0.0);
  v.set("n", static_cast<std::int64_t>(r.berth_us.size()));
  return v;
}

// Journal events of every session, as they arrive.
struct event_feed {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<json::value> events;
  std::vector<std::int64_t> stored_ns;  ///< stream timestamp of each event (server clock)
  std::uint64_t last_seq = 0;
  std::unique_ptr<bus::subscription> sub;

  status follow(bus::client& c, const bus::subjects& names, std::uint64_t from) {
    auto s = c.follow(names.stream_ev(), names.journal_wildcard(), from, [this](bus::message m) {
      auto v = json::parse(m.data);
      std::lock_guard lock(mu);
      last_seq = std::max(last_seq, m.seq);
      if (v) {
        events.push_back(std::move(*v));
        stored_ns.push_back(m.time_ns);
      }
      cv.notify_all();
    });
    if (!s) return s.err();
    sub = std::move(*s);
    return {};
  }
  // Wait until `pred(events)` holds.
  template <class Pred>
  bool wait(Pred pred, std::chrono::seconds timeout) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return pred(events); });
  }
};

struct bench_env {
  std::string dir;
  std::unique_ptr<local_node> node;
  std::unique_ptr<bus::client> client;
  bus::subjects names{"berth"};

  ~bench_env() {
    client.reset();
    if (node) {
      node->stop();
      node->kill_embedded_server();
    }
    if (dir.empty()) return;
    if (std::getenv("BERTH_BENCH_KEEP")) {
      std::fprintf(stderr, "bench: kept %s (node log: %s)\n", dir.c_str(),
                   node ? node->log_path().c_str() : "-");
      return;
    }
    fs::remove_tree(dir);
  }

  status start(std::map<std::string, std::string> env) {
    char tmpl[] = "/tmp/berth-bench-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    if (!d) return error{errc::io_error, "cannot create a temporary directory"};
    dir = d;
    ::chmod(d, 0711);  // the sandbox user walks through to the workspaces
    env.emplace("BERTH_LOG_LEVEL", std::getenv("BERTH_BENCH_LOG_LEVEL")
                                       ? std::getenv("BERTH_BENCH_LOG_LEVEL")
                                       : "warn");
    node = std::make_unique<local_node>(dir + "/node", env);
    BERTH_TRY(node->start());
    return connect();
  }

  status connect() {
    bus::client::options o;
    o.servers = {node->url()};
    o.name = "berth-bench";
    o.send_asap = true;
    o.request_timeout = millis(30'000);
    auto c = bus::client::connect(o);
    if (!c) return c.err();
    client = std::move(*c);
    return {};
  }

  result<std::string> start_session(const json::value& spec) {
    json::value req = json::value::make_object();
    req.set("spec", spec);
    auto r = client->request(names.api("session.start"), req.dump(), millis(30'000));
    if (!r) return r.err();
    auto v = json::parse(r->data);
    if (!v || v->find("error")) return error{errc::internal, "session.start: " + r->data};
    return v->get_string("id");
  }
};

json::value spec_with(const std::string& step_json) {
  return *json::parse(R"({"steps":[)" + step_json + "]}");
}

std::size_t count_type(const std::vector<json::value>& evs, const std::string& type) {
  std::set<std::string> sessions;
  for (const auto& e : evs)
    if (e.get_string("type") == type) sessions.insert(e.get_string("session"));
  return sessions.size();
}

void print_text(const std::string& scenario, const std::vector<json::value>& rows,
                const json::value& extra) {
  std::printf("berth bench %s\n", scenario.c_str());
  std::printf("  %-34s %-34s %12s %12s %9s %9s %7s\n", "measure", "peer", "berth p50", "peer p50",
              "ratio50", "ratio99", "n");
  auto num = [](const json::value& r, const char* k) {
    const auto* v = r.find(k);
    return v && v->is_number() ? v->as_double() : -1.0;  // -1: not measured for this row
  };
  for (const auto& r : rows)
    std::printf("  %-34s %-34s %10.1fus %10.1fus %9.2f %9.2f %7lld\n", r.get_string("name").c_str(),
                r.get_string("peer").c_str(), num(r, "berth_p50_us"), num(r, "peer_p50_us"),
                num(r, "ratio_p50"), num(r, "ratio_p99"), static_cast<long long>(r.get_int("n")));
  for (const auto& [k, v] : extra.as_object())
    std::printf("  %-34s %s\n", k.c_str(), v.dump().c_str());
}

int emit(const globals& g, const std::string& scenario, const std::vector<json::value>& rows,
         json::value extra) {
  if (g.output == "text") {
    print_text(scenario, rows, extra);
    return ok;
  }
  json::value out = json::value::make_object();
  out.set("scenario", scenario);
  json::value arr = json::value::make_array();
  for (const auto& r : rows) arr.push(r);
  out.set("results", std::move(arr));
  for (auto& [k, v] : extra.as_object()) out.set(k, v);
  std::printf("%s\n", out.dump().c_str());
  return ok;
}

// One input through a session (JetStream publish -> actor -> synced snapshot -> journal ->
// the client) against a plain JetStream publish of the same size, `n` times after 100 warm-up
// rounds. What `bench step` reports; `bench graph` measures it again in its own run.
status input_round_trips(bench_env& env, event_feed& feed, const std::string& id, int n, row& r,
                         std::vector<std::pair<std::uint64_t, std::int64_t>>* node_path) {
  auto& c = *env.client;
  std::string input_subject = env.names.input(id);
  std::string peer_subject = env.names.input("bench-peer");
  auto payload = [](int i) {
    return R"({"type":"input","data":)" + std::to_string(1000000 + i) + "}";
  };
  std::size_t seen = 0;
  // Berth's own path, on the server's clock: input stored -> its journal event stored.
  for (int i = -100; i < n; ++i) {  // 100 warm-up rounds of each
    auto t0 = clock::now();
    auto pa = c.publish(peer_subject, payload(i));
    if (!pa) return pa.err();
    auto peer_us = us_since(t0);
    t0 = clock::now();
    auto ack = c.publish(input_subject, payload(i));
    if (!ack) return ack.err();
    auto seq = static_cast<std::int64_t>(ack->seq);
    bool got = feed.wait(
        [&](auto& evs) {
          for (; seen < evs.size(); ++seen) {
            const auto& e = evs[seen];
            if (e.get_string("type") == ev::input_applied &&
                e.find("data")->get_int("input_seq") == seq) {
              ++seen;
              return true;
            }
          }
          return false;
        },
        std::chrono::seconds(30));
    if (!got) return error{errc::timeout, "input " + std::to_string(seq) + " was not applied"};
    auto berth_us = us_since(t0);
    if (i >= 0) {
      r.peer_us.push_back(peer_us);
      r.berth_us.push_back(berth_us);
      std::lock_guard lock(feed.mu);
      if (node_path) node_path->emplace_back(ack->seq, feed.stored_ns[seen - 1]);
    }
  }
  return {};
}

// --- step: one input through a session vs one raw JetStream publish --------------------------

int bench_step(const globals& g, int n) {
  if (n <= 0) n = 2000;
  bench_env env;
  if (auto st = env.start({}); !st) return report(st.err());
  auto& c = *env.client;
  event_feed feed;
  if (auto st = feed.follow(c, env.names, 0); !st) return report(st.err());
  auto id = env.start_session(spec_with(R"({"id":"hold","run":["sleep","3600"]})"));
  if (!id) return report(id.err());
  if (!feed.wait([&](auto& evs) { return count_type(evs, ev::step_started) == 1; },
                 std::chrono::seconds(30)))
    return report(error{errc::timeout, "the bench session did not start"});

  row r{"input -> actor -> snapshot -> journal", "JetStream publish+ack (same size)", {}, {}};
  std::vector<std::pair<std::uint64_t, std::int64_t>> node_path;  // (input seq, event stored)
  if (auto st = input_round_trips(env, feed, *id, n, r, &node_path); !st) return report(st.err());
  std::vector<double> node_us;
  for (const auto& [seq, event_ns] : node_path) {
    auto in = c.message_at(env.names.stream_in(), seq);
    if (!in) return report(in.err());
    if (in->has_value()) node_us.push_back(static_cast<double>(event_ns - (*in)->time_ns) / 1000);
  }
  std::sort(node_us.begin(), node_us.end());
  json::value extra = json::value::make_object();
  extra.set("note",
            "berth path: client JetStream publish of the input, input pushed to the session "
            "actor, synced RocksDB snapshot, fenced journal publish, event pushed to the client");
  if (!node_us.empty()) {
    extra.set("node_path_p50_us", node_us[node_us.size() / 2]);
    extra.set("node_path_p99_us", node_us[node_us.size() * 99 / 100]);
    extra.set("node_path_note",
              "input stored -> journal event stored, on the server's clock: delivery to the "
              "node, the actor, the synced snapshot, the journal publish");
  }
  return emit(g, "step", {row_json(r)}, std::move(extra));
}

// --- sessions: 1,000 idle sessions' memory, and step throughput across sessions ---------------

int bench_sessions(const globals& g, int n) {
  if (n <= 0) n = 1000;
  bench_env env;
  if (auto st = env.start({{"BERTH_NODE_MAX_SESSIONS", std::to_string(n + 1000)}}); !st)
    return report(st.err());
  auto& c = *env.client;
  event_feed feed;
  if (auto st = feed.follow(c, env.names, 0); !st) return report(st.err());
  // An idle session: its step failed once and waits an hour for its retry (no process runs).
  auto idle = spec_with(
      R"({"id":"wait","run":["false"],"retry":{"max_attempts":2,"backoff":"1h","max_backoff":"1h"}})");
  // Warm up code paths and allocator arenas before the baseline.
  for (int i = 0; i < 20; ++i)
    if (auto id = env.start_session(idle); !id) return report(id.err());
  feed.wait([&](auto& evs) { return count_type(evs, ev::step_retrying) >= 20; },
            std::chrono::seconds(60));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto rss0 = rss_bytes(env.node->pid());
  std::vector<std::string> idle_ids;
  for (int i = 0; i < n; ++i) {
    auto id = env.start_session(idle);
    if (!id) return report(id.err());
    idle_ids.push_back(*id);
  }
  if (!feed.wait(
          [&](auto& evs) {
            return count_type(evs, ev::step_retrying) >= static_cast<std::size_t>(n + 20);
          },
          std::chrono::seconds(300)))
    return report(error{errc::timeout, "not every idle session reached its retry wait"});
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  auto rss1 = rss_bytes(env.node->pid());
  double per_session = static_cast<double>(rss1 - rss0) / n;

  // Transition throughput: inputs spread over the idle sessions, each one a full transition
  // (input read, synced snapshot, fenced journal publish). Published from several client
  // threads so that the client is not the bottleneck; peer: the same publishes without Berth.
  const int transitions = 5 * n;
  const int publishers = 8;
  auto publish_all =
      [&](const std::function<std::string(int)>& subject_of) -> std::optional<error> {
    std::vector<std::thread> ts;
    std::mutex emu;
    std::optional<error> failure;
    for (int t = 0; t < publishers; ++t)
      ts.emplace_back([&, t] {
        for (int i = t; i < transitions; i += publishers) {
          auto a = c.publish(subject_of(i), R"({"type":"input","data":1})");
          if (!a) {
            std::lock_guard lock(emu);
            failure = a.err();
            return;
          }
        }
      });
    for (auto& t : ts) t.join();
    return failure;
  };
  std::size_t applied_before;
  {
    std::lock_guard lock(feed.mu);
    applied_before = feed.events.size();
  }
  pid_t nats_pid = 0;
  if (auto text = fs::read_file(env.node->data_dir() + "/nats/nats-server.pid"))
    nats_pid = std::stoi(*text);
  double cpu_node0 = cpu_ms(env.node->pid()), cpu_nats0 = cpu_ms(nats_pid),
         cpu_self0 = cpu_ms(::getpid());
  auto x0 = clock::now();
  if (auto e = publish_all([&](int i) {
        return env.names.input(idle_ids[static_cast<std::size_t>(i) % idle_ids.size()]);
      }))
    return report(*e);
  if (!feed.wait(
          [&](auto& evs) {
            std::size_t done = 0;
            for (std::size_t k = applied_before; k < evs.size(); ++k)
              done += evs[k].get_string("type") == ev::input_applied;
            return done >= static_cast<std::size_t>(transitions);
          },
          std::chrono::seconds(600)))
    return report(error{errc::timeout, "not every input was applied"});
  double x_secs = std::chrono::duration<double>(clock::now() - x0).count();
  double cpu_node = cpu_ms(env.node->pid()) - cpu_node0, cpu_nats = cpu_ms(nats_pid) - cpu_nats0,
         cpu_self = cpu_ms(::getpid()) - cpu_self0;
  auto y0 = clock::now();
  if (auto e = publish_all(
          [&](int i) { return env.names.input("bench-peer-" + std::to_string(i % 100)); }))
    return report(*e);
  double y_secs = std::chrono::duration<double>(clock::now() - y0).count();
  double transitions_per_s = transitions / x_secs;
  double peer_publish_per_s = transitions / y_secs;
  json::value trow = json::value::make_object();
  trow.set("name", "transitions/s across " + std::to_string(n) + " sessions");
  trow.set("peer", "JetStream publish+ack, 8 publishers");
  trow.set("berth_p50_us", 1e6 / transitions_per_s);
  trow.set("peer_p50_us", 1e6 / peer_publish_per_s);
  trow.set("ratio_p50", peer_publish_per_s / transitions_per_s);
  trow.set("ratio_p99", nullptr);
  trow.set("n", transitions);

  // Throughput: sessions x steps of /bin/true, all at once, with the idle sessions present.
  const int sessions = 100;
  const int steps = 10;
  std::string steps_json;
  for (int i = 0; i < steps; ++i)
    steps_json +=
        (i ? "," : "") + std::string(R"({"id":"s)") + std::to_string(i) + R"(","run":["true"]})";
  auto busy = spec_with(steps_json);
  std::size_t before;
  {
    std::lock_guard lock(feed.mu);
    before = feed.events.size();
  }
  auto t0 = clock::now();
  for (int i = 0; i < sessions; ++i)
    if (auto id = env.start_session(busy); !id) return report(id.err());
  if (!feed.wait(
          [&](auto& evs) {
            std::size_t done = 0;
            for (std::size_t k = before; k < evs.size(); ++k)
              done += evs[k].get_string("type") == ev::session_succeeded;
            return done >= static_cast<std::size_t>(sessions);
          },
          std::chrono::seconds(600)))
    return report(error{errc::timeout, "the throughput sessions did not finish"});
  double secs = std::chrono::duration<double>(clock::now() - t0).count();
  double steps_per_s = sessions * steps / secs;
  // Peer: the same number of posix_spawn + wait of /bin/true, back to back.
  std::vector<double> spawn_us;
  auto p0 = clock::now();
  for (int i = 0; i < sessions * steps; ++i) {
    auto t = clock::now();
    process::spawn_options so;
    auto pid = process::spawn({"/bin/true"}, so);
    if (!pid) return report(pid.err());
    ::waitpid(*pid, nullptr, 0);
    spawn_us.push_back(us_since(t));
  }
  double peer_secs = std::chrono::duration<double>(clock::now() - p0).count();
  double spawns_per_s = sessions * steps / peer_secs;
  row r{"step throughput (100 sessions x 10)", "posix_spawn+wait /bin/true", {}, {}};
  r.berth_us.assign(1, 1e6 / steps_per_s);
  r.peer_us = spawn_us;
  auto rj = row_json(r);
  rj.set("berth_p50_us", 1e6 / steps_per_s);
  rj.set("peer_p50_us", 1e6 / spawns_per_s);
  rj.set("ratio_p50", spawns_per_s / steps_per_s);
  rj.set("ratio_p99", nullptr);
  rj.set("n", sessions * steps);
  json::value extra = json::value::make_object();
  extra.set("idle_sessions", n);
  extra.set("rss_before_bytes", rss0);
  extra.set("rss_after_bytes", rss1);
  extra.set("rss_per_session_bytes", per_session);
  extra.set("process_steps_per_s", steps_per_s);
  extra.set("peer_spawns_per_s", spawns_per_s);
  extra.set("transitions_per_s", transitions_per_s);
  extra.set("transitions_cpu_us_node", 1000 * cpu_node / transitions);
  extra.set("transitions_cpu_us_nats_server", 1000 * cpu_nats / transitions);
  extra.set("transitions_cpu_us_bench_client", 1000 * cpu_self / transitions);
  extra.set("peer_publish_per_s", peer_publish_per_s);
  return emit(g, "sessions", {trow, rj}, std::move(extra));
}

// --- resume: kill -9 with 1,000 sessions, time to every session's next event --------------

int bench_resume(const globals& g, int n) {
  if (n <= 0) n = 1000;
  bench_env env;
  std::map<std::string, std::string> node_env = {
      {"BERTH_NODE_MAX_SESSIONS", std::to_string(n + 100)}, {"BERTH_NODE_SHUTDOWN_GRACE", "0s"}};
  if (const char* t = std::getenv("BERTH_NODE_IO_THREADS")) node_env["BERTH_NODE_IO_THREADS"] = t;
  if (auto st = env.start(node_env); !st) return report(st.err());
  event_feed feed;
  if (auto st = feed.follow(*env.client, env.names, 0); !st) return report(st.err());
  auto hold = spec_with(R"({"id":"hold","run":["sleep","3600"]})");
  for (int i = 0; i < n; ++i)
    if (auto id = env.start_session(hold); !id) return report(id.err());
  if (!feed.wait(
          [&](auto& evs) {
            return count_type(evs, ev::step_started) >= static_cast<std::size_t>(n);
          },
          std::chrono::seconds(300)))
    return report(error{errc::timeout, "not every session started its step"});
  std::uint64_t from;
  {
    std::lock_guard lock(feed.mu);
    from = feed.last_seq + 1;
  }
  feed.sub.reset();
  env.client.reset();
  env.node->kill9();

  // Floor: open RocksDB and read every snapshot, connect to NATS, fetch once.
  auto f0 = clock::now();
  {
    auto store = persistence::snapshot_store::open(env.node->data_dir() + "/snapshots");
    if (!store) return report(store.err());
    std::size_t count = 0;
    (void)(*store)->for_each_session([&](std::string_view, std::string_view) { ++count; });
    if (auto st = env.connect(); !st) return report(st.err());
    auto m = env.client->last_message(env.names.stream_ev(), env.names.journal_wildcard());
    if (!m) return report(m.err());
  }
  double floor_us = us_since(f0);

  event_feed after;
  if (auto st = after.follow(*env.client, env.names, from); !st) return report(st.err());
  pid_t nats_pid = 0;
  if (auto text = fs::read_file(env.node->data_dir() + "/nats/nats-server.pid"))
    nats_pid = std::stoi(*text);
  double nats_cpu0 = cpu_ms(nats_pid);
  auto r0 = clock::now();
  if (auto st = env.node->start(); !st) return report(st.err());
  double ready_us = us_since(r0);
  after.wait([&](auto& evs) { return count_type(evs, ev::step_interrupted) >= 1; },
             std::chrono::seconds(300));
  double first_us = us_since(r0);
  if (!after.wait(
          [&](auto& evs) {
            return count_type(evs, ev::step_interrupted) >= static_cast<std::size_t>(n);
          },
          std::chrono::seconds(300)))
    return report(error{errc::timeout, "not every session resumed"});
  double resume_us = us_since(r0);
  double node_cpu = cpu_ms(env.node->pid());
  double nats_cpu = cpu_ms(nats_pid) - nats_cpu0;
  row r{"restart -> every session's next event",
        "open RocksDB + connect + 1 fetch",
        {resume_us},
        {floor_us}};
  json::value extra = json::value::make_object();
  extra.set("sessions", n);
  extra.set("resume_ms", resume_us / 1000);
  extra.set("floor_ms", floor_us / 1000);
  extra.set("node_ready_ms", ready_us / 1000);
  extra.set("first_session_event_ms", first_us / 1000);
  extra.set("node_cpu_ms", node_cpu);
  extra.set("nats_server_cpu_ms", nats_cpu);
  return emit(g, "resume", {row_json(r)}, std::move(extra));
}

// --- sandbox: cold start, warm exec, and both as the node's memory grows -----------------------

// posix_spawn + wait of /bin/true: the peer of every sandbox figure.
double spawn_true_us() {
  process::spawn_options so;
  so.search_path = false;
  auto t0 = clock::now();
  auto pid = process::spawn({"/bin/true"}, so);
  if (pid) ::waitpid(*pid, nullptr, 0);
  return us_since(t0);
}

// A sandbox of the bench's own, started without a node: the "warm exec" peer.
struct own_sandbox {
  std::string dir;
  sandbox::sandbox_options o;

  own_sandbox() = default;
  own_sandbox(const own_sandbox&) = delete;
  own_sandbox& operator=(const own_sandbox&) = delete;
  ~own_sandbox() {
    if (!dir.empty()) fs::remove_tree(dir);
  }

  status init() {
    char tmpl[] = "/tmp/berth-bench-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    if (!d) return error{errc::io_error, "cannot create a temporary directory"};
    dir = d;
    ::chmod(d, 0711);
    auto helper = sandbox::install_helper(sandbox::helper_next_to_self(), dir + "/helper");
    if (!helper) return helper.err();
    o.group = "bench-" + std::to_string(::getpid());
    o.workspace = dir + "/ws";
    o.helper = *helper;
    std::filesystem::create_directories(o.workspace);
    if (::geteuid() == 0) {
      o.uid = 65534;
      o.gid = 65534;
      (void)!::chown(o.workspace.c_str(), 65534, 65534);
    }
    o.lim.memory_bytes = 1LL << 30;
    o.lim.pids = 512;
    o.lim.tmp_bytes = 64LL << 20;
    o.lim.nofile = 1024;
    return sandbox::check_host(o.bwrap, o.helper);
  }
};

// /bin/true through a running sandbox, waited for, in microseconds.
result<double> exec_true_us(sandbox::sandbox& box) {
  sandbox::command cmd;
  cmd.argv = {"/bin/true"};
  auto t0 = clock::now();
  auto c = box.exec(cmd, [](int, std::string_view, bool) {});
  if (!c) return c.err();
  (void)(*c)->wait();
  return us_since(t0);
}

int bench_sandbox(const globals& g, int n) {
  if (n <= 0) n = 200;
  own_sandbox own;
  if (auto st = own.init(); !st) return report(st.err());
  auto& o = own.o;

  // Cold: a new sandbox until it answers, then torn down (not timed).
  auto cold = [&](int rounds, row& r) -> status {
    for (int i = 0; i < rounds; ++i) {
      o.name = "cold-" + std::to_string(i);
      auto t0 = clock::now();
      auto box = sandbox::sandbox::start(o);
      auto us = us_since(t0);
      if (!box) return box.err();
      (*box)->stop();
      r.berth_us.push_back(us);
      r.peer_us.push_back(spawn_true_us());
    }
    return {};
  };
  // Warm: /bin/true through a running sandbox, waited for.
  auto warm = [&](int rounds, row& r) -> status {
    o.name = "warm";
    auto box = sandbox::sandbox::start(o);
    if (!box) return box.err();
    for (int i = -20; i < rounds; ++i) {
      auto us = exec_true_us(**box);
      if (!us) return us.err();
      auto peer = spawn_true_us();
      if (i < 0) continue;
      r.berth_us.push_back(*us);
      r.peer_us.push_back(peer);
    }
    (*box)->stop();
    return {};
  };
  row cold_r{"cold sandbox start", "posix_spawn+wait /bin/true", {}, {}};
  row warm_r{"warm exec /bin/true", "posix_spawn+wait /bin/true", {}, {}};
  if (auto st = cold(std::max(20, n / 4), cold_r); !st) return report(st.err());
  if (auto st = warm(n, warm_r); !st) return report(st.err());

  // The node grows: the same measures with 100 MiB and then 2 GiB of touched memory here.
  auto grow = [](std::size_t bytes) {
    auto* p = static_cast<char*>(std::malloc(bytes));
    if (p)
      for (std::size_t i = 0; i < bytes; i += 4096) p[i] = 1;
    return p;
  };
  row small_w{"warm exec, node at 100 MiB RSS", "", {}, {}};
  row big_w{"warm exec, node at 2 GiB RSS", "", {}, {}};
  row small_c{"cold start, node at 100 MiB RSS", "", {}, {}};
  row big_c{"cold start, node at 2 GiB RSS", "", {}, {}};
  // Four alternating rounds at each size, samples pooled: this VM's speed drifts over seconds,
  // and one block per size would measure the drift, not the size.
  double rss_small = 0, rss_big = 0;
  const int rounds = 4;
  for (int round = 0; round < rounds; ++round) {
    for (bool big : {false, true}) {
      char* m = grow(big ? (2048u << 20) : (100u << 20));
      (big ? rss_big : rss_small) = rss_bytes(::getpid()) / 1048576.0;
      if (auto st = warm(n / rounds, big ? big_w : small_w); !st) return report(st.err());
      if (auto st = cold(5, big ? big_c : small_c); !st) return report(st.err());
      std::free(m);
    }
  }
  json::value extra = json::value::make_object();
  extra.set("cold_start_p50_ms", percentile(cold_r.berth_us, 0.5) / 1000);
  extra.set("warm_exec_p50_us", percentile(warm_r.berth_us, 0.5));
  extra.set("spawn_p50_us", percentile(warm_r.peer_us, 0.5));
  auto w_ratio = percentile(big_w.berth_us, 0.5) / percentile(small_w.berth_us, 0.5);
  auto c_ratio = percentile(big_c.berth_us, 0.5) / percentile(small_c.berth_us, 0.5);
  extra.set("warm_exec_2g_over_100m", w_ratio);
  extra.set("cold_start_2g_over_100m", c_ratio);
  extra.set("rss_small_mib", rss_small);
  extra.set("rss_big_mib", rss_big);
  // Growth rows compare the 2 GiB run against the 100 MiB run.
  row wg{"warm exec: 2 GiB node vs 100 MiB node", "same, node at 100 MiB", big_w.berth_us,
         small_w.berth_us};
  row cg{"cold start: 2 GiB node vs 100 MiB node", "same, node at 100 MiB", big_c.berth_us,
         small_c.berth_us};
  return emit(g, "sandbox", {row_json(cold_r), row_json(warm_r), row_json(wg), row_json(cg)},
              std::move(extra));
}

// --- workspace: a session's clone vs git's own, same repository, same run -------------------

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

// lighttpd + git http-backend serving `root` on a free loopback port (the same smart-HTTP
// protocol a forge speaks).
// A bench's scratch directory under $TMPDIR (or /tmp), removed at the end unless
// BERTH_BENCH_KEEP is set, and an environment in which git reads none of the machine's
// configuration (as the workspace code runs libgit2).
struct scratch {
  std::string dir;
  std::map<std::string, std::string> env;
  scratch() = default;
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  ~scratch() {
    if (!dir.empty() && !std::getenv("BERTH_BENCH_KEEP")) fs::remove_tree(dir);
  }
  status make() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/berth-bench-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    const char* d = ::mkdtemp(buf.data());
    if (!d) return error{errc::io_error, "cannot create a temporary directory in " + tmpl};
    dir = d;
    env = process::current_env();
    env["HOME"] = dir;
    env["GIT_CONFIG_NOSYSTEM"] = "1";
    env.erase("XDG_CONFIG_HOME");
    return {};
  }
};

struct git_http {
  pid_t pid = -1;
  int port = -1;
  ~git_http() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  status start(const std::string& root, const std::string& dir) {
    port = net::free_loopback_port();
    auto conf = dir + "/lighttpd.conf";
    BERTH_TRY(fs::write_file_atomic(
        conf,
        "server.modules = (\"mod_alias\", \"mod_setenv\", \"mod_cgi\")\n"
        "server.document-root = \"" +
            root +
            "\"\nserver.bind = \"127.0.0.1\"\n"
            "server.port = " +
            std::to_string(port) + "\nserver.errorlog = \"" + dir +
            "/lighttpd.log\"\n"
            "alias.url = (\"/git/\" => \"/usr/lib/git-core/git-http-backend/\")\n"
            "$HTTP[\"url\"] =~ \"^/git\" {\n  cgi.assign = (\"\" => \"\")\n"
            "  setenv.add-environment = (\"GIT_PROJECT_ROOT\" => \"" +
            root +
            "\", "
            "\"GIT_HTTP_EXPORT_ALL\" => \"1\", \"GIT_CONFIG_NOSYSTEM\" => \"1\")\n}\n"));
    auto p = process::spawn({"lighttpd", "-D", "-f", conf}, {});
    if (!p) return error{p.err().code, "lighttpd (needed by bench workspace): " + p.err().message};
    pid = *p;
    if (net::wait_listening(port, millis(5000))) return {};
    return error{errc::timeout, "lighttpd did not start listening"};
  }
};

int bench_workspace(const globals& g, int n) {
  int rounds = n > 0 ? n : 5;
  // Under $TMPDIR: TMPDIR=/dev/shm takes the disk's noise out of the comparison.
  scratch sc;
  if (auto st = sc.make(); !st) return report(st.err());
  const auto& dir = sc.dir;
  auto& env = sc.env;
  std::filesystem::create_directories(dir + "/repos");
  git_http server;
  if (auto st = server.start(dir + "/repos", dir); !st) return report(st.err());
  auto url_of = [&](const std::string& name) {
    return "http://127.0.0.1:" + std::to_string(server.port) + "/git/" + name + ".git";
  };
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

}  // namespace

// --- graph: a 1,000-step graph's scheduling, parallel overlap, the tool-call round trip ------

// The events of one session seen by `feed`, with their stream timestamps (server clock).
std::vector<std::pair<json::value, std::int64_t>> session_events(event_feed& feed,
                                                                 const std::string& id) {
  std::lock_guard lock(feed.mu);
  std::vector<std::pair<json::value, std::int64_t>> out;
  for (std::size_t i = 0; i < feed.events.size(); ++i)
    if (feed.events[i].get_string("session") == id)
      out.emplace_back(feed.events[i], feed.stored_ns[i]);
  return out;
}

// Start a session and wait for its end; returns its events. Fails unless it succeeded.
result<std::vector<std::pair<json::value, std::int64_t>>> run_to_end(bench_env& env,
                                                                     event_feed& feed,
                                                                     const json::value& spec,
                                                                     std::chrono::seconds limit) {
  auto id = env.start_session(spec);
  if (!id) return id.err();
  std::string end;
  bool ended = feed.wait(
      [&](auto& evs) {
        for (auto it = evs.rbegin(); it != evs.rend(); ++it) {
          if (it->get_string("session") != *id) continue;
          auto t = it->get_string("type");
          if (t.rfind("session.", 0) == 0 && t != ev::session_started &&
              t != ev::session_accepted) {
            end = t;
            return true;
          }
        }
        return false;
      },
      limit);
  if (!ended) return error{errc::timeout, "session " + *id + " did not end"};
  if (end != ev::session_succeeded) return error{errc::internal, "session " + *id + ": " + end};
  return session_events(feed, *id);
}

// Server-clock microseconds from session.started to its terminal event.
double wall_us(const std::vector<std::pair<json::value, std::int64_t>>& evs) {
  std::int64_t t0 = 0, t1 = 0;
  for (const auto& [e, ns] : evs) {
    auto t = e.get_string("type");
    if (t == ev::session_started) t0 = ns;
    if (t == ev::session_succeeded) t1 = ns;
  }
  return static_cast<double>(t1 - t0) / 1000.0;
}

int bench_graph(const globals& g, int n) {
  if (n <= 0) n = 200;
  bench_env env;
  if (auto st = env.start({}); !st) return report(st.err());
  auto& c = *env.client;
  event_feed feed;
  if (auto st = feed.follow(c, env.names, 0); !st) return report(st.err());
  json::value extra = json::value::make_object();
  std::vector<json::value> rows;

  // 1. What `bench step` measures, in this run: one transition of a session.
  auto hold = env.start_session(spec_with(R"({"id":"hold","run":["sleep","3600"]})"));
  if (!hold) return report(hold.err());
  if (!feed.wait([&](auto& evs) { return count_type(evs, ev::step_started) >= 1; },
                 std::chrono::seconds(30)))
    return report(error{errc::timeout, "the bench session did not start"});
  row transition{"one transition (bench step)", "JetStream publish+ack (same size)", {}, {}};
  if (auto st = input_round_trips(env, feed, *hold, 300, transition, nullptr); !st)
    return report(st.err());
  rows.push_back(row_json(transition));
  auto transition_p50 = percentile(transition.berth_us, 0.5);

  // 2. A 1,000-step graph of no-op steps (`true`, each needing the one before). Its scheduling
  // overhead per step: the session's wall time less the time its commands ran, per step.
  const int steps = 1000;
  std::string chain;
  for (int i = 0; i < steps; ++i)
    chain +=
        (i ? "," : "") + std::string(R"({"id":"s)") + std::to_string(i) + R"(","run":["true"]})";
  auto graph = run_to_end(env, feed, spec_with(chain), std::chrono::seconds(900));
  if (!graph) return report(graph.err());
  double exec_us = 0;
  int finished = 0;
  for (const auto& [e, ns] : *graph)
    if (e.get_string("type") == ev::step_finished) {
      exec_us += static_cast<double>(e.find("data")->get_int("duration_us"));
      ++finished;
    }
  auto graph_wall = wall_us(*graph);
  double per_step = (graph_wall - exec_us) / steps;
  row sched{"1,000-step graph: scheduling/step",
            "one transition p50 (bench step)",
            {per_step},
            {transition_p50}};
  rows.push_back(row_json(sched));
  extra.set("graph_steps", finished);
  extra.set("graph_wall_ms", graph_wall / 1000.0);
  extra.set("graph_exec_ms", exec_us / 1000.0);
  extra.set("graph_steps_per_s", steps / (graph_wall / 1e6));

  // 3. Four independent `sleep 1` steps, max_parallel = 4, against one `sleep 1` step.
  auto four = spec_with(R"({"id":"p1","run":["sleep","1"],"needs":[]},
    {"id":"p2","run":["sleep","1"],"needs":[]},{"id":"p3","run":["sleep","1"],"needs":[]},
    {"id":"p4","run":["sleep","1"],"needs":[]})");
  four.set("max_parallel", 4);
  auto one = spec_with(R"({"id":"p1","run":["sleep","1"]})");
  row parallel{"4 x sleep 1, max_parallel 4", "1 x sleep 1 (one step)", {}, {}};
  for (int round = 0; round < 5; ++round) {
    auto a = run_to_end(env, feed, four, std::chrono::seconds(60));
    if (!a) return report(a.err());
    auto b = run_to_end(env, feed, one, std::chrono::seconds(60));
    if (!b) return report(b.err());
    parallel.berth_us.push_back(wall_us(*a));
    parallel.peer_us.push_back(wall_us(*b));
  }
  rows.push_back(row_json(parallel));

  // 4. Tool-call round trip: an agent publishes a call, the node runs `true` in the session's
  // sandbox and journals tool.result, the agent receives it. Peer: a raw NATS request-reply
  // plus a warm sandbox exec of `true`, measured here in the same rounds.
  auto agent_spec =
      spec_with(R"({"id":"agent","kind":"agent","agent":{"mode":"external","turn_timeout":"1h"}})");
  auto agent = env.start_session(agent_spec);
  if (!agent) return report(agent.err());
  if (!feed.wait([&](auto& evs) { return count_type(evs, ev::agent_waiting) >= 1; },
                 std::chrono::seconds(30)))
    return report(error{errc::timeout, "the agent step did not start"});
  auto echo = c.subscribe("bench.echo", "", [&c](bus::message m) {
    if (!m.reply.empty()) (void)c.publish_core(m.reply, m.data);
  });
  if (!echo) return report(echo.err());
  own_sandbox own;
  if (auto st = own.init(); !st) return report(st.err());
  own.o.name = "warm";
  auto box = sandbox::sandbox::start(own.o);
  if (!box) return report(box.err());
  row tool{"tool call exec `true` round trip", "NATS req-reply + warm exec `true`", {}, {}};
  std::size_t seen = 0;
  for (int i = -20; i < n; ++i) {
    auto call_id = "b" + std::to_string(i + 20);
    json::value call = json::value::make_object();
    call.set("type", "tool_call");
    call.set("call_id", call_id);
    call.set("tool", "exec");
    json::value args = json::value::make_object();
    json::value argv = json::value::make_array();
    argv.push("true");
    args.set("argv", std::move(argv));
    call.set("args", std::move(args));
    auto t0 = clock::now();
    auto ack = c.publish(env.names.input(*agent), call.dump());
    if (!ack) return report(ack.err());
    bool got = feed.wait(
        [&](auto& evs) {
          for (; seen < evs.size(); ++seen) {
            const auto& e = evs[seen];
            if (e.get_string("type") == ev::tool_result &&
                e.find("data")->get_string("call_id") == call_id) {
              ++seen;
              return true;
            }
          }
          return false;
        },
        std::chrono::seconds(30));
    if (!got) return report(error{errc::timeout, "no tool.result for " + call_id});
    auto berth = us_since(t0);
    t0 = clock::now();
    auto rr = c.request("bench.echo", call.dump(), millis(5000));
    if (!rr) return report(rr.err());
    auto rr_us = us_since(t0);
    auto exec = exec_true_us(**box);
    if (!exec) return report(exec.err());
    if (i < 0) continue;
    tool.berth_us.push_back(berth);
    tool.peer_us.push_back(rr_us + *exec);
  }
  (*box)->stop();
  rows.push_back(row_json(tool));
  extra.set("note",
            "scheduling/step = (graph wall time - time its commands ran) / 1000 steps, against "
            "the p50 of one session transition measured in this run as `bench step` does; "
            "goals: scheduling <= 2x, 4 parallel sleeps <= 1.15x one, tool call <= 3x");
  return emit(g, "graph", rows, std::move(extra));
}

// --- setup: a Node project's first setup vs host `npm ci`, and the warm cache vs the first ---

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

std::string support_dir() {
  if (const char* d = std::getenv("BERTH_SUPPORT_DIR")) return d;
  return BERTH_SUPPORT_DIR;
}

int bench_setup(const globals& g, int n) {
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

  // The registry (tests/support/npm_registry.mjs) on a port of its own.
  if (auto st = fs::write_file_atomic(dir + "/packages.json", bench_packages().dump()); !st)
    return report(st.err());
  (void)fs::write_file_atomic(dir + "/npmrc", "");
  process::spawn_options rso;
  rso.env = penv;
  auto reg = process::spawn(
      {"node", support_dir() + "/npm_registry.mjs", "--packages", dir + "/packages.json",
       "--ports-file", dir + "/port", "--log", dir + "/registry.log"},
      rso);
  if (!reg) return report(error{reg.err().code, "bench setup needs node.js: " + reg.err().message});
  struct killer {
    pid_t pid;
    ~killer() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reg_gone{*reg};
  std::string port;
  for (int i = 0; i < 500 && port.empty(); ++i) {
    if (auto t = fs::read_file(dir + "/port")) port = *t;
    if (port.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (port.empty()) return report(error{errc::timeout, "the bench's npm registry did not start"});
  std::string registry = "http://127.0.0.1:" + port + "/";

  // The project: its package.json needs the 10 top packages; the host's npm writes the lockfile.
  auto proj = dir + "/project";
  std::filesystem::create_directories(proj);
  std::string deps;
  for (int k = 0; k < 10; ++k) {
    char dn[64];
    std::snprintf(dn, sizeof dn, "%s\"bench-pkg-%02d\": \"^1.%d.0\"", k ? ", " : "", k, k);
    deps += dn;
  }
  (void)fs::write_file_atomic(proj + "/package.json",
                              "{\"name\": \"bench-app\", \"version\": \"1.0.0\", \"private\": "
                              "true, \"dependencies\": {" +
                                  deps + "}}\n");
  (void)fs::write_file_atomic(proj + "/.gitignore", "node_modules/\n");
  const std::vector<std::string> npm_opts = {"--no-audit",   "--no-fund",    "--ignore-scripts",
                                             "--userconfig", dir + "/npmrc", "--registry",
                                             registry};
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
  git_http server;
  if (auto st = server.start(dir + "/repos", dir); !st) return report(st.err());
  auto url = "http://127.0.0.1:" + std::to_string(server.port) + "/git/app.git";

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

// Every process this one started, and theirs (the bench's node, its nats-server, lighttpd, the
// registry): SIGKILLed when a scenario overruns its time limit.
void kill_descendants() {
  std::map<pid_t, std::vector<pid_t>> children;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    auto name = e.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream in(e.path() / "stat");
    std::string line;
    if (!std::getline(in, line) || line.rfind(')') == std::string::npos) continue;
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    std::string state;
    long ppid = 0;
    if (rest >> state >> ppid) children[static_cast<pid_t>(ppid)].push_back(std::stoi(name));
  }
  std::vector<pid_t> todo = {::getpid()};
  while (!todo.empty()) {
    auto p = todo.back();
    todo.pop_back();
    for (auto c : children[p]) {
      ::kill(c, SIGSTOP);  // no new children while the tree is walked
      todo.push_back(c);
    }
    if (p != ::getpid()) ::kill(p, SIGKILL);
  }
}

// The gateway: journal events fanned out to 100 WebSocket clients against NATS core pub->sub to
// 100 subscribers (throughput and publish-to-socket latency, alternating rounds); the memory of
// 5,000 idle authenticated sockets; the console's sessions table with 1,000 sessions, timed in
// Chromium. `n`: events per throughput round.
int bench_gateway(const globals& g, int n) {
  if (n <= 0) n = 2000;
  const std::size_t clients = 100, idle = 5000;
  bench_env env;
  if (auto st = env.start({{"BERTH_GATEWAY_MAX_STREAMS_PER_TOKEN", "20000"},
                           {"BERTH_GATEWAY_RATE_LIMIT", "100000"},
                           {"BERTH_GATEWAY_RATE_BURST", "100000"},
                           {"BERTH_GATEWAY_MAX_BUFFERED_BYTES", "67108864"}});
      !st)
    return report(st.err());
  auto info = json::parse(*fs::read_file(env.node->data_dir() + "/node.json"));
  auto url = info->get_string("console_url");
  auto token =
      gateway::token_store(info->get_string("tokens_file")).create("bench", gateway::scope::admin);
  if (!token) return report(token.err());
  auto& c = *env.client;
  auto id = "bench-gw-" + new_ulid();
  auto subject = env.names.journal(id);
  auto event = [&](int i) {
    return R"({"session":")" + id + R"(","n":)" + std::to_string(i) +
           R"(,"type":"bench.tick","data":{"sent_ns":)" + std::to_string(gateway::monotonic_ns()) +
           "}}";
  };
  auto first = c.publish(subject, event(0));
  if (!first) return report(first.err());
  // Idle sockets first, on a fresh heap: what 5,000 authenticated connections cost the node
  // (its gateway) in RSS.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto rss0 = rss_bytes(env.node->pid());
  auto many = gateway::ws_fleet::open(url, *token, idle);
  if (!many) return report(many.err());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto rss1 = rss_bytes(env.node->pid());
  many->reset();  // closed before the fan-out starts
  double per_socket = static_cast<double>(rss1 - rss0) / static_cast<double>(idle);

  auto fleet = gateway::ws_fleet::open(url, *token, clients);
  if (!fleet) return report(fleet.err());
  if (auto st = (*fleet)->subscribe("session/" + id + "/events", first->seq, millis(60'000)); !st)
    return report(st.err());

  // The peer: 100 core subscribers on one subject, on a connection of their own.
  bus::client::options po;
  po.servers = {env.node->url()};
  po.name = "berth-bench-peer";
  auto peer_conn = bus::client::connect(po);
  if (!peer_conn) return report(peer_conn.err());
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::size_t> got(clients, 0);
  std::vector<double> peer_lat;
  std::vector<std::unique_ptr<bus::subscription>> subs;
  for (std::size_t k = 0; k < clients; ++k) {
    auto sub = (*peer_conn)->subscribe("bench.fanout", "", [&, k](bus::message m) {
      auto at = m.data.find("\"sent_ns\":");
      std::int64_t sent = 0;
      for (auto i = at + 10; at != std::string::npos && i < m.data.size() &&
                             std::isdigit(static_cast<unsigned char>(m.data[i]));
           ++i)
        sent = sent * 10 + (m.data[i] - '0');
      auto lat = static_cast<double>(gateway::monotonic_ns() - sent) / 1000.0;
      std::lock_guard lock(mu);
      got[k]++;
      peer_lat.push_back(lat);
      cv.notify_all();
    });
    if (!sub) return report(sub.err());
    subs.push_back(std::move(*sub));
  }
  auto peer_wait = [&](std::size_t want) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(120), [&] {
      return std::all_of(got.begin(), got.end(), [&](std::size_t x) { return x >= want; });
    });
  };
  auto peer_reset = [&] {
    std::lock_guard lock(mu);
    std::fill(got.begin(), got.end(), 0);
    peer_lat.clear();
  };

  // Throughput, alternating rounds: everything published as fast as it goes.
  std::vector<double> gw_rate, peer_rate;
  for (int round = 0; round < 3; ++round) {
    (*fleet)->reset();
    auto t0 = clock::now();
    std::atomic<int> acked{0};
    for (int i = 1; i <= n; ++i) {
      bus::publish_options o;
      o.msg_id = id + ":" + std::to_string(round) + ":" + std::to_string(i);
      if (auto st = c.publish_async(subject, event(i), o, [&](result<bus::pub_ack>) { acked++; });
          !st)
        return report(st.err());
    }
    if (!(*fleet)->wait_items(static_cast<std::size_t>(n), millis(300'000)))
      return report(error{errc::timeout, "gateway fan-out: not every client got every event"});
    gw_rate.push_back(static_cast<double>(clients) * n / (us_since(t0) / 1e6));
    (void)(*fleet)->take_latencies();
    peer_reset();
    t0 = clock::now();
    for (int i = 1; i <= n; ++i)
      if (auto st = (*peer_conn)->publish_core("bench.fanout", event(i)); !st)
        return report(st.err());
    if (!peer_wait(static_cast<std::size_t>(n)))
      return report(error{errc::timeout, "NATS fan-out: not every subscriber got every message"});
    peer_rate.push_back(static_cast<double>(clients) * n / (us_since(t0) / 1e6));
  }
  // Latency: one event at a time, 200 of each, alternating.
  row lat{"event to 100 clients (publish to socket)", "NATS core pub -> 100 subscribers", {}, {}};
  (*fleet)->reset();
  peer_reset();
  for (int i = 0; i < 200; ++i) {
    if (auto st = c.publish(subject, event(i)); !st) return report(st.err());
    if (!(*fleet)->wait_items(static_cast<std::size_t>(i + 1), millis(30'000)))
      return report(error{errc::timeout, "gateway latency round"});
    if (auto st = (*peer_conn)->publish_core("bench.fanout", event(i)); !st)
      return report(st.err());
    if (!peer_wait(static_cast<std::size_t>(i + 1)))
      return report(error{errc::timeout, "NATS latency round"});
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  lat.berth_us = (*fleet)->take_latencies();
  {
    std::lock_guard lock(mu);
    lat.peer_us = peer_lat;
  }
  subs.clear();
  fleet->reset();

  // The console: the sessions table with 1,000 sessions, navigation to rendered, in Chromium.
  json::value extra = json::value::make_object();
  auto browser = support_dir() + "/../browser";
  if (fs::read_file(browser + "/node_modules/playwright-core/package.json") &&
      std::filesystem::exists("/usr/bin/chromium")) {
    for (int i = 0; i < 1000; ++i) {
      json::value r = json::value::make_object();
      r.set("status", i % 7 == 0 ? "failed" : "succeeded");
      r.set("priority", 5);
      r.set("repo", "https://git.example.com/acme/app" + std::to_string(i % 13) + ".git");
      r.set("branch", "berth/b" + std::to_string(i));
      r.set("goal", "bench session " + std::to_string(i));
      r.set("created_at", format_timestamp(now_unix_ms() - i * 1000));
      r.set("updated_at", format_timestamp(now_unix_ms() - i * 1000 + 500));
      if (auto st = c.kv_put(env.names.bucket_sessions(), "bench-" + new_ulid(), r.dump()); !st)
        return report(st.err());
    }
    std::vector<double> renders;
    for (int k = 0; k < 3; ++k) {
      auto code = gateway::token_store(info->get_string("tokens_file"))
                      .create_login("bench", gateway::scope::read, std::chrono::minutes(5));
      if (!code) return report(code.err());
      auto out = process::run_capture({"node", browser + "/render_bench.mjs", url, *code, "1000"},
                                      "", std::chrono::minutes(2));
      if (!out || out->exit_code != 0)
        return report(error{errc::internal, "render_bench.mjs: " +
                                                (out ? out->out + out->err : out.err().message)});
      renders.push_back(std::stod(out->out));
    }
    std::sort(renders.begin(), renders.end());
    extra.set("console_1000_sessions_ms", renders[renders.size() / 2]);
  } else {
    extra.set("console_1000_sessions_ms",
              "not measured: needs chromium and `npm ci --prefix tests/browser`");
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  extra.set("clients", static_cast<std::int64_t>(clients));
  extra.set("events_per_round", n);
  extra.set("gateway_deliveries_per_s", median(gw_rate));
  extra.set("nats_deliveries_per_s", median(peer_rate));
  extra.set("throughput_ratio", median(gw_rate) / median(peer_rate));
  extra.set("idle_sockets", static_cast<std::int64_t>(idle));
  extra.set("rss_per_idle_socket_bytes", per_socket);
  extra.set("goals",
            "throughput_ratio >= 0.5; ratio_p50 <= 2; rss_per_idle_socket_bytes <= 16384; "
            "console_1000_sessions_ms <= 300");
  return emit(g, "gateway", {row_json(lat)}, std::move(extra));
}

// How long each scenario may take at its default size (a smaller -n finishes sooner).
millis default_time_limit(const std::string& scenario) {
  using std::chrono::minutes;
  if (scenario == "step" || scenario == "sandbox") return minutes(10);
  return minutes(20);
}

int run_scenario(const globals& g, const std::string& scenario, int n) {
  if (scenario == "sandbox") return bench_sandbox(g, n);
  if (scenario == "step") return bench_step(g, n);
  if (scenario == "graph") return bench_graph(g, n);
  if (scenario == "sessions") return bench_sessions(g, n);
  if (scenario == "resume") return bench_resume(g, n);
  if (scenario == "workspace") return bench_workspace(g, n);
  if (scenario == "setup") return bench_setup(g, n);
  if (scenario == "gateway") return bench_gateway(g, n);
  return report(
      error{errc::invalid_argument,
            "bench: unknown scenario \"" + scenario +
                "\" (step, graph, sessions, resume, sandbox, workspace, setup, gateway)"});
}

int run_bench(const globals& g, const std::string& scenario, int n, const std::string& limit) {
  millis lim = default_time_limit(scenario);
  if (!limit.empty()) {
    auto l = parse_duration(limit, "--time-limit");
    if (!l) return report(l.err());
    if (l->count() <= 0)
      return report(error{errc::invalid_argument, "--time-limit: must be more than 0"});
    lim = *l;
  }
  // A watchdog: a scenario that overruns its limit is stopped with a message, never left hanging.
  std::thread([scenario, lim, limit] {
    std::this_thread::sleep_for(lim);
    std::fprintf(stderr,
                 "berth: bench %s did not finish within its time limit of %s%s; stopped it and "
                 "everything it started\n",
                 scenario.c_str(), format_duration(lim).c_str(),
                 limit.empty() ? " (--time-limit changes it)" : "");
    std::fflush(stderr);
    kill_descendants();
    std::_Exit(timed_out);
  }).detach();
  return run_scenario(g, scenario, n);
}

}  // namespace berth::cli
