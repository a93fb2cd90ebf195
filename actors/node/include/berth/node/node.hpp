#pragma once

#include "berth/config/config.hpp"

#include <string>

namespace berth::node {

/// Run a node until SIGTERM or SIGINT: open the snapshot store, start or connect to NATS,
/// provision streams, resume this node's sessions, take placements, answer the API. Writes
/// `<data-dir>/node.json` once ready. Returns the process exit code (0 after a graceful stop).
/// Called from main(); owns the actor system.
int run_node(const config::config& cfg);

/// Where the CLI looks for the node it should talk to when nothing else says:
/// $XDG_STATE_HOME/berth/last-node (default ~/.local/state/berth/last-node), holding the path
/// of the node.json of the node started last on this machine by this user.
std::string last_node_pointer_path();

}  // namespace berth::node
