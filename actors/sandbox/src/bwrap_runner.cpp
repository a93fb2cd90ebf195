#include "berth/base/fs.hpp"
#include "berth/sandbox/runner.hpp"
#include "berth/sandbox/sandbox.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

namespace berth::sandbox {

namespace {

class bwrap_runner final : public step_runner {
 public:
  explicit bwrap_runner(bwrap_runner_options o) : opts_(std::move(o)) {}
  ~bwrap_runner() override {
    std::lock_guard lock(mu_);
    for (auto& [_, box] : boxes_) box->stop();
  }

  result<std::unique_ptr<running_command>> start(const command& cmd, output_fn on_output) override {
    if (cmd.session.empty())
      return error{errc::invalid_argument, "sandbox: command without a session"};
    auto box = sandbox_for(cmd);
    if (!box) return box.err();
    return (*box)->exec(cmd, std::move(on_output));
  }

  layout layout_of(const std::string&) const override {
    return {sandbox_work, sandbox_home, "/tmp", sandbox_path};
  }

  std::string name() const override { return "bwrap"; }

  void prepare(const std::string& session, bool network) override {
    command probe;
    probe.session = session;
    probe.network = network;
    // Only a warm-up: a sandbox that cannot start fails the first command, which reports why.
    (void)sandbox_for(probe);
  }

  result<json::value> file_tool(const std::string& session, const std::string& tool,
                                const json::value& args) override {
    command probe;
    probe.session = session;
    auto box = sandbox_for(probe);
    if (!box) return box.err();
    auto& b = **box;
    auto str = [&](const char* k) -> result<std::string> {
      const auto* v = args.find(k);
      if (!v || !v->is_string())
        return error{errc::invalid_argument, std::string(k) + ": required, a string"};
      return v->as_string();
    };
    json::value out = json::value::make_object();
    if (tool == "read_file") {
      auto path = str("path");
      if (!path) return path.err();
      auto text = b.read_file(*path, args.get_int("max_bytes", 8 << 20));
      if (!text) return text.err();
      out.set("content", std::move(*text));
      return out;
    }
    if (tool == "write_file") {
      auto path = str("path");
      if (!path) return path.err();
      auto content = str("content");
      if (!content) return content.err();
      BERTH_TRY(b.write_file(*path, *content, static_cast<int>(args.get_int("mode", 0644))));
      out.set("bytes", static_cast<std::int64_t>(content->size()));
      return out;
    }
    if (tool == "edit") {
      auto path = str("path");
      auto search = str("search");
      auto replace = str("replace");
      for (auto* r : {&path, &search, &replace})
        if (!*r) return r->err();
      BERTH_TRY(b.edit(*path, *search, *replace));
      return out;
    }
    if (tool == "list_dir") return b.list_dir(args.get_string("path", "."));
    if (tool == "search") {
      auto pattern = str("pattern");
      if (!pattern) return pattern.err();
      return b.search(*pattern, args.get_string("path", "."), args.get_int("max_results", 200),
                      args.get_bool("literal"));
    }
    return error{errc::invalid_argument, "tool: unknown file tool \"" + tool + "\""};
  }

  void release(const std::string& session) override {
    std::vector<std::shared_ptr<sandbox>> gone;
    {
      std::lock_guard lock(mu_);
      for (const char* suffix : {"", "+net"}) {
        auto it = boxes_.find(session + suffix);
        if (it == boxes_.end()) continue;
        gone.push_back(it->second);
        boxes_.erase(it);
      }
    }
    for (auto& b : gone) b->stop();
  }

 private:
  std::string workspace(const std::string& session) const {
    return opts_.work_root + "/" + session;
  }

  // A directory of the session's that the sandbox user owns and nobody else can enter.
  status own_dir(const std::string& path, const char* what) const {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) return error{errc::io_error, std::string(what) + " " + path + ": " + ec.message()};
    if (opts_.uid >= 0 && ::geteuid() == 0 &&
        ::chown(path.c_str(), static_cast<uid_t>(opts_.uid),
                static_cast<gid_t>(opts_.gid >= 0 ? opts_.gid : opts_.uid)) != 0)
      return error{errc::io_error,
                   std::string(what) + " " + path + ": chown: " + errno_text(errno)};
    ::chmod(path.c_str(), 0700);
    return {};
  }

  result<std::shared_ptr<sandbox>> sandbox_for(const command& cmd) {
    auto key = cmd.session + (cmd.network ? "+net" : "");
    std::lock_guard lock(mu_);
    auto it = boxes_.find(key);
    if (it != boxes_.end()) {
      if (it->second->pid() > 0) return it->second;
      it->second->stop();  // its helper died: build a new one
      boxes_.erase(it);
    }
    // The sandbox user owns its workspace and its home; nothing else of the node is visible to
    // it.
    auto ws = workspace(cmd.session);
    BERTH_TRY(own_dir(ws, "workspace"));
    std::string home;
    if (!opts_.home_root.empty()) {
      home = opts_.home_root + "/" + cmd.session;
      BERTH_TRY(own_dir(home, "home"));
    }
    sandbox_options so;
    // Named per run of the node: an earlier run's leftovers never share a cgroup with these.
    so.name = (key == cmd.session ? cmd.session : cmd.session + "-net") +
              (opts_.run.empty() ? "" : "-" + opts_.run);
    so.group = opts_.group;
    so.workspace = ws;
    so.home = home;
    so.network = cmd.network;
    so.bwrap = opts_.bwrap;
    so.helper = opts_.helper;
    if (opts_.uid >= 0) so.uid = static_cast<uid_t>(opts_.uid);
    if (opts_.gid >= 0) so.gid = static_cast<gid_t>(opts_.gid);
    so.lim.memory_bytes = opts_.memory_bytes;
    so.lim.pids = opts_.pids;
    so.lim.cpu_percent = opts_.cpu_percent;
    so.lim.tmp_bytes = opts_.tmp_bytes;
    so.lim.nofile = opts_.nofile;
    so.lim.fsize_bytes = opts_.fsize_bytes;
    auto box = sandbox::start(so);
    if (!box) return box.err();
    boxes_[key] = *box;
    return *box;
  }

  bwrap_runner_options opts_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<sandbox>> boxes_;
};

class failing_runner final : public step_runner {
 public:
  explicit failing_runner(error why) : why_(std::move(why)) {}
  result<std::unique_ptr<running_command>> start(const command&, output_fn) override {
    return why_;
  }
  // What a sandbox would show: nothing runs anyway.
  layout layout_of(const std::string&) const override {
    return {sandbox_work, sandbox_home, "/tmp", sandbox_path};
  }
  std::string name() const override { return "unavailable"; }

 private:
  error why_;
};

}  // namespace

std::unique_ptr<step_runner> make_failing_runner(error why) {
  return std::make_unique<failing_runner>(std::move(why));
}

result<std::string> install_helper(const std::string& from, const std::string& dir) {
  struct stat src {};
  if (::stat(from.c_str(), &src) != 0)
    return error{errc::not_found, "sandbox helper " + from + " is missing"};
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return error{errc::io_error, dir + ": " + ec.message()};
  ::chmod(dir.c_str(), 0711);
  auto to = dir + "/berth-sandbox";
  // Our copy is current when it is as large and not older than the source.
  struct stat dst {};
  if (::stat(to.c_str(), &dst) == 0 && dst.st_size == src.st_size &&
      dst.st_mtim.tv_sec >= src.st_mtim.tv_sec && (dst.st_mode & 0777) == 0755)
    return to;
  auto data = fs::read_file(from);
  if (!data) return error{errc::not_found, "sandbox helper " + from + " is missing"};
  BERTH_TRY(fs::write_file_atomic(to, *data, 0755));
  return to;
}

std::string helper_next_to_self() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (ec ? std::filesystem::path(".") : self.parent_path()).string() + "/berth-sandbox";
}

status check_reachable(const std::string& path, uid_t uid, gid_t gid) {
  std::filesystem::path p = std::filesystem::absolute(path).lexically_normal();
  std::filesystem::path at = "/";
  for (const auto& part : p) {
    if (part == "/") continue;
    struct stat st {};
    if (::stat(at.c_str(), &st) != 0) break;
    bool x = st.st_uid == uid   ? (st.st_mode & S_IXUSR)
             : st.st_gid == gid ? (st.st_mode & S_IXGRP)
                                : (st.st_mode & S_IXOTH);
    if (!x) {
      char mode[8];
      std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
      return error{errc::permission_denied,
                   "sandbox: the sandbox user (uid " + std::to_string(uid) + ") cannot reach " +
                       path + ": " + at.string() + " is not traversable (mode " + mode +
                       "); put node.data_dir where it can (e.g. /var/lib/berth), or set "
                       "sandbox.mode = \"none\""};
    }
    at /= part;
  }
  return {};
}

std::unique_ptr<step_runner> make_bwrap_runner(bwrap_runner_options opts) {
  return std::make_unique<bwrap_runner>(std::move(opts));
}

}  // namespace berth::sandbox
