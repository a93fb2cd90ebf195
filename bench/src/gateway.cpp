// gateway: journal fan-out to WebSocket clients vs NATS core, idle sockets' memory, the console.
#include "harness.hpp"
#include "scenarios.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/ids.hpp"
#include "berth/base/process.hpp"
#include "berth/gateway/loadgen.hpp"
#include "berth/gateway/tokens.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

namespace berth::bench {

// 100 subscribers (throughput and publish-to-socket latency, alternating rounds); the memory of
// 5,000 idle authenticated sockets; the console's sessions table with 1,000 sessions, timed in
// Chromium. `n`: events per throughput round.
int bench_gateway(const options& g, int n) {
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
    (void)(*fleet)->take_latencies();  // the throughput round's latencies are not measured
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
    if (!(*fleet)->wait_items(static_cast<std::size_t>(i) + 1, millis(30'000)))
      return report(error{errc::timeout, "gateway latency round"});
    if (auto st = (*peer_conn)->publish_core("bench.fanout", event(i)); !st)
      return report(st.err());
    if (!peer_wait(static_cast<std::size_t>(i) + 1))
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
  const char* bd = std::getenv("BERTH_BROWSER_DIR");  // where tests/browser's npm packages are
  std::string browser = bd && *bd ? bd : BERTH_BROWSER_DIR;
  if (fs::read_file(browser + "/node_modules/playwright-core/package.json") &&
      std::filesystem::exists("/usr/bin/chromium")) {
    for (int i = 0; i < 1000; ++i) {
      json::value r = json::value::make_object();
      r.set("status", i % 7 == 0 ? core::states::failed : core::states::succeeded);
      r.set("priority", 5);
      r.set("repo", "https://git.example.com/acme/app" + std::to_string(i % 13) + ".git");
      r.set("branch", "berth/b" + std::to_string(i));
      r.set("goal", "bench session " + std::to_string(i));
      r.set("created_at", format_timestamp(now_unix_ms() - std::int64_t{i} * 1000));
      r.set("updated_at", format_timestamp(now_unix_ms() - std::int64_t{i} * 1000 + 500));
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

}  // namespace berth::bench
