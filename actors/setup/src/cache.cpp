#include "berth/setup/cache.hpp"

#include "files.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/time.hpp"
#include "berth/setup/environment.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <tuple>

namespace berth::setup {
namespace sfs = std::filesystem;

using namespace detail;

namespace {

constexpr const char* npm = "npm";
constexpr const char* npm_tree_dir = "npm-tree";
constexpr const char* tree_complete = ".complete";  // a tree's record, written last
constexpr std::uint64_t max_tree_bytes = 8ULL << 30;
constexpr std::uint64_t max_tree_files = 2000000;
constexpr std::uint64_t max_entry_bytes = 1ULL << 30;  // larger files are never shared

// A store-wide lock: promote, evict and prune never run at once (several sessions, and the
// CLI's prune, share one store).
struct store_lock {
  fd_t f;
  explicit store_lock(const std::string& root)
      : f(::open((root + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (f) (void)::flock(f.fd, LOCK_EX);
  }
};

struct entry {
  std::string path;
  std::uint64_t bytes;
  std::int64_t mtime_ns;
  std::string ecosystem;
  bool tree = false;  ///< a directory (an installed tree), not one file
};

std::int64_t mtime_ns(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// A complete tree's record (written last when it was built): nullopt while being built.
std::optional<json::value> tree_record(const std::string& dir, struct stat* st) {
  auto path = dir + "/" + tree_complete;
  if (::lstat(path.c_str(), st) != 0 || !S_ISREG(st->st_mode)) return std::nullopt;
  auto text = fs::read_file(path);
  if (!text) return std::nullopt;
  auto v = json::parse(*text);
  if (!v || !v->is_object()) return std::nullopt;
  return *v;
}

// Tarballs at <root>/npm/<algo>/<hh>/<hex>, installed trees at <root>/npm-tree/<key>/.
std::vector<entry> all_entries(const std::string& root) {
  std::vector<entry> out;
  std::error_code ec;
  auto base = root + "/" + npm;
  for (sfs::recursive_directory_iterator it(base, ec), end; !ec && it != end; it.increment(ec)) {
    if (it.depth() != 2 || !it->is_regular_file(ec)) continue;
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    out.push_back({it->path().string(), static_cast<std::uint64_t>(st.st_size), mtime_ns(st), npm});
  }
  ec.clear();
  for (sfs::directory_iterator it(root + "/" + npm_tree_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    auto name = it->path().filename().string();
    if (name.empty() || name[0] == '.' || !it->is_directory(ec)) continue;
    struct stat st {};
    auto rec = tree_record(it->path().string(), &st);
    if (!rec) continue;
    out.push_back({it->path().string(), static_cast<std::uint64_t>(rec->get_int("bytes")),
                   mtime_ns(st), npm_tree_dir, true});
  }
  return out;
}

// Remove a tree: renamed out of the way first, so that no restore sees half of it.
bool remove_entry(const entry& e) {
  if (!e.tree) return ::unlink(e.path.c_str()) == 0;
  auto parent = sfs::path(e.path).parent_path().string();
  auto trash = parent + "/.trash-" + sfs::path(e.path).filename().string() + "-" +
               std::to_string(::getpid());
  if (::rename(e.path.c_str(), trash.c_str()) != 0) return false;
  fs::remove_tree(trash);
  return true;
}

pruned evict(const std::string& root, std::uint64_t keep) {
  auto all = all_entries(root);
  std::uint64_t total = 0;
  for (const auto& e : all) total += e.bytes;
  pruned p;
  if (total <= keep) return p;
  std::sort(all.begin(), all.end(),
            [](const entry& a, const entry& b) { return a.mtime_ns < b.mtime_ns; });
  for (const auto& e : all) {
    if (total <= keep) break;
    if (!remove_entry(e)) continue;
    total -= e.bytes;
    p.entries++;
    p.bytes += e.bytes;
  }
  return p;
}

// npm's content path below its cache: _cacache/content-v2/<algo>/<hex 0-2>/<hex 2-4>/<rest>.
std::vector<std::string> npm_content_dirs(const pin& p) {
  std::string base = npm_cache_dir;
  std::vector<std::string> parts;
  for (auto part : sfs::path(base)) parts.push_back(part.string());
  for (const char* s : {"_cacache", "content-v2"}) parts.emplace_back(s);
  parts.push_back(p.algorithm);
  parts.push_back(p.hex.substr(0, 2));
  parts.push_back(p.hex.substr(2, 2));
  return parts;
}

}  // namespace

std::optional<std::string> read_workspace_file(const std::string& dir, const std::string& name,
                                               std::size_t cap) {
  auto d = open_root(dir);
  if (!d || name.find('/') != std::string::npos) return std::nullopt;
  return read_small(d.fd, name.c_str(), cap);
}

std::vector<pin> integrity_pins(std::string_view s) {
  std::vector<pin> out;
  while (!s.empty()) {
    auto sp = s.find(' ');
    auto one = s.substr(0, sp);
    s = sp == std::string_view::npos ? std::string_view() : s.substr(sp + 1);
    auto dash = one.find('-');
    if (dash == std::string_view::npos) continue;
    std::string algo(one.substr(0, dash));
    // An integrity may carry options after '?' (Subresource Integrity); npm writes none.
    auto raw = base64_decode(one.substr(dash + 1, one.find('?') - dash - 1));
    if (!raw || digest_bytes(algo) == 0 || raw->size() != digest_bytes(algo)) continue;
    out.push_back({algo, to_hex(*raw)});
  }
  return out;
}

std::vector<pin> npm_pins(std::string_view lockfile) {
  std::vector<pin> out;
  auto doc = json::parse(lockfile);
  if (!doc || !doc->is_object()) return out;
  auto take = [&](const json::value& pkg) {
    if (!pkg.is_object()) return;
    const auto* integ = pkg.find("integrity");
    if (!integ || !integ->is_string()) return;
    for (auto& p : integrity_pins(integ->as_string())) out.push_back(std::move(p));
  };
  // lockfileVersion 2/3: "packages"; 1: nested "dependencies".
  if (const auto* pk = doc->find("packages"); pk && pk->is_object())
    for (const auto& [name, pkg] : pk->as_object()) take(pkg);
  std::function<void(const json::value&)> walk = [&](const json::value& deps) {
    if (!deps.is_object()) return;
    for (const auto& [name, pkg] : deps.as_object()) {
      take(pkg);
      if (const auto* sub = pkg.find("dependencies")) walk(*sub);
    }
  };
  if (!doc->find("packages"))
    if (const auto* deps = doc->find("dependencies")) walk(*deps);
  std::sort(out.begin(), out.end(), [](const pin& a, const pin& b) {
    return std::tie(a.algorithm, a.hex) < std::tie(b.algorithm, b.hex);
  });
  out.erase(std::unique(out.begin(), out.end(),
                        [](const pin& a, const pin& b) {
                          return a.algorithm == b.algorithm && a.hex == b.hex;
                        }),
            out.end());
  return out;
}

cache_store::cache_store(std::string root, std::uint64_t max_bytes, int uid, int gid)
    : root_(std::move(root)), max_bytes_(max_bytes), uid_(uid), gid_(gid) {}

status cache_store::open() const {
  std::error_code ec;
  sfs::create_directories(root_ + "/" + npm, ec);
  if (!ec) sfs::create_directories(root_ + "/" + npm_tree_dir, ec);
  if (ec) return error{errc::io_error, "cache: " + root_ + ": " + ec.message()};
  ::chmod(root_.c_str(), 0700);
  // What a node that stopped mid-build or mid-eviction left (no other node uses this store).
  for (sfs::directory_iterator it(root_ + "/" + npm_tree_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    auto name = it->path().filename().string();
    if (name.rfind(".tmp-", 0) == 0 || name.rfind(".trash-", 0) == 0)
      fs::remove_tree(it->path().string());
  }
  return {};
}

json::value cache_store::seed(const std::string& workspace, const std::string& home) const {
  json::value report = json::value::make_object();
  auto ws = open_root(workspace);
  auto hm = open_root(home);
  if (!ws || !hm) return report;
  std::optional<std::string> lock;
  for (const char* f : {"npm-shrinkwrap.json", "package-lock.json"})
    if (!lock) lock = read_small(ws.fd, f, 256ULL << 20);
  if (!lock) return report;
  auto pins = npm_pins(*lock);
  // Linked when the sandbox user is another user than the store's owner (it cannot write a
  // root-owned 0444 file); copied otherwise, so that nothing in a session reaches the store.
  bool link = ::geteuid() == 0 && uid_ > 0;
  std::uint64_t seeded = 0, bytes = 0;
  for (const auto& p : pins) {
    auto src = root_ + "/" + npm + "/" + p.algorithm + "/" + p.hex.substr(0, 2) + "/" + p.hex;
    fd_t in(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) continue;
    struct stat st {};
    if (::fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    auto dir = open_dirs(hm.fd, npm_content_dirs(p), true, uid_, gid_);
    if (!dir) continue;
    auto leaf = p.hex.substr(4);
    bool done = false;
    if (link)
      done = ::linkat(in.fd, "", dir.fd, leaf.c_str(), AT_EMPTY_PATH) == 0 || errno == EEXIST;
    if (!done) done = copy_into(in.fd, dir.fd, leaf, 0444, uid_, gid_, false) || errno == EEXIST;
    if (!done) continue;
    // Used now: the least recently used entries are evicted first.
    (void)::futimens(in.fd, nullptr);
    seeded++;
    bytes += static_cast<std::uint64_t>(st.st_size);
  }
  json::value n = json::value::make_object();
  n.set("pinned", static_cast<std::int64_t>(pins.size()));
  n.set("seeded", static_cast<std::int64_t>(seeded));
  n.set("seeded_bytes", static_cast<std::int64_t>(bytes));
  report.set(npm, std::move(n));
  return report;
}

void cache_store::promote(const std::string& home, json::value& report) const {
  auto hm = open_root(home);
  if (!hm) return;
  std::vector<std::string> base;
  for (auto part : sfs::path(npm_cache_dir)) base.push_back(part.string());
  base.emplace_back("_cacache");
  base.emplace_back("content-v2");
  auto content = open_dirs(hm.fd, base, false, -1, -1);
  if (!content) return;
  store_lock guard(root_);
  std::uint64_t added = 0, bytes = 0, refused = 0;
  for (const auto& algo : names_in(content.fd)) {
    if (digest_bytes(algo) == 0) continue;
    auto a = open_dirs(content.fd, {algo}, false, -1, -1);
    for (const auto& d1 : a ? names_in(a.fd) : std::vector<std::string>{}) {
      auto x = open_dirs(a.fd, {d1}, false, -1, -1);
      for (const auto& d2 : x ? names_in(x.fd) : std::vector<std::string>{}) {
        auto y = open_dirs(x.fd, {d2}, false, -1, -1);
        for (const auto& rest : y ? names_in(y.fd) : std::vector<std::string>{}) {
          auto hex = d1 + d2 + rest;
          if (d1.size() != 2 || d2.size() != 2 || hex.size() != digest_bytes(algo) * 2 ||
              !is_hex(hex))
            continue;
          auto dir = root_ + "/" + npm + "/" + algo + "/" + hex.substr(0, 2);
          if (::access((dir + "/" + hex).c_str(), F_OK) == 0) continue;  // shared already
          fd_t in(::openat(y.fd, rest.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
          struct stat st {};
          if (!in || ::fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode) ||
              static_cast<std::uint64_t>(st.st_size) > max_entry_bytes)
            continue;
          // Verified by the node: a file whose content does not hash to its name is refused.
          auto got = digest_of(in.fd, algo);
          if (!got || *got != hex) {
            refused++;
            continue;
          }
          std::error_code ec;
          sfs::create_directories(dir, ec);
          auto out = open_root(dir);
          if (!out) continue;
          auto tmp = ".tmp-" + hex;
          ::unlinkat(out.fd, tmp.c_str(), 0);
          if (!copy_into(in.fd, out.fd, tmp, 0444, -1, -1, true)) continue;
          if (::renameat(out.fd, tmp.c_str(), out.fd, hex.c_str()) != 0) {
            ::unlinkat(out.fd, tmp.c_str(), 0);
            continue;
          }
          added++;
          bytes += static_cast<std::uint64_t>(st.st_size);
        }
      }
    }
  }
  auto gone = evict(root_, max_bytes_);
  json::value n = report.find(npm) ? *report.find(npm) : json::value::make_object();
  n.set("added", static_cast<std::int64_t>(added));
  n.set("added_bytes", static_cast<std::int64_t>(bytes));
  if (refused) n.set("refused", static_cast<std::int64_t>(refused));
  if (gone.entries) n.set("evicted", static_cast<std::int64_t>(gone.entries));
  report.set(npm, std::move(n));
}

std::vector<cache_usage> cache_store::usage() const {
  std::map<std::string, cache_usage> by;
  by[npm].ecosystem = npm;
  by[npm_tree_dir].ecosystem = npm_tree_dir;
  for (const auto& e : all_entries(root_)) {
    auto& u = by[e.ecosystem];
    u.ecosystem = e.ecosystem;
    u.entries++;
    u.bytes += e.bytes;
    auto ms = e.mtime_ns / 1000000;
    u.oldest_ms = u.oldest_ms == 0 ? ms : std::min(u.oldest_ms, ms);
    u.newest_ms = std::max(u.newest_ms, ms);
  }
  std::vector<cache_usage> out;
  for (auto& [k, v] : by) out.push_back(v);
  return out;
}

result<pruned> cache_store::prune(std::uint64_t keep_bytes) const {
  std::error_code ec;
  if (!sfs::is_directory(root_, ec))
    return error{errc::not_found, "cache: " + root_ + " does not exist (no node has used it)"};
  store_lock guard(root_);
  return evict(root_, keep_bytes);
}

}  // namespace berth::setup

namespace berth::setup {

json::value tree_use::to_json() const {
  json::value v = json::value::make_object();
  v.set("state", state);
  if (!reason.empty()) v.set("reason", reason);
  if (!key.empty()) v.set("key", key.substr(0, 16));
  if (packages) v.set("packages", static_cast<std::int64_t>(packages));
  if (files) v.set("files", static_cast<std::int64_t>(files));
  if (bytes) v.set("bytes", static_cast<std::int64_t>(bytes));
  if (state == "restored" || state == "built") v.set("ms", ms);
  return v;
}

namespace {

struct tree_copy {
  bool link;
  int uid, gid;
  std::uint64_t files = 0, bytes = 0;
  std::string failed;

  // Everything below `from` (the store's) into `to` (the workspace's, opened by the node).
  bool copy(int from, int to, const std::string& where) {
    for (const auto& name : names_in(from)) {
      struct stat st {};
      if (::fstatat(from, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return fail(where + name);
      if (S_ISDIR(st.st_mode)) {
        if (::mkdirat(to, name.c_str(), 0755) != 0) return fail(where + name);
        fd_t src(::openat(from, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        fd_t dst(::openat(to, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!src || !dst) return fail(where + name);
        if (uid >= 0) (void)::fchown(dst.fd, static_cast<uid_t>(uid), static_cast<gid_t>(gid));
        if (!copy(src.fd, dst.fd, where + name + "/")) return false;
      } else if (S_ISLNK(st.st_mode)) {
        std::string target(4096, '\0');
        auto n = ::readlinkat(from, name.c_str(), target.data(), target.size());
        if (n <= 0) return fail(where + name);
        target.resize(static_cast<std::size_t>(n));
        if (::symlinkat(target.c_str(), to, name.c_str()) != 0) return fail(where + name);
        if (uid >= 0)
          (void)::fchownat(to, name.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(gid),
                           AT_SYMLINK_NOFOLLOW);
      } else if (S_ISREG(st.st_mode)) {
        bool exec = (st.st_mode & 0111) != 0;
        // Executables are the session's own copies: npm may chmod a bin it links again.
        bool done = link && !exec && ::linkat(from, name.c_str(), to, name.c_str(), 0) == 0;
        if (!done) {
          fd_t in(::openat(from, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
          done = in && copy_into(in.fd, to, name, exec ? 0755 : 0644, uid, gid, false);
        }
        if (!done) return fail(where + name);
        files++;
        bytes += static_cast<std::uint64_t>(st.st_size);
      }
    }
    return true;
  }

  bool fail(const std::string& what) {
    failed = what + ": " + std::strerror(errno);
    return false;
  }
};

std::int64_t ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               t0)
      .count();
}

// A tree_use for `t`: state "ineligible" with the reason, or no state yet.
tree_use use_of(const npm_tree& t) {
  tree_use u;
  u.key = t.key;
  if (!t.ineligible.empty()) {
    u.state = "ineligible";
    u.reason = t.ineligible;
  }
  return u;
}

}  // namespace

tree_use cache_store::restore_npm_tree(const npm_tree& t, const std::string& workspace) const {
  auto t0 = std::chrono::steady_clock::now();
  auto u = use_of(t);
  if (!u.state.empty()) return u;
  auto dir = root_ + "/" + npm_tree_dir + "/" + t.key;
  struct stat st {};
  auto rec = tree_record(dir, &st);
  fd_t src(
      ::open((dir + "/node_modules").c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!rec || !src) {
    u.state = "absent";
    return u;
  }
  auto ws = open_root(workspace);
  if (!ws) {
    u.state = "failed";
    u.reason = workspace + ": " + std::strerror(errno);
    return u;
  }
  // A repository that ships node_modules, or a step that made one: npm ci decides.
  if (::mkdirat(ws.fd, "node_modules", 0755) != 0) {
    u.state = "ineligible";
    u.reason = errno == EEXIST ? "the workspace has a node_modules already"
                               : std::string("node_modules: ") + std::strerror(errno);
    return u;
  }
  fd_t dst(::openat(ws.fd, "node_modules", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  tree_copy c{::geteuid() == 0 && uid_ > 0, uid_, gid_ >= 0 ? gid_ : uid_};
  if (dst && uid_ >= 0) (void)::fchown(dst.fd, static_cast<uid_t>(uid_), static_cast<gid_t>(c.gid));
  if (!dst || !c.copy(src.fd, dst.fd, "node_modules/")) {
    if (c.failed.empty()) c.failed = std::string("node_modules: ") + std::strerror(errno);
    remove_at(ws.fd, "node_modules");
    u.state = "failed";
    u.reason = "restoring " + c.failed;
    return u;
  }
  if (c.files != static_cast<std::uint64_t>(rec->get_int("files")) ||
      c.bytes != static_cast<std::uint64_t>(rec->get_int("bytes"))) {
    // Not what was built (files lost in a crash): dropped, and npm ci runs.
    remove_at(ws.fd, "node_modules");
    store_lock guard(root_);
    (void)remove_entry({dir, 0, 0, npm_tree_dir, true});
    u.state = "failed";
    u.reason = "the stored tree is damaged (" + std::to_string(c.files) + " files, " +
               std::to_string(c.bytes) + " bytes; built with " +
               std::to_string(rec->get_int("files")) + " and " +
               std::to_string(rec->get_int("bytes")) + "): removed";
    return u;
  }
  // Used now: the least recently used trees are evicted first.
  (void)::utimensat(AT_FDCWD, (dir + "/" + tree_complete).c_str(), nullptr, AT_SYMLINK_NOFOLLOW);
  u.state = "restored";
  u.packages = static_cast<std::uint64_t>(rec->get_int("packages"));
  u.files = c.files;
  u.bytes = c.bytes;
  u.ms = ms_since(t0);
  return u;
}

tree_use cache_store::build_npm_tree(const npm_tree& t) const {
  auto t0 = std::chrono::steady_clock::now();
  auto u = use_of(t);
  if (!u.state.empty()) return u;
  auto base = root_ + "/" + npm_tree_dir;
  auto final_dir = base + "/" + t.key;
  struct stat st {};
  if (tree_record(final_dir, &st)) {
    u.state = "present";
    return u;
  }
  static std::atomic<std::uint64_t> builds{0};
  auto tmp = base + "/.tmp-" + t.key.substr(0, 16) + "-" + std::to_string(::getpid()) + "-" +
             std::to_string(builds++);
  auto failed = [&](std::string why) {
    fs::remove_tree(tmp);  // the node's own directory: no session can reach it
    u.state = "failed";
    u.reason = std::move(why);
    return u;
  };
  std::error_code ec;
  sfs::create_directories(tmp + "/node_modules", ec);
  if (ec) return failed(tmp + ": " + ec.message());
  auto top = open_root(tmp);
  if (!top) return failed(tmp + ": " + std::strerror(errno));
  unpacked used;
  for (const auto& p : t.packages) {
    auto src = root_ + "/" + npm + "/" + p.algorithm + "/" + p.hex.substr(0, 2) + "/" + p.hex;
    fd_t in(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) return failed("the store has no tarball for " + p.path);
    std::vector<std::string> parts;
    for (auto part : sfs::path(p.path)) parts.push_back(part.string());
    auto into = open_dirs(top.fd, parts, true, -1, -1);
    if (!into) return failed("cannot make " + p.path);
    if (auto st2 = unpack_npm_tarball(in.fd, into.fd, max_tree_bytes, max_tree_files, used); !st2)
      return failed(p.path + ": " + st2.err().message);
  }
  // The bins, linked as npm links them: <node_modules>/.bin/<name> -> ../<package>/<target>.
  for (const auto& p : t.packages) {
    if (p.bins.empty()) continue;
    auto path = sfs::path(p.path);
    auto name = path.filename().string();
    auto nm = path.parent_path();
    if (!name.empty() && nm.filename().string().rfind('@', 0) == 0) {
      name = nm.filename().string() + "/" + name;
      nm = nm.parent_path();
    }
    std::vector<std::string> bin_dir;
    for (auto part : nm) bin_dir.push_back(part.string());
    bin_dir.emplace_back(".bin");
    auto bins = open_dirs(top.fd, bin_dir, true, -1, -1);
    if (!bins) return failed("cannot make " + nm.string() + "/.bin");
    for (const auto& [bin, target] : p.bins) {
      auto file = tmp + "/" + p.path + "/" + target;
      struct stat fst {};
      if (::lstat(file.c_str(), &fst) != 0 || !S_ISREG(fst.st_mode)) continue;  // as npm: none
      ::chmod(file.c_str(), 0555);
      ::unlinkat(bins.fd, bin.c_str(), 0);
      if (::symlinkat(("../" + name + "/" + target).c_str(), bins.fd, bin.c_str()) != 0)
        return failed("cannot link the bin " + bin + " of " + p.path);
    }
  }
  // What restore must find again: regular files as they are on disk (a tarball may list one
  // file twice).
  std::uint64_t files = 0, bytes = 0;
  std::function<void(int)> count = [&](int d) {
    for (const auto& name : names_in(d)) {
      struct stat fst {};
      if (::fstatat(d, name.c_str(), &fst, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (S_ISREG(fst.st_mode)) {
        files++;
        bytes += static_cast<std::uint64_t>(fst.st_size);
      } else if (S_ISDIR(fst.st_mode)) {
        fd_t sub(::openat(d, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (sub) count(sub.fd);
      }
    }
  };
  if (auto nm = open_dirs(top.fd, {"node_modules"}, false, -1, -1)) count(nm.fd);
  json::value rec = json::value::make_object();
  rec.set("key", t.key);
  rec.set("packages", static_cast<std::int64_t>(t.packages.size()));
  rec.set("files", static_cast<std::int64_t>(files));
  rec.set("bytes", static_cast<std::int64_t>(bytes));
  rec.set("built", now_unix_ms());
  // Not synced (that would flush the whole filesystem on every first setup): a crash may leave
  // files empty, which restore detects by the count and bytes recorded here, and drops.
  if (auto w = fs::write_file_atomic(tmp + "/" + tree_complete, rec.dump()); !w)
    return failed(w.err().message);
  store_lock guard(root_);
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    fs::remove_tree(tmp);  // another session built it first
    u.state = "present";
    return u;
  }
  (void)evict(root_, max_bytes_);
  u.state = "built";
  u.packages = t.packages.size();
  u.files = files;
  u.bytes = bytes;
  u.ms = ms_since(t0);
  return u;
}

}  // namespace berth::setup
