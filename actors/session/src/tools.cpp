// Tool calls of external agents: run one at a time, in journal order, once tool.call is
// committed; results too large for the journal go to BERTH_LOG.

#include "actor_state.hpp"

#include "berth/core/inputs.hpp"

namespace berth::session {

using namespace core;  // NOLINT(google-build-using-namespace): the session runs the core

namespace {
constexpr std::size_t inline_result_bytes = std::size_t{64}
                                            << 10;  // larger results go to BERTH_LOG
}  // namespace

json::value tool_error(const error& e) {
  json::value r = json::value::make_object();
  r.set("ok", false);
  r.set("code", std::string(errc_name(e.code)));
  r.set("error", e.message);
  return r;
}

json::value offload(runtime& rt, const std::string& session, const std::string& call_id,
                    json::value result) {
  auto text = result.dump();
  if (text.size() <= inline_result_bytes) return result;
  auto subject = rt.names.log(session, "tool-" + call_id);
  auto ack = rt.bus->publish(subject, text);
  if (!ack)
    return tool_error(error{ack.err().code, "storing the tool result: " + ack.err().message});
  json::value r = json::value::make_object();
  r.set("ok", result.get_bool("ok"));
  r.set("result_subject", subject);
  r.set("result_seq", ack->seq);
  r.set("result_bytes", static_cast<std::int64_t>(text.size()));
  return r;
}

bool tool_changes_files(const std::string& tool) {
  return tool == tools::exec || tool == tools::write_file || tool == tools::edit;
}

// One at a time, in journal order, so a call sees the effects of the calls before it.
void dispatch_tools(actor_t* self) {
  auto& s = self->state;
  if (!s.cmds.tools.empty()) return;
  const auto& state = s.m->state();
  std::string next;
  std::int64_t next_n = 0;
  for (const auto& [call_id, status] : state.tool_calls) {
    if (status != tool_states::running) continue;
    auto a = state.tool_args.find(call_id);
    auto n = a != state.tool_args.end() ? a->second.get_int("n") : 0;
    if (next.empty() || n < next_n) {
      next = call_id;
      next_n = n;
    }
  }
  if (next.empty()) return;
  const auto& call_id = next;
  auto a = state.tool_args.find(call_id);
  json::value spec = a != state.tool_args.end() ? a->second : json::value::make_object();
  auto tool = spec.get_string("tool");
  json::value args = spec.find("args") ? *spec.find("args") : json::value::make_object();
  if (tool == tools::exec) {
    start_exec_tool(self, call_id, args);
    return;
  }
  s.cmds.tools[call_id] = nullptr;
  auto r = s.rt;
  auto id = s.id;
  caf::actor me = caf::actor_cast<caf::actor>(self);
  r->io->post([r, id, call_id, tool, args, me] {
    auto res = r->runner->file_tool(id, tool, args);
    json::value out;
    if (res) {
      out = std::move(*res);
      out.set("ok", true);
    } else {
      out = tool_error(res.err());
    }
    caf::anon_send(me, tooldone_atom::value, call_id,
                   offload(*r, id, call_id, std::move(out)).dump());
  });
}

}  // namespace berth::session
