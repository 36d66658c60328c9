// Safetensors reader (strict validation over mmap) and streaming writer.
#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace quatre::io {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw LoadError(fmt::format("{}: {}", path.string(), what));
}

uint64_t read_u64_le(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint64_t>(p[i]);
  return v;
}

// Parses the header JSON, refusing duplicate keys at the top level (nlohmann would keep the last).
json parse_header(const std::filesystem::path& path, std::string_view text) {
  std::set<std::string> seen;
  std::string duplicate;
  auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      const std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  // nlohmann's lexer takes a NUL byte for the end of the input and would ignore whatever follows it.
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos) {
    fail(path, fmt::format("header is not valid JSON: NUL byte at offset {} (only spaces may pad it)", nul));
  }
  json header;
  try {
    header = json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {
    fail(path, fmt::format("header is not valid JSON: {}", e.what()));
  }
  if (!duplicate.empty()) fail(path, fmt::format("header lists tensor '{}' twice", duplicate));
  if (!header.is_object()) fail(path, "header is not a JSON object");
  return header;
}

TensorInfo parse_entry(const std::filesystem::path& path, const std::string& name, const json& entry) {
  if (name.empty()) fail(path, "a tensor has an empty name");
  if (!entry.is_object()) fail(path, fmt::format("tensor '{}': entry is not an object", name));
  for (const auto& [key, value] : entry.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      fail(path, fmt::format("tensor '{}': unknown field '{}'", name, key));
    }
  }
  TensorInfo t;
  t.name = name;

  const auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) fail(path, fmt::format("tensor '{}': missing string 'dtype'", name));
  const auto parsed = parse_dtype(dtype->get<std::string>());
  if (!parsed) {
    fail(path, fmt::format("tensor '{}': unsupported dtype '{}' (expected BF16, F16, F32, F8_E4M3, I32, I64 or U8)",
                           name, dtype->get<std::string>()));
  }
  t.dtype = *parsed;

  const auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) fail(path, fmt::format("tensor '{}': missing array 'shape'", name));
  if (shape->size() > SafetensorsFile::kMaxRank) {
    fail(path, fmt::format("tensor '{}': rank {} exceeds {}", name, shape->size(), SafetensorsFile::kMaxRank));
  }
  for (const json& d : *shape) {
    if (!d.is_number_unsigned()) fail(path, fmt::format("tensor '{}': shape {} has a non-integer or negative dimension", name, shape->dump()));
    if (d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(path, fmt::format("tensor '{}': dimension {} is too large", name, d.dump()));
    }
    t.shape.push_back(d.get<int64_t>());
  }

  const auto offsets = entry.find("data_offsets");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    fail(path, fmt::format("tensor '{}': 'data_offsets' must be two non-negative integers [begin, end]", name));
  }
  const uint64_t begin = (*offsets)[0].get<uint64_t>(), end = (*offsets)[1].get<uint64_t>();
  if (end < begin) fail(path, fmt::format("tensor '{}': data_offsets [{}, {}] end before begin", name, begin, end));
  t.offset_bytes = begin;
  t.size_bytes = end - begin;

  // numel * dtype size, refusing overflow. The product of the non-zero dimensions (times the dtype size)
  // must fit in int64 even for an empty tensor, so numel() and every stride computed from the shape do.
  uint64_t expected = dtype_size(t.dtype), nonzero = dtype_size(t.dtype);
  for (int64_t d : t.shape) {
    if (d == 0) {
      expected = 0;
      continue;
    }
    if (nonzero > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / static_cast<uint64_t>(d)) {
      fail(path, fmt::format("tensor '{}': shape {} overflows", name, fmt::join(t.shape, "x")));
    }
    nonzero *= static_cast<uint64_t>(d);
    expected *= static_cast<uint64_t>(d);
  }
  if (expected != t.size_bytes) {
    fail(path, fmt::format("tensor '{}': {} bytes in the file, but shape [{}] of {} needs {}", name, t.size_bytes,
                           fmt::join(t.shape, ", "), dtype_name(t.dtype), expected));
  }
  return t;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsHeader parse_safetensors(std::span<const std::byte> bytes, const std::filesystem::path& path) {
  if (bytes.size() < 8) fail(path, fmt::format("file is {} bytes, too short for a safetensors header", bytes.size()));
  const uint64_t header_len = read_u64_le(bytes.data());
  if (header_len < 2) fail(path, fmt::format("header length {} is too small", header_len));
  if (header_len > SafetensorsFile::kMaxHeaderBytes) {
    fail(path, fmt::format("header length {} exceeds the limit of {} bytes", header_len, SafetensorsFile::kMaxHeaderBytes));
  }
  if (header_len > bytes.size() - 8) {
    fail(path, fmt::format("header length {} runs past the end of the {}-byte file (truncated?)", header_len, bytes.size()));
  }
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, header_len);
  if (text.front() != '{') fail(path, "header does not start with '{'");
  const json header = parse_header(path, text);
  SafetensorsHeader out;
  out.data_start = 8 + header_len;
  const size_t data_size = bytes.size() - out.data_start;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail(path, fmt::format("__metadata__['{}'] is not a string", key));
        out.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    out.tensors.push_back(parse_entry(path, name, entry));
  }

  // The tensors must tile the data section exactly: no overlap, no gap, nothing past the end.
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : out.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->offset_bytes != b->offset_bytes ? a->offset_bytes < b->offset_bytes : a->size_bytes < b->size_bytes;
  });
  size_t cursor = 0;
  for (const TensorInfo* t : by_offset) {
    if (t->offset_bytes + t->size_bytes > data_size) {
      fail(path, fmt::format("tensor '{}': bytes [{}, {}) lie past the end of the {}-byte data section (truncated file?)",
                             t->name, t->offset_bytes, t->offset_bytes + t->size_bytes, data_size));
    }
    if (t->offset_bytes < cursor) {
      fail(path, fmt::format("tensor '{}': bytes [{}, {}) overlap the previous tensor, which ends at {}", t->name,
                             t->offset_bytes, t->offset_bytes + t->size_bytes, cursor));
    }
    if (t->offset_bytes > cursor) {
      fail(path, fmt::format("tensor '{}': starts at {} but the previous tensor ends at {} (gap in the data section)",
                             t->name, t->offset_bytes, cursor));
    }
    cursor = t->offset_bytes + t->size_bytes;
  }
  if (cursor != data_size) {
    fail(path, fmt::format("data section is {} bytes but the tensors cover {} (trailing bytes)", data_size, cursor));
  }
  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  return out;
}

SafetensorsFile::SafetensorsFile(const std::filesystem::path& path) : file_(path) {
  SafetensorsHeader header = parse_safetensors(file_.bytes(), path);
  data_start_ = header.data_start;
  tensors_ = std::move(header.tensors);
  metadata_ = std::move(header.metadata);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  return (it != tensors_.end() && it->name == name) ? &*it : nullptr;
}

std::span<const std::byte> SafetensorsFile::data(const TensorInfo& t) const {
  return file_.bytes().subspan(data_start_ + t.offset_bytes, t.size_bytes);
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                       const TensorFiller& fill, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<size_t> sizes;
  size_t offset = 0;
  for (const TensorSpec& t : tensors) {
    size_t n = dtype_size(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    if (header.contains(t.name)) throw LoadError(fmt::format("{}: tensor '{}' written twice", path.string(), t.name));
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    sizes.push_back(n);
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data section starts 8-byte aligned

  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw LoadError(fmt::format("{}: cannot create", tmp.string()));
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((text.size() >> (8 * i)) & 0xFF);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    std::vector<std::byte> buffer;
    for (size_t i = 0; i < tensors.size(); ++i) {
      buffer.assign(sizes[i], std::byte{0});
      fill(i, buffer);
      out.write(reinterpret_cast<const char*>(buffer.data()), static_cast<std::streamsize>(buffer.size()));
    }
    out.flush();
    if (!out) throw LoadError(fmt::format("{}: write failed (disk full?)", tmp.string()));
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace quatre::io
