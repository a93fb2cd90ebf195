#include "berth/config/config.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

using namespace berth;

TEST(config, defaults_cover_every_section) {
  auto c = config::defaults();
  EXPECT_EQ(c.node.max_sessions, 100);
  EXPECT_EQ(c.cluster.subject_prefix, "berth");
  EXPECT_EQ(c.session.default_timeout, millis(3'600'000));
  EXPECT_EQ(c.log.format, "text");
}

TEST(config, parses_values_and_durations) {
  auto c = config::parse(
      "[node]\nmax_sessions = 7\nshutdown_grace = \"1m30s\"\n[log]\nformat = \"json\"\n", "t.toml");
  ASSERT_TRUE(c.ok()) << c.err().message;
  EXPECT_EQ(c->node.max_sessions, 7);
  EXPECT_EQ(c->node.shutdown_grace, millis(90'000));
  EXPECT_EQ(c->log.format, "json");
}

TEST(config, unknown_key_is_an_error_with_line_and_column) {
  auto c = config::parse("[node]\nmax_sessions = 7\nmax_sesions = 8\n", "t.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.err().message.find("t.toml:3:1"), std::string::npos) << c.err().message;
  EXPECT_NE(c.err().message.find("unknown key node.max_sesions"), std::string::npos);
}

TEST(config, unknown_section_is_an_error) {
  auto c = config::parse("[nodes]\nx = 1\n", "t.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.err().message.find("t.toml:1:"), std::string::npos) << c.err().message;
  EXPECT_NE(c.err().message.find("unknown section [nodes]"), std::string::npos);
}

TEST(config, wrong_type_names_the_key_and_position) {
  auto c = config::parse("[node]\nmax_sessions = \"many\"\n", "t.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(
      c.err().message.find("t.toml:2:16: node.max_sessions: expected an integer, got a string"),
      std::string::npos)
      << c.err().message;
}

TEST(config, out_of_range_and_bad_choice_and_bad_duration) {
  auto a = config::parse("[node]\nmax_sessions = 0\n", "t.toml");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.err().message.find("out of range"), std::string::npos);
  auto b = config::parse("[log]\nformat = \"xml\"\n", "t.toml");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.err().message.find("log.format: \"xml\" is not one of"), std::string::npos);
  auto d = config::parse("[node]\nshutdown_grace = \"10 parsecs\"\n", "t.toml");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.err().message.find("node.shutdown_grace: invalid duration"), std::string::npos)
      << d.err().message;
}

TEST(config, malformed_toml_reports_position) {
  auto c = config::parse("[node\nmax_sessions = 1\n", "t.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.err().message.find("t.toml:1:"), std::string::npos) << c.err().message;
  EXPECT_NE(c.err().message.find("invalid TOML"), std::string::npos);
}

TEST(config, env_overrides_and_names_bad_variable) {
  auto c = config::defaults();
  ASSERT_TRUE(config::apply_env(c, {{"BERTH_NODE_MAX_SESSIONS", "9"},
                                    {"BERTH_NATS_SERVERS", "nats://a:1,nats://b:2"}})
                  .ok());
  EXPECT_EQ(c.node.max_sessions, 9);
  EXPECT_EQ(c.nats.servers.size(), 2u);
  auto st = config::apply_env(c, {{"BERTH_NODE_MAX_SESSIONS", "lots"}});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.err().message.find("BERTH_NODE_MAX_SESSIONS"), std::string::npos);
}

TEST(config, printed_defaults_parse_back_to_the_defaults) {
  auto text = config::print_defaults_toml();
  auto c = config::parse(text, "defaults.toml");
  ASSERT_TRUE(c.ok()) << c.err().message;
  EXPECT_EQ(c->node.max_sessions, config::defaults().node.max_sessions);
  EXPECT_EQ(c->nats.duplicate_window, config::defaults().nats.duplicate_window);
}

TEST(config, subject_prefix_must_be_a_single_token) {
  auto c = config::parse("[cluster]\nsubject_prefix = \"a.b\"\n", "t.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.err().message.find("cluster.subject_prefix"), std::string::npos);
}

TEST(config, docs_configuration_md_is_generated_from_the_schema) {
  std::ifstream in(std::string(BERTH_SOURCE_DIR) + "/docs/configuration.md");
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), config::reference_markdown())
      << "docs/configuration.md is stale: run `berth config print --markdown > "
         "docs/configuration.md`";
}

TEST(config, a_cluster_is_joined_by_listen_and_peers_and_replicas_follow_it) {
  auto one = config::parse("", "t.toml");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(config::effective_replicas(*one), 1);
  auto three = config::parse(
      "[cluster]\nlisten = \"127.0.0.1:6222\"\npeers = [\"10.0.0.2:6222\", "
      "\"nats-route://node-c.internal:6222\"]\n",
      "t.toml");
  ASSERT_TRUE(three.ok()) << three.err().message;
  EXPECT_EQ(config::effective_replicas(*three), 3);
  auto two = config::parse("[cluster]\nlisten = \"127.0.0.1:6222\"\npeers = [\"10.0.0.2:6222\"]\n",
                           "t.toml");
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(config::effective_replicas(*two), 2);
  auto pinned = config::parse(
      "[cluster]\nlisten = \"127.0.0.1:6222\"\npeers = [\"a:1\", \"b:2\"]\n[nats]\nreplicas = 1\n",
      "t.toml");
  ASSERT_TRUE(pinned.ok());
  EXPECT_EQ(config::effective_replicas(*pinned), 1);
}

TEST(config, hostile_cluster_settings_are_refused_naming_the_key) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[cluster]\npeers = [\"10.0.0.2:6222\"]\n", "cluster.peers: needs cluster.listen"},
      {"[cluster]\nlisten = \"6222\"\n", "cluster.listen: \"6222\" is not host:port"},
      {"[cluster]\nlisten = \"host:99999\"\n", "cluster.listen: \"host:99999\" is not host:port"},
      {"[cluster]\nlisten = \"h:1\"\npeers = [\"h:\"]\n",
       "cluster.peers[0]: \"h:\" is not host:port"},
      {"[cluster]\nlisten = \"h:1\"\npeers = [\"u:p@h:2\"]\n", "cluster.peers[0]"},
      {"[cluster]\nlisten = \"h:1\"\npeers = [\"h:2\"]\n[nats]\nservers = [\"nats://x:4222\"]\n",
       "cluster.peers: routes of the embedded nats-server"},
      {"[nats]\nreplicas = 3\n", "nats.replicas: 3 needs 3 servers"},
      {"[cluster]\nheartbeat = \"5s\"\nnode_ttl = \"10s\"\n",
       "cluster.node_ttl: 10s must be more than three heartbeats (cluster.heartbeat = 5s)"},
      {"[cluster]\nlisten = \"h:1\"\npeers = [\"h:2\"]\n[nats]\nreplicas = 3\n",
       "nats.replicas: 3 needs 3 servers; this node and cluster.peers make 2"},
  };
  for (const auto& [text, want] : cases) {
    auto c = config::parse(text, "t.toml");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_NE(c.err().message.find(want), std::string::npos) << c.err().message;
    EXPECT_EQ(c.err().message.rfind("t.toml: ", 0), 0u) << c.err().message;
  }
  // The same rules hold for the environment.
  auto base = config::parse("", "t.toml");
  ASSERT_TRUE(base.ok());
  auto st = config::apply_env(*base, {{"BERTH_CLUSTER_PEERS", "10.0.0.2:6222"}});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.err().message.find("cluster.peers: needs cluster.listen"), std::string::npos)
      << st.err().message;
}
