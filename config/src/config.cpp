#include "berth/config/config.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/ids.hpp"
#include "berth/base/process.hpp"

#include <toml++/toml.h>

#include <cctype>
#include <functional>
#include <sstream>
#include <variant>

namespace berth::config {
namespace {

enum class kind { string, integer, boolean, duration, string_list };

using raw = std::variant<std::string, std::int64_t, bool, millis, std::vector<std::string>>;

struct key_spec {
  const char* section;
  const char* key;
  kind type;
  const char* default_text;  // TOML literal
  std::int64_t min = 0;      // integers: bounds; durations: bounds in ms
  std::int64_t max = 0;
  std::vector<std::string> choices;  // strings: allowed values (empty: any)
  const char* description;
  std::function<void(config&, const raw&)> apply;
};

template <class T>
const T& as(const raw& r) {
  return std::get<T>(r);
}

const std::vector<key_spec>& schema() {
  static const std::vector<key_spec> table = {
      {"node",
       "id",
       kind::string,
       R"("")",
       0,
       0,
       {},
       "Node id ([A-Za-z0-9_-]). Empty: generated on first start and kept in the data dir.",
       [](config& c, const raw& r) { c.node.id = as<std::string>(r); }},
      {"node",
       "data_dir",
       kind::string,
       R"("/var/lib/berth")",
       0,
       0,
       {},
       "Where the node keeps its RocksDB snapshots, session working directories, the embedded "
       "nats-server store and node.json.",
       [](config& c, const raw& r) { c.node.data_dir = as<std::string>(r); }},
      {"node",
       "max_sessions",
       kind::integer,
       "100",
       1,
       100000,
       {},
       "Sessions this node runs at once; further sessions wait in the placement queue.",
       [](config& c, const raw& r) { c.node.max_sessions = as<std::int64_t>(r); }},
      {"node",
       "labels",
       kind::string_list,
       "[]",
       0,
       0,
       {},
       "Free-form labels reported in stats.",
       [](config& c, const raw& r) { c.node.labels = as<std::vector<std::string>>(r); }},
      {"node",
       "shutdown_grace",
       kind::duration,
       R"("10s")",
       0,
       3'600'000,
       {},
       "On SIGTERM, how long running steps may take to finish before they are stopped and "
       "recorded as interrupted.",
       [](config& c, const raw& r) { c.node.shutdown_grace = as<millis>(r); }},
      {"node",
       "io_threads",
       kind::integer,
       "32",
       1,
       256,
       {},
       "Threads for blocking I/O: snapshot loads, KV and direct-get round trips (commits have "
       "their own thread).",
       [](config& c, const raw& r) { c.node.io_threads = as<std::int64_t>(r); }},
      {"cluster",
       "name",
       kind::string,
       R"("berth")",
       0,
       0,
       {},
       "Cluster name.",
       [](config& c, const raw& r) { c.cluster.name = as<std::string>(r); }},
      {"cluster",
       "subject_prefix",
       kind::string,
       R"("berth")",
       0,
       0,
       {},
       "First token of every NATS subject Berth uses; stream names and KV buckets derive from it.",
       [](config& c, const raw& r) { c.cluster.subject_prefix = as<std::string>(r); }},
      {"cluster",
       "peers",
       kind::string_list,
       "[]",
       0,
       0,
       {},
       "Route URLs of the other nodes' embedded nats-servers (nodes joined by config).",
       [](config& c, const raw& r) { c.cluster.peers = as<std::vector<std::string>>(r); }},
      {"nats",
       "servers",
       kind::string_list,
       "[]",
       0,
       0,
       {},
       "URLs of an external NATS with JetStream. Empty: the node starts and supervises an "
       "embedded nats-server -js on loopback with a random port.",
       [](config& c, const raw& r) { c.nats.servers = as<std::vector<std::string>>(r); }},
      {"nats",
       "creds",
       kind::string,
       R"("")",
       0,
       0,
       {},
       "Path of a NATS .creds file (external NATS).",
       [](config& c, const raw& r) { c.nats.creds = as<std::string>(r); }},
      {"nats",
       "replicas",
       kind::integer,
       "1",
       1,
       5,
       {},
       "Replicas of each stream and KV bucket.",
       [](config& c, const raw& r) { c.nats.replicas = as<std::int64_t>(r); }},
      {"nats",
       "server_binary",
       kind::string,
       R"("nats-server")",
       0,
       0,
       {},
       "The nats-server executable used in embedded mode (looked up in PATH).",
       [](config& c, const raw& r) { c.nats.server_binary = as<std::string>(r); }},
      {"nats",
       "connect_timeout",
       kind::duration,
       R"("10s")",
       100,
       600'000,
       {},
       "How long start-up waits for NATS and JetStream to answer.",
       [](config& c, const raw& r) { c.nats.connect_timeout = as<millis>(r); }},
      {"nats",
       "request_timeout",
       kind::duration,
       R"("5s")",
       100,
       600'000,
       {},
       "Timeout of one JetStream API call or publish acknowledgement (retried on no responders).",
       [](config& c, const raw& r) { c.nats.request_timeout = as<millis>(r); }},
      {"nats",
       "duplicate_window",
       kind::duration,
       R"("24h")",
       1000,
       7 * 86'400'000LL,
       {},
       "JetStream de-duplication window of the input stream: how long a repeated start with "
       "the same idempotency key is recognised.",
       [](config& c, const raw& r) { c.nats.duplicate_window = as<millis>(r); }},
      {"session",
       "default_timeout",
       kind::duration,
       R"("1h")",
       1000,
       30LL * 86'400'000,
       {},
       "Session timeout when the spec gives none.",
       [](config& c, const raw& r) { c.session.default_timeout = as<millis>(r); }},
      {"session",
       "max_spec_bytes",
       kind::integer,
       "262144",
       1024,
       4 * 1024 * 1024,
       {},
       "Largest accepted session spec (JSON bytes).",
       [](config& c, const raw& r) { c.session.max_spec_bytes = as<std::int64_t>(r); }},
      {"session",
       "output_chunk_bytes",
       kind::integer,
       "16384",
       512,
       512 * 1024,
       {},
       "Largest stdout/stderr chunk published to the log stream.",
       [](config& c, const raw& r) { c.session.output_chunk_bytes = as<std::int64_t>(r); }},
      {"session",
       "max_output_bytes",
       kind::integer,
       "67108864",
       1024,
       1LL << 40,
       {},
       "Output kept per step and stream; past it the rest is dropped and a truncation marker "
       "is published.",
       [](config& c, const raw& r) { c.session.max_output_bytes = as<std::int64_t>(r); }},
      {"session",
       "kill_grace",
       kind::duration,
       R"("2s")",
       0,
       600'000,
       {},
       "Between SIGTERM and SIGKILL when a step's process group is stopped.",
       [](config& c, const raw& r) { c.session.kill_grace = as<millis>(r); }},
      {"sandbox",
       "mode",
       kind::string,
       R"("bwrap")",
       0,
       0,
       {"bwrap", "none"},
       "How step commands are isolated. \"bwrap\": one warm bubblewrap sandbox per session "
       "(namespaces, seccomp, cgroup limits; docs/security.md). \"none\": plain child "
       "processes as the node's user, no isolation (logged as a warning for every session).",
       [](config& c, const raw& r) { c.sandbox.mode = as<std::string>(r); }},
      {"sandbox",
       "user",
       kind::string,
       R"("nobody")",
       0,
       0,
       {},
       "The unprivileged user sandboxes run as (when the node runs as root). It owns the "
       "session workspaces and must be able to traverse the node's data dir.",
       [](config& c, const raw& r) { c.sandbox.user = as<std::string>(r); }},
      {"sandbox",
       "network",
       kind::string,
       R"("none")",
       0,
       0,
       {"none", "host"},
       "Network of a session whose spec does not say: \"none\" (a private loopback only) or "
       "\"host\". A spec's `network` (session or step) overrides it.",
       [](config& c, const raw& r) { c.sandbox.network = as<std::string>(r); }},
      {"sandbox",
       "memory_bytes",
       kind::integer,
       "2147483648",
       0,
       1LL << 42,
       {},
       "Memory limit of one session's sandbox (cgroup), bytes; 0: none. Past it the OOM killer "
       "ends a command, reported as such.",
       [](config& c, const raw& r) { c.sandbox.memory_bytes = as<std::int64_t>(r); }},
      {"sandbox",
       "pids",
       kind::integer,
       "512",
       0,
       1 << 22,
       {},
       "Processes and threads one sandbox may hold at once (cgroup pids); 0: no limit.",
       [](config& c, const raw& r) { c.sandbox.pids = as<std::int64_t>(r); }},
      {"sandbox",
       "cpu_percent",
       kind::integer,
       "100",
       0,
       100000,
       {},
       "CPU quota of one sandbox in percent of one core (cgroup CFS quota); 0: no limit.",
       [](config& c, const raw& r) { c.sandbox.cpu_percent = as<std::int64_t>(r); }},
      {"sandbox",
       "tmp_bytes",
       kind::integer,
       "268435456",
       0,
       1LL << 40,
       {},
       "Size of the sandbox's private /tmp (tmpfs), bytes; 0: the kernel's default.",
       [](config& c, const raw& r) { c.sandbox.tmp_bytes = as<std::int64_t>(r); }},
      {"sandbox",
       "nofile",
       kind::integer,
       "1024",
       0,
       1 << 20,
       {},
       "Open files per process inside the sandbox (RLIMIT_NOFILE); 0: inherit.",
       [](config& c, const raw& r) { c.sandbox.nofile = as<std::int64_t>(r); }},
      {"sandbox",
       "fsize_bytes",
       kind::integer,
       "4294967296",
       0,
       1LL << 50,
       {},
       "Largest file a command may write (RLIMIT_FSIZE), bytes; 0: no limit.",
       [](config& c, const raw& r) { c.sandbox.fsize_bytes = as<std::int64_t>(r); }},
      {"sandbox",
       "bwrap",
       kind::string,
       R"("bwrap")",
       0,
       0,
       {},
       "The bubblewrap binary (looked up in PATH).",
       [](config& c, const raw& r) { c.sandbox.bwrap = as<std::string>(r); }},
      {"sandbox",
       "env",
       kind::string_list,
       "[]",
       0,
       0,
       {},
       "Environment every command in a sandbox gets, as \"NAME=value\" entries: package "
       "registry mirrors, proxies (e.g. [\"npm_config_registry=http://npm.internal/\", "
       "\"PIP_INDEX_URL=http://pypi.internal/simple\"]). A step's own env overrides it. Paths "
       "must be paths inside the sandbox. HOME and BERTH_* are the node's and cannot be set. "
       "From the environment: BERTH_SANDBOX_ENV, entries separated by commas.",
       [](config& c, const raw& r) { c.sandbox.env = as<std::vector<std::string>>(r); }},
      {"cache",
       "enabled",
       kind::boolean,
       "true",
       0,
       0,
       {},
       "Share downloaded dependencies between the sessions of this node: a content-addressed "
       "store of npm tarballs, installed npm trees built from them, wheels of hash-pinned "
       "requirements, Go modules and crates, that setup steps are seeded from by the digests "
       "their own package-lock.json, requirements.txt, go.sum or Cargo.lock pins, and that "
       "takes only what hashes to them (docs/workflows.md, \"Dependency caches\").",
       [](config& c, const raw& r) { c.cache.enabled = as<bool>(r); }},
      {"cache",
       "dir",
       kind::string,
       R"("")",
       0,
       0,
       {},
       "Where the store lives. Empty: <node.data_dir>/cache. Best on the data dir's file system "
       "(seeding is then a hard link per file instead of a copy).",
       [](config& c, const raw& r) { c.cache.dir = as<std::string>(r); }},
      {"cache",
       "max_bytes",
       kind::integer,
       "10737418240",
       1LL << 20,
       1LL << 50,
       {},
       "Size cap of the store; past it the least recently used entries are evicted after each "
       "setup step. `berth cache prune` evicts by hand.",
       [](config& c, const raw& r) { c.cache.max_bytes = as<std::int64_t>(r); }},
      {"gateway",
       "listen",
       kind::string,
       R"("127.0.0.1:0")",
       0,
       0,
       {},
       "Where the node's gateway (REST, SSE, WebSocket, the console) listens, as host:port; "
       "port 0 picks a free one, written to node.json as console_url. Empty: no gateway in "
       "this node (run `berth gateway` elsewhere). Anything but loopback needs a TLS "
       "terminating proxy in front (docs/security.md).",
       [](config& c, const raw& r) { c.gateway.listen = as<std::string>(r); }},
      {"gateway",
       "tokens_file",
       kind::string,
       R"("")",
       0,
       0,
       {},
       "The gateway's API tokens (hashes only, written by `berth token create`). Empty: "
       "<node.data_dir>/gateway/tokens.json.",
       [](config& c, const raw& r) { c.gateway.tokens_file = as<std::string>(r); }},
      {"gateway",
       "allowed_origins",
       kind::string_list,
       "[]",
       0,
       0,
       {},
       "Origins (scheme://host:port, matched exactly) whose browser pages may call the gateway. "
       "Empty: only the gateway's own origin.",
       [](config& c, const raw& r) {
         c.gateway.allowed_origins = as<std::vector<std::string>>(r);
       }},
      {"gateway",
       "max_body_bytes",
       kind::integer,
       "1048576",
       1024,
       64LL << 20,
       {},
       "Largest request body the gateway reads; larger ones get 413.",
       [](config& c, const raw& r) { c.gateway.max_body_bytes = as<std::int64_t>(r); }},
      {"gateway",
       "header_timeout",
       kind::duration,
       R"("10s")",
       100,
       600000,
       {},
       "How long a client may take to send a request's headers (slow clients are cut off).",
       [](config& c, const raw& r) { c.gateway.header_timeout = as<millis>(r); }},
      {"gateway",
       "max_connections",
       kind::integer,
       "10000",
       1,
       1000000,
       {},
       "Open connections the gateway accepts at once; past it new ones are closed at once.",
       [](config& c, const raw& r) { c.gateway.max_connections = as<std::int64_t>(r); }},
      {"gateway",
       "max_streams_per_token",
       kind::integer,
       "100",
       1,
       1000000,
       {},
       "Open WebSockets and event streams one token (or console login) may hold; past it a "
       "WebSocket is closed with 1008 and an event stream gets 429.",
       [](config& c, const raw& r) { c.gateway.max_streams_per_token = as<std::int64_t>(r); }},
      {"gateway",
       "rate_limit",
       kind::integer,
       "50",
       1,
       1000000,
       {},
       "Requests (REST, and WebSocket subscribe and call) per second one token may make, "
       "refilled continuously; past it 429 with Retry-After, or close 1008.",
       [](config& c, const raw& r) { c.gateway.rate_limit = as<std::int64_t>(r); }},
      {"gateway",
       "rate_burst",
       kind::integer,
       "100",
       1,
       1000000,
       {},
       "How many requests one token may make at once before rate_limit applies.",
       [](config& c, const raw& r) { c.gateway.rate_burst = as<std::int64_t>(r); }},
      {"gateway",
       "max_buffered_bytes",
       kind::integer,
       "1048576",
       4096,
       256LL << 20,
       {},
       "Unsent bytes one WebSocket or event stream may queue for a slow reader; past it a "
       "WebSocket gets a gap message for what it missed (re-subscribe with since to refill) "
       "and an event stream is closed (EventSource resumes with Last-Event-ID).",
       [](config& c, const raw& r) { c.gateway.max_buffered_bytes = as<std::int64_t>(r); }},
      {"gateway",
       "stall_timeout",
       kind::duration,
       R"("30s")",
       1000,
       3600000,
       {},
       "A WebSocket or event stream whose client has not read for this long while data waits "
       "is closed (WebSocket 1013 when the close frame can still get through).",
       [](config& c, const raw& r) { c.gateway.stall_timeout = as<millis>(r); }},
      {"gateway",
       "console_dir",
       kind::string,
       R"("")",
       0,
       0,
       {},
       "Serve the console from this folder instead of the copy built into berth (to work on "
       "it without rebuilding). Files outside it, hidden ones and symlinks out are not served.",
       [](config& c, const raw& r) { c.gateway.console_dir = as<std::string>(r); }},
      {"workspace",
       "author_name",
       kind::string,
       R"("Berth")",
       0,
       0,
       {},
       "Commit author and committer name in session workspaces.",
       [](config& c, const raw& r) { c.workspace.author_name = as<std::string>(r); }},
      {"workspace",
       "author_email",
       kind::string,
       R"("berth@localhost")",
       0,
       0,
       {},
       "Commit author and committer e-mail in session workspaces.",
       [](config& c, const raw& r) { c.workspace.author_email = as<std::string>(r); }},
      {"workspace",
       "quota_bytes",
       kind::integer,
       "10737418240",
       0,
       1LL << 50,
       {},
       "Disk space one session workspace may use (checked after every step and tool call; "
       "the session fails with a clear error when it is exceeded). 0: no quota.",
       [](config& c, const raw& r) { c.workspace.quota_bytes = as<std::int64_t>(r); }},
      {"workspace",
       "file_allowlist",
       kind::string_list,
       "[]",
       0,
       0,
       {},
       "Directories whose repositories sessions may clone by file:// URL. Empty: file:// "
       "remotes are refused.",
       [](config& c, const raw& r) {
         c.workspace.file_allowlist = as<std::vector<std::string>>(r);
       }},
      {"credentials",
       "renew_before",
       kind::duration,
       R"("10m")",
       1000,
       86'400'000,
       {},
       "A lease with an expiry is renewed this long before it expires (or at half its "
       "lifetime, if that is sooner). Providers are [[credentials.static]], "
       "[[credentials.command]] and [[credentials.github_app]] entries: docs/credentials.md.",
       [](config& c, const raw& r) { c.credentials.renew_before = as<millis>(r); }},
      {"log",
       "level",
       kind::string,
       R"("info")",
       0,
       0,
       {"trace", "debug", "info", "warn", "error", "off"},
       "Log level.",
       [](config& c, const raw& r) { c.log.level = as<std::string>(r); }},
      {"log",
       "format",
       kind::string,
       R"("text")",
       0,
       0,
       {"text", "json"},
       "Log format: text lines or one JSON object per line.",
       [](config& c, const raw& r) { c.log.format = as<std::string>(r); }},
  };
  return table;
}

const char* kind_name(kind k) {
  switch (k) {
    case kind::string:
      return "a string";
    case kind::integer:
      return "an integer";
    case kind::boolean:
      return "a boolean";
    case kind::duration:
      return "a duration string such as \"30s\"";
    case kind::string_list:
      return "an array of strings";
  }
  return "?";
}

const char* toml_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date/time";
  }
}

std::string where(const std::string& source, const toml::source_region& r) {
  return source + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
}

// Check bounds and choices of an already-typed value.
status check_value(const key_spec& k, const raw& v, const std::string& at) {
  std::string name = std::string(k.section) + "." + k.key;
  if (k.type == kind::integer) {
    auto i = as<std::int64_t>(v);
    if (i < k.min || i > k.max)
      return error{errc::invalid_argument, at + name + ": " + std::to_string(i) +
                                               " is out of range [" + std::to_string(k.min) + ", " +
                                               std::to_string(k.max) + "]"};
  }
  if (k.type == kind::duration) {
    auto d = as<millis>(v).count();
    if (d < k.min || d > k.max)
      return error{errc::invalid_argument, at + name + ": " + format_duration(millis(d)) +
                                               " is out of range [" +
                                               format_duration(millis(k.min)) + ", " +
                                               format_duration(millis(k.max)) + "]"};
  }
  if (k.type == kind::string && !k.choices.empty()) {
    const auto& s = as<std::string>(v);
    bool found = false;
    std::string list;
    for (const auto& c : k.choices) {
      found = found || c == s;
      list += (list.empty() ? "\"" : ", \"") + c + "\"";
    }
    if (!found)
      return error{errc::invalid_argument, at + name + ": \"" + s + "\" is not one of " + list};
  }
  if (k.section == std::string_view("sandbox") && k.key == std::string_view("env")) {
    for (const auto& e : as<std::vector<std::string>>(v)) {
      auto eq = e.find('=');
      auto var = e.substr(0, eq);
      bool valid =
          eq != std::string::npos && eq > 0 && !std::isdigit(static_cast<unsigned char>(var[0]));
      for (unsigned char c : var) valid = valid && (std::isalnum(c) || c == '_');
      if (!valid)
        return error{errc::invalid_argument,
                     at + name + ": \"" + e + "\" is not NAME=value (NAME: letters, digits, _)"};
      if (var == "HOME" || var.rfind("BERTH_", 0) == 0)
        return error{errc::invalid_argument,
                     at + name + ": " + var +
                         " is set by the node for every command and cannot be configured"};
    }
  }
  if (std::string_view(k.key) == "subject_prefix" ||
      (std::string_view(k.key) == "id" && !as<std::string>(v).empty())) {
    BERTH_TRY(validate_id(as<std::string>(v), at + name));
  }
  return {};
}

result<raw> from_toml(const key_spec& k, const toml::node& n, const std::string& source) {
  std::string at = where(source, n.source()) + ": ";
  std::string name = std::string(k.section) + "." + k.key;
  auto wrong = [&] {
    return error{errc::invalid_argument,
                 at + name + ": expected " + kind_name(k.type) + ", got " + toml_type_name(n)};
  };
  switch (k.type) {
    case kind::string:
      if (!n.is_string()) return wrong();
      return raw(*n.value<std::string>());
    case kind::integer:
      if (!n.is_integer()) return wrong();
      return raw(*n.value<std::int64_t>());
    case kind::boolean:
      if (!n.is_boolean()) return wrong();
      return raw(*n.value<bool>());
    case kind::duration: {
      if (!n.is_string()) return wrong();
      auto d = parse_duration(*n.value<std::string>(), at + name);
      if (!d) return d.err();
      return raw(*d);
    }
    case kind::string_list: {
      if (!n.is_array()) return wrong();
      std::vector<std::string> out;
      std::size_t idx = 0;
      for (const auto& e : *n.as_array()) {
        if (!e.is_string())
          return error{errc::invalid_argument,
                       where(source, e.source()) + ": " + name + "[" + std::to_string(idx) +
                           "]: expected a string, got " + toml_type_name(e)};
        out.push_back(*e.value<std::string>());
        ++idx;
      }
      return raw(std::move(out));
    }
  }
  return wrong();
}

config build_defaults() {
  config c;
  for (const auto& k : schema()) {
    auto tbl = toml::parse(std::string("v = ") + k.default_text);
    auto r = from_toml(k, *tbl.get("v"), "default");
    BERTH_ASSERT(r.ok(), "bad default for " + std::string(k.key));
    k.apply(c, *r);
  }
  return c;
}

// `[[credentials.<provider>]]` entries.
status parse_rules(credentials_section& out, const std::string& provider, const toml::node& n,
                   const std::string& source) {
  std::string name = "credentials." + provider;
  if (!n.is_array_of_tables())
    return error{errc::invalid_argument, where(source, n.source()) + ": " + name + ": expected [[" +
                                             name + "]] tables, got " + toml_type_name(n)};
  std::size_t idx = 0;
  for (const auto& t : *n.as_array()) {
    std::string field = name + "[" + std::to_string(idx++) + "]";
    std::string at = where(source, t.source()) + ": ";
    credential_rule r;
    r.provider = provider;
    r.where = where(source, t.source());
    std::vector<std::string> allowed = {"url_prefix", "username", "api_url"};
    if (provider == "static") allowed.push_back("token_file");
    if (provider == "command") {
      allowed.push_back("run");
      allowed.push_back("revoke");
    }
    if (provider == "github_app") {
      allowed.push_back("app_id");
      allowed.push_back("installation_id");
      allowed.push_back("private_key_file");
    }
    for (auto&& [k, v] : *t.as_table()) {
      std::string kat = where(source, k.source()) + ": " + field + "." + std::string(k.str());
      bool ok = false;
      for (const auto& a : allowed) ok = ok || k.str() == a;
      if (!ok) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        return error{errc::invalid_argument, kat + ": unknown key (known: " + list + ")"};
      }
      auto want_string = [&](std::string& dst) -> status {
        if (!v.is_string())
          return error{errc::invalid_argument,
                       kat + ": expected a string, got " + toml_type_name(v)};
        dst = *v.value<std::string>();
        if (dst.empty()) return error{errc::invalid_argument, kat + ": must not be empty"};
        return {};
      };
      auto want_list = [&](std::vector<std::string>& dst) -> status {
        if (!v.is_array())
          return error{errc::invalid_argument,
                       kat + ": expected an array of strings, got " + toml_type_name(v)};
        for (const auto& e : *v.as_array()) {
          if (!e.is_string()) return error{errc::invalid_argument, kat + ": expected strings only"};
          dst.push_back(*e.value<std::string>());
        }
        if (dst.empty() || dst[0].empty() || dst[0][0] != '/')
          return error{errc::invalid_argument,
                       kat + ": the first element must be an absolute program path"};
        return {};
      };
      auto want_id = [&](std::int64_t& dst) -> status {
        if (!v.is_integer() || *v.value<std::int64_t>() <= 0)
          return error{errc::invalid_argument, kat + ": expected a positive integer"};
        dst = *v.value<std::int64_t>();
        return {};
      };
      std::string key(k.str());
      if (key == "url_prefix") BERTH_TRY(want_string(r.url_prefix));
      if (key == "username") BERTH_TRY(want_string(r.username));
      if (key == "api_url") BERTH_TRY(want_string(r.api_url));
      if (key == "token_file") BERTH_TRY(want_string(r.token_file));
      if (key == "private_key_file") BERTH_TRY(want_string(r.private_key_file));
      if (key == "run") BERTH_TRY(want_list(r.run));
      if (key == "revoke") BERTH_TRY(want_list(r.revoke));
      if (key == "app_id") BERTH_TRY(want_id(r.app_id));
      if (key == "installation_id") BERTH_TRY(want_id(r.installation_id));
    }
    auto missing = [&](const char* k) {
      return error{errc::invalid_argument, at + field + "." + k + ": is required"};
    };
    if (r.url_prefix.empty()) return missing("url_prefix");
    if (r.url_prefix.find("://") == std::string::npos)
      return error{errc::invalid_argument,
                   at + field + ".url_prefix: \"" + r.url_prefix +
                       "\" is not a URL prefix such as \"https://git.example.com/acme/\""};
    if (provider == "static" && r.token_file.empty()) return missing("token_file");
    if (provider == "command" && r.run.empty()) return missing("run");
    if (provider == "github_app") {
      if (r.app_id == 0) return missing("app_id");
      if (r.installation_id == 0) return missing("installation_id");
      if (r.private_key_file.empty()) return missing("private_key_file");
      if (r.api_url.empty()) r.api_url = "https://api.github.com";
    }
    for (const auto& other : out.rules)
      if (other.url_prefix == r.url_prefix)
        return error{errc::invalid_argument, at + field + ".url_prefix: \"" + r.url_prefix +
                                                 "\" is already served by " + other.provider +
                                                 " (" + other.where + ")"};
    out.rules.push_back(std::move(r));
  }
  return {};
}

}  // namespace

const credential_rule* credential_for(const credentials_section& c, const std::string& url) {
  const credential_rule* best = nullptr;
  for (const auto& r : c.rules)
    if (url.starts_with(r.url_prefix) && (!best || r.url_prefix.size() > best->url_prefix.size()))
      best = &r;
  return best;
}

config defaults() {
  static const config d = build_defaults();
  return d;
}

result<config> parse(const std::string& text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return error{errc::invalid_argument,
                 where(source, e.source()) + ": invalid TOML: " + std::string(e.description())};
  }
  config c = defaults();
  for (auto&& [section_key, section_node] : root) {
    std::string section(section_key.str());
    std::string at = where(source, section_key.source()) + ": ";
    bool known_section = false;
    for (const auto& k : schema()) known_section = known_section || section == k.section;
    if (!known_section)
      return error{errc::invalid_argument,
                   at + "unknown section [" + section +
                       "]; see `berth config print --defaults` for every key"};
    if (!section_node.is_table())
      return error{errc::invalid_argument,
                   at + section + ": expected a table, got " + toml_type_name(section_node)};
    for (auto&& [key, value] : *section_node.as_table()) {
      std::string kat = where(source, key.source()) + ": ";
      if (section == "credentials" &&
          (key.str() == "static" || key.str() == "command" || key.str() == "github_app")) {
        BERTH_TRY(parse_rules(c.credentials, std::string(key.str()), value, source));
        continue;
      }
      const key_spec* spec = nullptr;
      for (const auto& k : schema())
        if (section == k.section && key.str() == k.key) spec = &k;
      if (!spec)
        return error{errc::invalid_argument,
                     kat + "unknown key " + section + "." + std::string(key.str()) +
                         "; see `berth config print --defaults` for every key"};
      auto v = from_toml(*spec, value, source);
      if (!v) return v.err();
      BERTH_TRY(check_value(*spec, *v, where(source, value.source()) + ": "));
      spec->apply(c, *v);
    }
  }
  return c;
}

result<config> load_file(const std::string& path) {
  auto text = fs::read_file(path);
  if (!text)
    return error{errc::not_found,
                 "config file " + path + ": cannot be read: " + text.err().message};
  return parse(*text, path);
}

status apply_env(config& cfg, const std::map<std::string, std::string>& env) {
  for (const auto& k : schema()) {
    std::string var = "BERTH_";
    for (const char* p = k.section; *p; ++p) var.push_back(static_cast<char>(std::toupper(*p)));
    var.push_back('_');
    for (const char* p = k.key; *p; ++p) var.push_back(static_cast<char>(std::toupper(*p)));
    auto it = env.find(var);
    if (it == env.end()) continue;
    const std::string& s = it->second;
    std::string at = "environment variable " + var + ": ";
    raw v;
    switch (k.type) {
      case kind::string:
        v = s;
        break;
      case kind::integer: {
        try {
          std::size_t used = 0;
          v = static_cast<std::int64_t>(std::stoll(s, &used));
          if (used != s.size()) throw std::invalid_argument("trailing");
        } catch (const std::exception&) {
          return error{errc::invalid_argument, at + "\"" + s + "\" is not an integer"};
        }
        break;
      }
      case kind::boolean:
        if (s == "true" || s == "1")
          v = true;
        else if (s == "false" || s == "0")
          v = false;
        else
          return error{errc::invalid_argument, at + "\"" + s + "\" is not true or false"};
        break;
      case kind::duration: {
        auto d = parse_duration(s, var);
        if (!d) return d.err();
        v = *d;
        break;
      }
      case kind::string_list: {
        std::vector<std::string> items;
        std::stringstream ss(s);
        std::string item;
        while (std::getline(ss, item, ','))
          if (!item.empty()) items.push_back(item);
        v = items;
        break;
      }
    }
    BERTH_TRY(check_value(k, v, at));
    k.apply(cfg, v);
  }
  return {};
}

std::map<std::string, std::string> process_env() {
  std::map<std::string, std::string> out;
  for (auto& [k, v] : process::current_env())
    if (k.rfind("BERTH_", 0) == 0) out.emplace(k, v);
  return out;
}

namespace {
std::string bounds_text(const key_spec& k) {
  if (k.type == kind::integer) return std::to_string(k.min) + " to " + std::to_string(k.max);
  if (k.type == kind::duration)
    return format_duration(millis(k.min)) + " to " + format_duration(millis(k.max));
  if (!k.choices.empty()) {
    std::string s;
    for (const auto& c : k.choices) s += (s.empty() ? "" : ", ") + ("\"" + c + "\"");
    return "one of " + s;
  }
  return "";
}
}  // namespace

std::string print_defaults_toml() {
  std::string out =
      "# Berth configuration: every key with its default.\n"
      "# Each key can be overridden by BERTH_<SECTION>_<KEY> in the environment.\n";
  std::string section;
  for (const auto& k : schema()) {
    if (section != k.section) {
      section = k.section;
      out += "\n[" + section + "]\n";
    }
    out += "# " + std::string(k.description);
    auto b = bounds_text(k);
    if (!b.empty()) out += " (" + b + ")";
    out += "\n" + std::string(k.key) + " = " + k.default_text + "\n";
  }
  return out;
}

std::string reference_markdown() {
  std::string out =
      "# Configuration reference\n\n"
      "Generated from the config schema (`berth config print --markdown`); do not edit by hand.\n"
      "A config file is TOML. Unknown sections and keys are errors, reported as "
      "`file:line:column`. Durations are strings such as `\"500ms\"`, `\"30s\"`, `\"10m\"`, "
      "`\"1h30m\"`. Every key can be overridden from the environment as "
      "`BERTH_<SECTION>_<KEY>` (lists comma-separated), e.g. `BERTH_NODE_MAX_SESSIONS=8`.\n\n"
      "`berth config check FILE` validates a file; `berth config print --defaults` prints every "
      "key with its default.\n";
  std::string section;
  for (const auto& k : schema()) {
    if (section != k.section) {
      section = k.section;
      out += "\n## [" + section +
             "]\n\n| key | type | default | allowed | description |\n|---|---|---|---|---|\n";
    }
    std::string t = kind_name(k.type);
    out += "| `" + std::string(k.key) + "` | " + t + " | `" + k.default_text + "` | " +
           bounds_text(k) + " | " + k.description + " |\n";
  }
  out +=
      "\n## [[credentials.static]], [[credentials.command]], [[credentials.github_app]]\n\n"
      "One entry per remote URL prefix; a session's repo uses the entry with the longest "
      "matching `url_prefix`, and no credential when none matches. See docs/credentials.md.\n\n"
      "| provider | key | required | description |\n|---|---|---|---|\n"
      "| all | `url_prefix` | yes | Remotes starting with this string use the entry. |\n"
      "| all | `username` | no | HTTP basic user name sent with the token (default "
      "`x-access-token`). |\n"
      "| all | `api_url` | no | The forge API for pull requests (github_app default: "
      "`https://api.github.com`). |\n"
      "| static | `token_file` | yes | File holding the token; must be mode 0600 and owned by "
      "the node's user. Read at each lease, so rotation needs no restart. |\n"
      "| command | `run` | yes | Absolute program path and arguments; the repo URL is appended. "
      "It prints `{\"token\": ..., \"expires_at\": ...}` (RFC 3339 or Unix seconds; "
      "optional). |\n"
      "| command | `revoke` | no | Program run when a lease ends; the token arrives on stdin, the "
      "URL as last argument. |\n"
      "| github_app | `app_id`, `installation_id` | yes | The GitHub App and its installation. "
      "|\n"
      "| github_app | `private_key_file` | yes | The App's RSA private key (PEM, mode 0600). |\n";
  return out;
}

}  // namespace berth::config
