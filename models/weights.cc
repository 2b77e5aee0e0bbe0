// Safetensors and .pth reading, safetensors writing, key/shape checking, random weights.
#include "models/weights.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/errors.h"

namespace streamrecon::models {
namespace {

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeInfo kDtypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat}, {"F16", at::kHalf}, {"BF16", at::kBFloat16},
    {"I64", at::kLong},   {"I32", at::kInt},   {"I16", at::kShort}, {"I8", at::kChar},
    {"U8", at::kByte},    {"BOOL", at::kBool},
};

std::optional<at::ScalarType> DtypeFromName(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return d.type;
  return std::nullopt;
}

std::string DtypeName(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (type == d.type) return d.name;
  throw Error(std::string("safetensors cannot store dtype ") + c10::toString(type));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// A read-only memory map that unmaps itself.
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path) {
    fd_ = ::open(path.c_str(), O_RDONLY);
    if (fd_ < 0) throw FileError("cannot open " + path.string() + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw FileError("not a regular file: " + path.string());
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (data_ == MAP_FAILED) {
        ::close(fd_);
        throw FileError("cannot map " + path.string() + ": " + std::strerror(errno));
      }
    }
  }
  ~MappedFile() {
    if (data_ && data_ != MAP_FAILED) ::munmap(data_, size_);
    if (fd_ >= 0) ::close(fd_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const char* data() const { return static_cast<const char*>(data_); }
  size_t size() const { return size_; }

 private:
  int fd_ = -1;
  void* data_ = nullptr;
  size_t size_ = 0;
};

bool IsSafetensors(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char head[9] = {};
  in.read(head, 9);
  return in.gcount() == 9 && head[8] == '{';
}

bool IsZip(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char head[4] = {};
  in.read(head, 4);
  return in.gcount() == 4 && std::memcmp(head, "PK\x03\x04", 4) == 0;
}

void CollectTensors(const c10::IValue& value, const std::string& prefix, StateDict& out, const std::string& source) {
  if (value.isTensor()) {
    out[prefix] = value.toTensor();
    return;
  }
  if (value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) {
      if (!entry.key().isString())
        throw FileError(source + ": expected string keys in the state dict, found " + entry.key().tagKind());
      CollectTensors(entry.value(), prefix.empty() ? entry.key().toStringRef() : prefix + "." + entry.key().toStringRef(), out, source);
    }
    return;
  }
  // Non-tensor entries (epoch counters, args) are not weights.
}

// Little-endian fields of a zip archive, read with bounds checks.
uint64_t ReadLe(const std::vector<char>& bytes, uint64_t at, int width) {
  uint64_t v = 0;
  for (int i = width - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[at + i]);
  return v;
}

// The zip structure of a torch.save archive, checked before LibTorch's reader sees it: that reader
// (miniz) trusts the sizes and offsets of the central directory and read past its buffer on a
// crafted file (found by tests/fuzz/fuzz_pth.cc). Every record must be stored (torch.save never
// compresses) and lie inside the file; all arithmetic is checked, ZIP64 included.
// Returns each record's name -> {first data byte, size}.
std::map<std::string, std::pair<uint64_t, uint64_t>> CheckTorchZip(const std::vector<char>& bytes, const std::string& source) {
  std::map<std::string, std::pair<uint64_t, uint64_t>> records;
  const uint64_t size = bytes.size();
  auto fail = [&](const std::string& what) {
    throw FileError(source + ": damaged torch.save archive: " + what + " (truncated or corrupt?)");
  };
  auto end_of = [&](uint64_t at, uint64_t length, const char* what) {
    uint64_t end = 0;
    if (__builtin_add_overflow(at, length, &end) || end > size)
      fail(std::string(what) + " at byte " + std::to_string(at) + " runs past the end of the " + std::to_string(size) + "-byte file");
    return end;
  };
  // End of central directory: the last signature within the final 22 + 65535 bytes.
  if (size < 22) fail("too small for a zip archive");
  int64_t eocd = -1;
  for (int64_t at = static_cast<int64_t>(size) - 22; at >= 0 && at >= static_cast<int64_t>(size) - 22 - 65535; --at)
    if (ReadLe(bytes, at, 4) == 0x06054b50) {
      eocd = at;
      break;
    }
  if (eocd < 0) fail("no end-of-central-directory record");
  uint64_t entries = ReadLe(bytes, eocd + 10, 2), cd_size = ReadLe(bytes, eocd + 12, 4), cd_offset = ReadLe(bytes, eocd + 16, 4);
  uint64_t cd_limit = static_cast<uint64_t>(eocd);
  if (entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {  // ZIP64
    if (eocd < 20 || ReadLe(bytes, eocd - 20, 4) != 0x07064b50) fail("ZIP64 sizes without a ZIP64 locator");
    const uint64_t record = ReadLe(bytes, eocd - 20 + 8, 8);
    end_of(record, 56, "the ZIP64 end-of-central-directory record");
    if (record >= cd_limit || ReadLe(bytes, record, 4) != 0x06064b50) fail("a bad ZIP64 end-of-central-directory record");
    entries = ReadLe(bytes, record + 32, 8);
    cd_size = ReadLe(bytes, record + 40, 8);
    cd_offset = ReadLe(bytes, record + 48, 8);
    cd_limit = record;
  }
  if (end_of(cd_offset, cd_size, "the central directory") > cd_limit) fail("the central directory overlaps its end record");
  uint64_t at = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < entries; ++i) {
    if (end_of(at, 46, "a central directory entry") > cd_end || ReadLe(bytes, at, 4) != 0x02014b50)
      fail("central directory entry " + std::to_string(i) + " of " + std::to_string(entries) + " is missing");
    const uint64_t method = ReadLe(bytes, at + 10, 2);
    uint64_t compressed = ReadLe(bytes, at + 20, 4), uncompressed = ReadLe(bytes, at + 24, 4);
    const uint64_t name_length = ReadLe(bytes, at + 28, 2), extra_length = ReadLe(bytes, at + 30, 2),
                   comment_length = ReadLe(bytes, at + 32, 2);
    uint64_t local = ReadLe(bytes, at + 42, 4);
    const uint64_t name_at = at + 46;
    const uint64_t extra_at = end_of(name_at, name_length, "an entry name");
    const uint64_t extra_end = end_of(extra_at, extra_length, "an entry's extra field");
    const uint64_t next = end_of(extra_end, comment_length, "an entry comment");
    if (next > cd_end) fail("central directory entry " + std::to_string(i) + " runs past the directory");
    const std::string name(bytes.data() + name_at, name_length);
    // ZIP64 extra field: the 0xFFFFFFFF fields, in order, as 8-byte values.
    for (uint64_t x = extra_at; x + 4 <= extra_end;) {
      const uint64_t id = ReadLe(bytes, x, 2), length = ReadLe(bytes, x + 2, 2);
      const uint64_t body_end = end_of(x + 4, length, "an extra field");
      if (body_end > extra_end) fail("the extra field of '" + name + "' runs past its entry");
      if (id == 0x0001) {
        uint64_t field = x + 4;
        for (uint64_t* value : {&uncompressed, &compressed, &local}) {
          if (*value != 0xFFFFFFFF) continue;
          if (field + 8 > body_end) fail("a short ZIP64 field in '" + name + "'");
          *value = ReadLe(bytes, field, 8);
          field += 8;
        }
      }
      x = body_end;
    }
    if (method != 0)
      fail("record '" + name + "' is compressed (method " + std::to_string(method) +
           "), torch.save stores records uncompressed; re-save the file with torch.save");
    if (compressed != uncompressed)
      fail("record '" + name + "' is stored with " + std::to_string(compressed) + " bytes but announces " + std::to_string(uncompressed));
    if (end_of(local, 30, "a local header") > cd_offset || ReadLe(bytes, local, 4) != 0x04034b50)
      fail("record '" + name + "' has no local header at byte " + std::to_string(local));
    const uint64_t data_at = end_of(end_of(local + 30, ReadLe(bytes, local + 26, 2), "a local name"),
                                    ReadLe(bytes, local + 28, 2), "a local extra field");
    if (end_of(data_at, compressed, ("record '" + name + "'").c_str()) > cd_offset)
      fail("record '" + name + "' (" + std::to_string(compressed) + " bytes at byte " + std::to_string(data_at) +
           ") runs into the central directory");
    records[name] = {data_at, compressed};
    at = next;
  }
  return records;
}

// "0x58": a pickle opcode as the messages name it.
std::string OpcodeHex(unsigned char op) {
  char hex[5];
  std::snprintf(hex, sizeof hex, "0x%02x", op);
  return hex;
}

// The opcodes of a pickle (protocols 0-5) walked for their lengths only: LibTorch's unpickler
// allocates a string or bytes object of whatever length a BINUNICODE/BINBYTES opcode announces
// before it checks that the data holds it (fuzz_pth's second finding: a 1.8 GB allocation from a
// 629-byte file), and a memo table as large as the largest index named (the third finding). Every
// length-prefixed argument must fit in the pickle and every memo index be smaller than the
// pickle; an unknown opcode or a missing STOP is reported. Nothing else is interpreted.
void CheckPickleLengths(const std::vector<char>& bytes, uint64_t begin, uint64_t size, const std::string& where) {
  const uint64_t end = begin + size;  // inside the file: CheckTorchZip checked it
  auto fail = [&](uint64_t at, const std::string& what) {
    throw FileError(where + ": damaged pickle at byte " + std::to_string(at - begin) + " of " + std::to_string(size) + ": " + what);
  };
  auto need = [&](uint64_t at, uint64_t length, unsigned char op) {
    if (length > end - at)
      fail(at, "opcode " + OpcodeHex(op) + " announces " + std::to_string(length) + " bytes, " + std::to_string(end - at) + " are left");
  };
  auto line_end = [&](uint64_t at) {  // the byte after the next newline
    for (uint64_t i = at; i < end; ++i)
      if (bytes[i] == '\n') return i + 1;
    fail(at, "a text argument without its newline");
    return end;
  };
  uint64_t at = begin;
  while (at < end) {
    const unsigned char op = static_cast<unsigned char>(bytes[at++]);
    uint64_t fixed = 0, prefix = 0;  // argument bytes; or the width of a length prefix
    switch (op) {
      case '.': return;  // STOP
      case '(': case '0': case '1': case '2': case 'N': case 0x88: case 0x89: case '}': case ']': case ')': case 't':
      case 0x85: case 0x86: case 0x87: case 'l': case 'd': case 'a': case 'e': case 's': case 'u': case 'b': case 'R':
      case 0x81: case 0x92: case 'Q': case 'o': case 0x93: case 0x94: case 0x8f: case 0x90: case 0x91: case 0x97: case 0x98:
        break;
      case 'K': case 'h': case 'q': case 0x80: case 0x82: fixed = 1; break;
      case 'M': case 0x83: fixed = 2; break;
      case 'J': case 'j': case 'r': case 0x84: fixed = 4; break;
      case 'G': case 0x95: fixed = 8; break;
      case 'g': case 'p': {  // GET / PUT with a decimal memo index
        const uint64_t next = line_end(at);
        if (std::strtoull(std::string(bytes.data() + at, next - 1 - at).c_str(), nullptr, 10) >= size)
          fail(at - 1, "a memo index beyond any the pickle can hold");
        at = next;
        continue;
      }
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P': at = line_end(at); continue;
      case 'c': case 'i': at = line_end(line_end(at)); continue;
      case 'U': case 'C': case 0x8c: case 0x8a: prefix = 1; break;
      case 'T': case 'B': case 'X': case 0x8b: prefix = 4; break;
      case 0x8d: case 0x8e: case 0x96: prefix = 8; break;
      default: fail(at - 1, "unknown opcode " + OpcodeHex(op));
    }
    if (prefix > 0) {
      need(at, prefix, op);
      fixed = ReadLe(bytes, at, static_cast<int>(prefix));
      at += prefix;
    }
    need(at, fixed, op);
    // LibTorch sizes its memo table to the largest index a PUT names (fuzz_pth's third finding: a
    // 28 GB table); a pickle cannot hold more memo entries than it has bytes.
    if ((op == 'j' || op == 'r') && ReadLe(bytes, at, 4) >= size) fail(at - 1, "a memo index beyond any the pickle can hold");
    at += fixed;
  }
  fail(at, "the pickle ends without its STOP opcode");
}

StateDict LoadPth(const std::filesystem::path& path, std::vector<std::string>* notes) {
  if (!IsZip(path))
    throw FileError(path.string() + ": not a zip-format torch.save file (expected the 'PK' header of "
                    "torch.save since PyTorch 1.6; re-save it with torch.save, or convert to .safetensors)");
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& [name, record] : CheckTorchZip(bytes, path.string()))
    if (name == "data.pkl" || (name.size() > 9 && name.compare(name.size() - 9, 9, "/data.pkl") == 0))
      CheckPickleLengths(bytes, record.first, record.second, path.string() + " (" + name + ")");
  c10::IValue root;
  try {
    root = torch::jit::pickle_load(bytes);
  } catch (const std::exception& e) {
    std::string what = e.what();
    what = what.substr(0, what.find('\n'));
    throw FileError(path.string() + ": cannot read the torch.save archive (truncated or corrupt?): " + what);
  }
  if (!root.isGenericDict()) throw FileError(path.string() + ": expected a dict of tensors, found " + root.tagKind());
  c10::IValue state = root;
  for (const char* wrapper : {"model", "state_dict"}) {
    const auto dict = root.toGenericDict();
    auto it = dict.find(c10::IValue(std::string(wrapper)));
    if (it != dict.end() && it->value().isGenericDict()) {
      state = it->value();
      if (notes) notes->push_back(path.string() + ": using the weights under the '" + wrapper + "' key");
      break;
    }
  }
  StateDict out;
  CollectTensors(state, "", out, path.string());
  return out;
}

}  // namespace

SafetensorsFile ReadSafetensors(const std::filesystem::path& path) {
  const std::string file = path.string();
  if (!std::filesystem::exists(path)) throw FileError("weights file not found: " + file);
  MappedFile map(path);
  if (map.size() < 8) throw FileError(file + ": too small for a safetensors file (" + std::to_string(map.size()) + " bytes)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, map.data(), 8);
  if (header_len > map.size() - 8)
    throw FileError(file + ": header length " + std::to_string(header_len) + " exceeds the file size " +
                    std::to_string(map.size()) + " (truncated or not safetensors)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(map.data() + 8, map.data() + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    throw FileError(file + ": cannot parse the safetensors JSON header: " + e.what());
  }
  if (!header.is_object()) throw FileError(file + ": safetensors header is not a JSON object");
  const char* data = map.data() + 8 + header_len;
  const uint64_t data_size = map.size() - 8 - header_len;

  SafetensorsFile result;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (entry.is_object())
        for (const auto& [k, v] : entry.items()) result.metadata[k] = v.is_string() ? v.get<std::string>() : v.dump();
      continue;
    }
    const std::string where = file + ": tensor '" + name + "'";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
      throw FileError(where + ": expected {dtype, shape, data_offsets}");
    const auto dtype = DtypeFromName(entry["dtype"].is_string() ? entry["dtype"].get<std::string>() : "");
    if (!dtype) throw FileError(where + ": unsupported dtype " + entry["dtype"].dump());
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) throw FileError(where + ": bad shape " + entry["shape"].dump());
      shape.push_back(d.get<int64_t>());
      // Checked: a crafted shape must not wrap into a small, plausible byte count.
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(shape.back()), &numel) || numel > (uint64_t{1} << 62))
        throw FileError(where + ": shape " + entry["shape"].dump() + " has more elements than a tensor can hold");
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      throw FileError(where + ": bad data_offsets " + offsets.dump());
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    uint64_t expected = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(c10::elementSize(*dtype)), &expected))
      throw FileError(where + ": shape " + entry["shape"].dump() + " needs more bytes than a 64-bit size can count");
    if (begin > end || end > data_size)
      throw FileError(where + ": data [" + std::to_string(begin) + ", " + std::to_string(end) + ") lies outside the " +
                      std::to_string(data_size) + " data bytes (file truncated?)");
    if (end - begin != expected)
      throw FileError(where + ": holds " + std::to_string(end - begin) + " bytes, expected " + std::to_string(expected) +
                      " for shape " + ShapeString(shape));
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(*dtype));
    if (expected > 0) std::memcpy(t.data_ptr(), data + begin, expected);
    result.tensors.emplace(name, std::move(t));
  }
  return result;
}

void WriteSafetensors(const std::filesystem::path& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    at::Tensor t = tensor.to(at::kCPU).contiguous();
    const uint64_t n = t.numel() * t.element_size();
    header[name] = {{"dtype", DtypeName(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    contiguous.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep tensor data 8-byte aligned
  WriteFileAtomically(path, [&](const std::filesystem::path& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    const uint64_t len = text.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : contiguous) out.write(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
    out.flush();
    if (!out) throw FileError("failed writing " + path.string());
  });
}

StateDict LoadStateDict(const std::filesystem::path& path, std::vector<std::string>* notes) {
  if (!std::filesystem::exists(path)) throw FileError("weights file not found: " + path.string());
  if (std::filesystem::is_directory(path)) throw FileError("expected a weights file, found a folder: " + path.string());
  // The format is read from the content (the extension only breaks a tie), and every error says
  // which format was tried.
  std::string ext = path.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  StateDict state;
  if (IsSafetensors(path) || (ext == ".safetensors" && !IsZip(path))) {
    try {
      state = ReadSafetensors(path).tensors;
    } catch (const FileError& e) {
      throw FileError(std::string(e.what()) + " (read as safetensors" + (IsSafetensors(path) ? ", from its header" : ", from its extension") + ")");
    }
  } else if (IsZip(path) || ext == ".pth" || ext == ".pt" || ext == ".bin") {
    state = LoadPth(path, notes);
  } else {
    std::ifstream in(path, std::ios::binary);
    unsigned char head[8] = {};
    in.read(reinterpret_cast<char*>(head), 8);
    char hex[40] = {};
    for (int i = 0; i < in.gcount(); ++i) std::snprintf(hex + 3 * i, 4, "%02x ", head[i]);
    throw FileError(path.string() + ": not a weights file: expected safetensors (an 8-byte header length, then '{') or a PyTorch "
                    ".pth zip archive (starting 'PK'), found the bytes " + std::string(hex));
  }
  if (state.empty()) throw FileError(path.string() + ": contains no tensors");
  const bool all_module = std::all_of(state.begin(), state.end(), [](const auto& kv) { return kv.first.rfind("module.", 0) == 0; });
  if (all_module) {
    StateDict stripped;
    for (auto& [k, v] : state) stripped.emplace(k.substr(7), std::move(v));
    state.swap(stripped);
    if (notes) notes->push_back(path.string() + ": stripped the 'module.' prefix of every key");
  }
  return state;
}

std::optional<ModelConfig> ConfigFromWeightsFile(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path) || !IsSafetensors(path)) return std::nullopt;
  MappedFile map(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, map.data(), 8);
  if (header_len > map.size() - 8) return std::nullopt;  // ReadSafetensors reports it properly
  try {
    const auto header = nlohmann::json::parse(map.data() + 8, map.data() + 8 + header_len);
    if (!header.contains("__metadata__") || !header["__metadata__"].contains("config")) return std::nullopt;
    return ModelConfig::FromJson(nlohmann::json::parse(header["__metadata__"]["config"].get<std::string>()));
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

void CheckStateDict(const StateDict& weights, const ModelConfig& config, const std::string& source) {
  std::vector<std::string> problems;
  std::map<std::string, std::vector<int64_t>> expected;
  for (auto& [name, shape] : ExpectedParameters(config)) expected.emplace(name, shape);
  for (const auto& [name, shape] : expected) {
    auto it = weights.find(name);
    if (it == weights.end()) {
      problems.push_back("missing key '" + name + "' (expected shape " + ShapeString(shape) + ")");
    } else if (it->second.sizes().vec() != shape) {
      problems.push_back("key '" + name + "' has shape " + ShapeString(it->second.sizes().vec()) + ", expected " + ShapeString(shape));
    } else if (!at::isFloatingType(it->second.scalar_type())) {
      problems.push_back(std::string("key '") + name + "' has non-float dtype " + c10::toString(it->second.scalar_type()));
    }
  }
  for (const auto& [name, tensor] : weights)
    if (!expected.count(name) && !IsIgnoredParameter(name)) problems.push_back("unexpected key '" + name + "'");
  if (problems.empty()) return;
  std::ostringstream msg;
  msg << source << ": " << problems.size() << " problem(s) with the weights for this model config "
      << "(embed_dim " << config.embed_dim << ", depth " << config.depth << "):";
  const size_t shown = std::min<size_t>(problems.size(), 20);
  for (size_t i = 0; i < shown; ++i) msg << "\n  " << problems[i];
  if (shown < problems.size()) msg << "\n  ... and " << problems.size() - shown << " more";
  // The usual cause: a file without config metadata read with the wrong config.
  for (const auto& name : NamedConfigNames()) {
    const ModelConfig named = NamedConfig(name);
    if (named.ToJson() == config.ToJson()) continue;
    const auto named_params = ExpectedParameters(named);
    size_t used = 0;
    for (const auto& [key, tensor] : weights) used += IsIgnoredParameter(key) ? 0 : 1;
    bool matches = used == named_params.size();
    for (const auto& [key, shape] : named_params) {
      if (!matches) break;
      const auto it = weights.find(key);
      if (it == weights.end() || it->second.sizes().vec() != shape) {
        matches = false;
        break;
      }
    }
    if (matches) {
      msg << "\n  these weights match the built-in config '" << name << "': pass --config " << name;
      break;
    }
  }
  throw WeightsError(msg.str());
}

StateDict RandomWeights(const ModelConfig& config, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  StateDict out;
  for (const auto& [name, shape] : ExpectedParameters(config)) {
    const auto ends_with = [&n = name](const char* s) {
      const std::string suffix(s);
      return n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    at::Tensor t;
    const bool is_norm = name.find("norm") != std::string::npos;
    if (ends_with(".gamma")) {
      t = at::full(shape, 0.1, at::kFloat);
    } else if (is_norm && ends_with(".weight")) {
      t = at::ones(shape, at::kFloat);
    } else if (ends_with(".bias")) {
      t = at::zeros(shape, at::kFloat);
    } else if (shape.size() >= 2 && ends_with(".weight")) {
      // Variance-preserving init: fan-in of the layer (conv-transpose weights are [in, out, k, k]).
      const bool transposed = name.find("resize_layers.0") != std::string::npos || name.find("resize_layers.1") != std::string::npos;
      int64_t fan_in = transposed ? shape[0] : shape[1];
      for (size_t i = 2; i < shape.size(); ++i) fan_in *= shape[i];
      t = at::normal(0.0, 1.0 / std::sqrt(static_cast<double>(fan_in)), shape, gen);
    } else {
      t = at::normal(0.0, 0.02, shape, gen);  // tokens, positional table
    }
    out.emplace(name, t.to(at::kFloat));
  }
  return out;
}

}  // namespace streamrecon::models
