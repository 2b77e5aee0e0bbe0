// Error types used at API boundaries (bad files, bad options, bad input).
// Messages say what was expected, what was found and where (file, key, frame).
#pragma once

#include <stdexcept>
#include <string>

namespace streamrecon {

// Base for every error a user can cause; the CLI prints what() and exits non-zero.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A file is missing, unreadable, truncated or malformed.
class FileError : public Error {
 public:
  using Error::Error;
};

// An option or configuration value is invalid.
class OptionError : public Error {
 public:
  using Error::Error;
};

// Weights do not match the model configuration (missing/unexpected/mis-shaped keys).
class WeightsError : public Error {
 public:
  using Error::Error;
};

// The KV-cache budget cannot be honoured.
class BudgetError : public Error {
 public:
  using Error::Error;
};

}  // namespace streamrecon
