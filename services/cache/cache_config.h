// The [cache] section of the mesh file, read into the service's options:
// every key range-checked, a bad one (or an unknown one) a ConfigError naming
// its line and key. Flags given on the command line win over the file.
#pragma once

#include <optional>
#include <string>

#include "service.h"
#include "zmesh/rpc/config.h"

namespace zmesh::cache {

struct CacheFlags {
  std::optional<std::string> fsync;      // --fsync
  std::optional<std::string> policy;     // --policy
  std::optional<std::string> maxMemory;  // --max-memory
};

// data_dir is the file's (resolved against its directory); main applies
// --data-dir/--memory.
CacheServiceOptions parseCacheOptions(const rpc::ConfigSection& s, const CacheFlags& flags = {});

}  // namespace zmesh::cache
