// step: one input through a session vs one raw JetStream publish.
#include "harness.hpp"
#include "scenarios.hpp"

#include "berth/base/fs.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <thread>

namespace berth::bench {

int bench_step(const options& g, int n) {
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

}  // namespace berth::bench
