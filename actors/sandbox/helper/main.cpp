// berth-sandbox: the small helper every sandbox runs.
//
//   berth-sandbox launch [--cgroup-procs FILE]... [--uid N --gid N] -- PROGRAM ARGS...
//       Outside the sandbox, as the node's user: join the session's cgroups (so everything the
//       sandbox ever starts is accounted and limited, with no race), drop to the sandbox user,
//       then exec PROGRAM (bwrap).
//
//   berth-sandbox init --socket FD --root DIR [--nofile N] [--fsize BYTES]
//       Inside the sandbox, as its init: receives requests over the socket (wire.hpp) and runs
//       commands with posix_spawn, and file tools resolved beneath DIR. Exits when the socket
//       closes, killing everything it started.
#include "tools.hpp"

#include "berth/sandbox/wire.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace berth;
using namespace berth::sandbox;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "berth-sandbox: %s\n", what.c_str());
  std::_Exit(125);  // stderr is unbuffered; nothing else needs flushing
}

// --- launch ------------------------------------------------------------------------------------

int launch(int argc, char** argv) {
  std::vector<std::string> procs;
  long uid = -1, gid = -1;
  int i = 2;
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (i + 1 >= argc) die("launch: " + a + " needs a value");
    if (a == "--cgroup-procs")
      procs.emplace_back(argv[++i]);
    else if (a == "--uid")
      uid = std::strtol(argv[++i], nullptr, 10);
    else if (a == "--gid")
      gid = std::strtol(argv[++i], nullptr, 10);
    else
      die("launch: unknown option " + a);
  }
  if (i >= argc) die("launch: no program after --");
  auto self = std::to_string(::getpid());
  for (const auto& p : procs) {
    int fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, self.data(), self.size()) < 0)
      die("cannot join cgroup " + p + ": " + errno_text(errno));
    ::close(fd);
  }
  if (gid >= 0 && ::geteuid() == 0) {
    if (::setgroups(0, nullptr) != 0) die(std::string("setgroups: ") + errno_text(errno));
    if (::setresgid(static_cast<gid_t>(gid), static_cast<gid_t>(gid), static_cast<gid_t>(gid)) != 0)
      die(std::string("setgid: ") + errno_text(errno));
  }
  if (uid >= 0 && ::geteuid() == 0) {
    if (::setresuid(static_cast<uid_t>(uid), static_cast<uid_t>(uid), static_cast<uid_t>(uid)) != 0)
      die(std::string("setuid: ") + errno_text(errno));
  }
  // Changing credentials made this process non-dumpable, which hides /proc/self/fd from its
  // new user; bwrap needs it for --bind-fd. Nothing secret is in this process's memory.
  ::prctl(PR_SET_DUMPABLE, 1);
  ::execvp(argv[i], argv + i);
  die(std::string("cannot run ") + argv[i] + ": " + errno_text(errno));
}

// --- init --------------------------------------------------------------------------------------

struct running {
  std::int64_t id = 0;
  pid_t pid = -1;
};

class helper {
 public:
  helper(int sock, int root) : sock_(sock), root_(root) {}

  int run() {
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &chld, nullptr);
    int sfd = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) die(std::string("signalfd: ") + errno_text(errno));
    json::value ready = json::value::make_object();
    ready.set("event", "ready");
    ready.set("pid", static_cast<std::int64_t>(::getpid()));
    if (!wire::send(sock_, ready)) return 1;
    for (;;) {
      pollfd fds[2] = {{sock_, POLLIN, 0}, {sfd, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        die(std::string("poll: ") + errno_text(errno));
      }
      if (fds[1].revents & POLLIN) {
        signalfd_siginfo si;
        while (::read(sfd, &si, sizeof(si)) == sizeof(si)) {
        }
        reap();
      }
      if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        auto m = wire::receive(sock_);
        if (!m) break;  // the node is gone: take everything with us
        handle(std::move(*m));
      }
    }
    sweep({});
    return 0;
  }

 private:
  void reply_error(std::int64_t id, const error& e) {
    json::value r = json::value::make_object();
    r.set("id", id);
    r.set("ok", false);
    r.set("code", std::string(errc_name(e.code)));
    r.set("error", e.message);
    send(r);
  }

  void handle(wire::message m) {
    auto& b = m.body;
    auto id = b.get_int("id");
    auto op = b.get_string("op");
    if (op == "exec") {
      exec(id, b, m.fds);
    } else if (op == "kill") {
      for (const auto& r : children_)
        if (r.second.id == b.get_int("target"))
          ::kill(-r.first, static_cast<int>(b.get_int("signal", SIGKILL)));
    } else {
      auto res = tools::run(root_, op, b, m.fds);
      for (int fd : m.fds) ::close(fd);
      if (!res) {
        reply_error(id, res.err());
        return;
      }
      res->body.set("id", id);
      res->body.set("ok", true);
      send(res->body, res->fds);
      for (int fd : res->fds) ::close(fd);
      return;
    }
    for (int fd : m.fds) ::close(fd);
  }

  void exec(std::int64_t id, const json::value& b, const std::vector<int>& fds) {
    const auto* argv_v = b.find("argv");
    if (!argv_v || !argv_v->is_array() || argv_v->as_array().empty() || fds.size() != 3) {
      reply_error(id, error{errc::invalid_argument, "exec: argv and three descriptors needed"});
      return;
    }
    std::vector<std::string> argv;
    for (const auto& a : argv_v->as_array()) argv.push_back(a.is_string() ? a.as_string() : "");
    std::vector<std::string> env;
    std::string path = "/usr/local/bin:/usr/bin:/bin";
    if (const auto* e = b.find("env"); e && e->is_object())
      for (const auto& [k, v] : e->as_object()) {
        if (!v.is_string()) continue;
        env.push_back(k + "=" + v.as_string());
        if (k == "PATH") path = v.as_string();
      }
    std::string program = argv[0];
    if (program.find('/') == std::string::npos) {
      std::string found;
      std::size_t start = 0;
      while (found.empty()) {
        auto end = path.find(':', start);
        auto dir = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
        auto candidate = (dir.empty() ? std::string(".") : dir) + "/" + program;
        if (::access(candidate.c_str(), X_OK) == 0) found = candidate;
        if (end == std::string::npos) break;
        start = end + 1;
      }
      if (found.empty()) {
        reply_error(id, error{errc::not_found, "no such program in PATH: " + program});
        return;
      }
      program = found;
    } else if (::access(program.c_str(), X_OK) != 0) {
      reply_error(id,
                  error{errc::not_found, "cannot execute " + program + ": " + errno_text(errno)});
      return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_adddup2(&fa, fds[0], 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[2], 2);
    auto cwd = b.get_string("cwd");
    if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    argv[0] = program;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    std::vector<char*> envp;
    envp.reserve(env.size() + 1);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, program.c_str(), &fa, &attr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      reply_error(id, error{rc == ENOENT ? errc::not_found : errc::io_error,
                            "cannot start " + program + ": " + errno_text(rc)});
      return;
    }
    children_[pid] = running{id, pid};
    json::value r = json::value::make_object();
    r.set("id", id);
    r.set("ok", true);
    r.set("event", "started");
    r.set("pid", static_cast<std::int64_t>(pid));
    send(r);
  }

  void reap() {
    for (;;) {
      int status = 0;
      rusage ru{};
      pid_t pid = ::wait4(-1, &status, WNOHANG, &ru);
      if (pid <= 0) return;
      auto it = children_.find(pid);
      if (it == children_.end()) continue;  // an orphan we inherited
      auto id = it->second.id;
      children_.erase(it);
      // Whatever the command left behind goes with it: its process group, then anything that
      // escaped the group (setsid) and belongs to no other running command.
      ::kill(-pid, SIGKILL);
      std::set<pid_t> keep;
      for (const auto& c : children_) keep.insert(c.first);
      sweep(keep);
      json::value r = json::value::make_object();
      r.set("id", id);
      r.set("event", "exited");
      if (WIFEXITED(status)) r.set("exit_code", WEXITSTATUS(status));
      if (WIFSIGNALED(status)) r.set("signal", WTERMSIG(status));
      r.set("maxrss_kb", static_cast<std::int64_t>(ru.ru_maxrss));
      r.set("utime_us",
            static_cast<std::int64_t>(ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec));
      r.set("stime_us",
            static_cast<std::int64_t>(ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec));
      send(r);
    }
  }

  // SIGKILL every process of the sandbox except this helper, pid 1 and the process groups of
  // the commands in `keep`.
  void sweep(const std::set<pid_t>& keep) {
    DIR* d = ::opendir("/proc");
    if (!d) return;
    pid_t self = ::getpid();
    while (auto* e = ::readdir(d)) {
      char* end = nullptr;
      long pid = std::strtol(e->d_name, &end, 10);
      if (*end != '\0' || pid <= 1 || pid == self) continue;
      pid_t pg = ::getpgid(static_cast<pid_t>(pid));
      if (pg > 0 && keep.count(pg)) continue;
      ::kill(static_cast<pid_t>(pid), SIGKILL);
    }
    ::closedir(d);
  }

  // A reply the node cannot take means its socket is gone: the loop's next read sees that and
  // the helper exits, killing what it runs; there is no one left to tell.
  void send(const json::value& body, const std::vector<int>& fds = {}) {
    (void)wire::send(sock_, body, fds);
  }

  int sock_;
  int root_;
  std::map<pid_t, running> children_;
};

int init(int argc, char** argv) {
  int sock = -1;
  std::string root;
  long long nofile = 0, fsize = 0;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) die("init: " + a + " needs a value");
    if (a == "--socket")
      sock = static_cast<int>(std::strtol(argv[++i], nullptr, 10));
    else if (a == "--root")
      root = argv[++i];
    else if (a == "--nofile")
      nofile = std::strtoll(argv[++i], nullptr, 10);
    else if (a == "--fsize")
      fsize = std::strtoll(argv[++i], nullptr, 10);
    else
      die("init: unknown option " + a);
  }
  if (sock < 0 || root.empty()) die("init: --socket and --root are required");
  ::fcntl(sock, F_SETFD, FD_CLOEXEC);
  // Limits every command inherits: no core files, bounded descriptors and file sizes.
  rlimit zero{0, 0};
  ::setrlimit(RLIMIT_CORE, &zero);
  if (nofile > 0) {
    rlimit r{static_cast<rlim_t>(nofile), static_cast<rlim_t>(nofile)};
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
  if (fsize > 0) {
    rlimit r{static_cast<rlim_t>(fsize), static_cast<rlim_t>(fsize)};
    ::setrlimit(RLIMIT_FSIZE, &r);
  }
  ::signal(SIGXFSZ, SIG_IGN);  // the helper's own writes fail with EFBIG instead
  ::signal(SIGPIPE, SIG_IGN);
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  int rootfd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (rootfd < 0) die("init: cannot open " + root + ": " + errno_text(errno));
  return helper(sock, rootfd).run();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "launch") return launch(argc, argv);
  if (argc >= 2 && std::string(argv[1]) == "init") return init(argc, argv);
  std::fprintf(stderr, "usage: berth-sandbox launch|init ... (started by berth node)\n");
  return 2;
}
