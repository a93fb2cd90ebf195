#include "cgroup.hpp"

#include "berth/base/fs.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace berth::sandbox {

namespace {

const std::string root = "/sys/fs/cgroup";

bool writable_dir(const std::string& p) {
  return ::access(p.c_str(), W_OK) == 0;
}

// v2: the unified hierarchy (at /sys/fs/cgroup or /sys/fs/cgroup/unified) with our three
// controllers available.
std::string v2_root() {
  for (const auto& r : {root, root + "/unified"}) {
    auto ctl = fs::read_file(r + "/cgroup.controllers");
    if (!ctl) continue;
    std::istringstream in(*ctl);
    std::string c;
    int have = 0;
    while (in >> c) have += c == "memory" || c == "pids" || c == "cpu";
    if (have == 3 && writable_dir(r)) return r;
  }
  return {};
}

status write_value(const std::string& file, const std::string& value) {
  auto st = fs::write_existing(file, value);
  if (!st) return error{errc::io_error, "cgroup " + st.err().message};
  return {};
}

std::int64_t read_key(const std::string& file, const std::string& key) {
  auto text = fs::read_file(file);
  if (!text) return 0;
  std::istringstream in(*text);
  std::string k;
  std::int64_t v = 0;
  while (in >> k >> v)
    if (k == key) return v;
  return 0;
}

std::int64_t read_number(const std::string& file) {
  auto text = fs::read_file(file);
  if (!text) return 0;
  try {
    return std::stoll(*text);
  } catch (...) {
    return 0;
  }
}

std::vector<pid_t> pids_in(const std::string& dir) {
  std::vector<pid_t> out;
  auto text = fs::read_file(dir + "/cgroup.procs");
  if (!text) return out;
  std::istringstream in(*text);
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

status make_dir(const std::string& d) {
  std::error_code ec;
  std::filesystem::create_directories(d, ec);
  if (ec) return error{errc::permission_denied, "cannot create cgroup " + d + ": " + ec.message()};
  return {};
}

// The groups this process created: a sweep of an earlier run's leftovers (which may run in
// the background) must never remove one of them. Creation and sweeping of one name exclude
// each other through this lock.
std::mutex registry_mu;
std::set<std::string> created_here;

}  // namespace

result<std::string> cgroup::describe() {
  if (auto r = v2_root(); !r.empty()) return "cgroup v2 at " + r;
  std::string missing;
  for (const char* c : {"memory", "pids", "cpu"})
    if (!writable_dir(root + "/" + c)) missing += std::string(missing.empty() ? "" : ", ") + c;
  if (!missing.empty())
    return error{errc::unsupported,
                 "no usable cgroup controllers: cgroup v2 lacks memory/pids/cpu and the v1 "
                 "hierarchies are missing or not writable (" +
                     missing + " under " + root + ")"};
  return "cgroup v1 (memory, pids, cpu under " + root + ")";
}

result<cgroup> cgroup::create(const std::string& group, const std::string& name,
                              const limits& lim) {
  std::lock_guard registry(registry_mu);
  created_here.insert(group + "/" + name);
  cgroup cg;
  auto v2 = v2_root();
  if (!v2.empty()) {
    cg.v2_ = true;
    // Controllers must be enabled for the children of every level we create. Enabling one the
    // kernel lacks fails; the limit writes below then fail and name the missing file.
    auto parent = v2 + "/berth";
    BERTH_TRY(make_dir(parent + "/" + group));
    (void)write_value(v2 + "/cgroup.subtree_control", "+memory +pids +cpu");
    (void)write_value(parent + "/cgroup.subtree_control", "+memory +pids +cpu");
    (void)write_value(parent + "/" + group + "/cgroup.subtree_control", "+memory +pids +cpu");
    auto dir = parent + "/" + group + "/" + name;
    BERTH_TRY(make_dir(dir));
    cg.dirs_.push_back(dir);
    cg.procs_.push_back(dir + "/cgroup.procs");
    if (lim.memory_bytes > 0) {
      BERTH_TRY(write_value(dir + "/memory.max", std::to_string(lim.memory_bytes)));
      // Absent without swap accounting (no swap to hide in then).
      (void)write_value(dir + "/memory.swap.max", "0");
    }
    if (lim.pids > 0) BERTH_TRY(write_value(dir + "/pids.max", std::to_string(lim.pids)));
    if (lim.cpu_percent > 0)
      BERTH_TRY(write_value(dir + "/cpu.max", std::to_string(lim.cpu_percent * 1000) + " 100000"));
    return cg;
  }
  auto d = describe();
  if (!d) return d.err();
  for (const char* c : {"memory", "pids", "cpu"}) {
    auto dir = root + "/" + c + "/berth/" + group + "/" + name;
    BERTH_TRY(make_dir(dir));
    cg.dirs_.push_back(dir);
    cg.procs_.push_back(dir + "/cgroup.procs");
  }
  const auto& mem = cg.dirs_[0];
  if (lim.memory_bytes > 0) {
    BERTH_TRY(write_value(mem + "/memory.limit_in_bytes", std::to_string(lim.memory_bytes)));
    // No swap to hide in, where the kernel offers the knob (best effort: memory.limit holds).
    if (::access((mem + "/memory.memsw.limit_in_bytes").c_str(), W_OK) == 0)
      (void)write_value(mem + "/memory.memsw.limit_in_bytes", std::to_string(lim.memory_bytes));
  }
  if (lim.pids > 0) BERTH_TRY(write_value(cg.dirs_[1] + "/pids.max", std::to_string(lim.pids)));
  if (lim.cpu_percent > 0) {
    BERTH_TRY(write_value(cg.dirs_[2] + "/cpu.cfs_period_us", "100000"));
    BERTH_TRY(
        write_value(cg.dirs_[2] + "/cpu.cfs_quota_us", std::to_string(lim.cpu_percent * 1000)));
  }
  return cg;
}

usage cgroup::read_usage() const {
  usage u;
  if (dirs_.empty()) return u;
  if (v2_) {
    const auto& d = dirs_[0];
    u.oom_kills = read_key(d + "/memory.events", "oom_kill");
    u.pids_limit_hits = read_key(d + "/pids.events", "max");
    u.cpu_throttled = read_key(d + "/cpu.stat", "nr_throttled");
    u.memory_peak_bytes = read_number(d + "/memory.peak");
    return u;
  }
  u.oom_kills = read_key(dirs_[0] + "/memory.oom_control", "oom_kill");
  u.memory_peak_bytes = read_number(dirs_[0] + "/memory.max_usage_in_bytes");
  u.pids_limit_hits = read_key(dirs_[1] + "/pids.events", "max");
  u.cpu_throttled = read_key(dirs_[2] + "/cpu.stat", "nr_throttled");
  return u;
}

void cgroup::kill_all(int tries) const {
  // cgroup.kill is a fast path on kernels that have it; the loop below signals each process.
  if (v2_ && !dirs_.empty()) (void)write_value(dirs_[0] + "/cgroup.kill", "1");
  for (int i = 0; i < tries; ++i) {
    bool any = false;
    for (const auto& d : dirs_)
      for (pid_t p : pids_in(d)) {
        any = true;
        ::kill(p, SIGKILL);
      }
    if (!any) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void cgroup::remove() const {
  kill_all();
  for (const auto& d : dirs_) {
    for (int i = 0; i < 100 && ::rmdir(d.c_str()) != 0 && errno == EBUSY; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::size_t cgroup::sweep(const std::string& group) {
  std::vector<std::string> parents;
  if (auto v2 = v2_root(); !v2.empty())
    parents.push_back(v2 + "/berth/" + group);
  else
    for (const char* c : {"memory", "pids", "cpu"})
      parents.push_back(root + "/" + c + "/berth/" + group);
  std::set<std::string> names;
  for (const auto& p : parents) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(p, ec))
      if (e.is_directory()) names.insert(e.path().filename().string());
  }
  bool v2 = !v2_root().empty();
  std::size_t removed = 0;
  for (const auto& n : names) {
    std::lock_guard registry(registry_mu);
    if (created_here.count(group + "/" + n)) continue;  // this run's own
    ++removed;
    cgroup cg;
    cg.v2_ = v2;
    for (const auto& p : parents) {
      cg.dirs_.push_back(p + "/" + n);
      cg.procs_.push_back(p + "/" + n + "/cgroup.procs");
    }
    cg.remove();
  }
  return removed;
}

}  // namespace berth::sandbox
