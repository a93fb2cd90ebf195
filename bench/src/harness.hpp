#pragma once
// What every scenario shares: timing and percentiles, the result rows and their printing, the
// bench's own node with a client and a feed of the journal, a scratch directory, a sandbox of
// the bench's own (the warm-exec peer).

#include "berth/base/error.hpp"
#include "berth/base/exit_code.hpp"
#include "berth/base/json.hpp"
#include "berth/bench/bench.hpp"
#include "berth/bus/client.hpp"
#include "berth/core/events.hpp"
#include "berth/fixtures/node_process.hpp"
#include "berth/fixtures/scratch_dir.hpp"
#include "berth/sandbox/sandbox.hpp"

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace berth::bench {

namespace ev = core::ev;
using clock = std::chrono::steady_clock;

double us_since(clock::time_point t0);
double percentile(std::vector<double> v, double q);
/// User + system CPU of a process so far, in milliseconds.
double cpu_ms(pid_t pid);
std::int64_t rss_bytes(pid_t pid);

/// One measure: Berth's samples against its peer's.
struct row {
  std::string name;
  std::string peer;
  std::vector<double> berth_us;
  std::vector<double> peer_us;
};
/// p50 and p99 of both and their ratios.
json::value row_json(const row& r);

/// Print the rows (a table, or one JSON object with -o json) and return 0.
int emit(const options& o, const std::string& scenario, const std::vector<json::value>& rows,
         json::value extra);

/// Journal events of every session, as they arrive.
struct event_feed {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<json::value> events;
  std::vector<std::int64_t> stored_ns;  ///< stream timestamp of each event (server clock)
  std::uint64_t last_seq = 0;
  std::unique_ptr<bus::subscription> sub;

  status follow(bus::client& c, const bus::subjects& names, std::uint64_t from);
  /// Wait for the first event from index `seen` on that `match`es; `seen` moves past it.
  template <class Match>
  bool wait_next(std::size_t& seen, Match match, std::chrono::seconds timeout) {
    return wait(
        [&](auto& evs) {
          for (; seen < evs.size(); ++seen)
            if (match(evs[seen])) {
              ++seen;
              return true;
            }
          return false;
        },
        timeout);
  }
  /// Wait until `pred(events)` holds.
  template <class Pred>
  bool wait(Pred pred, std::chrono::seconds timeout) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return pred(events); });
  }
};

/// The bench's own `berth node` in a scratch directory, and a client of its NATS. The directory
/// (with the node's log) stays when BERTH_BENCH_KEEP is set.
struct bench_env {
  fixtures::scratch_dir scratch;
  std::string dir;
  std::unique_ptr<fixtures::node_process> node;
  std::unique_ptr<bus::client> client;
  bus::subjects names{"berth"};

  bench_env() = default;
  bench_env(const bench_env&) = delete;
  bench_env& operator=(const bench_env&) = delete;
  ~bench_env();
  /// Start the node with `env` added to its environment, and connect.
  status start(std::map<std::string, std::string> env);
  status connect();
  result<std::string> start_session(const json::value& spec);
};

/// A scratch directory under $TMPDIR (BERTH_BENCH_KEEP keeps it) and an environment in which
/// git reads none of the machine's configuration (as the workspace code runs libgit2).
struct scratch {
  fixtures::scratch_dir d;
  std::string dir;
  std::map<std::string, std::string> env;
  status make();
};

/// {"steps":[<step_json>]}
json::value spec_with(const std::string& step_json);
/// How many sessions have an event of `type`.
std::size_t count_type(const std::vector<json::value>& evs, const std::string& type);

/// One input through a session (JetStream publish -> actor -> synced snapshot -> journal ->
/// the client) against a plain JetStream publish of the same size, `n` times after 100 warm-up
/// rounds. What `bench step` reports; `bench graph` measures it again in its own run.
status input_round_trips(bench_env& env, event_feed& feed, const std::string& id, int n, row& r,
                         std::vector<std::pair<std::uint64_t, std::int64_t>>* node_path);

/// A session's events with their stream timestamps (server clock).
using timed_events = std::vector<std::pair<json::value, std::int64_t>>;
timed_events session_events(event_feed& feed, const std::string& id);
/// Start a session and wait for its end; its events. Fails unless it succeeded.
result<timed_events> run_to_end(bench_env& env, event_feed& feed, const json::value& spec,
                                std::chrono::seconds limit);
/// Server-clock microseconds from session.started to its terminal event.
double wall_us(const timed_events& evs);

/// posix_spawn + wait of /bin/true: the peer of every sandbox figure.
double spawn_true_us();
/// A sandbox of the bench's own, started without a node: the "warm exec" peer.
struct own_sandbox {
  fixtures::scratch_dir scratch;
  std::string dir;
  sandbox::sandbox_options o;
  status init();
};
/// /bin/true through a running sandbox, waited for, in microseconds.
result<double> exec_true_us(sandbox::sandbox& box);

/// SIGKILL every process this one started, and theirs (the bench's node, its nats-server,
/// lighttpd, the registry): what a scenario that overran its time limit leaves.
void kill_descendants();

/// The berth executable scenarios start (set by run()).
const std::string& berth_binary();
void set_berth_binary(std::string path);

}  // namespace berth::bench
