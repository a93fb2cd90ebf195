#include "bus_fixture.hpp"

#include <future>

using namespace berth;
using test::bus_fixture;

TEST_F(bus_fixture, provisioning_is_idempotent) {
  // Data in every kind of store first: a second node provisioning the same names must neither
  // fail nor recreate (empty) what is there.
  ASSERT_TRUE(c->publish(names.journal("s1"), "event").ok());
  ASSERT_TRUE(c->publish(names.input("s1"), "input").ok());
  ASSERT_TRUE(c->kv_put(names.bucket_sessions(), "s1", "record").ok());
  ASSERT_TRUE(c->kv_put(names.bucket_owners(), "s1", "node-a").ok());
  auto again = c->provision(names, {});
  EXPECT_TRUE(again.ok()) << again.err().message;
  auto journal = c->stream_subjects(names.stream_ev(), names.journal_wildcard());
  ASSERT_TRUE(journal.ok()) << journal.err().message;
  EXPECT_EQ((*journal)[names.journal("s1")], 1u);
  auto inputs = c->stream_subjects(names.stream_in(), names.input_wildcard());
  ASSERT_TRUE(inputs.ok()) << inputs.err().message;
  EXPECT_EQ((*inputs)[names.input("s1")], 1u);
  for (const auto& [bucket, value] :
       {std::pair{names.bucket_sessions(), "record"}, std::pair{names.bucket_owners(), "node-a"}}) {
    auto e = c->kv_get(bucket, "s1");
    ASSERT_TRUE(e.ok() && e->has_value()) << bucket;
    EXPECT_EQ((*e)->value, value) << bucket;
  }
}

TEST_F(bus_fixture, msg_id_deduplicates_a_repeated_publish) {
  bus::publish_options po;
  po.msg_id = "k1";
  auto a = c->publish(names.input("s1"), "x", po);
  auto b = c->publish(names.input("s1"), "x", po);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(a->duplicate);
  EXPECT_TRUE(b->duplicate);
  EXPECT_EQ(a->seq, b->seq);
}

TEST_F(bus_fixture, expected_last_subject_sequence_fences_a_stale_writer) {
  bus::publish_options first;
  first.expected_last_subject_seq = 0;
  auto a = c->publish(names.journal("s1"), "1", first);
  ASSERT_TRUE(a.ok()) << a.err().message;
  bus::publish_options stale;
  stale.expected_last_subject_seq = 0;  // a writer that has not seen event 1
  auto b = c->publish(names.journal("s1"), "2", stale);
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(b.err().is(errc::fenced)) << b.err().message;
  bus::publish_options fresh;
  fresh.expected_last_subject_seq = a->seq;
  EXPECT_TRUE(c->publish(names.journal("s1"), "2", fresh).ok());
  // Other subjects are not affected by s1's sequence.
  EXPECT_TRUE(c->publish(names.journal("s2"), "1", first).ok());
}

TEST_F(bus_fixture, a_retried_publish_with_the_same_id_is_a_duplicate_not_a_fence_error) {
  bus::publish_options po;
  po.msg_id = "s1:1";
  po.expected_last_subject_seq = 0;
  auto a = c->publish(names.journal("s1"), "1", po);
  ASSERT_TRUE(a.ok());
  auto b = c->publish(names.journal("s1"), "1", po);  // crash-and-replay of the outbox
  ASSERT_TRUE(b.ok()) << b.err().message;
  EXPECT_TRUE(b->duplicate);
  EXPECT_EQ(b->seq, a->seq);
}

TEST_F(bus_fixture, direct_get_reads_by_subject_and_sequence) {
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(c->publish(names.journal("a"), "a" + std::to_string(i)).ok());
    ASSERT_TRUE(c->publish(names.journal("b"), "b" + std::to_string(i)).ok());
  }
  auto first = c->next_message(names.stream_ev(), names.journal("b"), 1);
  ASSERT_TRUE(first.ok() && first->has_value());
  EXPECT_EQ((*first)->data, "b1");
  auto next = c->next_message(names.stream_ev(), names.journal("b"), (*first)->seq + 1);
  EXPECT_EQ((*next)->data, "b2");
  auto last = c->last_message(names.stream_ev(), names.journal("a"));
  EXPECT_EQ((*last)->data, "a3");
  auto none = c->next_message(names.stream_ev(), names.journal("b"), (*last)->seq + 100);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto subjects = c->stream_subjects(names.stream_ev(), names.journal_wildcard());
  ASSERT_TRUE(subjects.ok());
  EXPECT_EQ(subjects->size(), 2u);
}

TEST_F(bus_fixture, kv_create_claims_once) {
  auto a = c->kv_create(names.bucket_owners(), "s1", "node-a");
  ASSERT_TRUE(a.ok()) << a.err().message;
  auto b = c->kv_create(names.bucket_owners(), "s1", "node-b");
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(b.err().is(errc::conflict));
  auto e = c->kv_get(names.bucket_owners(), "s1");
  ASSERT_TRUE(e.ok() && e->has_value());
  EXPECT_EQ((*e)->value, "node-a");
  EXPECT_EQ((*e)->revision, *a);
  ASSERT_TRUE(c->kv_delete(names.bucket_owners(), "s1").ok());
  EXPECT_TRUE(c->kv_create(names.bucket_owners(), "s1", "node-b").ok());
}

TEST_F(bus_fixture, client_reconnects_after_the_server_restarts) {
  auto port = server.port();
  server.kill(9);
  server.start(port);
  EXPECT_TRUE(test::eventually([&] { return c->publish(names.input("r"), "x").ok(); },
                               std::chrono::seconds(20)));
}

TEST(bus, connect_to_nothing_fails_clearly) {
  bus::client::options o;
  o.servers = {"nats://127.0.0.1:1"};
  o.connect_timeout = millis(300);
  auto r = bus::client::connect(o);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::unavailable));
  EXPECT_NE(r.err().message.find("127.0.0.1:1"), std::string::npos);
}

TEST_F(bus_fixture, read_subject_reads_one_subject_in_order_from_a_sequence_and_can_stop) {
  std::vector<std::uint64_t> seqs;
  for (int i = 1; i <= 4; ++i) {
    auto a = c->publish(names.journal("a"), "a" + std::to_string(i));
    ASSERT_TRUE(a.ok());
    seqs.push_back(a->seq);
    ASSERT_TRUE(c->publish(names.journal("b"), "b").ok());
  }
  std::vector<std::string> got;
  auto st = c->read_subject(names.stream_ev(), names.journal("a"), seqs[1], [&](bus::message& m) {
    got.push_back(m.data);
    return true;
  });
  ASSERT_TRUE(st.ok()) << st.err().message;
  EXPECT_EQ(got, (std::vector<std::string>{"a2", "a3", "a4"}));
  got.clear();
  st = c->read_subject(names.stream_ev(), names.journal("a"), 0, [&](bus::message& m) {
    got.push_back(m.data);
    return got.size() < 2;
  });
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(got, (std::vector<std::string>{"a1", "a2"}));
}

TEST_F(bus_fixture, publish_async_acks_deduplicates_and_fences) {
  auto send = [&](const std::string& id, std::uint64_t expected) {
    auto p = std::make_shared<std::promise<result<bus::pub_ack>>>();
    auto f = p->get_future();
    bus::publish_options po;
    po.msg_id = id;
    po.expected_last_subject_seq = expected;
    auto st = c->publish_async(names.journal("a1"), id, po,
                               [p](result<bus::pub_ack> a) { p->set_value(std::move(a)); });
    EXPECT_TRUE(st.ok()) << st.err().message;
    EXPECT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
    return f.get();
  };
  auto first = send("a1:1", 0);
  ASSERT_TRUE(first.ok()) << first.err().message;
  EXPECT_FALSE(first->duplicate);
  auto again = send("a1:1", 0);  // the same event again: a duplicate, not a fence error
  ASSERT_TRUE(again.ok()) << again.err().message;
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->seq, first->seq);
  auto stale = send("a1:2", 0);
  ASSERT_FALSE(stale.ok());
  EXPECT_TRUE(stale.err().is(errc::fenced)) << stale.err().message;
  auto next = send("a1:2", first->seq);
  ASSERT_TRUE(next.ok()) << next.err().message;
  EXPECT_GT(next->seq, first->seq);
}

TEST_F(bus_fixture, publish_async_refuses_an_id_already_in_flight) {
  std::atomic<int> calls{0};
  bus::publish_options po;
  po.msg_id = "dup:1";
  server.pause(true);  // no ack can arrive: the first publish stays in flight
  auto a = c->publish_async(names.journal("d1"), "x", po, [&](result<bus::pub_ack>) { ++calls; });
  auto b = c->publish_async(names.journal("d1"), "x", po, [&](result<bus::pub_ack>) { ++calls; });
  server.pause(false);
  ASSERT_TRUE(a.ok()) << a.err().message;
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(b.err().is(errc::conflict)) << b.err().message;
  EXPECT_NE(b.err().message.find("dup:1"), std::string::npos);
  EXPECT_TRUE(test::eventually([&] { return calls.load() == 1; }));
}

TEST_F(bus_fixture, publish_async_reports_a_timeout_when_no_ack_comes) {
  bus::client::options o;
  o.servers = {server.url()};
  o.request_timeout = millis(300);
  auto quick = bus::client::connect(o);
  ASSERT_TRUE(quick.ok()) << quick.err().message;
  auto p = std::make_shared<std::promise<result<bus::pub_ack>>>();
  auto f = p->get_future();
  bus::publish_options po;
  po.msg_id = "t:1";
  server.pause(true);
  auto st = (*quick)->publish_async(names.journal("t1"), "x", po,
                                    [p](result<bus::pub_ack> a) { p->set_value(std::move(a)); });
  ASSERT_TRUE(st.ok()) << st.err().message;
  auto ready = f.wait_for(std::chrono::seconds(5));
  server.pause(false);
  ASSERT_EQ(ready, std::future_status::ready);
  auto r = f.get();
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::timeout)) << r.err().message;
  EXPECT_NE(r.err().message.find("publish to berth.ev.t1"), std::string::npos) << r.err().message;
}
