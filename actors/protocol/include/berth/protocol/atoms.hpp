#pragma once

#include <caf/atom.hpp>

namespace berth {

// The atoms every actor of the node speaks, in one place (supervision/, session/ and node/ all
// use them, none owns them). CAF 0.17 atoms: at most 10 characters from [A-Za-z0-9_]; unique
// across the project.
using loaded_atom = caf::atom_constant<caf::atom("loaded")>;
using commit_atom = caf::atom_constant<caf::atom("committed")>;
using exited_atom = caf::atom_constant<caf::atom("exited")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using wake_atom = caf::atom_constant<caf::atom("wake")>;
using inputs_atom = caf::atom_constant<caf::atom("inputs")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using stopnow_atom = caf::atom_constant<caf::atom("stop_now")>;
using steptmo_atom = caf::atom_constant<caf::atom("step_tmo")>;
using final_atom = caf::atom_constant<caf::atom("finalized")>;
using place_atom = caf::atom_constant<caf::atom("place")>;
using placed_atom = caf::atom_constant<caf::atom("placed")>;
using spawn_atom = caf::atom_constant<caf::atom("spawn")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using beat_atom = caf::atom_constant<caf::atom("heartbeat")>;
using stopped_atom = caf::atom_constant<caf::atom("stopped")>;
using stepup_atom = caf::atom_constant<caf::atom("step_up")>;
using input_atom = caf::atom_constant<caf::atom("input")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using tooldone_atom = caf::atom_constant<caf::atom("tool_done")>;
using tooltmo_atom = caf::atom_constant<caf::atom("tool_tmo")>;
using prepared_atom = caf::atom_constant<caf::atom("prepared")>;
using wsdone_atom = caf::atom_constant<caf::atom("ws_done")>;
using renew_atom = caf::atom_constant<caf::atom("renew")>;
using wrapup_atom = caf::atom_constant<caf::atom("wrap_up")>;
using acquire_atom = caf::atom_constant<caf::atom("acquire")>;
using revokeall_atom = caf::atom_constant<caf::atom("revoke_all")>;
using leasenote_atom = caf::atom_constant<caf::atom("lease_note")>;
using indexed_atom = caf::atom_constant<caf::atom("indexed")>;
using cleansnap_atom = caf::atom_constant<caf::atom("clean_snap")>;

}  // namespace berth
