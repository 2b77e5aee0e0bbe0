#include "core/byte_size.h"

#include <cctype>
#include <cstdio>

#include "core/errors.h"

namespace streamrecon {
namespace {

constexpr char kAcceptedForms[] =
    "expected a non-negative number with an optional unit: B, KB, MB, GB, TB (powers of 1000) "
    "or KiB, MiB, GiB, TiB (powers of 1024), e.g. \"1048576\", \"512MiB\", \"1.5 GB\"";

[[noreturn]] void ThrowMalformed(const std::string& text) {
  throw OptionError("invalid byte size \"" + text + "\": " + kAcceptedForms);
}

// The multiplier of a unit (already lower-cased), or 0 when the unit is unknown.
uint64_t UnitMultiplier(std::string unit) {
  if (!unit.empty() && unit.back() == 'b') unit.pop_back();
  if (unit.empty()) return 1;
  const bool binary = unit.size() == 2 && unit[1] == 'i';
  if (unit.size() != 1 && !binary) return 0;
  const std::string prefixes = "kmgt";
  const size_t power = prefixes.find(unit[0]);
  if (power == std::string::npos) return 0;
  uint64_t multiplier = 1;
  for (size_t i = 0; i <= power; ++i) multiplier *= binary ? 1024 : 1000;
  return multiplier;
}

}  // namespace

uint64_t ParseByteSize(const std::string& text) {
  size_t pos = 0;
  const auto skip_spaces = [&] {
    while (pos < text.size() && std::isspace(static_cast<unsigned char>(text[pos]))) ++pos;
  };
  const auto take_digits = [&] {
    const size_t start = pos;
    while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) ++pos;
    return text.substr(start, pos - start);
  };

  skip_spaces();
  const std::string whole = take_digits();
  std::string fraction;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    fraction = take_digits();
    if (fraction.empty()) ThrowMalformed(text);
  }
  if (whole.empty()) ThrowMalformed(text);
  skip_spaces();
  std::string unit;
  while (pos < text.size() && std::isalpha(static_cast<unsigned char>(text[pos]))) {
    unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[pos++])));
  }
  skip_spaces();
  const uint64_t multiplier = UnitMultiplier(unit);
  if (pos != text.size() || multiplier == 0) ThrowMalformed(text);

  // Exact integer arithmetic: whole * multiplier + round(fraction * multiplier).
  using Wide = unsigned __int128;
  const Wide kMax = UINT64_MAX;
  Wide bytes = 0;
  for (char digit : whole) {
    bytes = bytes * 10 + static_cast<unsigned>(digit - '0');
    if (bytes > kMax) break;
  }
  bytes *= multiplier;
  // Digits past the 18th change the result by far less than a byte (multiplier < 2^41).
  fraction = fraction.substr(0, 18);
  Wide numerator = 0;
  Wide denominator = 1;
  for (char digit : fraction) {
    numerator = numerator * 10 + static_cast<unsigned>(digit - '0');
    denominator *= 10;
  }
  bytes += (numerator * multiplier + denominator / 2) / denominator;
  if (bytes > kMax) {
    throw OptionError("byte size \"" + text + "\" is too large: expected at most " +
                      std::to_string(UINT64_MAX) + " bytes");
  }
  return static_cast<uint64_t>(bytes);
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024.0;
  int unit = 0;
  while (unit < 3 && value >= 1024.0) {
    value /= 1024.0;
    ++unit;
  }
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.2f %s", value, kUnits[unit]);
  return buffer;
}

}  // namespace streamrecon
