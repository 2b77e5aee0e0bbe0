// ParseByteSize / FormatBytes: accepted forms, rejected forms with their messages, round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/byte_size.h"
#include "core/errors.h"

namespace streamrecon {
namespace {

TEST(ByteSize, ParsesAcceptedForms) {
  const std::vector<std::pair<std::string, uint64_t>> cases = {
      {"0", 0},
      {"1048576", 1048576},
      {"512B", 512},
      {"512 b", 512},
      {"1K", 1000},
      {"1KB", 1000},
      {"1kb", 1000},
      {"1KiB", 1024},
      {"1 kib", 1024},
      {"1Ki", 1024},
      {"2GB", 2000000000},
      {"512MiB", 512ull << 20},
      {"1.5GB", 1500000000},
      {"1.5 GiB", 3ull << 29},
      {"0.5KiB", 512},
      {"1.0001KB", 1000},
      {"2TB", 2000000000000ull},
      {"1TiB", 1ull << 40},
      {"  64 MB  ", 64000000},
      {"18446744073709551615", UINT64_MAX},
      {"16777215.5TiB", 18446743523953737728ull},
      {"1.0000000000000000000001KiB", 1024},
  };
  for (const auto& [text, expected] : cases) {
    EXPECT_EQ(ParseByteSize(text), expected) << "text: \"" << text << "\"";
  }
}

TEST(ByteSize, RejectsOtherFormsNamingTheTextAndTheAcceptedForms) {
  for (const std::string text :
       {"", " ", "-1", "abc", "1XB", "1.5.2", "1 2", ".5", "1.", "1e9", "inf", "GB", "1 KiBB",
        "1iB", "1PB", "+5"}) {
    try {
      ParseByteSize(text);
      ADD_FAILURE() << "accepted \"" << text << "\"";
    } catch (const OptionError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("\"" + text + "\""), std::string::npos) << message;
      EXPECT_NE(message.find("KiB"), std::string::npos) << message;
    }
  }
}

TEST(ByteSize, RejectsOverflow) {
  for (const std::string text : {"18446744073709551616", "16777216TiB", "99999999999999999999999",
                                 "18446744073709551615.5"}) {
    EXPECT_THROW(ParseByteSize(text), OptionError) << "text: \"" << text << "\"";
  }
}

TEST(ByteSize, Formats) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(512), "512 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1.00 KiB");
  EXPECT_EQ(FormatBytes(3ull << 29), "1.50 GiB");
  EXPECT_EQ(FormatBytes(5ull << 40), "5.00 TiB");
  EXPECT_EQ(FormatBytes(UINT64_MAX), "16777216.00 TiB");
}

TEST(ByteSize, FormattedSizesParseBack) {
  for (const uint64_t bytes : {0ull, 1ull, 999ull, 4096ull, 123456789ull, 3ull << 29, 7ull << 41}) {
    const uint64_t parsed = ParseByteSize(FormatBytes(bytes));
    EXPECT_LE(std::abs(static_cast<double>(parsed) - static_cast<double>(bytes)),
              0.005 * static_cast<double>(bytes))
        << FormatBytes(bytes);
  }
}

}  // namespace
}  // namespace streamrecon
