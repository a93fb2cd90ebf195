// The gateway from the command line: the companion `berth node` runs it as, `berth gateway`
// (standalone, in front of any cluster), and `berth token create|list|revoke`.

#include "cli.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/log.hpp"
#include "berth/base/process.hpp"
#include "berth/config/config.hpp"
#include "berth/gateway/gateway.hpp"
#include "berth/gateway/tokens.hpp"
#include "berth/node/node.hpp"

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <mutex>

namespace berth::cli {

namespace {

gateway::options options_of(const config::config& cfg, const std::string& data_dir) {
  gateway::options o;
  o.listen = cfg.gateway.listen;
  o.tokens_file =
      cfg.gateway.tokens_file.empty() ? data_dir + "/gateway/tokens.json" : cfg.gateway.tokens_file;
  o.allowed_origins = cfg.gateway.allowed_origins;
  o.max_body_bytes = static_cast<std::size_t>(cfg.gateway.max_body_bytes);
  o.header_timeout = cfg.gateway.header_timeout;
  o.max_connections = static_cast<std::size_t>(cfg.gateway.max_connections);
  o.max_streams_per_token = static_cast<std::size_t>(cfg.gateway.max_streams_per_token);
  o.rate_per_second = static_cast<double>(cfg.gateway.rate_limit);
  o.rate_burst = static_cast<double>(cfg.gateway.rate_burst);
  o.max_buffered_bytes = static_cast<std::size_t>(cfg.gateway.max_buffered_bytes);
  o.console_dir = cfg.gateway.console_dir;
  o.stall_timeout = cfg.gateway.stall_timeout;
  o.prefix = cfg.cluster.subject_prefix;
  return o;
}

// The data dir this CLI works with: --data-dir, else the node started last here, else the
// default.
std::string local_data_dir(const globals& g) {
  if (!g.data_dir.empty()) return g.data_dir;
  if (auto pointer = fs::read_file(node::last_node_pointer_path())) {
    auto p = *pointer;
    while (!p.empty() && (p.back() == '\n' || p.back() == ' ')) p.pop_back();
    auto dir = std::filesystem::path(p).parent_path().string();
    if (!dir.empty() && std::filesystem::exists(dir)) return dir;
  }
  return config::defaults().node.data_dir;
}

}  // namespace

std::vector<node::companion> node_companions(const config::config& cfg) {
  if (cfg.gateway.listen.empty()) return {};
  auto holder = std::make_shared<std::unique_ptr<gateway::server>>();
  node::companion c;
  c.start = [cfg, holder](std::shared_ptr<bus::client> bus,
                          const std::string& data_dir) -> result<json::value> {
    auto o = options_of(cfg, data_dir);
    auto s = gateway::server::start(o, std::move(bus));
    if (!s) return s.err();
    json::value info = json::value::make_object();
    info.set("console_url", (*s)->url());
    info.set("tokens_file", o.tokens_file);
    *holder = std::move(*s);
    return info;
  };
  c.stop = [holder] { holder->reset(); };
  return {c};
}

std::string tokens_file_of(const globals& g, const std::string& given) {
  if (!given.empty()) return given;
  auto dir = local_data_dir(g);
  if (auto text = fs::read_file(dir + "/node.json"))
    if (auto v = json::parse(*text); v && !v->get_string("tokens_file").empty())
      return v->get_string("tokens_file");
  return dir + "/gateway/tokens.json";
}

int cmd_token(const globals& g, const std::string& verb, const std::string& name,
              const std::string& scope_text, const std::string& file) {
  gateway::token_store store(tokens_file_of(g, file));
  if (verb == "create") {
    auto s = gateway::scope_from_name(scope_text);
    if (!s)
      return report(error{errc::invalid_argument,
                          "--scope: expected read, write or admin, got \"" + scope_text + "\""});
    auto t = store.create(name, *s);
    if (!t) return report(t.err());
    if (g.output == "text") {
      std::printf("%s\n", t->c_str());
      std::fprintf(stderr, "berth: token \"%s\" (%s) created in %s; it is shown only this once\n",
                   name.c_str(), scope_text.c_str(), store.path().c_str());
    } else {
      json::value v = json::value::make_object();
      v.set("name", name);
      v.set("scope", scope_text);
      v.set("token", *t);
      std::printf("%s\n", v.dump().c_str());
    }
    return ok;
  }
  if (verb == "revoke") {
    if (auto st = store.revoke(name); !st) return report(st.err());
    if (g.output == "text") std::printf("revoked %s\n", name.c_str());
    return ok;
  }
  auto all = store.list();
  if (!all) return report(all.err());
  if (g.output == "text") {
    std::printf("%-24s %-6s %s\n", "NAME", "SCOPE", "CREATED");
    for (const auto& r : *all)
      std::printf("%-24s %-6s %s\n", r.name.c_str(), gateway::scope_name(r.scope),
                  r.created.c_str());
    return ok;
  }
  json::value list = json::value::make_array();
  for (const auto& r : *all) {
    json::value v = json::value::make_object();
    v.set("name", r.name);
    v.set("scope", gateway::scope_name(r.scope));
    v.set("created", r.created);
    list.push(std::move(v));
  }
  std::printf("%s\n", list.dump().c_str());
  return ok;
}

int cmd_console(const globals& g, const std::string& name, const std::string& scope_text,
                const std::string& url_given, const std::string& tokens_given, bool open) {
  auto s = gateway::scope_from_name(scope_text);
  if (!s)
    return report(error{errc::invalid_argument,
                        "--scope: expected read, write or admin, got \"" + scope_text + "\""});
  auto url = url_given;
  if (url.empty()) {
    auto dir = local_data_dir(g);
    auto text = fs::read_file(dir + "/node.json");
    if (!text)
      return report(error{errc::not_found, "no running node in " + dir +
                                               " (start one with `berth node`, or pass --url "
                                               "and --tokens-file)"});
    auto v = json::parse(*text);
    if (v) url = v->get_string("console_url");
    if (url.empty())
      return report(error{errc::not_found, "the node in " + dir +
                                               " runs no gateway ([gateway] listen is empty); "
                                               "pass --url of a `berth gateway`"});
  }
  if (!url_given.empty() && tokens_given.empty())
    return report(error{errc::invalid_argument, "--url: needs --tokens-file (that gateway's)"});
  gateway::token_store store(tokens_file_of(g, tokens_given));
  auto code = store.create_login(name, *s, std::chrono::minutes(10));
  if (!code) return report(code.err());
  while (!url.empty() && url.back() == '/') url.pop_back();
  // The code rides in the fragment: browsers never send it to a server or a proxy's log.
  auto link = url + "/#login=" + *code;
  if (g.output == "text") {
    std::printf("%s\n", link.c_str());
    std::fprintf(stderr,
                 "berth: open this link to log in as \"%s\" (%s); it works once, within 10 "
                 "minutes\n",
                 name.c_str(), scope_text.c_str());
  } else {
    json::value v = json::value::make_object();
    v.set("url", link);
    v.set("name", name);
    v.set("scope", scope_text);
    std::printf("%s\n", v.dump().c_str());
  }
  std::fflush(stdout);
  if (open) {
    auto r = process::find_executable("xdg-open")
                 ? process::run_capture({"xdg-open", link}, "", std::chrono::seconds(10))
                 : result<process::captured>(error{errc::not_found, "no xdg-open"});
    if (!r || r->exit_code != 0)
      std::fprintf(stderr, "berth: could not open a browser (xdg-open); open the link above\n");
  }
  return ok;
}

int cmd_gateway(const globals& g, const std::string& config_file, const std::string& listen,
                const std::string& tokens_file) {
  config::config cfg = config::defaults();
  if (!config_file.empty()) {
    auto loaded = config::load_file(config_file);
    if (!loaded) return report(loaded.err());
    cfg = std::move(*loaded);
  }
  if (auto st = config::apply_env(cfg, config::process_env()); !st) return report(st.err());
  if (!listen.empty()) cfg.gateway.listen = listen;
  if (cfg.gateway.listen.empty())
    return report(error{errc::invalid_argument, "--listen: required (host:port)"});
  auto client = api_client::connect(g);
  if (!client) return report(client.err());
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  auto o = options_of(cfg, local_data_dir(g));
  if (!tokens_file.empty()) o.tokens_file = tokens_file;
  std::shared_ptr<bus::client> bus(client->bus_shared());
  auto s = gateway::server::start(o, bus);
  if (!s) return report(s.err());
  std::printf("%s\n", (*s)->url().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  (*s)->stop();
  return ok;
}

}  // namespace berth::cli
