// resume: kill -9 with 1,000 sessions, time to every session's next event.
#include "harness.hpp"
#include "scenarios.hpp"

#include "berth/base/fs.hpp"
#include "berth/persistence/snapshot_store.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

namespace berth::bench {

int bench_resume(const options& g, int n) {
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
    if (auto st = (*store)->for_each_session([&](std::string_view, std::string_view) { ++count; });
        !st)
      return report(st.err());
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

}  // namespace berth::bench
