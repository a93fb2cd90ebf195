// `berth cache list|prune`: the node's dependency cache, read and pruned on this machine (the
// store is a directory of the node's; pruning takes the store's lock, so a running node's
// setup steps are never cut short).

#include "cli.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/time.hpp"
#include "berth/config/config.hpp"
#include "berth/node/node.hpp"
#include "berth/setup/cache.hpp"

#include <cstdio>
#include <filesystem>

namespace berth::cli {

namespace {

// The store: --dir, else node.json's cache_dir of the data dir (or of the node started last
// here), else <data dir>/cache.
std::string cache_root(const globals& g, const std::string& dir) {
  if (!dir.empty()) return dir;
  std::string data = g.data_dir;
  if (data.empty()) {
    auto pointer = fs::read_file(node::last_node_pointer_path());
    if (pointer) {
      auto p = *pointer;
      while (!p.empty() && (p.back() == '\n' || p.back() == ' ')) p.pop_back();
      data = std::filesystem::path(p).parent_path().string();
    }
    if (data.empty() || !std::filesystem::exists(data)) data = config::defaults().node.data_dir;
  }
  if (auto text = fs::read_file(data + "/node.json"))
    if (auto v = json::parse(*text); v && !v->get_string("cache_dir").empty())
      return v->get_string("cache_dir");
  return data + "/cache";
}

std::string human(std::uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

int cmd_cache(const globals& g, const std::string& verb, const std::string& dir,
              std::int64_t keep_bytes) {
  auto root = cache_root(g, dir);
  if (!std::filesystem::is_directory(root))
    return report(error{errc::not_found, "cache: " + root +
                                             " does not exist (no node has used it; --dir names "
                                             "another store)"});
  setup::cache_store store(root, 0, -1, -1);
  if (verb == "prune") {
    if (keep_bytes < 0) return report(error{errc::invalid_argument, "--keep-bytes: must be >= 0"});
    auto p = store.prune(static_cast<std::uint64_t>(keep_bytes));
    if (!p) return report(p.err());
    if (g.output == "text") {
      std::printf("pruned %llu entries (%s) from %s\n", static_cast<unsigned long long>(p->entries),
                  human(p->bytes).c_str(), root.c_str());
    } else {
      json::value v = json::value::make_object();
      v.set("dir", root);
      v.set("entries", static_cast<std::int64_t>(p->entries));
      v.set("bytes", static_cast<std::int64_t>(p->bytes));
      std::printf("%s\n", v.dump().c_str());
    }
    return ok;
  }
  auto usage = store.usage();
  if (g.output == "text") {
    std::printf("cache %s\n%-10s %8s %12s  %s\n", root.c_str(), "ECOSYSTEM", "ENTRIES", "SIZE",
                "LAST USED");
    for (const auto& u : usage)
      std::printf("%-10s %8llu %12s  %s\n", u.ecosystem.c_str(),
                  static_cast<unsigned long long>(u.entries), human(u.bytes).c_str(),
                  u.newest_ms ? format_timestamp(u.newest_ms).c_str() : "-");
    return ok;
  }
  json::value v = json::value::make_object();
  v.set("dir", root);
  json::value eco = json::value::make_object();
  for (const auto& u : usage) {
    json::value e = json::value::make_object();
    e.set("entries", static_cast<std::int64_t>(u.entries));
    e.set("bytes", static_cast<std::int64_t>(u.bytes));
    if (u.oldest_ms) e.set("oldest_used", format_timestamp(u.oldest_ms));
    if (u.newest_ms) e.set("last_used", format_timestamp(u.newest_ms));
    eco.set(u.ecosystem, std::move(e));
  }
  v.set("ecosystems", std::move(eco));
  std::printf("%s\n", v.dump().c_str());
  return ok;
}

}  // namespace berth::cli
