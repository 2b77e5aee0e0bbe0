// Byte sizes as users type them ("2GB", "512MiB", "1.5 GB") and as we print them ("1.50 GiB").
// Used by options such as --kv-budget.
#pragma once

#include <cstdint>
#include <string>

namespace streamrecon {

// Parses a non-negative byte size: a number (digits, optionally '.' and more digits), optional
// spaces, and an optional case-insensitive unit: B; K, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti
// (powers of 1024), each with an optional trailing B ("KB", "KiB"). Fractions are rounded to the
// nearest byte. Throws OptionError naming the text and the accepted forms when it is empty,
// negative, malformed, has an unknown unit or exceeds 2^64 - 1 bytes.
uint64_t ParseByteSize(const std::string& text);

// Human readable, in binary units up to TiB: "512 B", "1.50 GiB", "2048.00 TiB".
// ParseByteSize reads the result back to within the printed precision.
std::string FormatBytes(uint64_t bytes);

}  // namespace streamrecon
