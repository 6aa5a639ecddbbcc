// zmq::poll for loops that must not stop: a signal interrupting the wait
// (EINTR: any handled signal, a profiler's timer, libFuzzer's watchdog) is an
// empty wake-up, not the exception cppzmq makes of it.
#pragma once

#include <cerrno>
#include <chrono>
#include <zmq.hpp>

namespace zmesh::rpc {

inline size_t poll(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout) {
  try {
    return static_cast<size_t>(zmq::poll(items, count, timeout));
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return 0;
    throw;
  }
}

}  // namespace zmesh::rpc
