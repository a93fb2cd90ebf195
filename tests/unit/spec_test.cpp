#include "berth/core/spec.hpp"

#include <gtest/gtest.h>

using namespace berth;

namespace {
result<core::session_spec> spec_of(const std::string& text) {
  auto v = json::parse(text);
  if (!v) return v.err();
  return core::parse_spec(*v);
}
void expect_error(const std::string& text, const std::string& needle) {
  auto s = spec_of(text);
  ASSERT_FALSE(s.ok()) << text;
  EXPECT_NE(s.err().message.find(needle), std::string::npos) << s.err().message;
}
}  // namespace

TEST(spec, accepts_a_valid_workflow_and_round_trips) {
  auto s = spec_of(
      R"({"repo":"file:///srv/app.git","steps":[{"id":"build","run":["make","-j2"],"timeout":"10m",
                      "retry":{"max_attempts":3,"backoff":"2s","max_backoff":"30s"}}]})");
  ASSERT_TRUE(s.ok()) << s.err().message;
  EXPECT_EQ(s->steps[0].retry.max_attempts, 3);
  EXPECT_EQ(*s->steps[0].timeout, millis(600'000));
  auto again = core::parse_spec(core::to_json(*s));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(core::to_json(*again), core::to_json(*s));
}

TEST(spec, hostile_inputs_name_the_field) {
  expect_error(R"({"repo":"https://git.example.com/acme/app.git","steps":[{"id":"a","run":[]}]})",
               "steps[0].run: must not be empty");
  expect_error(
      R"({"repo":"https://git.example.com/acme/app.git","steps":[{"id":"a","run":"make"}]})",
      "steps[0].run: expected an array of strings, got string");
  expect_error(
      R"({"repo":"https://git.example.com/acme/app.git","steps":[{"id":"a","run":["make"],"bogus":1}]})",
      "steps[0].bogus: unknown field");
  expect_error(R"({"repo":"https://git.example.com/acme/app.git","steps":[],"extra":true})",
               "extra: unknown field");
  expect_error(R"({"repo":5,"steps":[{"id":"a","run":["x"]}]})",
               "repo: expected a string, got integer");
  expect_error(
      R"({"repo":"https://git.example.com/acme/app.git","steps":[{"id":"a","run":["x"]},{"id":"a","run":["y"]}]})",
      "steps[1].id: duplicate step id");
  expect_error(
      R"({"repo":"https://git.example.com/acme/app.git","steps":[{"id":"a","run":["x"],"timeout":"soon"}]})",
      "steps[0].timeout: invalid duration");
  expect_error(
      R"({"repo":"https://git.example.com/acme/app.git","steps":[{"id":"a","run":["x"],"retry":{"max_attempts":0}}]})",
      "steps[0].retry.max_attempts: 0 is out of range");
  expect_error(
      R"({"repo":"https://git.example.com/acme/app.git","priority":12,"steps":[{"id":"a","run":["x"]}]})",
      "priority: 12 is out of range");
  expect_error(R"([1,2])", "spec: expected an object");
}

TEST(spec, session_ids_with_subject_characters_are_refused) {
  for (std::string bad : {"a.b", "a*", "a>", "a b", "a/b", ""}) {
    auto text =
        R"({"id":")" + bad +
        R"(","repo":"https://git.example.com/acme/app.git","steps":[{"id":"s","run":["x"]}]})";
    auto s = spec_of(text);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.err().message.rfind("id:", 0), 0u) << s.err().message;
  }
}

TEST(spec, oversized_spec_is_refused_with_the_limit) {
  std::string big(2 * 1024 * 1024, 'x');
  auto s = spec_of(R"({"repo":"https://git.example.com/acme/app.git","goal":")" + big +
                   R"(","steps":[{"id":"s","run":["x"]}]})");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.err().is(errc::too_large));
  EXPECT_NE(s.err().message.find("session.max_spec_bytes"), std::string::npos);
}

TEST(spec, a_session_without_repo_gets_a_scratch_workspace) {
  auto s = spec_of(R"({"steps":[{"id":"a","run":["true"]}]})");
  ASSERT_TRUE(s.ok()) << s.err().message;
  EXPECT_TRUE(s->repo.empty());
  EXPECT_EQ(core::to_json(*s).find("repo"), nullptr);
}

TEST(spec, hostile_repo_urls_are_refused_with_the_field) {
  auto with_repo = [](const std::string& url) {
    return R"({"repo":")" + url + R"(","steps":[{"id":"a","run":["true"]}]})";
  };
  expect_error(with_repo("x"), "repo: \"x\" is not a URL");
  expect_error(with_repo("/srv/app.git"), "is not a URL");
  expect_error(with_repo("git@github.com:acme/app.git"), "ssh remotes");
  expect_error(with_repo("ssh://git@host/acme/app.git"), "ssh:// scheme is not supported");
  expect_error(with_repo("ext::sh -c touch% /tmp/pwned"), "white space");
  expect_error(with_repo("ext::sh"), "not a URL");
  expect_error(with_repo("https://user:secret@host/acme/app.git"), "must not carry credentials");
  expect_error(with_repo("https:///acme/app.git"), "has no host");
  expect_error(with_repo("https://host"), "has no repository path");
  expect_error(with_repo("file://relative/app.git"), "absolute path");
  expect_error(with_repo("file:///srv/../etc/app.git"), "must not contain \"..\"");
  expect_error(with_repo("https://host/a b.git"), "white space");
  expect_error(R"({"repo":"","steps":[{"id":"a","run":["true"]}]})", "repo: must not be empty");
  for (const char* ok : {"https://github.com/acme/app.git", "http://127.0.0.1:8080/git/app.git",
                         "file:///srv/git/app.git"})
    EXPECT_TRUE(spec_of(with_repo(ok)).ok()) << ok;
}

TEST(spec, refs_and_branches_are_checked) {
  auto with = [](const std::string& field, const std::string& v) {
    return R"({"repo":"https://h/a/b.git",")" + field + R"(":")" + v +
           R"(","steps":[{"id":"a","run":["true"]}]})";
  };
  expect_error(with("ref", "--upload-pack=evil"), "ref: \"--upload-pack=evil\" is not a valid");
  expect_error(with("ref", "a..b"), "ref:");
  expect_error(with("branch", "-x"), "branch:");
  expect_error(with("branch", "a..b"), "branch:");
  expect_error(with("branch", "x.lock"), "must not end with .lock");
  expect_error(with("branch", "a b"), "branch:");
  expect_error(with("branch", "HEAD"), "is reserved");
  expect_error(with("branch", "feat/.hidden"), "branch:");
  expect_error(R"({"branch":"x","steps":[{"id":"a","run":["true"]}]})", "branch: needs a repo");
  expect_error(R"({"ref":"main","steps":[{"id":"a","run":["true"]}]})", "ref: needs a repo");
  expect_error(R"({"submodules":true,"steps":[{"id":"a","run":["true"]}]})",
               "submodules: needs a repo");
  expect_error(with("submodules", "yes"), "submodules: expected true or false, got string");
  auto ok = spec_of(with("branch", "agent/fix-123"));
  ASSERT_TRUE(ok.ok()) << ok.err().message;
  EXPECT_EQ(core::session_branch(*ok, "01JABCDEFGHJKMNPQRSTVWXYZ0"), "agent/fix-123");
  ok->branch.clear();
  EXPECT_EQ(core::session_branch(*ok, "01JABCDEFGHJKMNPQRSTVWXYZ0"), "berth/npqrstvwxyz0");
  EXPECT_EQ(core::session_branch(*ok, "fix-1"), "berth/fix-1");
}

TEST(spec, git_step_kinds_need_their_fields_and_a_repo) {
  const std::string repo = R"("repo":"https://h/a/b.git",)";
  auto steps = [&](const std::string& st) { return "{" + repo + R"("steps":[)" + st + "]}"; };
  auto s =
      spec_of(steps(R"({"id":"setup","kind":"setup"},{"id":"c","kind":"commit","message":"fix"},
                           {"id":"p","kind":"push"},{"id":"pr","kind":"pull_request","title":"Fix","body":"b"})"));
  ASSERT_TRUE(s.ok()) << s.err().message;
  EXPECT_EQ(s->steps[1].kind, core::step_kind::commit);
  EXPECT_EQ(s->steps[3].forge, "github");
  auto again = core::parse_spec(core::to_json(*s));
  ASSERT_TRUE(again.ok()) << again.err().message;
  EXPECT_EQ(core::to_json(*again), core::to_json(*s));
  expect_error(steps(R"({"id":"c","kind":"commit"})"), "steps[0].message: is required");
  expect_error(steps(R"({"id":"c","kind":"commit","message":"  "})"),
               "steps[0].message: must not be empty");
  expect_error(steps(R"({"id":"c","kind":"commit","message":"m","run":["x"]})"),
               "steps[0].run: is not used by a step of kind \"commit\"");
  expect_error(steps(R"({"id":"pr","kind":"pull_request"})"), "steps[0].title: is required");
  expect_error(steps(R"({"id":"pr","kind":"pull_request","title":"t","forge":"bitbucket"})"),
               "steps[0].forge: must be");
  expect_error(steps(R"({"id":"x","kind":"deploy"})"), "steps[0].kind: must be one of");
  expect_error(steps(R"({"id":"x","kind":"push","message":"m"})"), "steps[0].message: is not used");
  expect_error(steps(R"({"id":"x"})"), "steps[0].run: is required");
  expect_error(R"({"steps":[{"id":"p","kind":"push"}]})",
               "steps[0].kind: a push step needs the session's repo");
  EXPECT_TRUE(spec_of(R"({"steps":[{"id":"s","kind":"setup"}]})").ok());
}

TEST(spec, the_issue_workflow_parses_and_round_trips) {
  auto s = spec_of(R"({"repo":"https://git.example.com/acme/app.git","ref":"main",
    "goal":"make the failing test pass","timeout":"45m","priority":7,"max_parallel":4,"steps":[
    {"id":"setup","kind":"setup"},
    {"id":"lint","run":["ruff","check","."],"needs":["setup"]},
    {"id":"test","run":["pytest","-q"],"needs":["setup"],
     "retry":{"max_attempts":3,"backoff":"2s","max_backoff":"30s","jitter":true},"timeout":"10m"},
    {"id":"fix","kind":"agent","needs":["test"],"when":"failure",
     "agent":{"mode":"external","turn_timeout":"5m"}},
    {"id":"review","kind":"agent","needs":["fix"],
     "agent":{"mode":"command","run":["review-bot","--strict"]},
     "on_reject":{"goto":"fix","max_loops":3}},
    {"id":"ship","kind":"pull_request","title":"Fix","needs":["lint","review"]}]})");
  ASSERT_TRUE(s.ok()) << s.err().message;
  EXPECT_EQ(s->steps[1].needs, std::vector<std::string>{"setup"});
  EXPECT_TRUE(s->steps[0].needs.empty());
  EXPECT_EQ(s->steps[3].when, core::run_when::failure);
  EXPECT_EQ(s->steps[3].turn_timeout, millis(300'000));
  EXPECT_EQ(s->steps[4].max_loops, 3);
  EXPECT_TRUE(s->steps[2].retry.jitter);
  auto again = core::parse_spec(core::to_json(*s));
  ASSERT_TRUE(again.ok()) << again.err().message;
  EXPECT_EQ(core::to_json(*again), core::to_json(*s));
}

TEST(spec, a_step_without_needs_follows_the_one_before_and_empty_needs_is_a_root) {
  auto s = spec_of(R"({"steps":[{"id":"a","run":["x"]},{"id":"b","run":["x"]},
    {"id":"c","run":["x"],"needs":[]}]})");
  ASSERT_TRUE(s.ok()) << s.err().message;
  EXPECT_EQ(s->steps[1].needs, std::vector<std::string>{"a"});
  EXPECT_TRUE(s->steps[2].needs.empty());
}

TEST(spec, invalid_graphs_are_refused_naming_the_step_and_field) {
  expect_error(R"({"steps":[{"id":"a","run":["x"],"needs":["ghost"]}]})",
               "steps[0].needs[0]: unknown step \"ghost\"");
  expect_error(R"({"steps":[{"id":"a","run":["x"],"needs":["a"]}]})",
               "steps[0].needs[0]: step \"a\" cannot need itself");
  expect_error(R"({"steps":[{"id":"a","run":["x"],"needs":["c"]},{"id":"b","run":["x"]},
    {"id":"c","run":["x"]}]})",
               "steps: the needs form a cycle: a -> c -> b -> a");
  expect_error(R"({"steps":[{"id":"a","run":["x"]},{"id":"r","kind":"agent",
    "agent":{"mode":"external"},"on_reject":{"goto":"nowhere","max_loops":2}}]})",
               "steps[1].on_reject.goto: unknown step \"nowhere\"");
  expect_error(R"({"steps":[{"id":"a","run":["x"]},{"id":"r","kind":"agent",
    "agent":{"mode":"external"},"on_reject":{"goto":"a"}}]})",
               "steps[1].on_reject.max_loops: is required on a back edge");
  expect_error(R"({"steps":[{"id":"r","kind":"agent","agent":{"mode":"external"},
    "on_reject":{"goto":"z","max_loops":1}},{"id":"z","run":["x"]}]})",
               "steps[0].on_reject.goto: \"z\" is not a step \"r\" needs");
  expect_error(R"({"steps":[{"id":"a","run":["x"],"on_reject":{"goto":"a","max_loops":1}}]})",
               "steps[0].on_reject: is not used by a step of kind \"run\"");
  expect_error(R"({"steps":[{"id":"a","kind":"agent","agent":{"mode":"external",
    "turn_timeout":"5 minutes"}}]})",
               "steps[0].agent.turn_timeout: invalid duration");
  expect_error(R"({"steps":[{"id":"a","kind":"agent","agent":{"mode":"command","run":[]}}]})",
               "steps[0].agent.run: must not be empty");
  expect_error(R"({"steps":[{"id":"a","kind":"agent","agent":{"mode":"psychic"}}]})",
               "steps[0].agent.mode: must be \"external\" or \"command\"");
  expect_error(R"({"steps":[{"id":"a","kind":"agent"}]})", "steps[0].agent: is required");
  expect_error(R"({"steps":[{"id":"a","kind":"wizard"}]})", "steps[0].kind: must be one of");
  expect_error(R"({"steps":[{"id":"a","run":["x"],"when":"sometimes"}]})",
               "steps[0].when: must be \"success\", \"failure\" or \"always\"");
  expect_error(R"({"steps":[{"id":"a","run":["x"],"needs":"b"}]})",
               "steps[0].needs: expected an array of step ids");
  expect_error(R"({"steps":[{"id":"a","run":["x"]}],"max_parallel":0})",
               "max_parallel: 0 is out of range");
  expect_error(R"({"steps":[{"id":"a","run":["x"],"retry":{"jitter":"yes"}}]})",
               "steps[0].retry.jitter: expected true or false");
  expect_error(R"({"steps":[{"id":"a","run":["x"]}],"start_at":"a"})", "start_at: needs retry_of");
  expect_error(R"({"steps":[{"id":"a","run":["x"]}],"retry_of":"old","start_at":"zz"})",
               "start_at: unknown step \"zz\"");
}

TEST(spec, a_thousand_step_chain_is_accepted_and_one_more_is_refused) {
  std::string steps;
  for (int i = 0; i < 1000; ++i)
    steps +=
        (i ? "," : "") + std::string(R"({"id":"s)") + std::to_string(i) + R"(","run":["true"]})";
  auto s = spec_of(R"({"steps":[)" + steps + "]}");
  ASSERT_TRUE(s.ok()) << s.err().message;
  EXPECT_EQ(s->steps[999].needs, std::vector<std::string>{"s998"});
  expect_error(R"({"steps":[)" + steps + R"(,{"id":"extra","run":["true"]}]})",
               "steps: has more than 1000 steps");
}
