#include "zmesh/storage/env.h"

#include <system_error>

namespace zmesh::storage {

StorageError::StorageError(const std::string& message) : std::runtime_error(message) {}

StorageError::StorageError(std::string_view op, const std::string& path, int err)
    : std::runtime_error(std::string(op) + " " + path + ": " + std::system_category().message(err)),
      error_(err) {}

WritableFile::~WritableFile() = default;
DirLock::~DirLock() = default;
Env::~Env() = default;

}  // namespace zmesh::storage
