#include "translate.hpp"

namespace berth::bus {

error translate(natsStatus s, jsErrCode js, const std::string& what) {
  errc c = errc::io_error;
  switch (js) {
    case JSStreamWrongLastSequenceErr:
      c = errc::fenced;
      break;
    case JSNoMessageFoundErr:
    case JSStreamNotFoundErr:
    case JSConsumerNotFoundErr:
      c = errc::not_found;
      break;
    case JSClusterNotAvailErr:
    case JSClusterNotLeaderErr:
      c = errc::unavailable;
      break;
    default:
      switch (s) {
        case NATS_TIMEOUT:
          c = errc::timeout;
          break;
        case NATS_NO_RESPONDERS:
        case NATS_NO_SERVER:
        case NATS_CONNECTION_CLOSED:
        case NATS_CONNECTION_DISCONNECTED:
        case NATS_STALE_CONNECTION:
          c = errc::unavailable;
          break;
        case NATS_NOT_FOUND:
          c = errc::not_found;
          break;
        case NATS_MAX_PAYLOAD:
          c = errc::too_large;
          break;
        case NATS_INVALID_ARG:
        case NATS_INVALID_SUBJECT:
          c = errc::invalid_argument;
          break;
        default:
          break;
      }
  }
  std::string text = what + ": " + natsStatus_GetText(s);
  if (js != 0) text += " (JetStream error " + std::to_string(static_cast<int>(js)) + ")";
  const char* last = nats_GetLastError(nullptr);
  if (last && *last && s != NATS_OK && s != NATS_TIMEOUT && s != NATS_NOT_FOUND)
    text += ": " + std::string(last);
  return error{c, text};
}

bool is_transient(natsStatus s, jsErrCode js) {
  return s == NATS_NO_RESPONDERS || js == JSClusterNotAvailErr || js == JSClusterNotLeaderErr ||
         s == NATS_CONNECTION_DISCONNECTED || (s == NATS_TIMEOUT && js == 0);
}

}  // namespace berth::bus
