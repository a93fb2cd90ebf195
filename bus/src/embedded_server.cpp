#include "berth/bus/embedded_server.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/log.hpp"
#include "berth/base/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

namespace berth::bus {

namespace sfs = std::filesystem;
using namespace std::chrono_literals;

namespace {
std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("nats");
  return l;
}

// The client URL a nats-server wrote to its ports file (--ports_file_dir), or "".
std::string read_ports_file(const std::string& dir, pid_t pid) {
  std::error_code ec;
  for (const auto& entry : sfs::directory_iterator(dir + "/ports", ec)) {
    auto name = entry.path().filename().string();
    if (name.find("_" + std::to_string(pid) + ".ports") == std::string::npos) continue;
    auto text = fs::read_file(entry.path().string());
    if (!text) return "";
    // {"client":["nats://127.0.0.1:4222"], ...}
    auto p = text->find("nats://");
    if (p == std::string::npos) return "";
    auto e = text->find('"', p);
    return text->substr(p, e - p);
  }
  return "";
}

bool cmdline_mentions(pid_t pid, const std::string& needle) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return all.find(needle) != std::string::npos;
}
}  // namespace

struct embedded_server::impl {
  options opts;
  std::string token;
  std::mutex mu;
  std::condition_variable cv;
  pid_t pid = -1;
  bool is_child = false;  // false: adopted from an earlier node process
  int port = -1;
  std::string url;
  bool stopping = false;
  std::thread watchdog;

  std::string pid_file() const { return opts.dir + "/nats-server.pid"; }

  status write_config() {
    std::string conf;
    conf += "server_name: \"" + opts.server_name + "\"\n";
    conf += "max_payload: 8MB\n";
    conf += "authorization {\n  token: \"" + token + "\"\n}\n";
    conf += "jetstream {\n  store_dir: \"" + opts.dir + "/store\"\n}\n";
    if (!opts.routes.empty()) {
      conf += "cluster {\n  name: \"" + opts.cluster_name + "\"\n  listen: \"" +
              (opts.cluster_listen.empty() ? std::string("127.0.0.1:-1") : opts.cluster_listen) +
              "\"\n  routes: [\n";
      for (const auto& r : opts.routes)
        conf += "    \"" + (r.rfind("nats-route://", 0) == 0 ? r : "nats-route://" + r) + "\"\n";
      conf += "  ]\n}\n";
    }
    return fs::write_file_atomic(opts.dir + "/nats-server.conf", conf, 0600);
  }

  // Start a new server process (on `port`, or a random one) and wait for its ports file.
  status launch() {
    auto bin = process::find_executable(opts.binary);
    if (!bin)
      return error{errc::not_found,
                   "nats.server_binary: \"" + opts.binary +
                       "\" not found in PATH; install nats-server (apt-get install nats-server) "
                       "or set [nats] servers to an external NATS"};
    BERTH_TRY(write_config());
    std::error_code ec;
    sfs::remove_all(opts.dir + "/ports", ec);
    sfs::create_directories(opts.dir + "/ports", ec);
    std::string logpath = opts.dir + "/nats-server.log";
    int logfd = ::open(logpath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    std::vector<std::string> argv = {*bin,
                                     "-c",
                                     opts.dir + "/nats-server.conf",
                                     "-a",
                                     "127.0.0.1",
                                     "-p",
                                     std::to_string(port > 0 ? port : -1),
                                     "-js",
                                     "--ports_file_dir",
                                     opts.dir + "/ports",
                                     "-P",
                                     pid_file()};
    process::spawn_options so;
    so.stdout_fd = logfd;
    so.stderr_fd = logfd;
    so.new_process_group = true;  // Ctrl-C on the node's terminal must not reach it first
    auto p = process::spawn(argv, so);
    if (logfd >= 0) ::close(logfd);
    if (!p) return p.err();
    pid = *p;
    is_child = true;
    auto deadline = std::chrono::steady_clock::now() + 15s;
    while (std::chrono::steady_clock::now() < deadline) {
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        return error{errc::unavailable, "nats-server exited during start-up; see " + logpath};
      }
      url = read_ports_file(opts.dir, *p);
      if (!url.empty()) break;
      std::this_thread::sleep_for(10ms);
    }
    if (url.empty())
      return error{errc::timeout, "nats-server did not start within 15 s; see " + logpath};
    port = std::stoi(url.substr(url.rfind(':') + 1));
    logger()->info("embedded nats-server pid {} listening on {}", pid, url);
    return {};
  }

  // Adopt a server left running by an earlier node process of this data dir.
  bool adopt() {
    auto text = fs::read_file(pid_file());
    if (!text) return false;
    pid_t old = 0;
    try {
      old = static_cast<pid_t>(std::stol(*text));
    } catch (const std::exception&) {
      return false;
    }
    if (!process::alive(old) || !cmdline_mentions(old, opts.dir + "/nats-server.conf"))
      return false;
    auto u = read_ports_file(opts.dir, old);
    if (u.empty()) return false;
    pid = old;
    is_child = false;
    url = u;
    port = std::stoi(url.substr(url.rfind(':') + 1));
    logger()->info("adopted running embedded nats-server pid {} on {}", pid, url);
    return true;
  }

  bool exited() {
    if (pid <= 0) return true;
    if (is_child) {
      int st = 0;
      return ::waitpid(pid, &st, WNOHANG) == pid;
    }
    return !process::alive(pid);
  }

  void watch() {
    std::unique_lock lock(mu);
    while (!stopping) {
      cv.wait_for(lock, 200ms, [&] { return stopping; });
      if (stopping) break;
      if (!exited()) continue;
      logger()->error("embedded nats-server (pid {}) died; restarting it on port {}", pid, port);
      pid = -1;
      auto st = launch();
      if (!st) {
        logger()->error("restarting nats-server failed: {}", st.err().message);
        cv.wait_for(lock, 1s, [&] { return stopping; });
      }
    }
  }

  void stop_server() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline && !exited())
      std::this_thread::sleep_for(20ms);
    if (!exited()) {
      ::kill(pid, SIGKILL);
      if (is_child) ::waitpid(pid, nullptr, 0);
    }
    pid = -1;
  }
};

embedded_server::embedded_server(std::unique_ptr<impl> i) : impl_(std::move(i)) {}

embedded_server::~embedded_server() {
  // Without stop(): leave the server running (a crash-like exit); only end the watchdog.
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->watchdog.joinable()) impl_->watchdog.join();
}

result<std::unique_ptr<embedded_server>> embedded_server::start(options opts) {
  auto i = std::make_unique<impl>();
  i->opts = std::move(opts);
  BERTH_TRY(fs::ensure_writable_dir(i->opts.dir, "embedded nats-server directory"));
  // The access token: made once, kept owner-readable only.
  auto token_path = i->opts.dir + "/token";
  if (auto kept = fs::read_file(token_path); kept && kept->size() >= 32) {
    i->token = kept->substr(0, kept->find_first_of("\r\n"));
  } else {
    std::random_device rd;
    static constexpr char hex[] = "0123456789abcdef";
    for (int k = 0; k < 48; ++k) i->token.push_back(hex[rd() % 16]);
    BERTH_TRY(fs::write_file_atomic(token_path, i->token + "\n", 0600));
  }
  if (!i->adopt()) BERTH_TRY(i->launch());
  auto* raw = i.get();
  i->watchdog = std::thread([raw] { raw->watch(); });
  return std::unique_ptr<embedded_server>(new embedded_server(std::move(i)));
}

std::string embedded_server::url() const {
  std::lock_guard lock(impl_->mu);
  return impl_->url;
}

std::string embedded_server::url_with_token() const {
  std::lock_guard lock(impl_->mu);
  return "nats://" + impl_->token + "@" + impl_->url.substr(std::string("nats://").size());
}

pid_t embedded_server::pid() const {
  std::lock_guard lock(impl_->mu);
  return impl_->pid;
}

void embedded_server::stop() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->watchdog.joinable()) impl_->watchdog.join();
  std::lock_guard lock(impl_->mu);
  impl_->stop_server();
}

}  // namespace berth::bus
