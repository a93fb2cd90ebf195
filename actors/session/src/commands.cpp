// Commands in the session's sandbox: steps (run, setup, command agents) and exec tool calls,
// both started by start_command, so that they get the same environment, directory, limits and
// output streaming.

#include "actor_state.hpp"

#include "berth/base/process.hpp"
#include "berth/base/redact.hpp"
#include "berth/setup/environment.hpp"

#include <filesystem>
#include <thread>

namespace berth::session {

using namespace core;  // NOLINT(google-build-using-namespace): the session runs the core

void command_process::stop(millis g) {
  std::lock_guard lock(mu);
  if (cmd) {
    cmd->stop(g);
  } else {
    stop_requested = true;
    grace = g;
  }
}

namespace {

// One command to start: what it runs, where its output goes, and what happens around it.
struct command_job {
  sandbox::command cmd;
  std::string log_subject;                         // berth.log.<session>.<step | tool-<call>>
  std::map<std::string, std::string> log_headers;  // besides Berth-Stream (and Berth-Truncated)
  /// Also sees every chunk (exec keeps the start of its output for the result); any thread.
  std::function<void(int stream, std::string_view chunk)> tap;
  std::shared_ptr<command_process> proc;
  /// On the launcher thread, before the command starts (a setup step seeds its caches).
  std::function<void(sandbox::command&)> before;
  /// On the launcher thread: it could not start (proc->start_error is set).
  std::function<void(const error&)> start_failed;
  /// On the launcher thread: it started.
  std::function<void()> started;
  /// On the thread that waited for it: it ended (proc->result is set).
  std::function<void(const sandbox::outcome&)> ended;
};

// The command every caller starts from: the session's sandbox, its working directory, the
// sandbox environment (paths as the command sees them, never the node's) and output limits.
sandbox::command base_command(const session_state_actor& s, bool network) {
  auto& rt = *s.rt;
  sandbox::command cmd;
  cmd.session = s.id;
  auto where = rt.runner->layout_of(s.id);
  cmd.cwd = where.work;
  cmd.env = setup::base_environment(where, s.id, rt.cfg.sandbox.env);
  if (!s.m->state().spec.goal.empty()) cmd.env["BERTH_GOAL"] = s.m->state().spec.goal;
  cmd.network = network;
  cmd.max_output_bytes = rt.cfg.session.max_output_bytes;
  cmd.chunk_bytes = static_cast<std::size_t>(rt.cfg.session.output_chunk_bytes);
  return cmd;
}

// Start `job` on the launcher pool; its wait runs on a thread of its own (it blocks for as long
// as the command runs). The working directory is made here (the work root was checked for
// writability at start-up); failing that is a start failure.
void start_command(actor_t* self, command_job job) {
  auto& s = self->state;
  auto& rt = *s.rt;
  std::error_code dir_ec;
  auto dir = workdir(rt, s.id);
  std::filesystem::create_directories(dir, dir_ec);
  if (dir_ec) {
    error e{errc::io_error, "session working directory " + dir + ": " + dir_ec.message()};
    {
      std::lock_guard lock(job.proc->mu);
      job.proc->start_error = e;
    }
    job.start_failed(e);
    return;
  }
  auto on_output = [bus = rt.bus, subject = job.log_subject, headers = job.log_headers,
                    tap = job.tap](int stream, std::string_view chunk, bool truncated) {
    auto h = headers;
    h["Berth-Stream"] = stream == 1 ? "stdout" : "stderr";
    if (truncated) h["Berth-Truncated"] = "true";
    // Output is best effort (core NATS, BERTH_LOG): a lost chunk never stops the command.
    (void)bus->publish_core(subject, redact::apply(chunk), h);
    if (tap) tap(stream, chunk);
  };
  rt.launcher->post([runner = rt.runner, job = std::move(job), on_output]() mutable {
    if (job.before) job.before(job.cmd);
    auto started = runner->start(job.cmd, on_output);
    auto proc = job.proc;
    {
      std::lock_guard lock(proc->mu);
      if (!started) {
        proc->start_error = started.err();
      } else {
        proc->cmd = std::move(*started);
        proc->pid = proc->cmd->pid();  // -1 in a sandbox: nothing to record for a leftover kill
        if (proc->pid > 0) proc->start_time = process::start_time(proc->pid).value_or(0);
        if (proc->stop_requested) proc->cmd->stop(proc->grace);
      }
    }
    if (!started) {
      job.start_failed(started.err());
      return;
    }
    job.started();
    std::thread([proc, ended = std::move(job.ended)] {
      auto out = proc->cmd->wait();
      {
        std::lock_guard lock(proc->mu);
        proc->result = out;
      }
      ended(out);
    }).detach();
  });
}

}  // namespace

void launch_step(actor_t* self, const action& a) {
  auto& s = self->state;
  auto& rt = *s.rt;
  const step_spec* spec = s.m->state().spec.step(a.step);
  BERTH_ASSERT(spec != nullptr, "launch of unknown step " + a.step);
  if (spec->kind != step_kind::run && spec->kind != step_kind::setup &&
      spec->kind != step_kind::agent) {
    // commit, push, pull_request: git and forge work of the node, on the I/O pool.
    rt.counters.steps_started++;
    start_git_step(self, a, *spec);
    return;
  }
  const auto& state = s.m->state();
  const auto* st = state.step(a.step);
  const auto& net = spec->network.empty() ? state.spec.network : spec->network;
  command_job job;
  job.cmd = base_command(s, net == "host");
  job.cmd.argv = spec->run;
  std::shared_ptr<wsops::setup_job> setup_job;
  if (spec->kind == step_kind::setup) {
    setup_job = std::make_shared<wsops::setup_job>(
        wsops::plan_setup(rt, s.id, spec->run, spec->env, job.cmd.network));
    job.cmd.argv = setup_job->argv;
  }
  if (spec->kind == step_kind::agent) {
    // A command agent: its argv with {goal}, {step}, {session}, {attempt} and {loop} filled in.
    std::map<std::string, std::string> vars = {{"{goal}", state.spec.goal},
                                               {"{step}", a.step},
                                               {"{session}", s.id},
                                               {"{attempt}", std::to_string(a.attempt)},
                                               {"{loop}", std::to_string(st ? st->loops : 0)}};
    job.cmd.argv.clear();
    for (auto arg : spec->agent_run) {
      for (const auto& [k, v] : vars)
        for (auto p = arg.find(k); p != std::string::npos; p = arg.find(k, p + v.size()))
          arg.replace(p, k.size(), v);
      job.cmd.argv.push_back(std::move(arg));
    }
  }
  auto& env = job.cmd.env;
  env["BERTH_STEP"] = a.step;
  env["BERTH_ATTEMPT"] = std::to_string(a.attempt);
  if (spec->kind == step_kind::agent) {
    // The step's context: how the steps it needs ended, and why it runs again after a loop.
    json::value ctx = json::value::make_object();
    ctx.set("goal", state.spec.goal);
    ctx.set("step", a.step);
    ctx.set("loop", st ? st->loops : 0);
    ctx.set("needs", state.needs_of(*spec));
    env["BERTH_CONTEXT"] = ctx.dump();
    env["BERTH_LOOP"] = std::to_string(st ? st->loops : 0);
  }
  for (const auto& [k, v] : spec->env) env[k] = v;
  if (job.cmd.argv.empty() || job.cmd.argv[0].empty()) {
    exit_result r;
    r.start_failed = true;
    r.error =
        std::string(spec->kind == step_kind::setup ? "setup" : "step") + " has no command to run";
    s.m->step_exited(a.step, a.attempt, r, now_unix_ms());
    return;
  }

  running_step r;
  r.step = a.step;
  r.attempt = a.attempt;
  r.proc = std::make_shared<command_process>();
  r.proc->setup = setup_job;
  if (auto old = s.cmds.steps.find(a.step); old != s.cmds.steps.end()) {
    // An earlier attempt sent back by a loop, still stopping: its end is stale now.
    old->second.proc->stop(millis(0));
    rt.counters.steps_running--;
  }
  s.cmds.steps[a.step] = r;
  rt.counters.steps_running++;
  rt.counters.steps_started++;

  caf::actor me = caf::actor_cast<caf::actor>(self);
  // A scratch workspace has no checkpoint to take: its quota is checked on the thread that
  // waited for the command, not in a workspace job of its own (one hop less per step).
  bool quota_here = !state.has_repo() && rt.cfg.workspace.quota_bytes > 0;
  job.log_subject = rt.names.log(s.id, a.step);
  job.log_headers = {{"Berth-Attempt", std::to_string(a.attempt)}};
  job.proc = r.proc;
  job.before = [rtp = s.rt, proc = r.proc](sandbox::command& cmd) {
    if (!proc->setup) return;
    wsops::begin_setup(*rtp, *proc->setup);
    cmd.argv = proc->setup->argv;  // without npm ci when the node restored its tree
  };
  job.start_failed = [me, step = a.step, att = a.attempt](const error&) {
    caf::anon_send(me, exited_atom::value, step, att);
  };
  job.started = [me, step = a.step, att = a.attempt] {
    caf::anon_send(me, stepup_atom::value, step, att);
  };
  job.ended = [me, step = a.step, att = a.attempt, proc = r.proc, quota_here, rtp = s.rt,
               id = s.id](const sandbox::outcome&) {
    if (proc->setup) wsops::end_setup(*rtp, *proc->setup);
    std::optional<error> over;
    if (quota_here)
      if (auto q = wsops::check_quota(*rtp, id); !q) over = q.err();
    {
      std::lock_guard lock(proc->mu);
      proc->over_quota = std::move(over);
    }
    caf::anon_send(me, exited_atom::value, step, att);
  };
  start_command(self, std::move(job));
  if (spec->timeout)
    self->delayed_send(self, *spec->timeout, steptmo_atom::value, a.step, a.attempt);
}

void kill_step(actor_t* self, const std::string& step, stop_cause cause, std::string text) {
  auto& s = self->state;
  auto it = s.cmds.steps.find(step);
  if (it == s.cmds.steps.end() || it->second.cause != stop_cause::none) return;
  it->second.cause = cause;
  it->second.stop_text = text.empty() ? std::string(to_string(cause)) : std::move(text);
  it->second.proc->stop(s.rt->cfg.session.kill_grace);
}

std::optional<step_end> take_step_end(actor_t* self, const std::string& step,
                                      std::int64_t attempt) {
  auto& s = self->state;
  auto it = s.cmds.steps.find(step);
  if (it == s.cmds.steps.end() || it->second.attempt != attempt) return std::nullopt;
  auto r = std::move(it->second);
  s.cmds.steps.erase(it);
  s.rt->counters.steps_running--;
  step_end end;
  auto& x = end.exit;
  {
    std::lock_guard lock(r.proc->mu);
    if (r.proc->start_error) {
      x.start_failed = true;
      x.error = r.proc->start_error->message;
    }
    const auto& o = r.proc->result;
    x.exit_code = o.exit_code;
    x.signal = o.signal;
    x.duration_ms = o.duration_ms;
    x.duration_us = o.duration_us;
    x.truncated = o.truncated;
    x.oom_killed = o.oom_killed;
    x.peak_memory_bytes = o.peak_memory_bytes;
    end.over_quota = r.proc->over_quota;
  }
  if (!x.start_failed) {
    switch (r.cause) {
      case stop_cause::none:
        break;
      case stop_cause::node_stop:
        x.interrupted = true;
        break;
      case stop_cause::step_timeout:
      case stop_cause::session_timeout:
        x.timed_out = true;
        x.error = r.stop_text;
        break;
      case stop_cause::cancelled:
      case stop_cause::sent_back:
        x.error = r.stop_text;
        break;
    }
  }
  if (r.proc->setup) wsops::describe_setup(*r.proc->setup, x);
  return end;
}

// --- exec tool calls ----------------------------------------------------------------------------

namespace {
constexpr std::size_t inline_output_bytes = std::size_t{16}
                                            << 10;  // of exec's stdout/stderr, in the result
}  // namespace

// `exec`: a command in the session's sandbox, output streamed to berth.log.<id>.tool-<call>.
void start_exec_tool(actor_t* self, const std::string& call_id, const json::value& args) {
  auto& s = self->state;
  auto& rt = *s.rt;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  auto refuse = [&](const error& e) {
    caf::anon_send(me, tooldone_atom::value, call_id, tool_error(e).dump());
  };
  auto bad = [&](const std::string& field, const std::string& why) {
    refuse(error{errc::invalid_argument, "args." + field + ": " + why});
  };
  s.cmds.tools[call_id] = nullptr;  // started (or refused) once
  command_job job;
  job.cmd = base_command(s, s.m->state().spec.network == "host");
  auto& cmd = job.cmd;
  const auto* argv = args.find("argv");
  if (!argv || !argv->is_array() || argv->as_array().empty())
    return bad("argv", "required, a non-empty array of strings");
  for (const auto& a : argv->as_array()) {
    if (!a.is_string()) return bad("argv", "must hold strings only");
    cmd.argv.push_back(a.as_string());
  }
  if (auto cwd = args.get_string("cwd"); !cwd.empty())
    cmd.cwd = cwd[0] == '/' ? cwd : cmd.cwd + "/" + cwd;
  cmd.env["BERTH_TOOL_CALL"] = call_id;
  if (const auto* env = args.find("env"); env && env->is_object())
    for (const auto& [k, v] : env->as_object()) {
      if (!v.is_string()) return bad("env." + k, "must be a string");
      cmd.env[k] = v.as_string();
    }
  if (const auto* in = args.find("stdin"); in && in->is_string()) cmd.stdin_data = in->as_string();
  millis timeout = std::chrono::minutes(10);
  if (auto t = args.get_string("timeout"); !t.empty()) {
    auto d = parse_duration(t, "args.timeout");
    if (!d) return refuse(error{errc::invalid_argument, d.err().message});
    timeout = *d;
  }
  auto proc = std::make_shared<command_process>();
  s.cmds.tools[call_id] = proc;
  struct captured {
    std::mutex mu;
    std::string out, err;
  };
  auto cap = std::make_shared<captured>();
  auto subject = rt.names.log(s.id, "tool-" + call_id);
  job.log_subject = subject;
  job.proc = proc;
  job.tap = [cap](int stream, std::string_view chunk) {
    std::lock_guard lock(cap->mu);
    auto& keep = stream == 1 ? cap->out : cap->err;
    if (keep.size() < inline_output_bytes)
      keep.append(chunk.substr(0, inline_output_bytes - keep.size()));
  };
  job.start_failed = [me, call_id](const error& e) {
    caf::anon_send(me, tooldone_atom::value, call_id, tool_error(e).dump());
  };
  job.started = [] {};
  job.ended = [r = s.rt, id = s.id, call_id, proc, cap, me, subject](const sandbox::outcome& out) {
    json::value res = json::value::make_object();
    res.set("ok", true);
    if (out.signal)
      res.set("signal", out.signal);
    else
      res.set("exit_code", out.exit_code);
    res.set("duration_ms", out.duration_ms);
    res.set("peak_memory_bytes", out.peak_memory_bytes);
    if (out.oom_killed) res.set("oom_killed", true);
    bool timed_out;
    {
      std::lock_guard lock(proc->mu);
      timed_out = proc->stop_requested;
    }
    if (timed_out) res.set("timed_out", true);
    {
      std::lock_guard lock(cap->mu);
      res.set("stdout", cap->out);
      res.set("stderr", cap->err);
    }
    res.set("stdout_bytes", static_cast<std::int64_t>(out.stdout_bytes));
    res.set("stderr_bytes", static_cast<std::int64_t>(out.stderr_bytes));
    if (out.truncated) res.set("truncated", true);
    res.set("log_subject", subject);
    caf::anon_send(me, tooldone_atom::value, call_id,
                   offload(*r, id, call_id, std::move(res)).dump());
  };
  start_command(self, std::move(job));
  self->delayed_send(self, timeout, tooltmo_atom::value, call_id);
}

}  // namespace berth::session
