#include "cgroup.hpp"
#include "pump.hpp"

#include "berth/base/process.hpp"
#include "berth/sandbox/sandbox.hpp"
#include "berth/sandbox/wire.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

namespace berth::sandbox {

namespace {

using clock = std::chrono::steady_clock;

constexpr const char* helper_inside = "/.berth/sandbox";
constexpr const char* work_inside = sandbox_work;

// The system directories a toolchain needs, read-only. On a merged-/usr system /bin, /lib...
// are symlinks into /usr and are recreated as such.
void add_system_dirs(std::vector<std::string>& a, bool network) {
  a.insert(a.end(), {"--ro-bind", "/usr", "/usr"});
  for (const char* d : {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}) {
    struct stat st {};
    if (::lstat(d, &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char target[256];
      auto n = ::readlink(d, target, sizeof(target) - 1);
      if (n <= 0) continue;
      a.insert(a.end(), {"--symlink", std::string(target, static_cast<std::size_t>(n)), d});
    } else if (S_ISDIR(st.st_mode)) {
      a.insert(a.end(), {"--ro-bind", d, d});
    }
  }
  // Only what programs need to run: users and groups, the loader's cache, Debian's
  // alternatives symlinks, certificates, the time zone. Every bind costs start-up time.
  for (const char* f : {"/etc/passwd", "/etc/group", "/etc/ld.so.cache", "/etc/alternatives",
                        "/etc/ssl", "/etc/ca-certificates", "/etc/localtime"})
    a.insert(a.end(), {"--ro-bind-try", f, f});
  if (network)
    for (const char* f : {"/etc/resolv.conf", "/etc/hosts", "/etc/gai.conf"})
      a.insert(a.end(), {"--ro-bind-try", f, f});
}

// One thread for the sockets of every sandbox of the node (epoll, level-triggered). A callback
// returns false to be dropped. Registrations are by id, so a stale event for a closed and
// reused descriptor never reaches a new owner. Callbacks run without the lock; remove() waits
// for a running callback of its id — except on the poller thread itself (a sandbox whose last
// reference a callback released is destroyed there), where it cannot be running anything else.
class socket_poller {
 public:
  static socket_poller& instance() {
    static auto* p = new socket_poller();  // lives until exit: callbacks may still be queued
    return *p;
  }

  std::uint64_t add(int fd, std::function<bool()> cb) {
    std::lock_guard lock(mu_);
    auto id = ++next_;
    entries_[id] = {fd, std::make_shared<std::function<bool()>>(std::move(cb))};
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = id;
    ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
    return id;
  }

  void remove(std::uint64_t id) {
    std::unique_lock lock(mu_);
    auto it = entries_.find(id);
    if (it != entries_.end()) {
      ::epoll_ctl(ep_, EPOLL_CTL_DEL, it->second.first, nullptr);
      entries_.erase(it);
    }
    if (std::this_thread::get_id() == thread_) return;
    cv_.wait(lock, [&] { return running_ != id; });
  }

 private:
  socket_poller() : ep_(::epoll_create1(EPOLL_CLOEXEC)) {
    std::thread t([this] { run(); });
    thread_ = t.get_id();
    t.detach();
  }

  void run() {
    pthread_setname_np(pthread_self(), "berth-sandbox");
    epoll_event evs[64];
    for (;;) {
      int n = ::epoll_wait(ep_, evs, 64, -1);
      for (int i = 0; i < n; ++i) {
        auto id = evs[i].data.u64;
        std::shared_ptr<std::function<bool()>> cb;
        {
          std::lock_guard lock(mu_);
          auto it = entries_.find(id);
          if (it == entries_.end()) continue;
          cb = it->second.second;
          running_ = id;
        }
        bool keep = (*cb)();
        cb.reset();  // may destroy a sandbox, whose stop() calls remove() on this thread
        std::lock_guard lock(mu_);
        running_ = 0;
        if (!keep)
          if (auto it = entries_.find(id); it != entries_.end()) {
            ::epoll_ctl(ep_, EPOLL_CTL_DEL, it->second.first, nullptr);
            entries_.erase(it);
          }
        cv_.notify_all();
      }
    }
  }

  int ep_;
  std::thread::id thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t next_ = 0;
  std::uint64_t running_ = 0;  ///< the id whose callback runs now (0: none)
  std::map<std::uint64_t, std::pair<int, std::shared_ptr<std::function<bool()>>>> entries_;
};

struct exec_slot {
  exec_slot() = default;
  exec_slot(const exec_slot&) = delete;
  exec_slot& operator=(const exec_slot&) = delete;
  ~exec_slot() {
    if (event_fd >= 0) ::close(event_fd);  // only when no one can signal it any more
  }
  int event_fd = -1;
  std::mutex mu;
  bool exited = false;
  json::value status;
};

struct pending_reply {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<result<wire::message>> reply;
};

class bwrap_sandbox;

class sandbox_command final : public running_command {
 public:
  sandbox_command(std::shared_ptr<bwrap_sandbox> box, std::int64_t id,
                  std::shared_ptr<exec_slot> slot, int out_fd, int err_fd, command cmd,
                  output_fn fn, clock::time_point start)
      : box_(std::move(box)),
        id_(id),
        slot_(std::move(slot)),
        out_fd_(out_fd),
        err_fd_(err_fd),
        cmd_(std::move(cmd)),
        fn_(std::move(fn)),
        start_(start) {}
  ~sandbox_command() override;
  // No host pid: the command's pid is one of the sandbox's PID namespace, meaningless (and
  // dangerous to signal) outside. What a crash leaves is the sandbox's, found by cgroup.
  pid_t pid() const override { return -1; }
  outcome wait() override;
  void stop(millis grace) override;

 private:
  void signal(int sig);
  std::shared_ptr<bwrap_sandbox> box_;
  std::int64_t id_;
  std::shared_ptr<exec_slot> slot_;
  int out_fd_, err_fd_;
  command cmd_;
  output_fn fn_;
  clock::time_point start_;
  std::mutex mu_;
  bool stop_requested_ = false;
  bool killed_ = false;
  bool done_ = false;
  clock::time_point kill_at_ = clock::time_point::max();
};

class bwrap_sandbox final : public sandbox, public std::enable_shared_from_this<bwrap_sandbox> {
 public:
  explicit bwrap_sandbox(sandbox_options o) : opts_(std::move(o)) {}
  ~bwrap_sandbox() override { stop(); }

  status boot(const std::string& seccomp) {
    auto cg = cgroup::create(opts_.group, opts_.name, opts_.lim);
    if (!cg) return cg.err();
    cg_ = std::move(*cg);
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
      return error{errc::io_error, std::string("socketpair: ") + errno_text(errno)};
    sock_ = sv[0];
    auto filter = wire::memfd_with(seccomp, "berth-seccomp");
    if (!filter) {
      ::close(sv[1]);
      return filter.err();
    }
    std::vector<std::string> argv = {opts_.helper, "launch"};
    for (const auto& p : cg_.procs_files()) argv.insert(argv.end(), {"--cgroup-procs", p});
    if (opts_.uid && ::geteuid() == 0)
      argv.insert(argv.end(), {"--uid", std::to_string(*opts_.uid), "--gid",
                               std::to_string(opts_.gid.value_or(*opts_.uid))});
    argv.insert(argv.end(), {"--", opts_.bwrap, "--unshare-all"});
    if (opts_.network) argv.push_back("--share-net");
    // The helper is the sandbox's PID 1 (it reaps orphans): one process less per sandbox.
    argv.insert(argv.end(), {"--as-pid-1", "--die-with-parent", "--new-session", "--disable-userns",
                             "--unshare-user", "--clearenv", "--hostname", "berth"});
    add_system_dirs(argv, opts_.network);
    argv.insert(argv.end(), {"--proc", "/proc", "--dev", "/dev"});
    if (opts_.lim.tmp_bytes > 0)
      argv.insert(argv.end(), {"--size", std::to_string(opts_.lim.tmp_bytes)});
    // The workspace, the home and the helper are passed as descriptors the node opened: the
    // sandbox user need not be able to walk the node's data dir (it cannot) to reach them.
    argv.insert(argv.end(), {"--tmpfs", "/tmp", "--bind-fd", "5", work_inside});
    // The session's home, outside /work: what tools write there never reaches a commit.
    if (!opts_.home.empty()) argv.insert(argv.end(), {"--bind-fd", "7", sandbox_home});
    argv.insert(argv.end(), {"--chdir", work_inside, "--ro-bind-fd", "6", helper_inside,
                             // Nothing else is writable: not the root tmpfs bwrap builds.
                             "--remount-ro", "/", "--cap-drop", "ALL", "--seccomp", "4", "--setenv",
                             "PATH", sandbox_path, "--", helper_inside, "init", "--socket", "3",
                             "--root", work_inside});
    if (opts_.lim.nofile > 0)
      argv.insert(argv.end(), {"--nofile", std::to_string(opts_.lim.nofile)});
    if (opts_.lim.fsize_bytes > 0)
      argv.insert(argv.end(), {"--fsize", std::to_string(opts_.lim.fsize_bytes)});
    int ws = ::open(opts_.workspace.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    int helper = ::open(opts_.helper.c_str(), O_PATH | O_CLOEXEC);
    // No home: no descriptor 7 at all (bwrap hands unknown descriptors on to the helper).
    int home =
        opts_.home.empty() ? -2 : ::open(opts_.home.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    int errp[2] = {-1, -1};
    if (ws < 0 || helper < 0 || home == -1 || ::pipe2(errp, O_CLOEXEC) != 0) {
      int e = errno;
      for (int fd : {sv[1], *filter, ws, helper, home})
        if (fd >= 0) ::close(fd);
      return error{e == ENOENT ? errc::not_found : errc::io_error,
                   "sandbox for " + opts_.name + ": " +
                       (ws < 0       ? "workspace " + opts_.workspace
                        : helper < 0 ? "helper " + opts_.helper
                        : home == -1 ? "home " + opts_.home
                                     : std::string("pipe")) +
                       ": " + errno_text(e)};
    }
    process::spawn_options so;
    so.env = std::map<std::string, std::string>{{"PATH", "/usr/sbin:/usr/bin:/sbin:/bin"}};
    so.stderr_fd = errp[1];
    so.extra_fds = {sv[1], *filter, ws, helper};  // 3, 4, 5, 6 (and the home 7) in bwrap
    if (home >= 0) so.extra_fds.push_back(home);
    so.new_process_group = true;
    so.search_path = false;
    auto pid = process::spawn(argv, so);
    for (int fd : so.extra_fds) ::close(fd);
    ::close(errp[1]);
    if (!pid) {
      ::close(errp[0]);
      return error{pid.err().code, "sandbox: " + pid.err().message};
    }
    pid_ = *pid;
    // The helper says "ready" once bwrap has built the sandbox; bwrap's complaints arrive on
    // stderr if it cannot.
    pollfd pf{sock_, POLLIN, 0};
    int r = ::poll(&pf, 1, 10'000);
    std::optional<wire::message> ready;
    if (r > 0) {
      auto m = wire::receive(sock_);
      if (m && m->body.get_string("event") == "ready") ready = std::move(*m);
    }
    ::fcntl(errp[0], F_SETFL, O_NONBLOCK);
    char buf[2048];
    auto n = ::read(errp[0], buf, sizeof(buf) - 1);
    ::close(errp[0]);
    if (!ready) {
      std::string why = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "no answer in 10 s";
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      stop();
      return error{errc::unavailable, "sandbox for " + opts_.name + " did not start: " + why};
    }
    alive_ = true;
    // No thread per sandbox: the node's one poller reads every helper's socket.
    std::weak_ptr<bwrap_sandbox> weak = shared_from_this();
    poll_id_ = socket_poller::instance().add(sock_, [weak] {
      auto self = weak.lock();
      return self && self->on_readable();
    });
    return {};
  }

  result<std::unique_ptr<running_command>> exec(const command& cmd, output_fn on_output) override {
    if (cmd.argv.empty()) return error{errc::invalid_argument, "run: the command is empty"};
    // The command's duration counts from the request to the sandbox: starting it is its cost.
    auto start = clock::now();
    auto io = make_stdio(cmd);
    if (!io) return io.err();
    auto slot = std::make_shared<exec_slot>();
    slot->event_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    json::value req = json::value::make_object();
    req.set("op", "exec");
    json::value argv = json::value::make_array();
    for (const auto& a : cmd.argv) argv.push(a);
    req.set("argv", std::move(argv));
    json::value env = json::value::make_object();
    for (const auto& [k, v] : cmd.env) env.set(k, v);
    if (!cmd.env.count("PATH")) env.set("PATH", sandbox_path);
    if (!cmd.env.count("HOME")) env.set("HOME", opts_.home.empty() ? work_inside : sandbox_home);
    req.set("env", std::move(env));
    req.set("cwd", inside_path(cmd.cwd));
    std::int64_t id = 0;
    {
      std::lock_guard lock(mu_);
      id = ++next_id_;
      execs_[id] = slot;
    }
    auto reply = request(id, std::move(req), {io->in, io->out_w, io->err_w});
    io->close_child_ends();
    if (!reply) {
      io->close_all();
      std::lock_guard lock(mu_);
      execs_.erase(id);
      return reply.err();
    }
    return std::unique_ptr<running_command>(new sandbox_command(
        shared_from_this(), id, slot, io->out_r, io->err_r, cmd, std::move(on_output), start));
  }

  result<std::string> read_file(const std::string& path, std::int64_t max_bytes) override {
    json::value req = json::value::make_object();
    req.set("op", "read_file");
    req.set("path", path);
    req.set("max_bytes", max_bytes);
    auto r = tool(std::move(req), {});
    if (!r) return r.err();
    if (r->fds.empty()) return error{errc::internal, "read_file: no content in the answer"};
    auto text = wire::read_all(r->fds[0], static_cast<std::size_t>(max_bytes), path);
    for (int fd : r->fds) ::close(fd);
    return text;
  }

  status write_file(const std::string& path, std::string_view content, int mode) override {
    auto fd = wire::memfd_with(content, "berth-write");
    if (!fd) return fd.err();
    json::value req = json::value::make_object();
    req.set("op", "write_file");
    req.set("path", path);
    req.set("mode", mode);
    auto r = tool(std::move(req), {*fd});
    ::close(*fd);
    if (!r) return r.err();
    return {};
  }

  status edit(const std::string& path, const std::string& search,
              const std::string& replace) override {
    json::value req = json::value::make_object();
    req.set("op", "edit");
    req.set("path", path);
    req.set("search", search);
    req.set("replace", replace);
    auto r = tool(std::move(req), {});
    if (!r) return r.err();
    return {};
  }

  result<json::value> list_dir(const std::string& path) override {
    json::value req = json::value::make_object();
    req.set("op", "list_dir");
    req.set("path", path);
    auto r = tool(std::move(req), {});
    if (!r) return r.err();
    return std::move(r->body);
  }

  result<json::value> search(const std::string& pattern, const std::string& path,
                             std::int64_t max_results, bool literal) override {
    json::value req = json::value::make_object();
    req.set("op", "search");
    req.set("pattern", pattern);
    req.set("path", path);
    req.set("max_results", max_results);
    req.set("literal", literal);
    auto r = tool(std::move(req), {});
    if (!r) return r.err();
    return std::move(r->body);
  }

  usage read_usage() const override { return cg_.read_usage(); }

  void stop() override {
    {
      std::lock_guard lock(mu_);
      if (stopped_) return;
      stopped_ = true;
    }
    if (sock_ >= 0) ::shutdown(sock_, SHUT_RDWR);  // the helper exits and takes all with it
    if (pid_ > 0) {
      // bwrap ends when the helper does; make sure of it, then reap.
      for (int i = 0; i < 200; ++i) {
        int st;
        if (::waitpid(pid_, &st, WNOHANG) == pid_) {
          pid_ = -1;
          break;
        }
        if (i == 100) process::kill_group(pid_, SIGKILL);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
      }
    }
    if (poll_id_) socket_poller::instance().remove(poll_id_);
    gone();  // waiters learn it now (idempotent)
    cg_.remove();
    if (sock_ >= 0) ::close(sock_);
    sock_ = -1;
  }

  pid_t pid() const override { return pid_; }

  // A command asks its helper to signal its process group.
  void signal_command(std::int64_t id, int sig) {
    json::value req = json::value::make_object();
    req.set("op", "kill");
    req.set("target", id);
    req.set("signal", sig);
    std::lock_guard lock(send_mu_);
    // A helper that cannot be reached is gone: the reader sees its socket close and reports
    // every command in it lost (killed), which is what the signal asked for.
    (void)wire::send(sock_, req);
  }

  void forget(std::int64_t id) {
    std::lock_guard lock(mu_);
    execs_.erase(id);
  }

 private:
  std::string inside_path(const std::string& cwd) const {
    if (cwd.empty() || cwd == opts_.workspace) return work_inside;
    if (cwd.rfind(opts_.workspace + "/", 0) == 0)
      return std::string(work_inside) + cwd.substr(opts_.workspace.size());
    return cwd;
  }

  result<wire::message> tool(json::value req, const std::vector<int>& fds) {
    std::int64_t id;
    {
      std::lock_guard lock(mu_);
      id = ++next_id_;
    }
    return request(id, std::move(req), fds);
  }

  // Send a request and wait for the answer with its id.
  result<wire::message> request(std::int64_t id, json::value req, const std::vector<int>& fds) {
    auto p = std::make_shared<pending_reply>();
    {
      std::lock_guard lock(mu_);
      if (!alive_) return error{errc::unavailable, "the sandbox of " + opts_.name + " is gone"};
      replies_[id] = p;
    }
    req.set("id", id);
    status st;
    {
      std::lock_guard lock(send_mu_);
      st = wire::send(sock_, req, fds);
    }
    if (!st) {
      std::lock_guard lock(mu_);
      replies_.erase(id);
      return st.err();
    }
    std::unique_lock lock(p->mu);
    if (!p->cv.wait_for(lock, std::chrono::seconds(60), [&] { return p->reply.has_value(); })) {
      std::lock_guard l2(mu_);
      replies_.erase(id);
      return error{errc::timeout, "the sandbox of " + opts_.name + " did not answer in 60 s"};
    }
    auto r = std::move(*p->reply);
    if (!r) return r;
    if (!r->body.get_bool("ok")) {
      for (int fd : r->fds) ::close(fd);
      return error{errc_from_name(r->body.get_string("code", "internal")),
                   r->body.get_string("error", "the sandbox refused the request")};
    }
    return r;
  }

  // One message from the helper (the node's poller thread). false: the helper is gone.
  bool on_readable() {
    auto m = wire::receive(sock_);
    if (!m) {
      gone();
      return false;
    }
    auto id = m->body.get_int("id");
    if (m->body.get_string("event") == "exited") {
      std::shared_ptr<exec_slot> slot;
      {
        std::lock_guard lock(mu_);
        auto it = execs_.find(id);
        if (it != execs_.end()) slot = it->second;
      }
      if (slot) {
        {
          std::lock_guard lock(slot->mu);
          slot->exited = true;
          slot->status = std::move(m->body);
        }
        std::uint64_t one = 1;
        // An eventfd write fails only when its counter would overflow: it is already signalled.
        (void)!::write(slot->event_fd, &one, sizeof(one));
      }
      return true;
    }
    std::shared_ptr<pending_reply> p;
    {
      std::lock_guard lock(mu_);
      auto it = replies_.find(id);
      if (it != replies_.end()) {
        p = it->second;
        replies_.erase(it);
      }
    }
    if (!p) {
      for (int fd : m->fds) ::close(fd);
      return true;
    }
    std::lock_guard lock(p->mu);
    p->reply = std::move(*m);
    p->cv.notify_all();
    return true;
  }

  void gone() {
    // The helper is gone: every waiter learns it, every running command counts as killed.
    std::map<std::int64_t, std::shared_ptr<pending_reply>> replies;
    std::map<std::int64_t, std::shared_ptr<exec_slot>> execs;
    {
      std::lock_guard lock(mu_);
      alive_ = false;
      replies.swap(replies_);
      execs.swap(execs_);
    }
    for (auto& [_, p] : replies) {
      std::lock_guard lock(p->mu);
      p->reply = error{errc::unavailable, "the sandbox of " + opts_.name + " is gone"};
      p->cv.notify_all();
    }
    for (auto& [_, slot] : execs) {
      {
        std::lock_guard lock(slot->mu);
        if (!slot->exited) {
          slot->exited = true;
          slot->status = json::value::make_object();
          slot->status.set("signal", SIGKILL);
          slot->status.set("lost", true);
        }
      }
      std::uint64_t one = 1;
      // An eventfd write fails only when its counter would overflow: it is already signalled.
      (void)!::write(slot->event_fd, &one, sizeof(one));
    }
  }

  sandbox_options opts_;
  cgroup cg_;
  int sock_ = -1;
  pid_t pid_ = -1;
  std::uint64_t poll_id_ = 0;
  mutable std::mutex mu_;
  std::mutex send_mu_;
  std::atomic<bool> alive_{false};
  bool stopped_ = false;
  std::int64_t next_id_ = 0;
  std::map<std::int64_t, std::shared_ptr<pending_reply>> replies_;
  std::map<std::int64_t, std::shared_ptr<exec_slot>> execs_;
};

sandbox_command::~sandbox_command() {
  if (!done_) signal(SIGKILL);
  box_->forget(id_);
  for (int fd : {out_fd_, err_fd_})
    if (fd >= 0) ::close(fd);
}

void sandbox_command::signal(int sig) {
  box_->signal_command(id_, sig);
}

void sandbox_command::stop(millis grace) {
  std::lock_guard lock(mu_);
  if (done_ || stop_requested_) return;
  stop_requested_ = true;
  signal(SIGTERM);
  kill_at_ = clock::now() + grace;
}

outcome sandbox_command::wait() {
  outcome out;
  auto before = box_->read_usage();
  pump_output(
      out_fd_, err_fd_, slot_->event_fd, cmd_, fn_, out,
      [&] {
        std::uint64_t v;
        // Only drains the wake-up; the state under the lock is what counts.
        (void)!::read(slot_->event_fd, &v, sizeof(v));
        std::lock_guard lock(slot_->mu);
        return slot_->exited;
      },
      [&] {
        std::lock_guard lock(mu_);
        if (stop_requested_ && !killed_ && clock::now() >= kill_at_) {
          killed_ = true;
          signal(SIGKILL);
        }
      });
  json::value st;
  {
    std::lock_guard lock(slot_->mu);
    st = slot_->status;
  }
  {
    std::lock_guard lock(mu_);
    done_ = true;
  }
  if (const auto* c = st.find("exit_code")) out.exit_code = static_cast<int>(c->as_int());
  if (const auto* s = st.find("signal")) out.signal = static_cast<int>(s->as_int());
  out.peak_memory_bytes = st.get_int("maxrss_kb") * 1024;
  auto after = box_->read_usage();
  // The OOM killer may have taken a child of the command (a shell then exits 137): any kill in
  // the sandbox while the command ran is reported with it.
  out.oom_killed = after.oom_kills > before.oom_kills;
  auto took = clock::now() - start_;
  out.duration_ms = std::chrono::duration_cast<millis>(took).count();
  out.duration_us = std::chrono::duration_cast<std::chrono::microseconds>(took).count();
  return out;
}

}  // namespace

result<std::shared_ptr<sandbox>> sandbox::start(const sandbox_options& opts) {
  static std::mutex mu;
  static std::optional<result<std::string>> program;
  {
    std::lock_guard lock(mu);
    if (!program) program = seccomp_program();
  }
  if (!*program) return program->err();
  auto box = std::make_shared<bwrap_sandbox>(opts);
  BERTH_TRY(box->boot(**program));
  return std::shared_ptr<sandbox>(box);
}

std::size_t sweep_leftovers(const std::string& group) {
  return cgroup::sweep(group);
}

status check_host(const std::string& bwrap, const std::string& helper) {
  if (bwrap.find('/') == std::string::npos ? !process::find_executable(bwrap)
                                           : ::access(bwrap.c_str(), X_OK) != 0)
    return error{errc::unsupported, "sandbox: bubblewrap (" + bwrap +
                                        ") is not installed; install the Debian package "
                                        "\"bubblewrap\" or set sandbox.mode = \"none\""};
  if (::access(helper.c_str(), X_OK) != 0)
    return error{errc::unsupported,
                 "sandbox: the helper " + helper + " is missing: " + errno_text(errno)};
  auto cg = cgroup::describe();
  if (!cg) return cg.err();
  std::ifstream in("/proc/sys/user/max_user_namespaces");
  long max_userns = -1;
  if (in >> max_userns; max_userns == 0)
    return error{errc::unsupported,
                 "sandbox: user namespaces are disabled (user.max_user_namespaces = 0)"};
  return {};
}

}  // namespace berth::sandbox
