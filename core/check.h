// Check macros for the hand-written input checks (COLMAP's THROW_CHECK habit): a failed check
// throws the named error type (core/errors.h) with the message and, for comparisons, the two
// expressions and their values, so every check reads as one line and says what it found.
//   SR_CHECK(ok, OptionError, "k_group " << g << " must divide 64");
//   SR_CHECK_GE(OptionError, pool_size, 1, "pool_size");  -> "pool_size: expected pool_size >= 1, got 0 vs 1"
#pragma once

#include <sstream>

#include "core/errors.h"

#define SR_CHECK(condition, ErrorType, message)        \
  do {                                                 \
    if (!(condition)) {                                \
      std::ostringstream sr_check_message_;            \
      sr_check_message_ << message;                    \
      throw ErrorType(sr_check_message_.str());        \
    }                                                  \
  } while (0)

#define SR_CHECK_OP(ErrorType, a, op, b, message)                                                      \
  do {                                                                                                 \
    const auto& sr_check_a_ = (a);                                                                     \
    const auto& sr_check_b_ = (b);                                                                     \
    if (!(sr_check_a_ op sr_check_b_)) {                                                               \
      std::ostringstream sr_check_message_;                                                            \
      sr_check_message_ << message << ": expected " #a " " #op " " #b ", got " << sr_check_a_ << " vs " \
                        << sr_check_b_;                                                                \
      throw ErrorType(sr_check_message_.str());                                                        \
    }                                                                                                  \
  } while (0)

#define SR_CHECK_EQ(ErrorType, a, b, message) SR_CHECK_OP(ErrorType, a, ==, b, message)
#define SR_CHECK_NE(ErrorType, a, b, message) SR_CHECK_OP(ErrorType, a, !=, b, message)
#define SR_CHECK_LT(ErrorType, a, b, message) SR_CHECK_OP(ErrorType, a, <, b, message)
#define SR_CHECK_LE(ErrorType, a, b, message) SR_CHECK_OP(ErrorType, a, <=, b, message)
#define SR_CHECK_GT(ErrorType, a, b, message) SR_CHECK_OP(ErrorType, a, >, b, message)
#define SR_CHECK_GE(ErrorType, a, b, message) SR_CHECK_OP(ErrorType, a, >=, b, message)
