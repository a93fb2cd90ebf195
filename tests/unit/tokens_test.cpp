// The gateway's credentials file: hashes only, scopes, one-time login codes, browser sessions.

#include "berth/gateway/tokens.hpp"

#include "harness.hpp"

#include "berth/base/fs.hpp"

#include <gtest/gtest.h>

#include <thread>

using namespace berth;
using gateway::scope;

TEST(tokens, a_token_is_shown_once_and_only_its_hash_is_stored) {
  test::temp_dir dir;
  gateway::token_store store(dir / "tokens.json");
  auto t = store.create("ci", scope::write);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->size(), 49u);
  EXPECT_EQ(fs::read_file(dir / "tokens.json")->find(*t), std::string::npos);
  auto rec = store.verify(*t);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->name, "ci");
  EXPECT_EQ(rec->scope, scope::write);
  EXPECT_FALSE(store.verify(*t + "x"));
  EXPECT_FALSE(store.verify_cookie(*t));  // a token is not a browser session
  EXPECT_EQ(store.create("ci", scope::read).err().code, make_error_code(errc::conflict));
  EXPECT_EQ(store.create("bad name", scope::read).err().code,
            make_error_code(errc::invalid_argument));
  // Another process's revoke is seen by this store at the next check.
  gateway::token_store other(dir / "tokens.json");
  ASSERT_TRUE(other.revoke("ci").ok());
  EXPECT_FALSE(store.verify(*t));
  EXPECT_EQ(other.revoke("ci").err().code, make_error_code(errc::not_found));
}

TEST(tokens, a_login_code_is_exchanged_once_for_a_browser_session_that_expires) {
  test::temp_dir dir;
  gateway::token_store store(dir / "tokens.json");
  auto code = store.create_login("alice", scope::read, std::chrono::minutes(10));
  ASSERT_TRUE(code.ok());
  EXPECT_EQ(code->rfind("berthl_", 0), 0u);
  EXPECT_FALSE(store.verify(*code));  // not an API token
  auto session = store.exchange_login(*code, std::chrono::milliseconds(300));
  ASSERT_TRUE(session.ok()) << session.err().message;
  EXPECT_EQ(session->first.rfind("berthc_", 0), 0u);
  EXPECT_EQ(session->second.name, "alice");
  EXPECT_EQ(session->second.scope, scope::read);
  EXPECT_EQ(store.exchange_login(*code, std::chrono::minutes(1)).err().code,
            make_error_code(errc::unauthorized));
  EXPECT_TRUE(store.verify_cookie(session->first));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_FALSE(store.verify_cookie(session->first));  // expired
  // An expired code is refused too; logout and revoke end sessions.
  auto stale = store.create_login("bob", scope::write, std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_FALSE(store.exchange_login(*stale, std::chrono::minutes(1)).ok());
  auto c2 = store.create_login("carol", scope::admin, std::chrono::minutes(1));
  auto s2 = store.exchange_login(*c2, std::chrono::minutes(10));
  ASSERT_TRUE(s2.ok());
  ASSERT_TRUE(store.end_cookie(s2->first).ok());
  EXPECT_FALSE(store.verify_cookie(s2->first));
  auto c3 = store.create_login("dave", scope::admin, std::chrono::minutes(1));
  auto s3 = store.exchange_login(*c3, std::chrono::minutes(10));
  ASSERT_TRUE(store.revoke("dave").ok());
  EXPECT_FALSE(store.verify_cookie(s3->first));
}

TEST(tokens, a_malformed_file_is_an_error_naming_it) {
  test::temp_dir dir;
  test::write_file(dir / "tokens.json",
                   R"({"tokens":[{"name":"x","scope":"root","sha256":"ab"}]})");
  gateway::token_store store(dir / "tokens.json");
  auto all = store.list();
  ASSERT_FALSE(all.ok());
  EXPECT_NE(all.err().message.find("tokens.json"), std::string::npos);
}
