#pragma once

#include "berth/base/json.hpp"
#include "berth/lease/provider.hpp"

#include <caf/fwd.hpp>

#include <memory>
#include <string>
#include <vector>

namespace berth::session {

struct runtime;

/// One lease actor per session (actors/lease holds the providers it drives). It owns the
/// session's credentials: it mints them, keeps them in the node's vault, renews them before
/// they expire — on its own timer, whatever the session is doing — and revokes them exactly
/// once when the session ends, retrying with backoff while the provider fails. It talks to its
/// session with JSON replies, `{"notes": [[type, data], ...], "grants": [...], "error": "..."}`:
/// the notes are for the session's journal, the grants (tokens included; they never leave the
/// process) for its git jobs.
///
///   (acquire_atom, url) -> reply            a live grant for url, minted if needed
///   (revokeall_atom, journal_live) -> reply  once every grant is revoked
///   (leasenote_atom, reply) to the session   after each renewal
///
/// On start it reads the session's grants back from the vault (a node that crashed).
caf::actor spawn_lease(caf::local_actor* parent, std::shared_ptr<runtime> rt, std::string session);

/// The JSON form of a lease actor's reply, and back.
std::string lease_reply(const std::vector<std::pair<std::string, json::value>>& notes,
                        const std::vector<lease::grant>& grants, const std::string& error = {});
struct lease_answer {
  std::vector<std::pair<std::string, json::value>> notes;
  std::vector<lease::grant> grants;
  std::string error;
};
lease_answer parse_lease_reply(const std::string& text);

}  // namespace berth::session
