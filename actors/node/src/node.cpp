#include "berth/node/node.hpp"

#include "api.hpp"

#include "berth/base/crash.hpp"
#include "berth/base/fs.hpp"
#include "berth/base/ids.hpp"
#include "berth/base/log.hpp"
#include "berth/bus/embedded_server.hpp"
#include "berth/lease/provider.hpp"
#include "berth/protocol/atoms.hpp"
#include "berth/sandbox/sandbox.hpp"
#include "berth/session/committer.hpp"
#include "berth/session/session_actor.hpp"
#include "berth/session/workspace_ops.hpp"
#include "berth/setup/cache.hpp"
#include "berth/supervision/supervisor.hpp"
#include "berth/workspace/git.hpp"

#include <caf/all.hpp>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

namespace berth::node {

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("node");
  return l;
}

struct placement {
  std::vector<std::shared_ptr<bus::pull_consumer>> by_priority;  // index = priority
};

struct node_state {
  std::shared_ptr<session::runtime> rt;
  std::shared_ptr<placement> place;
  caf::actor sup;
  std::shared_ptr<std::atomic<std::int64_t>> pending_spawns =
      std::make_shared<std::atomic<std::int64_t>>(0);
  bool placing = false;
  bool place_again = false;
  bool stopping = false;
  caf::actor stop_waiter;
  static inline const char* name = "berth.node";
};

using node_actor_t = caf::stateful_actor<node_state>;

// An ack, nak or term the server did not take leaves the placement message to be redelivered
// after its ack wait; placement of a redelivered message is idempotent (the owner check).
void settle(const status& st, const std::string& id, std::string_view what) {
  if (!st)
    logger()->warn("{}: {} of its placement message failed: {}; it will be redelivered", id, what,
                   st.err().message);
}

// Fetch placement messages, highest priority first, and claim each session (io thread).
void placement_job(std::shared_ptr<session::runtime> rt, std::shared_ptr<placement> place,
                   std::shared_ptr<std::atomic<std::int64_t>> pending, caf::actor node) {
  auto free = rt->cfg.node.max_sessions - rt->counters.sessions.load() - pending->load();
  // One request tells which priorities have work; fetch only from those (a fetch from an
  // empty consumer would wait for its timeout).
  auto counts = rt->bus->stream_subjects(rt->names.stream_work(), rt->names.work_wildcard());
  if (!counts) {
    logger()->warn("placement: reading the queue failed: {}", counts.err().message);
    caf::anon_send(node, place_atom::value, true);
    return;
  }
  for (int p = 9; p >= 0 && free > 0; --p) {
    auto it = counts->find(rt->names.work(p));
    if (it == counts->end() || it->second == 0) continue;
    auto batch =
        static_cast<int>(std::min<std::int64_t>({free, 64, static_cast<std::int64_t>(it->second)}));
    auto msgs = place->by_priority[static_cast<std::size_t>(p)]->fetch(batch, millis(100));
    if (!msgs) {
      logger()->warn("placement fetch (priority {}) failed: {}", p, msgs.err().message);
      continue;
    }
    for (auto& fm : *msgs) {
      auto body = json::parse(fm.msg().data);
      std::string id = body ? body->get_string("session") : std::string();
      if (!validate_id(id, "session").ok()) {
        logger()->error("dropping malformed placement message on {}", fm.msg().subject);
        settle(fm.term(), id, "term");
        continue;
      }
      std::uint64_t epoch = 0;
      auto claim = rt->bus->kv_create(rt->names.bucket_owners(), id, rt->node_id);
      if (claim) {
        epoch = *claim;
      } else if (claim.err().is(errc::conflict)) {
        auto owner = rt->bus->kv_get(rt->names.bucket_owners(), id);
        if (owner && owner->has_value() && (*owner)->value == rt->node_id) {
          epoch = (*owner)->revision;  // ours already (a redelivery after a crash)
        } else {
          logger()->info("{}: owned by {}; not placing it here", id,
                         owner && owner->has_value() ? (*owner)->value : std::string("?"));
          settle(fm.ack(), id, "ack");
          continue;
        }
      } else {
        logger()->warn("{}: claiming ownership failed: {}; retrying later", id,
                       claim.err().message);
        settle(fm.nak(millis(1000)), id, "nak");
        continue;
      }
      auto existing = rt->store->get_session(id);
      if (existing && !existing->has_value()) {
        persistence::write_set w;
        w.sessions.emplace_back(id, session::placement_snapshot(rt->node_id, epoch));
        auto st = rt->store->commit(w);
        if (!st) {
          logger()->error("{}: cannot record placement: {}", id, st.err().message);
          settle(fm.nak(millis(1000)), id, "nak");
          continue;
        }
      }
      crash_point("before_ack");
      auto acked = fm.ack();
      if (!acked) logger()->warn("{}: placement ack failed: {}", id, acked.err().message);
      ++*pending;
      // The claim travels with the session: it writes under this epoch without reading it back.
      caf::anon_send(node, placed_atom::value, id, session::claim{epoch, -1});
      --free;
    }
  }
  caf::anon_send(node, place_atom::value, true);
}

// What an earlier run left — bubblewrap died with it, its cgroups stay — is removed in the
// background, after the resumed sessions have recorded their recovery: housekeeping does not
// compete with recovery. Never touches a cgroup of this run (sandbox::sweep_leftovers).
void sweep_sandboxes(const std::shared_ptr<session::runtime>& rt) {
  if (rt->cfg.sandbox.mode == "none") return;
  std::thread([group = rt->node_id] {
    if (auto n = sandbox::sweep_leftovers(group))
      logger()->info("removed the cgroups of {} sandbox(es) left by an earlier run", n);
  }).detach();
}

// Resume every session this node holds a snapshot of (io thread).
void resume_job(std::shared_ptr<session::runtime> rt,
                std::shared_ptr<std::atomic<std::int64_t>> pending, caf::actor node) {
  std::vector<std::string> ids;
  auto st = rt->store->for_each_session(
      [&](std::string_view id, std::string_view) { ids.emplace_back(id); });
  if (!st) {
    logger()->error("scanning snapshots failed: {}", st.err().message);
    sweep_sandboxes(rt);
    return;
  }
  if (ids.empty()) sweep_sandboxes(rt);
  // One bulk read of the claims; a session this scan could not confirm checks its own claim.
  auto owners = rt->bus->kv_entries(rt->names.bucket_owners());
  if (!owners)
    logger()->warn("reading the owners bucket failed: {}; sessions check one by one",
                   owners.err().message);
  // Generous: a session that cannot settle (NATS down) must not hold every step back for long.
  auto t0 = std::chrono::steady_clock::now();
  rt->resume.arm(
      rt->launcher, ids, now_unix_ms() + 10'000, [t0, rt](std::size_t n, std::size_t late) {
        sweep_sandboxes(rt);
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - t0)
                      .count();
        if (late == 0)
          logger()->info("{} resumed session(s) recorded their recovery in {} ms; starting steps",
                         n, ms);
        else
          logger()->warn(
              "{} of {} resumed session(s) did not record their recovery within {} ms; "
              "starting steps anyway",
              late, n, ms);
      });
  // Every journal's length in one request: sessions whose snapshot is that far skip a read.
  std::map<std::string, std::int64_t> lengths;
  if (auto counts = rt->bus->stream_subjects(rt->names.stream_ev(), rt->names.journal_wildcard())) {
    for (const auto& [subject, n] : *counts)
      lengths[std::string(bus::subjects::last_token(subject))] = static_cast<std::int64_t>(n);
  }
  for (const auto& id : ids) {
    // A claim this scan confirmed travels with the session (no owner lookup of its own).
    session::claim c;
    if (owners) {
      auto it = owners->find(id);
      if (it != owners->end() && it->second.value == rt->node_id) c.epoch = it->second.revision;
    }
    if (auto it = lengths.find(id); it != lengths.end()) c.journal_length = it->second;
    ++*pending;
    caf::anon_send(node, placed_atom::value, id, c);
  }
  if (!ids.empty()) logger()->info("resuming {} session(s) from snapshots", ids.size());
  // Workspaces and leases of sessions this node no longer runs (ended, or taken over).
  std::thread([rt, ids] { session::wsops::sweep_workspaces(*rt, ids); }).detach();
}

void heartbeat_job(std::shared_ptr<session::runtime> rt) {
  json::value v = json::value::make_object();
  v.set("node", rt->node_id);
  v.set("pid", static_cast<std::int64_t>(::getpid()));
  v.set("version", BERTH_VERSION);
  v.set("address", rt->cfg.cluster.listen);
  json::value labels = json::value::make_array();
  for (const auto& l : rt->cfg.node.labels) labels.push(l);
  v.set("labels", std::move(labels));
  v.set("sessions", rt->counters.sessions.load());
  v.set("max_sessions", rt->cfg.node.max_sessions);
  v.set("heartbeat_ms", rt->cfg.cluster.heartbeat.count());
  auto now = now_unix_ms();
  v.set("ts", format_timestamp(now));
  v.set("ts_ms", now);
  auto st = rt->bus->kv_put(rt->names.bucket_nodes(), rt->node_id, v.dump());
  if (!st) logger()->debug("heartbeat failed: {}", st.err().message);
}

caf::behavior node_behavior(node_actor_t* self, std::shared_ptr<session::runtime> rt,
                            std::shared_ptr<placement> place) {
  auto& s = self->state;
  s.rt = rt;
  s.place = std::move(place);
  auto& sys = self->system();
  s.sup = supervision::spawn_supervisor(
      sys, supervision::restart_policy{},
      [rt, &sys](const std::string& id, const caf::message& args, const std::string& fail_reason) {
        session::claim c;  // a restart or escalation: the session verifies its claim itself
        if (args.match_elements<session::claim>()) c = args.get_as<session::claim>(0);
        return session::spawn_session(sys, rt, id, c, fail_reason);
      },
      [rt](const std::string&, const std::string& what) {
        if (what == "restart")
          rt->counters.restarts++;
        else
          rt->counters.escalations++;
      });
  {
    caf::actor me = caf::actor_cast<caf::actor>(self);
    auto pending = s.pending_spawns;
    rt->io->post([rt, pending, me] { resume_job(rt, pending, me); });
  }
  self->send(self, place_atom::value, false);
  self->send(self, beat_atom::value);
  self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
  return {
      [=](place_atom, bool job_done) {
        auto& st = self->state;
        if (job_done) st.placing = false;
        if (st.stopping) return;
        if (st.placing) {
          st.place_again = true;
          return;
        }
        if (job_done && !st.place_again) return;
        st.place_again = false;
        auto free = st.rt->cfg.node.max_sessions - st.rt->counters.sessions.load() -
                    st.pending_spawns->load();
        if (free <= 0) return;
        st.placing = true;
        caf::actor me = caf::actor_cast<caf::actor>(self);
        st.rt->io->post([rt = st.rt, pl = st.place, pending = st.pending_spawns, me] {
          placement_job(rt, pl, pending, me);
        });
      },
      [=](placed_atom, const std::string& id, const session::claim& c) {
        auto& st = self->state;
        --*st.pending_spawns;
        if (st.stopping) return;
        self->send(st.sup, spawn_atom::value, id, caf::make_message(c));
      },
      [=](tick_atom) {
        // Periodic sweep: placements whose wake-up was missed, and capacity freed by
        // finished sessions.
        if (self->state.stopping) return;
        // The barrier's on_open callback reports the sessions that had not settled.
        (void)self->state.rt->resume.expire(now_unix_ms());
        self->send(self, place_atom::value, false);
        self->state.place_again = true;
        self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
      },
      [=](beat_atom) {
        auto& st = self->state;
        if (st.stopping) return;
        st.rt->io->post([rt = st.rt] { heartbeat_job(rt); });
        self->delayed_send(self, st.rt->cfg.cluster.heartbeat, beat_atom::value);
      },
      [=](stop_atom) {
        auto& st = self->state;
        if (st.stopping) return;
        st.stopping = true;
        st.stop_waiter = caf::actor_cast<caf::actor>(self->current_sender());
        logger()->info("stopping: no new sessions; {} session(s) reach a checkpoint",
                       st.rt->counters.sessions.load());
        st.rt->resume.abandon();
        self->send(st.sup, stop_atom::value);
      },
      [=](stopped_atom) {
        auto& st = self->state;
        if (st.stop_waiter) self->send(st.stop_waiter, stopped_atom::value);
        self->quit();
      },
  };
}

// The step runner of `sandbox.mode`. When the sandbox cannot work here, sessions fail with the
// reason (never run unsandboxed), and the node says so once at start.
std::shared_ptr<sandbox::step_runner> make_runner(session::runtime& rt, const std::string& dir) {
  const auto& sc = rt.cfg.sandbox;
  if (sc.mode == "none") {
    logger()->warn(
        "sandbox.mode = \"none\": step commands run as plain processes without isolation");
    return sandbox::make_process_runner(rt.work_root, rt.home_root);
  }
  sandbox::bwrap_runner_options o;
  o.group = rt.node_id;
  o.run = std::to_string(rt.started_ms);
  o.work_root = rt.work_root;
  o.home_root = rt.home_root;
  o.bwrap = sc.bwrap;
  o.memory_bytes = sc.memory_bytes;
  o.pids = sc.pids;
  o.cpu_percent = sc.cpu_percent;
  o.tmp_bytes = sc.tmp_bytes;
  o.nofile = sc.nofile;
  o.fsize_bytes = sc.fsize_bytes;
  auto fail = [&](const error& e) {
    logger()->error("{}; every session will fail until this is fixed", e.message);
    return std::shared_ptr<sandbox::step_runner>(sandbox::make_failing_runner(e));
  };
  if (::geteuid() == 0) {
    struct passwd entry {};
    struct passwd* pw = nullptr;
    std::vector<char> buf(16384);
    if (::getpwnam_r(sc.user.c_str(), &entry, buf.data(), buf.size(), &pw) != 0 || !pw)
      return fail(error{errc::invalid_argument,
                        "sandbox.user: no such user \"" + sc.user + "\" on this host"});
    o.uid = pw->pw_uid;
    o.gid = pw->pw_gid;
    rt.ws_uid = static_cast<int>(pw->pw_uid);
    rt.ws_gid = static_cast<int>(pw->pw_gid);
  }
  // The sandbox user walks to its workspace (and nothing else: the node's own files stay
  // owner-only).
  ::chmod(dir.c_str(), 0711);
  ::chmod(rt.work_root.c_str(), 0711);
  ::chmod(rt.home_root.c_str(), 0711);
  for (const char* own : {"/snapshots", "/nats", "/mirrors", "/leases", "/cache"})
    ::chmod((dir + own).c_str(), 0700);
  auto helper = sandbox::install_helper(sandbox::helper_next_to_self(), dir + "/sandbox");
  if (!helper) return fail(helper.err());
  o.helper = *helper;
  if (auto st = sandbox::check_host(o.bwrap, o.helper); !st) return fail(st.err());
  if (o.uid >= 0)
    if (auto st = sandbox::check_reachable(rt.work_root, static_cast<uid_t>(o.uid),
                                           static_cast<gid_t>(o.gid));
        !st)
      return fail(st.err());
  logger()->info("sandbox: bubblewrap, one per session, as uid {}",
                 o.uid >= 0 ? o.uid : ::geteuid());
  return std::shared_ptr<sandbox::step_runner>(sandbox::make_bwrap_runner(std::move(o)));
}

// Node id: the configured one, else the one kept in the store, else a new one (kept).
result<std::string> node_identity(const config::config& cfg, persistence::snapshot_store& store) {
  auto kept = store.get_meta("node_id");
  if (!kept) return kept.err();
  if (!cfg.node.id.empty()) {
    if (!kept->has_value() || **kept != cfg.node.id) {
      persistence::write_set w;
      w.meta.emplace_back("node_id", cfg.node.id);
      BERTH_TRY(store.commit(w));
    }
    return cfg.node.id;
  }
  if (kept->has_value()) return **kept;
  auto id = "node-" + new_ulid().substr(16);
  persistence::write_set w;
  w.meta.emplace_back("node_id", id);
  BERTH_TRY(store.commit(w));
  return id;
}

}  // namespace

std::string last_node_pointer_path() {
  const char* state = std::getenv("XDG_STATE_HOME");
  std::string base;
  if (state && *state)
    base = state;
  else if (const char* home = std::getenv("HOME"); home && *home)
    base = std::string(home) + "/.local/state";
  else
    base = "/root/.local/state";
  return base + "/berth/last-node";
}

int run_node(const config::config& cfg, const std::vector<companion>& companions) {
  log::setup(cfg.log.level, cfg.log.format);
  auto lg = logger();

  // Block the stop signals in every thread; the main thread waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto dir = std::filesystem::absolute(cfg.node.data_dir).lexically_normal().string();
  if (auto st = fs::ensure_writable_dir(dir, "node.data_dir"); !st) {
    lg->error("{}", st.err().message);
    return 1;
  }
  auto store = persistence::snapshot_store::open(dir + "/snapshots");
  if (!store) {
    lg->error("{}", store.err().message);
    return 1;
  }
  auto rt = std::make_shared<session::runtime>();
  rt->cfg = cfg;
  rt->cfg.node.data_dir = dir;
  rt->store = std::shared_ptr<persistence::snapshot_store>(std::move(*store));
  auto id = node_identity(cfg, *rt->store);
  if (!id) {
    lg->error("{}", id.err().message);
    return 1;
  }
  rt->node_id = *id;
  rt->names = bus::subjects(cfg.cluster.subject_prefix);
  rt->work_root = dir + "/work";
  rt->home_root = dir + "/home";
  rt->started_ms = now_unix_ms();
  for (const auto& [path, what] : {std::pair{rt->work_root, "session working directories"},
                                   std::pair{rt->home_root, "session home directories"}})
    if (auto st = fs::ensure_writable_dir(path, what); !st) {
      lg->error("{}", st.err().message);
      return 1;
    }
  // Credentials are checked before anything is started: a bad token file stops the node here.
  auto creds = lease::registry::create(cfg.credentials);
  if (!creds) {
    lg->error("{}", creds.err().message);
    return 1;
  }
  rt->credentials = *creds;
  rt->leases = std::make_shared<lease::vault>(dir + "/leases");

  std::unique_ptr<bus::embedded_server> embedded;
  std::vector<std::string> servers = cfg.nats.servers;
  if (servers.empty()) {
    bus::embedded_server::options eo;
    eo.binary = cfg.nats.server_binary;
    eo.dir = dir + "/nats";
    eo.server_name = rt->node_id;
    eo.cluster_name = cfg.cluster.name;
    eo.routes = cfg.cluster.peers;
    eo.cluster_listen = cfg.cluster.listen;
    auto es = bus::embedded_server::start(eo);
    if (!es) {
      lg->error("{}", es.err().message);
      return 1;
    }
    embedded = std::move(*es);
    servers = {embedded->url_with_token()};
  }
  // A node that fails to come up stops the nats-server it started (one that runs on after a
  // kill -9 is adopted by the next start; one left by a failed start would only linger).
  struct stop_unless_up {
    bus::embedded_server* server;
    bool up = false;
    ~stop_unless_up() {
      if (!up && server) server->stop();
    }
  } started_server{embedded.get()};
  // In a cluster that is still forming, JetStream has no meta leader and replicated streams
  // cannot be placed (too few servers): connecting and provisioning wait for the peers, up to
  // cluster.join_timeout.
  bus::provision_options po;
  po.replicas = config::effective_replicas(cfg);
  po.duplicate_window = cfg.nats.duplicate_window;
  const bool clustered = !cfg.cluster.peers.empty() || po.replicas > 1;
  const auto join_deadline = std::chrono::steady_clock::now() + cfg.cluster.join_timeout;
  const char* not_formed =
      clustered ? "; the cluster did not form within cluster.join_timeout" : "";
  if (clustered)
    lg->info("waiting for the cluster ({} replicas, {} peer(s)) up to {}", po.replicas,
             cfg.cluster.peers.size(), format_duration(cfg.cluster.join_timeout));
  bus::client::options co;
  co.servers = servers;
  co.creds = cfg.nats.creds;
  co.name = "berth-node " + rt->node_id;
  co.connect_timeout = clustered ? std::max(cfg.nats.connect_timeout, cfg.cluster.join_timeout)
                                 : cfg.nats.connect_timeout;
  co.request_timeout = cfg.nats.request_timeout;
  co.send_asap = true;
  // After a reconnect the input push consumer may have been re-created: every session re-reads
  // its inputs from its own cursor, so none is missed.
  co.on_connection_change = [weak = std::weak_ptr<session::runtime>(rt)](bool connected) {
    auto r = weak.lock();
    if (!connected || !r) return;
    for (auto& a : r->sessions.all()) caf::anon_send(a, wake_atom::value);
  };
  auto client = bus::client::connect(co);
  if (!client) {
    lg->error("{}{}", client.err().message, not_formed);
    return 1;
  }
  rt->bus = std::shared_ptr<bus::client>(std::move(*client));
  {
    auto next_note = std::chrono::steady_clock::now();
    for (;;) {
      auto st = rt->bus->provision(rt->names, po);
      if (st) break;
      if (!clustered || std::chrono::steady_clock::now() >= join_deadline) {
        lg->error("{}{}", st.err().message, not_formed);
        return 1;
      }
      if (std::chrono::steady_clock::now() >= next_note) {
        lg->info("waiting for the cluster ({} replicas): {}", po.replicas, st.err().message);
        next_note = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }
  auto place = std::make_shared<placement>();
  for (int p = 0; p <= 9; ++p) {
    auto c = rt->bus->pull(rt->names.stream_work(), "placement-" + std::to_string(p),
                           rt->names.work(p), std::chrono::seconds(30));
    if (!c) {
      lg->error("{}", c.err().message);
      return 1;
    }
    place->by_priority.push_back(std::shared_ptr<bus::pull_consumer>(std::move(*c)));
  }
  rt->mirrors = std::make_shared<workspace::mirror_cache>(dir + "/mirrors");
  {
    std::error_code ec;
    std::filesystem::create_directories(dir + "/mirrors", ec);
    ::chmod((dir + "/mirrors").c_str(), 0700);
  }
  rt->runner = make_runner(*rt, dir);
  if (cfg.cache.enabled) {
    // After the runner: the sandbox user (ws_uid) owns what is seeded into a session's home.
    auto root = cfg.cache.dir.empty() ? dir + "/cache" : cfg.cache.dir;
    auto cache = std::make_shared<setup::cache_store>(
        root, static_cast<std::uint64_t>(cfg.cache.max_bytes), rt->ws_uid, rt->ws_gid);
    if (auto st = cache->open(); !st) {
      lg->error("{}", st.err().message);
      return 1;
    }
    rt->cache = std::move(cache);
  }
  rt->io = std::make_shared<worker_pool>(static_cast<std::size_t>(cfg.node.io_threads));
  rt->launcher = std::make_shared<worker_pool>(2, "berth-launch");
  rt->commits = std::make_shared<session::committer>(rt->store, rt->bus);

  started_server.up = true;
  int exit_code = 0;
  {
    caf::actor_system_config acfg;
    acfg.set("logger.verbosity", caf::atom("quiet"));
    // Session actors mostly wait for I/O: workers that block on a condition variable wake at
    // once, where work stealing polls and sleeps up to 10 ms between polls when idle.
    acfg.set("scheduler.policy", caf::atom("sharing"));
    caf::actor_system sys{acfg};
    auto node = sys.spawn(node_behavior, rt, place);
    api_service api(rt);

    auto api_sub =
        rt->bus->subscribe(rt->names.api_wildcard(), "berth", [rt, &api](bus::message m) {
          auto verb = m.subject.substr(rt->names.api("").size());
          rt->io->post([rt, &api, verb, m = std::move(m)] {
            auto t0 = std::chrono::steady_clock::now();
            auto reply = api.handle(verb, m.data);
            logger()->debug("api {} answered in {} us", verb,
                            std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::steady_clock::now() - t0)
                                .count());
            if (!m.reply.empty()) {
              if (auto sent = rt->bus->publish_core(m.reply, reply); !sent)
                logger()->warn("api {}: the reply was not sent: {}", verb, sent.err().message);
            }
          });
        });
    // Inputs go straight to their session actor, with their stream sequence. Started before
    // any session loads, so each session's catch-up read plus these pushes miss nothing.
    auto in_sub = rt->bus->follow_new(
        rt->names.stream_in(), rt->names.input_wildcard(), [rt](bus::message m) {
          auto a = rt->sessions.find(std::string(bus::subjects::last_token(m.subject)));
          if (a) caf::anon_send(a, input_atom::value, m.seq, std::move(m.data));
        });
    auto work_sub = rt->bus->subscribe(rt->names.work_wildcard(), "", [node](bus::message) {
      caf::anon_send(node, place_atom::value, false);
    });
    std::vector<std::unique_ptr<bus::subscription>> subs;
    json::value extra_info = json::value::make_object();
    for (auto* sub : {&api_sub, &in_sub, &work_sub})
      if (*sub) subs.push_back(std::move(**sub));
    if (subs.size() != 3) {
      lg->error("subscribing failed: {}",
                !api_sub ? api_sub.err().message
                         : (!in_sub ? in_sub.err().message : work_sub.err().message));
      caf::anon_send_exit(node, caf::exit_reason::kill);
      exit_code = 1;
    } else {
      // The companions (the gateway) first: what they report goes into node.json.
      std::size_t started = 0;
      for (const auto& c : companions) {
        auto extra = c.start(rt->bus, dir);
        if (!extra) {
          lg->error("{}", extra.err().message);
          exit_code = 1;
          break;
        }
        started++;
        if (extra->is_object())
          for (const auto& [k, v] : extra->as_object()) extra_info.set(k, v);
      }
      if (exit_code != 0) {
        for (std::size_t i = started; i-- > 0;) companions[i].stop();
        caf::scoped_actor waiter{sys};
        waiter->send(node, stop_atom::value);
        waiter->receive([](stopped_atom) {});
      }
    }
    if (subs.size() == 3 && exit_code == 0) {
      json::value info = json::value::make_object();
      info.set("node", rt->node_id);
      info.set("pid", static_cast<std::int64_t>(::getpid()));
      // With the embedded server the URL carries its access token: node.json is owner-only.
      info.set("nats_url", servers.front());
      info.set("started_at", format_timestamp(rt->started_ms));
      info.set("data_dir", dir);
      if (rt->cache) info.set("cache_dir", rt->cache->root());
      for (const auto& [k, v] : extra_info.as_object()) info.set(k, v);
      auto node_json = dir + "/node.json";
      if (auto st = fs::write_file_atomic(node_json, info.dump() + "\n", 0600); !st)
        lg->error("{}", st.err().message);
      auto pointer = last_node_pointer_path();
      std::error_code ec;
      std::filesystem::create_directories(std::filesystem::path(pointer).parent_path(), ec);
      if (auto wrote = fs::write_file_atomic(pointer, node_json + "\n"); !wrote)
        lg->warn("cannot write {} (the CLI finds this node through it): {}", pointer,
                 wrote.err().message);
      lg->info("node {} ready: NATS {}, data dir {}", rt->node_id, bus::redact_url(servers.front()),
               dir);

      int sig = 0;
      sigwait(&stop_signals, &sig);
      lg->info("received {}; stopping gracefully", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      for (auto it = companions.rbegin(); it != companions.rend(); ++it) it->stop();
      caf::scoped_actor waiter{sys};
      waiter->send(node, stop_atom::value);
      waiter->receive([](stopped_atom) {});
      std::filesystem::remove(node_json, ec);
    }
    subs.clear();  // no callback runs after this
    rt->io->shutdown();
    rt->launcher->shutdown();
    rt->commits->stop();
  }
  rt->bus.reset();
  if (embedded) embedded->stop();
  lg->info("stopped");
  return exit_code;
}

}  // namespace berth::node
