#pragma once

// What arrives on a session's input subject (berth.in.<session>) and how the machine records
// it: the message types clients send, the kinds input.applied journals, and the tools an agent
// may call. machine::input (inputs.cpp) validates each message against these.

namespace berth::core {

/// Input message types (`"type"` of a message on berth.in.<session>).
namespace input_types {
inline constexpr char start[] = "start";  ///< the spec, written by session.start (message 1)
inline constexpr char cancel[] = "cancel";
inline constexpr char input[] = "input";            ///< human or client input, `data`
inline constexpr char agent_done[] = "agent_done";  ///< an external agent's outcome
inline constexpr char tool_call[] = "tool_call";    ///< an external agent's tool call
}  // namespace input_types

/// What input.applied's `kind` says of an input.
namespace input_kinds {
inline constexpr char cancel[] = "cancel";
inline constexpr char input[] = "input";
inline constexpr char duplicate_start[] = "duplicate_start";  ///< an idempotent start again
inline constexpr char agent_done[] = "agent_done";
inline constexpr char tool_call[] = "tool_call";
inline constexpr char rejected[] = "rejected";  ///< with `reason` naming the field
}  // namespace input_kinds

/// agent_done outcomes.
namespace outcomes {
inline constexpr char success[] = "success";
inline constexpr char failure[] = "failure";
inline constexpr char reject[] = "reject";  ///< send the work back (on_reject)
}  // namespace outcomes

/// The tools an agent may call (docs/agents.md).
namespace tools {
inline constexpr char exec[] = "exec";
inline constexpr char read_file[] = "read_file";
inline constexpr char write_file[] = "write_file";
inline constexpr char edit[] = "edit";
inline constexpr char list_dir[] = "list_dir";
inline constexpr char search[] = "search";
inline constexpr const char* all[] = {exec, read_file, write_file, edit, list_dir, search};
}  // namespace tools

}  // namespace berth::core
