// An exception barrier: where a loop, a thread or a callback must go on
// whatever one message or handler did. What `fn` throws (a kj::Exception from
// a malformed message read lazily, or any std::exception) stops here and is
// handed to `caught` as text; nothing else escapes.
#pragma once

#include <kj/exception.h>

#include <exception>

namespace zmesh::rpc {

template <typename Fn, typename Caught>
void barrier(Fn&& fn, Caught&& caught) {
  try {
    fn();
  } catch (const kj::Exception& e) {
    caught(e.getDescription().cStr());
  } catch (const std::exception& e) {
    caught(e.what());
  } catch (...) {
    caught("an exception of no known type");
  }
}

}  // namespace zmesh::rpc
