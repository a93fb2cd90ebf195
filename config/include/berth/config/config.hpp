#pragma once

#include "berth/base/error.hpp"
#include "berth/base/time.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace berth::config {

/// `[node]`: this process.
struct node_section {
  std::string id;  ///< empty: generated once and kept in the data dir
  std::string data_dir;
  std::int64_t max_sessions = 0;  ///< sessions this node runs at once
  std::vector<std::string> labels;
  millis shutdown_grace{0};
  std::int64_t io_threads = 0;
};

/// `[cluster]`: naming shared by the nodes of one cluster.
struct cluster_section {
  std::string name;
  std::string subject_prefix;
  std::vector<std::string> peers;  ///< "host:port" of the other nodes' cluster.listen
  std::string listen;              ///< this node's route address, "host:port"
  millis join_timeout{0};
  millis heartbeat{0};  ///< interval of the node's record in berth-nodes
  millis node_ttl{0};   ///< older than this: dead; older than 3 heartbeats: suspect
};

/// `[nats]`: an external NATS, or the embedded nats-server.
struct nats_section {
  std::vector<std::string> servers;  ///< empty: start an embedded nats-server -js
  std::string creds;
  std::int64_t replicas = 0;  ///< 0: effective_replicas() decides
  std::string server_binary;
  millis connect_timeout{0};
  millis request_timeout{0};
  millis duplicate_window{0};
};

/// `[session]`: defaults and limits for sessions.
struct session_section {
  millis default_timeout{0};
  std::int64_t max_spec_bytes = 0;
  std::int64_t output_chunk_bytes = 0;
  std::int64_t max_output_bytes = 0;
  millis kill_grace{0};
};

/// `[sandbox]`: how step commands are isolated.
struct sandbox_section {
  std::string mode;
  std::string user;
  std::string network;
  std::int64_t memory_bytes = 0;
  std::int64_t pids = 0;
  std::int64_t cpu_percent = 0;
  std::int64_t tmp_bytes = 0;
  std::int64_t nofile = 0;
  std::int64_t fsize_bytes = 0;
  std::string bwrap;
  std::vector<std::string> env;  ///< "NAME=value": every command's environment (validated)
};

/// `[cache]`: dependency caches shared by the sessions of a node.
struct cache_section {
  bool enabled = true;
  std::string dir;  ///< empty: <data_dir>/cache
  std::int64_t max_bytes = 0;
};

/// `[gateway]`: the HTTP/WebSocket edge for browsers and REST clients (gateway/).
struct gateway_section {
  std::string listen;                        ///< "host:port" ("": no gateway in the node)
  std::string tokens_file;                   ///< empty: <data_dir>/gateway/tokens.json
  std::vector<std::string> allowed_origins;  ///< empty: the gateway's own origin only
  std::int64_t max_body_bytes = 0;
  millis header_timeout{0};
  std::int64_t max_connections = 0;
  std::int64_t max_streams_per_token = 0;  ///< WebSockets + SSE streams per token
  std::int64_t rate_limit = 0;             ///< requests per second per token
  std::int64_t rate_burst = 0;
  std::int64_t max_buffered_bytes = 0;  ///< unsent items per stream before gaps
  millis stall_timeout{0};              ///< a stream whose client stopped reading: closed
  std::string console_dir;              ///< empty: the console built into the binary
};

/// `[workspace]`: session git workspaces.
struct workspace_section {
  std::string author_name;
  std::string author_email;
  std::int64_t quota_bytes = 0;  ///< 0: no quota
  std::vector<std::string> file_allowlist;
};

/// One `[[credentials.<provider>]]` entry: which remotes it serves and how it mints tokens.
struct credential_rule {
  std::string provider;    ///< "static" | "command" | "github_app"
  std::string url_prefix;  ///< remotes starting with this use the rule (longest prefix wins)
  std::string username = "x-access-token";
  std::string token_file;            ///< static
  std::vector<std::string> run;      ///< command: argv; the repo URL is appended
  std::vector<std::string> revoke;   ///< command: optional; the token arrives on stdin
  std::int64_t app_id = 0;           ///< github_app
  std::int64_t installation_id = 0;  ///< github_app
  std::string private_key_file;      ///< github_app
  std::string api_url;               ///< forge API (github_app; optional elsewhere)
  std::string where;                 ///< "berth.toml:12:1", for errors
};

/// `[credentials]`: token providers by remote URL prefix.
struct credentials_section {
  std::vector<credential_rule> rules;
  millis renew_before{0};
};

/// `[log]`
struct log_section {
  std::string level;
  std::string format;
};

/// The whole validated configuration.
struct config {
  node_section node;
  cluster_section cluster;
  nats_section nats;
  session_section session;
  sandbox_section sandbox;
  workspace_section workspace;
  cache_section cache;
  gateway_section gateway;
  credentials_section credentials;
  log_section log;
};

/// The rule for `url`: the longest matching `url_prefix`, or nullptr.
[[nodiscard]] const credential_rule* credential_for(const credentials_section& c,
                                                    const std::string& url);

/// Every key with its default.
[[nodiscard]] config defaults();

/// Replicas of streams and buckets: nats.replicas, or when it is 0, 1 for a single node and
/// min(3, 1 + peers) for a cluster of embedded servers.
[[nodiscard]] std::int64_t effective_replicas(const config& c);

/// The cross-key rules of [cluster] and [nats]: addresses are host:port, peers need listen,
/// peers and external servers exclude each other, replicas fit the servers named. `where`
/// prefixes messages (a file, or "environment").
[[nodiscard]] status check_cluster(const config& c, const std::string& where);

/// Parse and validate TOML text. `source` names the file in errors ("berth.toml:3:15: ...").
/// Unknown sections and keys, wrong types and out-of-range values are errors.
[[nodiscard]] result<config> parse(const std::string& text, const std::string& source);

/// Read and parse a file.
[[nodiscard]] result<config> load_file(const std::string& path);

/// Apply `BERTH_<SECTION>_<KEY>` overrides from `env` (e.g. BERTH_NODE_MAX_SESSIONS=8).
/// Lists are comma-separated. Errors name the variable.
[[nodiscard]] status apply_env(config& cfg, const std::map<std::string, std::string>& env);

/// The process environment as a map (for apply_env).
[[nodiscard]] std::map<std::string, std::string> process_env();

/// Every key, commented, with its default: `berth config print --defaults`.
[[nodiscard]] std::string print_defaults_toml();

/// The configuration reference as Markdown (docs/configuration.md is generated from this).
[[nodiscard]] std::string reference_markdown();

}  // namespace berth::config
