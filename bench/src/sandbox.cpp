// sandbox: cold start, warm exec, and both as the node's memory grows.
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

int bench_sandbox(const options& g, int n) {
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
      (big ? rss_big : rss_small) = static_cast<double>(rss_bytes(::getpid())) / 1048576.0;
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

}  // namespace berth::bench
