#include "pump.hpp"

#include "berth/base/process.hpp"
#include "berth/sandbox/runner.hpp"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

namespace berth::sandbox {

namespace {

using clock = std::chrono::steady_clock;

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

class process_command final : public running_command {
 public:
  process_command(pid_t pid, int out_fd, int err_fd, command cmd, output_fn fn)
      : pid_(pid),
        out_fd_(out_fd),
        err_fd_(err_fd),
        cmd_(std::move(cmd)),
        fn_(std::move(fn)),
        start_(clock::now()) {
    pidfd_ = pidfd_open(pid);
  }

  ~process_command() override {
    // A command must not outlive its owner: stop it, then reap.
    if (!reaped_) {
      process::kill_group(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    for (int fd : {out_fd_, err_fd_, pidfd_})
      if (fd >= 0) ::close(fd);
  }

  pid_t pid() const override { return pid_; }

  void stop(millis grace) override {
    std::lock_guard lock(mu_);
    if (reaped_ || stop_requested_) return;
    stop_requested_ = true;
    process::kill_group(pid_, SIGTERM);
    kill_at_ = clock::now() + grace;
  }

  outcome wait() override {
    outcome out;
    int status = 0;
    pump_output(
        out_fd_, err_fd_, pidfd_, cmd_, fn_, out,
        [&] {
          // WNOWAIT: keep the zombie (and so the pid and process group id) until the group is
          // killed, so no later process can be hit by mistake.
          siginfo_t info{};
          if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
              info.si_pid != pid_)
            return false;
          // Whatever the command left running in its group goes with it.
          process::kill_group(pid_, SIGKILL);
          return true;
        },
        [&] {
          std::lock_guard lock(mu_);
          if (stop_requested_ && clock::now() >= kill_at_) process::kill_group(pid_, SIGKILL);
        });
    {
      std::lock_guard lock(mu_);
      ::waitpid(pid_, &status, 0);
      reaped_ = true;
    }
    if (WIFEXITED(status)) out.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) out.signal = WTERMSIG(status);
    auto took = clock::now() - start_;
    out.duration_ms = std::chrono::duration_cast<millis>(took).count();
    out.duration_us = std::chrono::duration_cast<std::chrono::microseconds>(took).count();
    return out;
  }

 private:
  pid_t pid_;
  int out_fd_;
  int err_fd_;
  int pidfd_ = -1;
  command cmd_;
  output_fn fn_;
  clock::time_point start_;
  std::mutex mu_;
  bool reaped_ = false;
  bool stop_requested_ = false;
  clock::time_point kill_at_ = clock::time_point::max();
};

class process_runner final : public step_runner {
 public:
  process_runner(std::string work_root, std::string home_root)
      : work_root_(std::move(work_root)), home_root_(std::move(home_root)) {}

  // Without isolation the command sees the host: its directories are host paths.
  layout layout_of(const std::string& session) const override {
    const char* tmp = std::getenv("TMPDIR");
    const char* path = std::getenv("PATH");
    std::string t = tmp && *tmp ? tmp : "/tmp";
    return {
        work_root_.empty() ? std::filesystem::current_path().string() : work_root_ + "/" + session,
        (home_root_.empty() ? t : home_root_) + "/" + session, t,
        path && *path ? path : sandbox_path};
  }

  result<std::unique_ptr<running_command>> start(const command& cmd, output_fn on_output) override {
    if (cmd.argv.empty()) return error{errc::invalid_argument, "run: the command is empty"};
    if (!home_root_.empty() && !cmd.session.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(home_root_ + "/" + cmd.session, ec);
      if (ec)
        return error{errc::io_error,
                     "home " + home_root_ + "/" + cmd.session + ": " + ec.message()};
    }
    // Resolve the program against the command's own PATH, so a missing binary is a clear
    // error before anything starts.
    std::string program = cmd.argv[0];
    if (program.find('/') == std::string::npos) {
      auto it = cmd.env.find("PATH");
      const char* host_path = std::getenv("PATH");
      std::string saved = host_path ? host_path : "";
      // find_executable reads the process PATH; look up with the command's PATH instead.
      std::string path = it != cmd.env.end() ? it->second : saved;
      std::optional<std::string> found;
      std::size_t start = 0;
      while (start <= path.size() && !found) {
        auto end = path.find(':', start);
        std::string dir =
            path.substr(start, end == std::string::npos ? std::string::npos : end - start);
        auto candidate = (dir.empty() ? std::string(".") : dir) + "/" + program;
        if (::access(candidate.c_str(), X_OK) == 0) found = candidate;
        if (end == std::string::npos) break;
        start = end + 1;
      }
      if (!found) return error{errc::not_found, "no such program in PATH: " + program};
      program = *found;
    } else if (::access(program.c_str(), X_OK) != 0) {
      return error{errc::not_found, "cannot execute " + program + ": " + errno_text(errno)};
    }
    auto io = make_stdio(cmd);
    if (!io) return io.err();
    process::spawn_options so;
    so.stdin_fd = io->in;
    so.cwd = cmd.cwd;
    so.env = cmd.env;
    so.stdout_fd = io->out_w;
    so.stderr_fd = io->err_w;
    so.new_process_group = true;
    so.search_path = false;
    auto argv = cmd.argv;
    argv[0] = program;
    auto pid = process::spawn(argv, so);
    io->close_child_ends();
    if (!pid) {
      io->close_all();
      return pid.err();
    }
    return std::unique_ptr<running_command>(
        new process_command(*pid, io->out_r, io->err_r, cmd, std::move(on_output)));
  }

  std::string name() const override { return "process"; }

 private:
  std::string work_root_;
  std::string home_root_;
};

}  // namespace

std::unique_ptr<step_runner> make_process_runner(std::string work_root, std::string home_root) {
  return std::make_unique<process_runner>(std::move(work_root), std::move(home_root));
}

bool kill_leftover(pid_t pid, unsigned long long start_time) {
  auto st = process::start_time(pid);
  if (!st || *st != start_time) return false;
  process::kill_group(pid, SIGKILL);
  ::kill(pid, SIGKILL);
  return true;
}

}  // namespace berth::sandbox
