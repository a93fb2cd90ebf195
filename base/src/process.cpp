#include "berth/base/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

extern char** environ;

namespace berth::process {

result<pid_t> spawn(const std::vector<std::string>& argv, const spawn_options& opts) {
  if (argv.empty() || argv[0].empty())
    return error{errc::invalid_argument, "run: the command is empty"};
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);

  auto redirect = [&](int fd, int target, int flags) {
    if (fd >= 0)
      posix_spawn_file_actions_adddup2(&fa, fd, target);
    else
      posix_spawn_file_actions_addopen(&fa, target, "/dev/null", flags, 0);
  };
  redirect(opts.stdin_fd, 0, O_RDONLY);
  redirect(opts.stdout_fd, 1, O_WRONLY);
  redirect(opts.stderr_fd, 2, O_WRONLY);
  if (!opts.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, opts.cwd.c_str());
  // Extra descriptors become 3, 4, ...: first moved above that range, so that no dup2 of the
  // list overwrites a source still to come.
  const int first = 3;
  const int n_extra = static_cast<int>(opts.extra_fds.size());
  std::vector<int> moved;
  for (int fd : opts.extra_fds) {
    int high = ::fcntl(fd, F_DUPFD_CLOEXEC, first + n_extra);
    if (high < 0) {
      for (int m : moved) ::close(m);
      posix_spawn_file_actions_destroy(&fa);
      posix_spawnattr_destroy(&attr);
      return error{errc::io_error, std::string("cannot pass a descriptor: ") + errno_text(errno)};
    }
    moved.push_back(high);
  }
  for (int i = 0; i < n_extra; ++i)
    posix_spawn_file_actions_adddup2(&fa, moved[static_cast<std::size_t>(i)], first + i);
  // Nothing else of ours leaks into the child: not the NATS sockets (a leftover child would keep
  // a dead node's connection, and its subscriptions, alive), not RocksDB's files.
  posix_spawn_file_actions_addclosefrom_np(&fa, first + n_extra);

  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigdefault(&attr, &all);
  if (opts.new_process_group) {
    flags |= POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setpgroup(&attr, 0);
  }
  posix_spawnattr_setflags(&attr, flags);

  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_storage;
  std::vector<char*> envp;
  char** env = environ;
  if (opts.env) {
    for (const auto& [k, v] : *opts.env) env_storage.push_back(k + "=" + v);
    for (auto& e : env_storage) envp.push_back(e.data());
    envp.push_back(nullptr);
    env = envp.data();
  }
  pid_t pid = -1;
  int rc = opts.search_path ? posix_spawnp(&pid, args[0], &fa, &attr, args.data(), env)
                            : posix_spawn(&pid, args[0], &fa, &attr, args.data(), env);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  for (int m : moved) ::close(m);
  if (rc != 0) {
    if (rc == ENOENT) return error{errc::not_found, "no such file or directory: " + argv[0]};
    if (rc == EACCES) return error{errc::permission_denied, "permission denied: " + argv[0]};
    return error{errc::io_error, "cannot start " + argv[0] + ": " + errno_text(rc)};
  }
  return pid;
}

bool alive(pid_t pid) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  auto rparen = line.rfind(')');
  return rparen == std::string::npos || rparen + 2 >= line.size() || line[rparen + 2] != 'Z';
}

std::optional<unsigned long long> start_time(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return std::nullopt;
  auto rparen = line.rfind(')');
  if (rparen == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(rparen + 2));
  std::string field;
  // Fields after the command: state is field 3; starttime is field 22.
  for (int i = 3; i <= 22; ++i) {
    if (!(rest >> field)) return std::nullopt;
  }
  try {
    return std::stoull(field);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void kill_group(pid_t pgid, int sig) {
  if (pgid > 1) ::kill(-pgid, sig);
}

std::map<std::string, std::string> current_env() {
  std::map<std::string, std::string> out;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string_view::npos)
      out.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return out;
}

std::optional<std::string> find_executable(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) return name;
    return std::nullopt;
  }
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::stringstream ss(p);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    std::string full = (dir.empty() ? "." : dir) + "/" + name;
    struct stat st {};
    if (::stat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(full.c_str(), X_OK) == 0)
      return full;
  }
  return std::nullopt;
}

result<captured> run_capture(const std::vector<std::string>& argv, const std::string& stdin_data,
                             std::chrono::milliseconds timeout, std::size_t max_bytes,
                             const spawn_options& base) {
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0)
    return error{errc::io_error, "pipe: " + std::string(errno_text(errno))};
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    return error{errc::io_error, "pipe: " + std::string(errno_text(errno))};
  }
  if (::pipe2(err, O_CLOEXEC) != 0) {
    for (int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
    return error{errc::io_error, "pipe: " + std::string(errno_text(errno))};
  }
  spawn_options so = base;
  so.stdin_fd = in[0];
  so.stdout_fd = out[1];
  so.stderr_fd = err[1];
  so.new_process_group = true;
  auto pid = spawn(argv, so);
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  if (!pid) {
    for (int fd : {in[1], out[0], err[0]}) ::close(fd);
    return pid.err();
  }
  ::fcntl(in[1], F_SETFL, O_NONBLOCK);
  captured c;
  std::size_t written = 0;
  int in_fd = in[1];
  if (stdin_data.empty()) {
    ::close(in_fd);
    in_fd = -1;
  }
  int open_fds = 2;
  pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {in_fd, POLLOUT, 0}};
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      c.timed_out = true;
      kill_group(*pid, SIGKILL);
      break;
    }
    fds[2].fd = in_fd;
    int n = ::poll(fds, 3, static_cast<int>(std::min<long long>(left, 1000)));
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      auto r = ::read(fds[i].fd, buf, sizeof buf);
      if (r <= 0) {
        if (r < 0 && errno == EINTR) continue;
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
        continue;
      }
      auto& dst = i == 0 ? c.out : c.err;
      auto take = std::min<std::size_t>(static_cast<std::size_t>(r),
                                        max_bytes - std::min(max_bytes, dst.size()));
      if (take < static_cast<std::size_t>(r)) c.truncated = true;
      dst.append(buf, take);
    }
    if (in_fd >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      auto w = ::write(in_fd, stdin_data.data() + written, stdin_data.size() - written);
      if (w > 0) written += static_cast<std::size_t>(w);
      if (w < 0 && errno != EAGAIN && errno != EINTR) written = stdin_data.size();
      if (written >= stdin_data.size()) {
        ::close(in_fd);
        in_fd = -1;
      }
    }
  }
  for (int i = 0; i < 2; ++i)
    if (fds[i].fd >= 0) ::close(fds[i].fd);
  if (in_fd >= 0) ::close(in_fd);
  int status = 0;
  while (::waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) c.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) c.signal = WTERMSIG(status);
  return c;
}

void raise_open_files_limit() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
}

}  // namespace berth::process
