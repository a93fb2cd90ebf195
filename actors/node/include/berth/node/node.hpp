#pragma once

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/bus/client.hpp"
#include "berth/config/config.hpp"

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace berth::node {

/// Something that runs in the node's process and talks to the cluster only through NATS (the
/// gateway, which lives above this library): `start` runs once the node answers its API, with
/// the node's NATS connection and its data dir, and returns fields for node.json (e.g.
/// console_url); an error stops the node. `stop` runs first when the node stops.
struct companion {
  std::function<result<json::value>(std::shared_ptr<bus::client>, const std::string& data_dir)>
      start;
  std::function<void()> stop;
};

/// Run a node until SIGTERM or SIGINT: open the snapshot store, start or connect to NATS,
/// provision streams, resume this node's sessions, take placements, answer the API, start the
/// companions. Writes `<data-dir>/node.json` once ready. Returns the process exit code (0 after
/// a graceful stop). Called from main(); owns the actor system.
int run_node(const config::config& cfg, const std::vector<companion>& companions = {});

/// Where the CLI looks for the node it should talk to when nothing else says:
/// $XDG_STATE_HOME/berth/last-node (default ~/.local/state/berth/last-node), holding the path
/// of the node.json of the node started last on this machine by this user.
std::string last_node_pointer_path();

}  // namespace berth::node
