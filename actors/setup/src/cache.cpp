#include "berth/setup/cache.hpp"

#include "store.hpp"

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

// npm's content path below its cache: _cacache/content-v2/<algo>/<hex 0-2>/<hex 2-4>/<rest>.
std::vector<std::string> npm_content_dirs(const pin& p) {
  std::string base = npm_cache_dir;
  std::vector<std::string> parts;
  for (const auto& part : sfs::path(base)) parts.push_back(part.string());
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
  for (const char* eco : {npm, pip, go, cargo, npm_tree_dir})
    if (!ec) sfs::create_directories(root_ + "/" + eco, ec);
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
    if (!share_file(in.fd, dir.fd, p.hex.substr(4), link, uid_, gid_)) continue;
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
  for (const auto& part : sfs::path(npm_cache_dir)) base.push_back(part.string());
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
          if (!add_file(in.fd, dir, hex)) continue;
          added++;
          bytes += static_cast<std::uint64_t>(st.st_size);
        }
      }
    }
  }
  json::value n = report.find(npm) ? *report.find(npm) : json::value::make_object();
  finish_promotion(root_, max_bytes_, n, added, bytes, refused);
  report.set(npm, std::move(n));
}

std::vector<cache_usage> cache_store::usage() const {
  std::map<std::string, cache_usage> by;
  for (const char* eco : {npm, npm_tree_dir, pip, go, cargo}) by[eco].ecosystem = eco;
  for (const auto& e : all_entries(root_)) {
    auto& u = by[e.ecosystem];
    u.ecosystem = e.ecosystem;
    u.entries++;
    u.bytes += e.bytes;
    auto ms = e.mtime_ns / 1000000;
    u.oldest_ms = u.oldest_ms == 0 ? ms : std::min(u.oldest_ms, ms);
    u.newest_ms = std::max(u.newest_ms, ms);
  }
  std::vector<cache_usage> out;  // in the order the docs list them
  for (const char* eco : {npm, npm_tree_dir, pip, go, cargo}) out.push_back(by[eco]);
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
