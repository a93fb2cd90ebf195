#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/process.hpp"
#include "berth/fixtures/run.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace berth::bench {

double us_since(clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(clock::now() - t0).count();
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto idx = static_cast<std::size_t>(std::lround(q * static_cast<double>(v.size() - 1)));
  return v[std::min(idx, v.size() - 1)];
}

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

namespace {

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

}  // namespace

int emit(const options& g, const std::string& scenario, const std::vector<json::value>& rows,
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
status event_feed::follow(bus::client& c, const bus::subjects& names, std::uint64_t from) {
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

bench_env::~bench_env() {
  client.reset();
  if (node) {
    node->stop();
    node->kill_embedded_server();
  }
  if (!dir.empty() && std::getenv("BERTH_BENCH_KEEP")) {
    scratch.keep();
    std::fprintf(stderr, "bench: kept %s (node log: %s)\n", dir.c_str(),
                 node ? node->log_path().c_str() : "-");
  }
}

status bench_env::start(std::map<std::string, std::string> env) {
  BERTH_TRY(scratch.make("berth-bench"));  // 0711: the sandbox user walks through to workspaces
  dir = scratch.path();
  env.emplace("BERTH_LOG_LEVEL",
              std::getenv("BERTH_BENCH_LOG_LEVEL") ? std::getenv("BERTH_BENCH_LOG_LEVEL") : "warn");
  node = std::make_unique<fixtures::node_process>(
      fixtures::node_options{berth_binary(), dir + "/node", {}, std::move(env)});
  BERTH_TRY(node->start());
  return connect();
}

status bench_env::connect() {
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

result<std::string> bench_env::start_session(const json::value& spec) {
  json::value req = json::value::make_object();
  req.set("spec", spec);
  auto r = client->request(names.api("session.start"), req.dump(), millis(30'000));
  if (!r) return r.err();
  auto v = json::parse(r->data);
  if (!v || v->find("error")) return error{errc::internal, "session.start: " + r->data};
  return v->get_string("id");
}

status scratch::make() {
  BERTH_TRY(d.make("berth-bench"));
  if (std::getenv("BERTH_BENCH_KEEP")) d.keep();
  dir = d.path();
  env = fixtures::setup_env();
  env["HOME"] = dir;
  env.erase("XDG_CONFIG_HOME");
  return {};
}

json::value spec_with(const std::string& step_json) {
  return *json::parse(R"({"steps":[)" + step_json + "]}");
}

std::size_t count_type(const std::vector<json::value>& evs, const std::string& type) {
  std::set<std::string> sessions;
  for (const auto& e : evs)
    if (e.get_string("type") == type) sessions.insert(e.get_string("session"));
  return sessions.size();
}
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
    bool got = feed.wait_next(
        seen,
        [&](const json::value& e) {
          return e.get_string("type") == ev::input_applied &&
                 e.find("data")->get_int("input_seq") == seq;
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
double spawn_true_us() {
  process::spawn_options so;
  so.search_path = false;
  auto t0 = clock::now();
  auto pid = process::spawn({"/bin/true"}, so);
  if (pid) ::waitpid(*pid, nullptr, 0);
  return us_since(t0);
}

status own_sandbox::init() {
  BERTH_TRY(scratch.make("berth-bench"));
  dir = scratch.path();
  auto helper = sandbox::install_helper(sandbox::helper_next_to_self(), dir + "/helper");
  if (!helper) return helper.err();
  o.group = "bench-" + std::to_string(::getpid());
  o.workspace = dir + "/ws";
  o.helper = *helper;
  std::filesystem::create_directories(o.workspace);
  if (::geteuid() == 0) {
    o.uid = 65534;
    o.gid = 65534;
    if (::chown(o.workspace.c_str(), 65534, 65534) != 0)
      return error{errc::io_error, "cannot hand " + o.workspace + " to the sandbox user"};
  }
  o.lim.memory_bytes = 1LL << 30;
  o.lim.pids = 512;
  o.lim.tmp_bytes = 64LL << 20;
  o.lim.nofile = 1024;
  return sandbox::check_host(o.bwrap, o.helper);
}

result<double> exec_true_us(sandbox::sandbox& box) {
  sandbox::command cmd;
  cmd.argv = {"/bin/true"};
  auto t0 = clock::now();
  auto c = box.exec(cmd, [](int, std::string_view, bool) {});
  if (!c) return c.err();
  if (auto out = (*c)->wait(); out.exit_code != 0)
    return error{errc::internal, "/bin/true in the bench's sandbox exited " +
                                     std::to_string(out.exit_code) + " (signal " +
                                     std::to_string(out.signal) + ")"};
  return us_since(t0);
}
timed_events session_events(event_feed& feed, const std::string& id) {
  std::lock_guard lock(feed.mu);
  timed_events out;
  for (std::size_t i = 0; i < feed.events.size(); ++i)
    if (feed.events[i].get_string("session") == id)
      out.emplace_back(feed.events[i], feed.stored_ns[i]);
  return out;
}

result<timed_events> run_to_end(bench_env& env, event_feed& feed, const json::value& spec,
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

double wall_us(const timed_events& evs) {
  std::int64_t t0 = 0, t1 = 0;
  for (const auto& [e, ns] : evs) {
    auto t = e.get_string("type");
    if (t == ev::session_started) t0 = ns;
    if (t == ev::session_succeeded) t1 = ns;
  }
  return static_cast<double>(t1 - t0) / 1000.0;
}
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
namespace {
std::string binary = "berth";
}  // namespace

const std::string& berth_binary() {
  return binary;
}

void set_berth_binary(std::string path) {
  binary = std::move(path);
}

}  // namespace berth::bench
