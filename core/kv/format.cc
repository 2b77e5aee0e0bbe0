// The cache vocabulary's parsing and printing, from the tables of kv_format.h.
#include "core/kv/format.h"

#include "core/errors.h"

namespace streamrecon {
namespace {

template <typename Table>
std::string Names(const Table& table, const std::string& separator) {
  std::string names;
  for (const auto& entry : table) names += (names.empty() ? "" : separator) + entry.name;
  return names;
}

}  // namespace

CacheFormat ParseCacheFormat(const std::string& name) {
  if (name == "dense") return CacheFormat::kDense;
  for (const CacheFormatInfo& info : kCacheFormats)
    if (name == info.name) return info.format;
  throw OptionError("unknown cache format '" + name + "': expected one of " + CacheFormatNames());
}

PrunePolicy ParsePrunePolicy(const std::string& name) {
  for (const PrunePolicyInfo& info : kPrunePolicies)
    if (name == info.name) return info.policy;
  throw OptionError("unknown prune policy '" + name + "': expected one of " + PrunePolicyNames());
}

std::string ToString(CacheFormat format) { return FormatInfo(format).name; }

std::string ToString(PrunePolicy policy) {
  for (const PrunePolicyInfo& info : kPrunePolicies)
    if (info.policy == policy) return info.name;
  return "?";
}

std::string CacheFormatNames(const std::string& separator) { return Names(kCacheFormats, separator); }
std::string PrunePolicyNames(const std::string& separator) { return Names(kPrunePolicies, separator); }

}  // namespace streamrecon
