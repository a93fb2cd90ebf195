#include "local_node.hpp"

#include "cli.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/json.hpp"
#include "berth/base/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace berth::cli {

local_node::local_node(std::string data_dir, std::map<std::string, std::string> env)
    : data_dir_(std::move(data_dir)), env_(std::move(env)) {}

local_node::~local_node() {
  stop();
}

status local_node::start() {
  std::error_code ec;
  std::filesystem::create_directories(data_dir_, ec);
  std::filesystem::remove(data_dir_ + "/node.json", ec);
  int fd = ::open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  process::spawn_options so;
  so.stdout_fd = fd;
  so.stderr_fd = fd;
  so.search_path = false;
  auto env = process::current_env();
  env["XDG_STATE_HOME"] = data_dir_ + "/state";  // do not repoint the user's default node
  for (const auto& [k, v] : env_) env[k] = v;
  so.env = env;
  auto pid = process::spawn({self_exe(), "node", "--data-dir", data_dir_}, so);
  if (fd >= 0) ::close(fd);
  if (!pid) return pid.err();
  pid_ = *pid;
  for (int i = 0; i < 600; ++i) {
    auto text = fs::read_file(data_dir_ + "/node.json");
    if (text) {
      auto v = json::parse(*text);
      if (v) {
        url_ = v->get_string("nats_url");
        return {};
      }
    }
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return error{errc::unavailable, "the node exited during start-up; see " + log_path()};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return error{errc::timeout, "the node did not become ready within 12 s; see " + log_path()};
}

void local_node::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int st = 0;
  for (int i = 0; i < 600; ++i) {
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill9();
}

void local_node::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void local_node::kill_embedded_server() {
  auto text = fs::read_file(data_dir_ + "/nats/nats-server.pid");
  if (!text) return;
  try {
    auto p = static_cast<pid_t>(std::stol(*text));
    if (process::alive(p)) ::kill(p, SIGTERM);
  } catch (const std::exception&) {
  }
}

}  // namespace berth::cli
