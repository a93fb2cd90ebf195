// sessions: 1,000 idle sessions' memory, and step throughput across sessions.
#include "harness.hpp"
#include "scenarios.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/process.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

namespace berth::bench {

int bench_sessions(const options& g, int n) {
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
            return count_type(evs, ev::step_retrying) >= static_cast<std::size_t>(n) + 20;
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
    ts.reserve(static_cast<std::size_t>(publishers));
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

}  // namespace berth::bench
