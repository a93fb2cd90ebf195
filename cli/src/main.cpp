#include "cli.hpp"
#include "commands.hpp"

#include "berth/base/fs.hpp"
#include "berth/bench/bench.hpp"
#include "berth/config/config.hpp"
#include "berth/node/node.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

using namespace berth;
using namespace berth::cli;

namespace berth::cli {
std::vector<node::companion> node_companions(const config::config& cfg);
}

namespace {

int cmd_node(const globals& g, const std::string& config_file) {
  config::config cfg = config::defaults();
  if (!config_file.empty()) {
    auto loaded = config::load_file(config_file);
    if (!loaded) {
      std::fprintf(stderr, "berth: %s\n", loaded.err().message.c_str());
      return failure;
    }
    cfg = std::move(*loaded);
  }
  if (auto st = config::apply_env(cfg, config::process_env()); !st) {
    std::fprintf(stderr, "berth: %s\n", st.err().message.c_str());
    return failure;
  }
  if (!g.data_dir.empty()) cfg.node.data_dir = g.data_dir;
  return node::run_node(cfg, node_companions(cfg));
}

int cmd_config_check(const std::string& file) {
  auto cfg = config::load_file(file);
  if (!cfg) {
    std::fprintf(stderr, "berth: %s\n", cfg.err().message.c_str());
    return failure;
  }
  auto st = config::apply_env(*cfg, config::process_env());
  if (!st) {
    std::fprintf(stderr, "berth: %s\n", st.err().message.c_str());
    return failure;
  }
  std::printf("%s: ok\n", file.c_str());
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"berth: a self-hosted runtime for coding-agent sessions"};
  app.fallthrough();
  app.require_subcommand(1);
  globals g;
  if (const char* s = std::getenv("BERTH_SERVER")) g.server = s;
  if (const char* d = std::getenv("BERTH_DATA_DIR")) g.data_dir = d;
  app.add_option("--server", g.server,
                 "NATS URL of the cluster (env BERTH_SERVER; default: the local node's)");
  app.add_option("--data-dir", g.data_dir,
                 "node data dir (env BERTH_DATA_DIR); the CLI finds node.json there");
  app.add_option("-o,--output", g.output, "output format")
      ->check(CLI::IsMember({"text", "json", "jsonl"}));
  app.add_option("--timeout", g.timeout, "how long to wait for the node to answer (e.g. 30s)");

  // node
  std::string config_file;
  auto* node_cmd =
      app.add_subcommand("node", "run a node (embedded nats-server when [nats] servers is empty)");
  node_cmd->add_option("--config", config_file, "TOML config file");
  auto* node_list = node_cmd->add_subcommand(
      "list",
      "the cluster's nodes: id, address, version, sessions, capacity, labels, last "
      "heartbeat, state (ready, suspect, dead)");

  auto* demo_cmd =
      app.add_subcommand("demo", "start a local node and run one sample session, live");
  bool demo_keep = false;
  demo_cmd->add_flag("--keep", demo_keep,
                     "leave the node running and print a login link to its web console");

  // session
  auto* session = app.add_subcommand("session", "start, watch and steer sessions");
  session->require_subcommand(1);
  start_args sa;
  auto* start = session->add_subcommand("start", "start a session");
  start->add_option("--repo", sa.repo,
                    "git repository to clone (https://, http://, allowlisted file://); "
                    "without it the session gets an empty scratch workspace");
  start->add_option("--ref", sa.ref,
                    "branch, tag or commit to check out (default: the remote's "
                    "default branch)");
  start->add_option("--branch", sa.branch,
                    "the session's branch (default: berth/<short session id>)");
  start->add_option("--goal", sa.goal, "what the session is for");
  start->add_option("--workflow", sa.workflow,
                    "workflow file (TOML: [[steps]] with id, run, timeout, retry)");
  start->add_option("--id", sa.id, "session id ([A-Za-z0-9_-]; default: a new ULID)");
  start->add_option("--idempotency-key", sa.idempotency_key,
                    "repeat-safe start key (default: the session id)");
  start->add_option("--priority", sa.priority, "0..9, higher placed first (default 5)");
  start->add_option("--session-timeout", sa.timeout, "session timeout, e.g. 45m");
  start
      ->add_option("--run", sa.run,
                   "a one-step session running this command (no arguments starting with '-')")
      ->expected(1, -1);
  std::vector<std::string> trailing_command;
  start->add_option("command", trailing_command,
                    "a one-step session running the command after `--`, e.g. -- sh -c 'make test'");
  start->add_flag("--dry-run", sa.dry_run,
                  "check the spec (graph included) and print its steps; start nothing");
  auto* wait_flag = start->add_flag(
      "--wait", sa.wait, "wait until the session ends; exit non-zero unless it succeeded");
  start->add_flag("--follow,-f", sa.follow, "show events and output live until the session ends")
      ->excludes(wait_flag);

  std::string sid;
  auto* list = session->add_subcommand("list", "list sessions, newest first");
  std::string status_filter;
  std::int64_t limit = 100;
  list->add_option("--status", status_filter,
                   "only sessions in this state: pending, running, waiting, retrying, succeeded, "
                   "failed (the dead-letter view), cancelled, timed_out");
  list->add_option("--limit", limit, "at most this many");
  auto* show = session->add_subcommand("show", "a session's summary with per-step state");
  show->add_option("id", sid)->required();
  bool follow = false;
  std::uint64_t since = 0;
  auto* events = session->add_subcommand("events", "the session's journal");
  events->add_option("id", sid)->required();
  events->add_flag("-f,--follow", follow, "keep printing new events until the session ends");
  events->add_option("--since", since, "start at this JetStream sequence (the resume cursor)");
  std::string step;
  auto* logs = session->add_subcommand("logs", "the output of the session's commands");
  logs->add_option("id", sid)->required();
  logs->add_flag("-f,--follow", follow, "keep printing until the session ends");
  logs->add_option("--step", step, "only this step");
  std::string from_step, retry_key;
  auto* retry = session->add_subcommand(
      "retry", "start a new run of an ended session's spec, linked to it (retry_of)");
  retry->add_option("id", sid)->required();
  retry->add_option("--from", from_step,
                    "start at this step: the steps it needs count as done in the old run");
  retry->add_option("--idempotency-key", retry_key,
                    "a repeated retry with it returns the same run");
  auto* cancel = session->add_subcommand("cancel", "cancel a session");
  cancel->add_option("id", sid)->required();
  std::string data;
  auto* input = session->add_subcommand("input", "send input (JSON) to a session");
  input->add_option("id", sid)->required();
  input->add_option("--data", data, "the input as JSON")->required();

  std::string tool_name, tool_args, call_id;
  auto* tool = session->add_subcommand(
      "tool",
      "run a tool in a session's sandbox: exec, read_file, write_file, edit, list_dir, "
      "search");
  tool->add_option("id", sid)->required();
  tool->add_option("tool", tool_name)->required();
  tool->add_option("--args", tool_args, "the tool's arguments as a JSON object");
  tool->add_option("--call-id", call_id, "idempotency key of the call (default: a new ULID)");

  auto* stats = app.add_subcommand("stats", "node and queue statistics");
  auto* version = app.add_subcommand("version", "print the version");

  auto* cfg_cmd = app.add_subcommand("config", "check and print configuration");
  cfg_cmd->require_subcommand(1);
  std::string cfg_file;
  auto* check = cfg_cmd->add_subcommand("check", "validate a config file");
  check->add_option("file", cfg_file)->required();
  auto* print = cfg_cmd->add_subcommand("print", "print configuration");
  bool defaults = false;
  bool markdown = false;
  print->add_flag("--defaults", defaults, "every key with its default");
  print->add_flag("--markdown", markdown,
                  "the configuration reference as Markdown (docs/configuration.md)");

  auto* token_cmd = app.add_subcommand("token", "the gateway's API tokens (stored as hashes)");
  token_cmd->require_subcommand(1);
  std::string token_name, token_scope = "read", tokens_file;
  token_cmd->add_option(
      "--tokens-file", tokens_file,
      "the tokens file (default: the local node's, <data dir>/gateway/tokens.json)");
  auto* token_create = token_cmd->add_subcommand("create", "make a token; it is printed once");
  token_create->add_option("name", token_name, "who or what uses it (journaled as the caller)")
      ->required();
  token_create->add_option("--scope", token_scope, "read, write or admin (default read)");
  token_cmd->add_subcommand("list", "every token's name, scope and date");
  auto* token_revoke = token_cmd->add_subcommand("revoke", "remove a token at once");
  token_revoke->add_option("name", token_name)->required();

  std::string console_name = "console", console_scope = "admin", console_url, console_tokens;
  bool console_open = false;
  auto* console_cmd = app.add_subcommand(
      "console", "print a one-time login link to the web console (valid 10 minutes)");
  console_cmd->add_option("--name", console_name,
                          "who logs in (journaled as the caller; default console)");
  console_cmd->add_option("--scope", console_scope, "read, write or admin (default admin)");
  console_cmd->add_option("--url", console_url,
                          "the gateway's URL (default: the local node's console_url)");
  console_cmd->add_option("--tokens-file", console_tokens, "that gateway's tokens file");
  console_cmd->add_flag("--open", console_open, "open the link in a browser (xdg-open)");

  std::string gw_config, gw_listen, gw_tokens;
  auto* gateway_cmd = app.add_subcommand(
      "gateway", "serve REST (and the console) for the cluster --server points at");
  gateway_cmd->add_option("--config", gw_config, "TOML config file ([gateway] is read)");
  gateway_cmd->add_option("--listen", gw_listen, "host:port (default: [gateway] listen)");
  gateway_cmd->add_option("--tokens-file", gw_tokens, "the tokens file");

  auto* cache_cmd = app.add_subcommand(
      "cache", "the node's dependency cache (shared by its sessions' setup steps)");
  cache_cmd->require_subcommand(1);
  std::string cache_dir;
  std::int64_t keep_bytes = 0;
  cache_cmd->add_option("--dir", cache_dir,
                        "the store (default: the node's [cache] dir, <data dir>/cache)");
  cache_cmd->add_subcommand("list", "entries and bytes per ecosystem");
  auto* cache_prune = cache_cmd->add_subcommand(
      "prune", "evict least recently used entries (all of them without --keep-bytes)");
  cache_prune->add_option("--keep-bytes", keep_bytes,
                          "keep at most this many bytes, the most recently used");

  std::string scenario;
  int bench_n = 0;
  auto* bench = app.add_subcommand(
      "bench",
      "measure Berth against its peer in one run (step, graph, sessions, resume, sandbox, "
      "workspace, setup, gateway)");
  bench->add_option("scenario", scenario)
      ->required()
      ->check(CLI::IsMember(
          {"step", "graph", "sessions", "resume", "sandbox", "workspace", "setup", "gateway"}));
  bench->add_option("-n", bench_n, "iterations / sessions (default per scenario)");
  std::string bench_limit;
  bench->add_option("--time-limit", bench_limit,
                    "stop the scenario (exit 4) when it runs longer (default 10m for step and "
                    "sandbox, 20m for the others)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return usage;
  }

  if (*node_list) return cmd_simple(g, "node.list", json::value::make_object());
  if (*node_cmd) return cmd_node(g, config_file);
  if (*demo_cmd) return run_demo(g, demo_keep);
  if (*version) {
    std::printf("berth %s\n", BERTH_VERSION);
    return ok;
  }
  if (*stats) return cmd_simple(g, "stats", json::value::make_object());
  if (*check) return cmd_config_check(cfg_file);
  if (*print) {
    if (markdown)
      std::printf("%s", config::reference_markdown().c_str());
    else if (defaults)
      std::printf("%s", config::print_defaults_toml().c_str());
    else {
      std::fprintf(stderr, "berth: config print: say --defaults or --markdown\n");
      return usage;
    }
    return ok;
  }
  if (*bench) return bench::run({g.output, self_exe()}, scenario, bench_n, bench_limit);
  if (*token_cmd)
    return cmd_token(g, *token_create ? "create" : (*token_revoke ? "revoke" : "list"), token_name,
                     token_scope, tokens_file);
  if (*gateway_cmd) return cmd_gateway(g, gw_config, gw_listen, gw_tokens);
  if (*console_cmd)
    return cmd_console(g, console_name, console_scope, console_url, console_tokens, console_open);
  if (*cache_cmd) return cmd_cache(g, *cache_prune ? "prune" : "list", cache_dir, keep_bytes);
  if (*start) {
    if (!trailing_command.empty()) {
      if (!sa.run.empty()) {
        std::fprintf(
            stderr,
            "berth: session start: give the command either with --run or after --, not both\n");
        return usage;
      }
      sa.run = trailing_command;
    }
    if (sa.workflow.empty() && sa.run.empty()) {
      std::fprintf(
          stderr,
          "berth: session start: give --workflow FILE, --run COMMAND or -- COMMAND ARGS...\n");
      return usage;
    }
    return cmd_session_start(g, sa);
  }
  json::value body = json::value::make_object();
  if (*list) {
    if (!status_filter.empty()) body.set("status", status_filter);
    body.set("limit", limit);
    return cmd_simple(g, "session.list", body);
  }
  if (*show) {
    body.set("id", sid);
    return cmd_simple(g, "session.get", body);
  }
  if (*events) return cmd_session_events(g, sid, follow, since);
  if (*logs) return cmd_session_logs(g, sid, follow, step);
  if (*cancel) {
    body.set("id", sid);
    return cmd_simple(g, "session.cancel", body);
  }
  if (*retry) {
    body.set("id", sid);
    if (!from_step.empty()) body.set("from", from_step);
    if (!retry_key.empty()) body.set("idempotency_key", retry_key);
    return cmd_simple(g, "session.retry", body);
  }
  if (*tool) return cmd_session_tool(g, sid, tool_name, tool_args, call_id);
  if (*input) {
    auto parsed = json::parse(data);
    if (!parsed) {
      std::fprintf(stderr, "berth: --data: %s\n", parsed.err().message.c_str());
      return usage;
    }
    body.set("id", sid);
    body.set("data", *parsed);
    return cmd_simple(g, "session.input", body);
  }
  std::fprintf(stderr, "berth: nothing to do\n");
  return usage;
}
