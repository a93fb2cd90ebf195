#pragma once

#include "berth/base/json.hpp"
#include "berth/lease/provider.hpp"
#include "berth/protocol/atoms.hpp"
#include "berth/protocol/blocking.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace berth::session {

struct runtime;

/// A lease actor's answer to its session: facts for the journal (lease.granted|renewed|revoked
/// with their metadata, never a token), the live grants (tokens included) for the session's git
/// jobs, and an error if the provider failed. A struct, never text: the tokens cannot end up in
/// a log line or a serialized message (the type is local-only: CAF refuses to serialize it).
struct lease_answer {
  std::vector<std::pair<std::string, json::value>> notes;  ///< (event type, data)
  std::vector<lease::grant> grants;
  std::string error;
};

/// One lease actor per session (actors/lease holds the providers it drives). It owns the
/// session's credentials: it mints them, keeps them in the node's vault, renews them before
/// they expire — on its own timer, whatever the session is doing — and revokes them exactly
/// once when the session ends, retrying with backoff while the provider fails.
///
///   (acquire_atom, url) -> lease_answer            a live grant for url, minted if needed
///   (revokeall_atom, journal_live) -> lease_answer  once every grant is revoked; journal_live:
///                                                   the journal's live leases (JSON object)
///   (leasenote_atom, lease_answer) to the session   after each renewal or revocation
///
/// On start it reads the session's grants back from the vault (a node that crashed).
using lease_actor =
    caf::typed_actor<caf::replies_to<acquire_atom, std::string>::with<lease_answer>,
                     caf::replies_to<revokeall_atom, std::string>::with<lease_answer>,
                     caf::reacts_to<revokeall_atom>,  // a revocation backoff ended
                     caf::reacts_to<renew_atom>, caf::reacts_to<protocol::resume_job>>;

/// Spawn the lease actor of `session`, linked to `parent` (the session actor), which gets its
/// leasenote_atom messages.
lease_actor spawn_lease(caf::local_actor* parent, std::shared_ptr<runtime> rt, std::string session);

}  // namespace berth::session

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(berth::session::lease_answer)
