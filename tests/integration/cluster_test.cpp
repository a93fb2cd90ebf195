// Nodes joined by config (label `cluster`): real `berth node` processes on loopback, each with
// its embedded nats-server routed to the others' cluster.listen.
#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/net.hpp"
#include "berth/bus/client.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

using namespace berth;

namespace {

struct three_nodes {
  test::temp_dir dir;
  std::vector<std::unique_ptr<test::node_process>> nodes;

  three_nodes() {
    std::vector<int> ports;
    for (int i = 0; i < 3; ++i) ports.push_back(net::free_loopback_port());
    for (int i = 0; i < 3; ++i) {
      std::string peers;
      for (int j = 0; j < 3; ++j)
        if (j != i)
          peers += (peers.empty() ? "" : ", ") + std::string("\"127.0.0.1:") +
                   std::to_string(ports[static_cast<std::size_t>(j)]) + "\"";
      auto conf = dir / ("node" + std::to_string(i) + ".toml");
      test::write_file(conf, "[cluster]\nlisten = \"127.0.0.1:" +
                                 std::to_string(ports[static_cast<std::size_t>(i)]) +
                                 "\"\npeers = [" + peers + "]\n");
      nodes.push_back(std::make_unique<test::node_process>(
          dir / ("node" + std::to_string(i)), std::vector<std::string>{"--config", conf}));
    }
    // The first nodes of a cluster become ready together: each waits for the replicated
    // streams, which need all three servers.
    for (auto& n : nodes) test::check(n->launch());
    for (auto& n : nodes) {
      auto st = n->wait_ready(std::chrono::seconds(120));
      if (!st) throw std::runtime_error(st.err().message + "\n" + n->log());
    }
  }
};

json::value stream_info(const test::node_process& node, const std::string& stream) {
  auto nj = json::parse(*fs::read_file(node.data_dir() + "/node.json"));
  bus::client::options o;
  o.servers = {nj->get_string("nats_url")};
  auto c = bus::client::connect(o);
  if (!c) throw std::runtime_error(c.err().message);
  auto r = (*c)->request("$JS.API.STREAM.INFO." + stream, "", millis(5000));
  if (!r) throw std::runtime_error(r.err().message);
  auto v = json::parse(r->data);
  if (!v) throw std::runtime_error("stream info: " + r->data);
  return *v;
}

}  // namespace

TEST(cluster, three_nodes_joined_by_config_replicate_every_stream_and_share_the_sessions) {
  three_nodes c;
  // Every stream is held by all three servers (replicas default to 3 with two peers).
  for (const char* stream : {"BERTH_IN", "BERTH_EV", "BERTH_LOG", "BERTH_WORK"}) {
    auto info = stream_info(*c.nodes[1], stream);
    ASSERT_TRUE(info.find("config")) << info.dump();
    EXPECT_EQ(info.find("config")->get_int("num_replicas"), 3) << stream << " " << info.dump();
    const auto* cl = info.find("cluster");
    ASSERT_TRUE(cl && cl->find("replicas")) << info.dump();
    EXPECT_EQ(cl->find("replicas")->as_array().size(), 2u) << stream << " " << info.dump();
  }
  // Sessions submitted to one node are placed by whichever node has capacity, and every node
  // answers for every session.
  auto wf = c.dir / "wf.toml";
  test::write_file(wf,
                   "[[steps]]\nid = \"a\"\nrun = [\"true\"]\n[[steps]]\nid = \"b\"\n"
                   "run = [\"sh\", \"-c\", \"exit 0\"]\n");
  std::vector<std::string> ids;
  std::set<std::string> owners;
  for (int i = 0; i < 6; ++i) {
    std::string err;
    auto id = test::start_session(*c.nodes[0], wf, {}, &err);
    ASSERT_FALSE(id.empty()) << err;
    ids.push_back(id);
  }
  for (const auto& id : ids) {
    ASSERT_TRUE(test::eventually(
        [&] { return test::session_field(*c.nodes[2], id, "status") == "succeeded"; },
        std::chrono::seconds(90)))
        << id << " is " << test::session_field(*c.nodes[2], id, "status");
    auto evs = test::journal(*c.nodes[1], id);
    EXPECT_EQ(test::journal_problems(evs), "") << id;
    for (const auto& e : evs)
      if (e.get_string("type") == "session.started")
        owners.insert(e.find("data")->get_string("node"));
  }
  // Which nodes ran them (placement is first come, so not asserted beyond "some node").
  EXPECT_GE(owners.size(), 1u);
  RecordProperty("owner_nodes", static_cast<int>(owners.size()));
  std::printf("sessions ran on %zu node(s)\n", owners.size());
}

TEST(cluster, every_node_is_listed_with_its_state_and_a_killed_one_turns_suspect_then_dead) {
  three_nodes c;
  auto list = [&](const test::node_process& from) {
    std::map<std::string, json::value> by_id;
    auto r = test::cli(from, {"node", "list", "-o", "json"});
    auto v = r.json();
    if (r.code != 0 || !v) return by_id;
    for (const auto& n : v->find("nodes")->as_array()) by_id[n.get_string("id")] = n;
    return by_id;
  };
  auto id_of = [](const test::node_process& n) {
    return json::parse(*fs::read_file(n.data_dir() + "/node.json"))->get_string("node");
  };
  ASSERT_TRUE(test::eventually([&] {
    auto l = list(*c.nodes[0]);
    if (l.size() != 3) return false;
    for (const auto& [_, n] : l)
      if (n.get_string("state") != "ready") return false;
    return true;
  })) << test::cli(*c.nodes[0], {"node", "list"}).out;
  auto l = list(*c.nodes[1]);
  for (const auto& node : c.nodes) {
    const auto& n = l[id_of(*node)];
    EXPECT_FALSE(n.get_string("version").empty()) << n.dump();
    EXPECT_EQ(n.get_string("address").rfind("127.0.0.1:", 0), 0u) << n.dump();
    EXPECT_GT(n.get_int("max_sessions"), 0) << n.dump();
    EXPECT_FALSE(n.get_string("last_heartbeat").empty()) << n.dump();
  }
  auto text = test::cli(*c.nodes[0], {"node", "list"});
  EXPECT_EQ(text.code, 0) << text.err;
  EXPECT_NE(text.out.find("LAST HEARTBEAT"), std::string::npos) << text.out;
  // kill -9 of a node (its nats-server stays, as after a crash of the node process alone):
  // three missed heartbeats make it suspect, the TTL (10 s) dead.
  auto gone = id_of(*c.nodes[2]);
  c.nodes[2]->kill9();
  std::set<std::string> seen;
  ASSERT_TRUE(test::eventually(
      [&] {
        auto s = list(*c.nodes[0])[gone].get_string("state");
        seen.insert(s);
        return s == "dead";
      },
      std::chrono::seconds(40)))
      << list(*c.nodes[0])[gone].dump();
  EXPECT_TRUE(seen.count("suspect")) << "suspect was never reported before dead";
  EXPECT_EQ(list(*c.nodes[1])[id_of(*c.nodes[0])].get_string("state"), "ready");
}

TEST(cluster, a_node_whose_peers_never_come_stops_after_join_timeout_saying_why) {
  test::temp_dir dir;
  auto conf = dir / "lonely.toml";
  // Two peers nobody runs: the three replicas the streams need can never be placed.
  test::write_file(conf,
                   "[cluster]\nlisten = \"127.0.0.1:" + std::to_string(net::free_loopback_port()) +
                       "\"\npeers = [\"127.0.0.1:" + std::to_string(net::free_loopback_port()) +
                       "\", \"127.0.0.1:" + std::to_string(net::free_loopback_port()) +
                       "\"]\njoin_timeout = \"3s\"\n");
  test::node_process node(dir / "node", {"--config", conf});
  test::check(node.launch());
  int st = node.wait_exit(std::chrono::seconds(90));
  ASSERT_NE(st, -1) << "the node still waits:\n" << node.log();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) != 0) << st;
  EXPECT_NE(node.log().find("the cluster did not form within cluster.join_timeout"),
            std::string::npos)
      << node.log();
  EXPECT_NE(node.log().find("waiting for the cluster (3 replicas, 2 peer(s)) up to 3s"),
            std::string::npos)
      << node.log();
  EXPECT_FALSE(std::filesystem::exists(dir / "node/node.json"));
}
