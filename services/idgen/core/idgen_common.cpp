#include "idgen_common.h"

namespace zmesh::idgen {

std::optional<Failure> validateCount(uint32_t count) {
  if (count >= 1 && count <= kMaxIdsPerCall) return std::nullopt;
  return Failure{Fail::invalidArgument, "count " + std::to_string(count) +
                                            " is out of range; must be 1.." +
                                            std::to_string(kMaxIdsPerCall)};
}

}  // namespace zmesh::idgen
