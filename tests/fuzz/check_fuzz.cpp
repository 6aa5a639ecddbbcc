// A message against a schema (the first byte picks one): checkFields()'s
// compiled plan must give the Dynamic API's verdict, and checkFields() the
// dynamic reads' words, whatever the bytes; a disagreement aborts.
#include <cstdlib>
#include <string>
#include <vector>

#include "check.h"
#include "crafted.h"
#include "zmesh/rpc/frame.h"

using namespace zmesh;
using testing::crafted::wireStructs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto schema = wireStructs()[data[0] % wireStructs().size()];
  const uint8_t* bytes = data + 1;
  size_t n = size - 1;
  // Each reader on a message of its own: reads count against its traversal budget.
  auto options = rpc::readerOptionsFor(n);
  bool fast;
  try {
    rpc::FrameMessage m(bytes, n, options);
    fast = rpc::checkFieldsFast(m.any(), schema);
  } catch (const rpc::FrameError&) {
    return 0;  // refused when opened: no field check runs
  }
  std::string dynamic, combined;
  try {
    rpc::FrameMessage m(bytes, n, options);
    rpc::checkFieldsDynamic(m.any(), schema, "params");
  } catch (const rpc::FrameError& e) {
    dynamic = e.what();
  }
  try {
    rpc::FrameMessage m(bytes, n, options);
    rpc::checkFields(m.any(), schema, "params");
  } catch (const rpc::FrameError& e) {
    combined = e.what();
  }
  if (fast != dynamic.empty() || combined != dynamic) std::abort();
  return 0;
}
