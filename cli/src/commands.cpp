#include "commands.hpp"

#include "cli.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/ids.hpp"
#include "berth/base/log.hpp"
#include "berth/core/events.hpp"
#include "berth/core/workflow.hpp"
#include "berth/node/node.hpp"

#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <iostream>
#include <mutex>

namespace berth::cli {

namespace ev = core::ev;

std::string self_exe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("berth") : p.string();
}

namespace {

// Where the node is: --server, BERTH_SERVER, node.json of --data-dir / BERTH_DATA_DIR, the node
// started last on this machine, the default data dir.
result<std::string> resolve_server(const globals& g) {
  if (!g.server.empty()) return g.server;
  std::vector<std::string> candidates;
  if (!g.data_dir.empty()) {
    candidates.push_back(g.data_dir + "/node.json");
  } else {
    auto pointer = fs::read_file(node::last_node_pointer_path());
    if (pointer) {
      auto p = *pointer;
      while (!p.empty() && (p.back() == '\n' || p.back() == ' ')) p.pop_back();
      candidates.push_back(p);
    }
    candidates.push_back(config::defaults().node.data_dir + "/node.json");
  }
  for (const auto& c : candidates) {
    auto text = fs::read_file(c);
    if (!text) continue;
    auto v = json::parse(*text);
    if (v && !v->get_string("nats_url").empty()) return v->get_string("nats_url");
  }
  return error{
      errc::unavailable,
      "no node to talk to: none is running with " +
          (g.data_dir.empty() ? std::string("the default data dir") : "--data-dir " + g.data_dir) +
          "; start one with `berth node`, or pass --server URL (or BERTH_SERVER)"};
}

}  // namespace

result<api_client> api_client::connect(const globals& g) {
  auto url = resolve_server(g);
  if (!url) return url.err();
  auto to = parse_duration(g.timeout, "--timeout");
  if (!to) return to.err();
  bus::client::options o;
  o.servers = {*url};
  o.name = "berth-cli";
  o.connect_timeout = std::min(*to, millis(5000));
  o.request_timeout = *to;
  auto c = bus::client::connect(o);
  if (!c) return c.err();
  api_client a;
  a.bus_ = std::shared_ptr<bus::client>(std::move(*c));
  a.names_ = bus::subjects(g.prefix);
  a.timeout_ = *to;
  return a;
}

result<json::value> api_client::call(const std::string& verb, const json::value& body) {
  auto reply = bus_->request(names_.api(verb), body.dump(), timeout_);
  if (!reply) {
    if (reply.err().is(errc::unavailable))
      return error{errc::unavailable,
                   "no berth node answers on " + names_.api(verb) + " (is `berth node` running?)"};
    return reply.err();
  }
  auto v = json::parse(reply->data);
  if (!v) return error{errc::internal, "malformed reply from node: " + v.err().message};
  if (const auto* e = v->find("error")) {
    auto code = e->get_string("code");
    errc c = errc_from_name(code);
    return error{c, e->get_string("message")};
  }
  return std::move(*v);
}

std::string event_line(const json::value& ev, bool color) {
  auto type = ev.get_string("type");
  auto ts = ev.get_string("ts");
  std::string time = ts.size() >= 23 ? ts.substr(11, 12) : ts;
  const json::value* d = ev.find("data");
  std::string details;
  auto add = [&](const std::string& k, const std::string& v) {
    details += (details.empty() ? "" : " ") + k + "=" + v;
  };
  if (d && d->is_object()) {
    if (auto s = d->get_string("step"); !s.empty()) add("step", s);
    if (auto a = d->get_int("attempt", -1); a >= 0) add("attempt", std::to_string(a));
    if (const auto* ec = d->find("exit_code"); ec && ec->is_int())
      add("exit", std::to_string(ec->as_int()));
    if (const auto* sig = d->find("signal"); sig && sig->is_int())
      add("signal", std::to_string(sig->as_int()));
    if (auto ms = d->get_int("duration_ms", -1); ms >= 0) add("took", format_duration(millis(ms)));
    if (auto ms = d->get_int("delay_ms", -1); ms >= 0) add("in", format_duration(millis(ms)));
    if (auto k = d->get_string("kind"); !k.empty()) add("input", k);
    if (auto n = d->get_string("node"); !n.empty()) add("node", n);
    // Graphs, agents and tool calls.
    if (auto x = d->get_string("call_id"); !x.empty()) add("call", x);
    if (auto x = d->get_string("tool"); !x.empty()) add("tool", x);
    if (const auto* ok = d->find("ok"); ok && ok->is_bool())
      add("ok", ok->as_bool() ? "yes" : "no");
    if (auto x = d->get_string("outcome"); !x.empty()) add("outcome", x);
    if (auto x = d->get_string("goto"); !x.empty())
      add("goto", x + " (loop " + std::to_string(d->get_int("loop")) + "/" +
                      std::to_string(d->get_int("max_loops")) + ")");
    if (auto x = d->get_string("skip"); !x.empty()) add("skip", x);
    if (auto x = d->get_string("summary"); !x.empty()) add("summary", "\"" + x + "\"");
    // Workspace, git, lease and pull-request facts.
    if (auto b = d->get_string("branch"); !b.empty()) add("branch", b);
    if (auto c = d->get_string("commit"); c.size() >= 12) add("commit", c.substr(0, 12));
    if (auto l = d->get_string("lease"); !l.empty()) add("lease", l);
    if (auto p = d->get_string("provider"); !p.empty()) add("provider", p);
    if (auto x = d->get_string("expires_at"); !x.empty()) add("expires", x);
    if (const auto* pushed = d->find("pushed"); pushed && pushed->is_bool())
      add("pushed", pushed->as_bool() ? "yes" : "no");
    if (auto u = d->get_string("url"); !u.empty() && type == ev::pr_opened) add("url", u);
    if (auto r = d->get_string("reason"); !r.empty())
      details += (details.empty() ? "" : " ") + std::string("— ") + r;
  }
  const char* c = "";
  const char* reset = "";
  if (color) {
    reset = "\033[0m";
    if (type == ev::session_succeeded || type == ev::step_finished)
      c = "\033[32m";
    else if (type == ev::session_failed || type == ev::step_failed || type == ev::session_timed_out)
      c = "\033[31m";
    else if (type == ev::step_retrying || type == ev::step_interrupted ||
             type == ev::session_cancelled || type == ev::step_rejected ||
             type == ev::step_skipped || type == ev::tool_interrupted)
      c = "\033[33m";
    else if (type == ev::step_started || type == ev::session_started || type == ev::agent_waiting)
      c = "\033[36m";
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%5lld  %s  ", static_cast<long long>(ev.get_int("n")),
                time.c_str());
  return std::string(buf) + c + type + reset + (details.empty() ? "" : "  " + details);
}

namespace {

// Messages from one or more follow subscriptions, consumed on the main thread.
struct feed {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<int, bus::message>> q;  // 0: journal, 1: log
  void push(int kind, bus::message m) {
    {
      std::lock_guard lock(mu);
      q.emplace_back(kind, std::move(m));
    }
    cv.notify_one();
  }
  std::optional<std::pair<int, bus::message>> pop(millis wait) {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, wait, [&] { return !q.empty(); })) return std::nullopt;
    auto v = std::move(q.front());
    q.pop_front();
    return v;
  }
};

void print_event(const globals& g, const json::value& ev, std::uint64_t seq) {
  if (g.output == "text") {
    std::printf("%s\n", event_line(ev, ::isatty(1)).c_str());
  } else {
    json::value out = ev;
    out.set("seq", seq);
    std::printf("%s\n", out.dump().c_str());
  }
  std::fflush(stdout);
}

void print_log(const globals& g, const bus::message& m, bool prefixed) {
  auto stream = m.header("Berth-Stream");
  auto step = std::string(bus::subjects::last_token(m.subject));
  if (g.output != "text") {
    json::value out = json::value::make_object();
    out.set("step", step);
    out.set("attempt", m.header("Berth-Attempt"));
    out.set("stream", stream);
    out.set("data", m.data);
    if (m.header("Berth-Truncated") == "true") out.set("truncated", true);
    out.set("seq", m.seq);
    std::printf("%s\n", out.dump().c_str());
    std::fflush(stdout);
    return;
  }
  FILE* f = stream == "stderr" ? stderr : stdout;
  if (m.header("Berth-Truncated") == "true") {
    std::fprintf(f, "%s[output truncated: the rest of this %s was dropped]\n",
                 prefixed ? ("        │ " + step + ": ").c_str() : "", stream.c_str());
    return;
  }
  if (!prefixed) {
    std::fwrite(m.data.data(), 1, m.data.size(), f);
  } else {
    std::size_t start = 0;
    while (start < m.data.size()) {
      auto nl = m.data.find('\n', start);
      auto line = m.data.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      std::fprintf(f, "        %s│ %s:%s %s\n", ::isatty(1) ? "\033[2m" : "", step.c_str(),
                   ::isatty(1) ? "\033[0m" : "", line.c_str());
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
  }
  std::fflush(f);
}

}  // namespace

int follow_session(const globals& g, api_client& api, const std::string& id, std::uint64_t since,
                   bool with_logs, bool quiet, std::string* final_status) {
  feed f;
  auto ev_sub = api.bus().follow(api.names().stream_ev(), api.names().journal(id), since,
                                 [&f](bus::message m) { f.push(0, std::move(m)); });
  if (!ev_sub) return report(ev_sub.err());
  std::unique_ptr<bus::subscription> log_sub;
  if (with_logs) {
    auto ls = api.bus().follow(api.names().stream_log(), api.names().log_wildcard(id), 0,
                               [&f](bus::message m) { f.push(1, std::move(m)); });
    if (!ls) return report(ls.err());
    log_sub = std::move(*ls);
  }
  std::string status;
  for (;;) {
    auto item = f.pop(millis(250));
    if (!item) {
      if (!status.empty()) break;  // terminal and quiet for a moment: all output is in
      continue;
    }
    auto& [kind, m] = *item;
    if (kind == 1) {
      if (!quiet) print_log(g, m, true);
      continue;
    }
    auto ev = json::parse(m.data);
    if (!ev) continue;
    if (!quiet) print_event(g, *ev, m.seq);
    auto type = ev->get_string("type");
    if (core::is_terminal_event(type)) {
      status = type.substr(8);
      if (!with_logs) break;
    }
  }
  if (final_status) *final_status = status;
  return status == core::states::succeeded ? ok : failure;
}

int cmd_session_events(const globals& g, const std::string& id, bool follow, std::uint64_t since) {
  auto api = api_client::connect(g);
  if (!api) return report(api.err());
  // Not found: no journal at all.
  auto last = api->bus().last_message(api->names().stream_ev(), api->names().journal(id));
  if (!last) return report(last.err());
  if (!last->has_value()) return report(error{errc::not_found, "session " + id + " not found"});
  if (follow) {
    std::string status;
    follow_session(g, *api, id, since, false, false, &status);
    return ok;
  }
  auto st = api->bus().read_subject(api->names().stream_ev(), api->names().journal(id), since,
                                    [&](bus::message& m) {
                                      if (auto ev = json::parse(m.data)) print_event(g, *ev, m.seq);
                                      return true;
                                    });
  if (!st) return report(st.err());
  return ok;
}

int cmd_session_logs(const globals& g, const std::string& id, bool follow,
                     const std::string& step) {
  auto api = api_client::connect(g);
  if (!api) return report(api.err());
  auto last = api->bus().last_message(api->names().stream_ev(), api->names().journal(id));
  if (!last) return report(last.err());
  if (!last->has_value()) return report(error{errc::not_found, "session " + id + " not found"});
  auto subject = step.empty() ? api->names().log_wildcard(id) : api->names().log(id, step);
  if (!follow) {
    auto st = api->bus().read_subject(api->names().stream_log(), subject, 1, [&](bus::message& m) {
      print_log(g, m, false);
      return true;
    });
    if (!st) return report(st.err());
    return ok;
  }
  feed f;
  auto sub = api->bus().follow(api->names().stream_log(), subject, 0,
                               [&f](bus::message m) { f.push(1, std::move(m)); });
  if (!sub) return report(sub.err());
  auto ev_sub = api->bus().follow(api->names().stream_ev(), api->names().journal(id), 0,
                                  [&f](bus::message m) { f.push(0, std::move(m)); });
  if (!ev_sub) return report(ev_sub.err());
  bool done = false;
  for (;;) {
    auto item = f.pop(millis(300));
    if (!item) {
      if (done) break;
      continue;
    }
    if (item->first == 1) {
      print_log(g, item->second, false);
    } else {
      auto ev = json::parse(item->second.data);
      if (ev && core::is_terminal_event(ev->get_string("type"))) done = true;
    }
  }
  return ok;
}

void print_summary(const globals& g, const json::value& v) {
  if (g.output != "text") {
    std::printf("%s\n", v.dump().c_str());
    return;
  }
  std::printf("session  %s\nstatus   %s\nrepo     %s\n", v.get_string("id").c_str(),
              v.get_string("status").c_str(), v.get_string("repo").c_str());
  if (!v.get_string("ref").empty()) std::printf("ref      %s\n", v.get_string("ref").c_str());
  if (!v.get_string("goal").empty()) std::printf("goal     %s\n", v.get_string("goal").c_str());
  if (!v.get_string("reason").empty()) std::printf("reason   %s\n", v.get_string("reason").c_str());
  if (auto p = v.get_string("phase"); !p.empty() && p != v.get_string("status"))
    std::printf("phase    %s\n", p.c_str());
  if (!v.get_string("failed_step").empty())
    std::printf("failed   step %s\n", v.get_string("failed_step").c_str());
  if (!v.get_string("retry_of").empty())
    std::printf("retry of %s\n", v.get_string("retry_of").c_str());
  if (!v.get_string("node").empty()) std::printf("node     %s\n", v.get_string("node").c_str());
  std::printf("created  %s\nupdated  %s\nevents   %lld\nsteps\n",
              v.get_string("created_at").c_str(), v.get_string("updated_at").c_str(),
              static_cast<long long>(v.get_int("events")));
  if (const auto* steps = v.find("steps"); steps && steps->is_array()) {
    for (const auto& s : steps->as_array()) {
      std::string extra;
      if (const auto* ec = s.find("exit_code"); ec && ec->is_int())
        extra += " exit=" + std::to_string(ec->as_int());
      if (s.get_int("loops") > 0) extra += " loops=" + std::to_string(s.get_int("loops"));
      if (const auto* n = s.find("needs"); n && n->is_array() && !n->as_array().empty()) {
        std::string needs;
        for (const auto& x : n->as_array())
          needs += (needs.empty() ? "" : ",") + (x.is_string() ? x.as_string() : std::string());
        extra += " needs=" + needs;
      }
      if (!s.get_string("reason").empty()) extra += " — " + s.get_string("reason");
      std::printf("  %-20s %-10s attempt %lld%s\n", s.get_string("id").c_str(),
                  s.get_string("status").c_str(), static_cast<long long>(s.get_int("attempt")),
                  extra.c_str());
    }
  }
}

int cmd_session_start(const globals& g, const start_args& a) {
  json::value spec = json::value::make_object();
  if (!a.workflow.empty()) {
    auto wf = core::load_workflow(a.workflow);
    if (!wf) return report(wf.err());
    spec = std::move(*wf);
  }
  if (!a.repo.empty()) spec.set("repo", a.repo);
  if (!a.ref.empty()) spec.set("ref", a.ref);
  if (!a.branch.empty()) spec.set("branch", a.branch);
  if (!a.goal.empty()) spec.set("goal", a.goal);
  if (!a.id.empty()) spec.set("id", a.id);
  if (!a.timeout.empty()) spec.set("timeout", a.timeout);
  if (a.priority >= 0) spec.set("priority", a.priority);
  if (!a.run.empty()) {
    json::value step = json::value::make_object();
    step.set("id", "run");
    json::value argv = json::value::make_array();
    for (const auto& s : a.run) argv.push(s);
    step.set("run", std::move(argv));
    json::value steps = json::value::make_array();
    steps.push(std::move(step));
    spec.set("steps", std::move(steps));
  }
  // Check locally first, so a bad workflow fails fast and clearly.
  core::spec_limits limits;
  limits.max_spec_bytes = config::defaults().session.max_spec_bytes;
  auto parsed = core::parse_spec(spec, limits);
  if (!parsed) {
    auto e = parsed.err();
    if (!a.workflow.empty()) e.message = a.workflow + ": " + e.message;
    return report(e);
  }
  if (a.dry_run) {
    // The spec as the node would store it: needs resolved into the canonical form.
    auto canonical = core::to_json(*parsed);
    if (g.output == "text") {
      std::printf("%s: valid, %zu step(s)\n", a.workflow.empty() ? "spec" : a.workflow.c_str(),
                  parsed->steps.size());
      for (const auto& st : parsed->steps) {
        std::string needs;
        for (const auto& n : st.needs) needs += (needs.empty() ? "" : ", ") + n;
        std::printf("  %-20s %-13s needs [%s]%s\n", st.id.c_str(), core::to_string(st.kind),
                    needs.c_str(),
                    st.when == core::run_when::success
                        ? ""
                        : (std::string(" when ") + core::to_string(st.when)).c_str());
      }
    } else {
      std::printf("%s\n", canonical.dump().c_str());
    }
    return ok;
  }
  auto api = api_client::connect(g);
  if (!api) return report(api.err());
  json::value req = json::value::make_object();
  req.set("spec", spec);
  if (!a.idempotency_key.empty()) req.set("idempotency_key", a.idempotency_key);
  auto r = api->call("session.start", req);
  if (!r) return report(r.err());
  auto id = r->get_string("id");
  if (a.follow) {
    if (g.output == "text")
      std::printf("session %s accepted (input sequence %lld)\n", id.c_str(),
                  static_cast<long long>(r->get_int("accepted_seq")));
    else
      std::printf("%s\n", r->dump().c_str());
    std::fflush(stdout);
    std::string status;
    int rc = follow_session(g, *api, id, 0, true, false, &status);
    if (g.output == "text") std::printf("session %s %s\n", id.c_str(), status.c_str());
    return rc;
  }
  if (a.wait) {
    std::string status;
    int rc = follow_session(g, *api, id, 0, false, true, &status);
    json::value body = json::value::make_object();
    body.set("id", id);
    auto s = api->call("session.get", body);
    if (s) print_summary(g, *s);
    return rc;
  }
  if (g.output == "text")
    std::printf("%s\n", id.c_str());
  else
    std::printf("%s\n", r->dump().c_str());
  return ok;
}

int cmd_session_tool(const globals& g, const std::string& id, const std::string& tool,
                     const std::string& args_json, std::string call_id) {
  auto args = json::parse(args_json.empty() ? "{}" : args_json);
  if (!args || !args->is_object()) {
    std::fprintf(stderr, "berth: --args: %s\n",
                 args ? "expected a JSON object" : args.err().message.c_str());
    return usage;
  }
  if (call_id.empty()) call_id = new_ulid();
  if (auto st = validate_id(call_id, "--call-id"); !st) return report(st.err());
  auto api = api_client::connect(g);
  if (!api) return report(api.err());
  json::value q = json::value::make_object();
  q.set("id", id);
  auto summary = api->call("session.get", q);
  if (!summary) return report(summary.err());
  // Follow the journal from its start, so that the answer cannot slip past — and a call_id used
  // before finds its journaled result instead of running again.
  feed f;
  auto sub = api->bus().follow(api->names().stream_ev(), api->names().journal(id), 0,
                               [&f](bus::message m) { f.push(0, std::move(m)); });
  if (!sub) return report(sub.err());
  json::value call = json::value::make_object();
  call.set("type", "tool_call");
  call.set("call_id", call_id);
  call.set("tool", tool);
  call.set("args", std::move(*args));
  auto ack = api->bus().publish(api->names().input(id), call.dump());
  if (!ack) return report(ack.err());
  auto deadline = std::chrono::steady_clock::now() + api->timeout();
  while (std::chrono::steady_clock::now() < deadline) {
    auto item = f.pop(millis(250));
    if (!item) continue;
    auto ev = json::parse(item->second.data);
    if (!ev) continue;
    const auto* d = ev->find("data");
    if (!d || d->get_string("call_id") != call_id) continue;
    auto type = ev->get_string("type");
    if (type == ev::input_applied && d->get_string("kind") == "rejected")
      return report(error{errc::invalid_argument, "tool call refused: " + d->get_string("reason")});
    if (type == ev::tool_interrupted)
      return report(error{errc::cancelled, "tool call interrupted: " + d->get_string("reason")});
    if (type != ev::tool_result) continue;
    bool good = d->get_bool("ok");
    const auto* res = d->find("result");
    if (g.output != "text") {
      std::printf("%s\n", d->dump().c_str());
    } else if (!good) {
      std::fprintf(stderr, "berth: %s: %s\n", tool.c_str(),
                   res ? res->get_string("error").c_str() : "failed");
    } else if (tool == "exec" && res) {
      std::fwrite(res->get_string("stdout").data(), 1, res->get_string("stdout").size(), stdout);
      std::fwrite(res->get_string("stderr").data(), 1, res->get_string("stderr").size(), stderr);
      if (res->find("signal"))
        std::fprintf(stderr, "berth: killed by signal %lld\n",
                     static_cast<long long>(res->get_int("signal")));
      return res->get_int("exit_code", -1) == 0 ? ok : failure;
    } else if (tool == "read_file" && res && res->find("content")) {
      std::fwrite(res->get_string("content").data(), 1, res->get_string("content").size(), stdout);
    } else {
      std::printf("%s\n", res ? res->dump().c_str() : "{}");
    }
    return good ? ok : failure;
  }
  return report(error{errc::timeout, "no result for tool call " + call_id + " within " + g.timeout +
                                         " (it may still be running)"});
}

int cmd_simple(const globals& g, const std::string& verb, const json::value& body) {
  auto api = api_client::connect(g);
  if (!api) return report(api.err());
  auto r = api->call(verb, body);
  if (!r) return report(r.err());
  if (verb == "session.get") {
    print_summary(g, *r);
  } else if (verb == "session.list") {
    const auto* rows = r->find("sessions");
    if (g.output == "jsonl") {
      for (const auto& row : rows->as_array()) std::printf("%s\n", row.dump().c_str());
    } else if (g.output == "json") {
      std::printf("%s\n", r->dump().c_str());
    } else {
      std::printf("%-28s %-10s %3s  %-24s %-14s %s\n", "ID", "STATUS", "PRI", "UPDATED",
                  "FAILED STEP", "REASON");
      for (const auto& row : rows->as_array())
        std::printf("%-28s %-10s %3lld  %-24s %-14s %s\n", row.get_string("id").c_str(),
                    row.get_string("status").c_str(),
                    static_cast<long long>(row.get_int("priority")),
                    row.get_string("updated_at").c_str(),
                    row.get_string("failed_step", "-").c_str(), row.get_string("reason").c_str());
    }
  } else if (verb == "node.list" && g.output == "text") {
    std::printf("%-20s %-21s %-8s %8s %8s  %-20s %-24s %s\n", "ID", "ADDRESS", "VERSION",
                "SESSIONS", "CAPACITY", "LABELS", "LAST HEARTBEAT", "STATE");
    for (const auto& n : r->find("nodes")->as_array()) {
      std::string labels;
      if (const auto* ls = n.find("labels"); ls && ls->is_array())
        for (const auto& l : ls->as_array()) labels += (labels.empty() ? "" : ",") + l.as_string();
      std::printf("%-20s %-21s %-8s %8lld %8lld  %-20s %-24s %s\n", n.get_string("id").c_str(),
                  n.get_string("address", "-").c_str(), n.get_string("version").c_str(),
                  static_cast<long long>(n.get_int("sessions")),
                  static_cast<long long>(n.get_int("max_sessions")),
                  labels.empty() ? "-" : labels.c_str(), n.get_string("last_heartbeat").c_str(),
                  n.get_string("state").c_str());
    }
  } else if (g.output == "text") {
    for (const auto& [k, v] : r->as_object())
      std::printf("%-20s %s\n", k.c_str(),
                  v.is_string() ? v.as_string().c_str() : v.dump().c_str());
  } else {
    std::printf("%s\n", r->dump().c_str());
  }
  return ok;
}

}  // namespace berth::cli
